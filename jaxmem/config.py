"""Configuration plumbing shared by the library and the command line.

* :func:`dtype_name` / :func:`jnp_dtype`: the one spelling of a compute dtype. Every function
  and config that takes a ``dtype`` accepts a name (``"float32"``, ``"bfloat16"``,
  ``"float16"``) or a jax/numpy dtype; configs store the name, so they serialize to JSON.
* :func:`add_dataclass_args` / :func:`dataclass_from_args`: command-line flags made from a config
  dataclass's fields (type, default and help text from the field's ``metadata["help"]``), so a
  flag and the field it sets are written once.
* :func:`field` : a dataclass field with its help text (and optional choices / CLI spelling).
* :func:`load_yaml`: how every config file and ``--set`` value is read (``1e-3`` a number).

Example:
    >>> from jaxmem.trainer import TrainConfig
    >>> p = argparse.ArgumentParser()
    >>> names = add_dataclass_args(p, TrainConfig)
    >>> tcfg = dataclass_from_args(TrainConfig, p.parse_args(["--epochs", "2"]))
    >>> tcfg.epochs
    2
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing

DTYPES = ("float32", "bfloat16", "float16")


def dtype_name(dtype) -> str:
    """The canonical name of a compute dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Accepts those names, a jax/numpy dtype (``jnp.bfloat16``, ``np.dtype("float32")``) or None
    (float32).
    """
    if dtype is None:
        return "float32"
    name = dtype
    if not isinstance(dtype, str):
        import numpy as np

        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"Unknown compute dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
    return name


def jnp_dtype(dtype):
    """The jax dtype for a name or dtype accepted by :func:`dtype_name`."""
    import jax.numpy as jnp

    return jnp.dtype(dtype_name(dtype))


def load_yaml(text: str):
    """YAML as jaxmem reads it everywhere (config files, ``--set key=value``): PyYAML's safe
    loader, except that ``1e-3`` is a number. YAML 1.1 (PyYAML) wants a dot in a float
    (``1.0e-3``) and reads ``1e-3`` as a string, so a learning rate written the usual way was
    refused as "not a number".

    Raises:
      yaml.YAMLError: the text is not YAML.
    """
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


@functools.cache
def _yaml_loader():
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        """The safe loader, with dotless exponent floats (``1e-3``, ``-2E5``)."""

    # added after the int and float resolvers, so only what they leave a string is taken
    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


def check(obj, name: str, ok, rule: str, flag: str | None = None) -> None:
    """Refuses a config value where it enters: ``ok(value)`` must hold.

    Args:
      flag: how the user spells the option (default ``--name-with-dashes``).

    Raises:
      ValueError: naming the option (field and flag), the rule and the value given.
    """
    value = getattr(obj, name)
    try:
        good = bool(ok(value))
    except TypeError:
        good = False
    if not good:
        flag = flag or "--" + name.replace("_", "-")
        raise ValueError(f"{type(obj).__name__}.{name} ({flag}) must be {rule}; got {value!r}.")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_positive_ints(obj, *names: str, allow_none: bool = False, method: str = "") -> None:
    """:func:`check` that each of ``names`` is an integer >= 1 (or None with ``allow_none``);
    ``method`` names a tuning method whose option these are (spelled ``lora:r=...``)."""
    for name in names:
        check(obj, name, lambda v: (allow_none and v is None) or (is_int(v) and v >= 1),
              "a positive integer" + (" or None" if allow_none else ""),
              f"{method}:{name}=" if method else None)


def field(default=dataclasses.MISSING, *, help: str, choices=None, flag: str | None = None,
          default_factory=dataclasses.MISSING):
    """A dataclass field that carries its own command-line help.

    Args:
      help: one line for ``--help`` (the default is appended).
      choices: allowed values, checked by argparse.
      flag: the flag's spelling when it is not ``--field-name``.
    """
    meta = {"help": help, "choices": choices, "flag": flag}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _parse_type(tp):
    """(argparse type, is_bool) for a field's resolved annotation.

    ``X | None`` parses as X, except that for a float "0" means None ("0 disables").
    """
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional = isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
    if optional:
        tp = args[0] if len(args) == 1 else str
    if tp is bool:
        return None, True
    if tp is tuple or typing.get_origin(tp) is tuple:
        return (lambda s: tuple(x.strip() for x in s.split(",") if x.strip())), False
    if tp is float and optional:
        return (lambda s: float(s) or None), False
    return (tp if tp in (int, float) else str), False


def iter_fields(cls, prefix: str = ""):
    """(dotted name, field, resolved type) for every leaf field; nested dataclasses recurse."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, tp


def add_dataclass_args(parser, cls, *, only=None, skip=(), defaults=None, meta=None) -> list[str]:
    """Adds one ``--flag`` per field of dataclass ``cls`` (nested dataclasses flattened).

    The flag is ``--field-name`` (a nested field ``optim.lr`` gives ``--lr``) unless the field's
    metadata names another (``flag``). A flag's default is the field's (or this command's,
    ``defaults``); its help text comes from the field's ``metadata["help"]`` (see
    :func:`field`) and shows the default. The parsed value's
    ``dest`` is the dotted field name; :func:`dataclass_from_args` builds the dataclass back.

    Args:
      only, skip: dotted field names to include / leave out.
      defaults: dotted name -> this command's default, replacing the dataclass's.
      meta: dotted name -> metadata (help, flag, choices) for fields of classes that
        carry none (defined outside this package's config style).

    Returns:
      The dotted names of the fields that got a flag.
    """
    defaults, meta = defaults or {}, meta or {}
    names = []
    own = _defaults(cls)
    for name, f, tp in iter_fields(cls):
        if (only is not None and name not in only) or name in skip:
            continue
        m = {**f.metadata, **meta.get(name, {})}
        if not m.get("help"):
            raise ValueError(f"{cls.__name__}.{name} has no help text (field metadata 'help').")
        convert, is_bool = _parse_type(tp)
        default = defaults.get(name, own[name])
        flag = m.get("flag") or "--" + name.rpartition(".")[2].replace("_", "-")
        shown = ",".join(default) if isinstance(default, tuple) else default
        kw = dict(dest=name, default=default, help=f"{m['help']} (default: {shown})")
        if is_bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            choices = m.get("choices")
            metavar = "{" + ",".join(choices) + "}" if choices else name.rpartition(".")[2].upper()
            parser.add_argument(flag, type=convert, choices=choices, metavar=metavar, **kw)
        names.append(name)
    return names


def _defaults(cls) -> dict:
    """Dotted name -> default value of every leaf field of ``cls()``."""
    inst = cls()
    out = {}
    for name, _, _ in iter_fields(cls):
        v = inst
        for part in name.split("."):
            v = getattr(v, part)
        out[name] = v
    return out


def dataclass_from_args(cls, args, **fixed):
    """The ``cls`` instance that flags added by :func:`add_dataclass_args` describe (fields
    without a flag keep their defaults); ``fixed`` (dotted names) overrides."""
    ns = vars(args)
    values = {name: ns[name] for name, _, _ in iter_fields(cls) if name in ns}
    return replace_nested(cls(), {**values, **fixed})


def replace_nested(obj, values: dict):
    """``dataclasses.replace`` with dotted names (``{"optim.lr": 1e-3}``) for nested fields."""
    top, inner = {}, {}
    for k, v in values.items():
        head, dot, rest = k.partition(".")
        if dot:
            inner.setdefault(head, {})[rest] = v
        else:
            top[k] = v
    for head, sub in inner.items():
        top[head] = replace_nested(top.get(head, getattr(obj, head)), sub)
    return dataclasses.replace(obj, **top) if top else obj
