"""Fine-tuning methods as data: each adds its parameters to the params tree and returns a label
tree (``trainable`` / ``frozen``) that drives the optimizer.

Example:
    >>> mcfg = method_config("lora", r=16, target="mlp")
    >>> params, labels = init_method(mcfg, params, cfg, jax.random.PRNGKey(0))
"""

from __future__ import annotations

import dataclasses

import jax

from jaxmem.tuning import full, head, ia3, lora, prompts
from jaxmem.tuning.partition import count

METHODS = {
    "full": (full.FullConfig, full.init),
    "head": (head.HeadConfig, head.init),
    "lora": (lora.LoraConfig, lora.init),
    "prefix": (prompts.PrefixConfig, prompts.init_prefix),
    "prompt": (prompts.PromptConfig, prompts.init_prompt),
    "ptuning": (prompts.PTuningConfig, prompts.init_ptuning),
    "ia3": (ia3.IA3Config, ia3.init),
}
PARAMETER_BASED = ("full", "head", "lora", "ia3")
PROMPT_BASED = ("prefix", "prompt", "ptuning")


def _coerce(field: dataclasses.Field, value):
    if not isinstance(value, str):
        return value
    t = str(field.type)
    if "bool" in t:
        return value.lower() in ("1", "true", "yes")
    if t.startswith("int"):
        return int(value)
    if t.startswith("float"):
        return float(value)
    if "tuple" in t and "+" in value:  # lists in a spec string are joined with "+"
        return tuple(value.split("+"))
    return value


def method_config(spec, **overrides):
    """A method's config dataclass from a name (``"lora"``), a spec string with overrides
    (``"lora:r=16,alpha=32,target=mlp"``; list targets joined with ``+``), or a config."""
    if dataclasses.is_dataclass(spec):
        return dataclasses.replace(spec, **overrides) if overrides else spec
    name, _, rest = str(spec).partition(":")
    if name not in METHODS:
        raise ValueError(f"Unknown fine-tuning method {name!r}; choose from {', '.join(METHODS)}.")
    cls = METHODS[name][0]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kw = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        if k not in fields or k == "name":
            raise ValueError(f"{name} has no option {k!r}; options: "
                             f"{', '.join(f for f in fields if f != 'name')}.")
        kw[k] = v
    kw.update(overrides)
    kw = {k: _coerce(fields[k], v) for k, v in kw.items()}
    return cls(**kw)


def init_method(mcfg, params, cfg, key=None, tokenizer=None):
    """Adds the method's parameters to ``params``; returns (params, labels)."""
    mcfg = method_config(mcfg)
    key = jax.random.PRNGKey(0) if key is None else key
    return METHODS[mcfg.name][1](params, cfg, mcfg, key, tokenizer)


__all__ = ["METHODS", "PARAMETER_BASED", "PROMPT_BASED", "count", "init_method",
           "method_config"]
