"""Fine-tuning methods as data: each adds its parameters to the params tree and returns a label
tree (``trainable`` / ``frozen``) that drives the optimizer.

Example:
    >>> from jaxmem import tiny_model
    >>> base, cfg, tok = tiny_model()
    >>> mcfg = method_config("lora", r=16, target="mlp")
    >>> params, labels = init_method(mcfg, base, cfg, jax.random.PRNGKey(0))
    >>> sorted(params["layers"]["mlp"]["up_proj"])
    ['kernel', 'lora_a', 'lora_b', 'lora_scale']
    >>> count(params, labels)  # trainable: the LoRA factors of 3 MLP matrices x 2 layers
    9216
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


# PEFT's spellings of the options (LoraConfig, IA3Config, PromptTuningConfig,
# PromptEncoderConfig), accepted in a spec string or record:
# "lora:lora_alpha=32,target_modules=q_proj,v_proj"
PEFT_ALIASES = {
    "lora": {"lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "target"},
    "ia3": {"target_modules": "target", "feedforward_modules": "feedforward"},
    "prompt": {"prompt_tuning_init": "init", "prompt_tuning_init_text": "init_text"},
    "ptuning": {"encoder_reparameterization_type": "encoder"},
}
_LOWERCASE = ("prompt_tuning_init", "encoder_reparameterization_type")  # PEFT's enum values


def method_options(name: str) -> str:
    """A method's options with their defaults (and PEFT's spellings), one line for ``--help``.

    Example:
        >>> method_options("ia3")
        'target=None (target_modules), feedforward=None (feedforward_modules)'
    """
    peft = {v: k for k, v in PEFT_ALIASES.get(name, {}).items()}
    out = []
    for f in dataclasses.fields(METHODS[name][0]):
        if f.name != "name":
            alias = f" ({peft[f.name]})" if f.name in peft else ""
            shown = str(f.default)
            shown = shown if len(shown) <= 20 else shown[:17] + "..."  # prefix's init_text
            out.append(f"{f.name}={shown}{alias}")
    return ", ".join(out) or "none"


def _spec_items(rest: str) -> list[tuple[str, str]]:
    """``"r=16,target_modules=q_proj,v_proj"`` -> ``[("r", "16"), ("target_modules",
    "q_proj+v_proj")]``:
    an item without ``=`` continues the previous option's list (PEFT's ``target_modules`` is a
    list; jaxmem's own spelling joins it with ``+``)."""
    items = []
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        if not eq and items:
            items[-1] = (items[-1][0], f"{items[-1][1]}+{k}")
        else:
            items.append((k, v))
    return items


def method_config(spec, **overrides):
    """A method's config dataclass from a name (``"lora"``), a spec string with overrides
    (``"lora:r=16,alpha=32,target=mlp"``; list targets joined with ``+``, or PEFT's spellings:
    ``"lora:lora_alpha=32,lora_dropout=0.1,target_modules=q_proj,v_proj"``), a method record
    (``run.json``'s ``method``: a dict with ``name``), or a config.

    Example:
        >>> method_config("lora:lora_alpha=32,target_modules=q_proj,v_proj").target
        ('q_proj', 'v_proj')
    """
    if dataclasses.is_dataclass(spec):
        return dataclasses.replace(spec, **overrides) if overrides else spec
    if isinstance(spec, dict):  # a record: JSON lists back to tuples
        rest = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "name"}
        return method_config(str(spec.get("name")), **{**rest, **overrides})
    name, _, rest = str(spec).partition(":")
    if name not in METHODS:
        raise ValueError(f"Unknown fine-tuning method {name!r}; choose from {', '.join(METHODS)}.")
    cls = METHODS[name][0]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    aliases = PEFT_ALIASES.get(name, {})
    kw = {}
    for k, v in [*_spec_items(rest), *overrides.items()]:
        if k in _LOWERCASE and isinstance(v, str):
            v = v.lower()
        k = aliases.get(k, k)
        if k not in fields or k == "name":
            raise ValueError(f"{name} has no option {k!r}; options: "
                             f"{', '.join(f for f in fields if f != 'name')}"
                             + (f" (PEFT's spellings: {', '.join(aliases)})" if aliases else "")
                             + ".")
        kw[k] = v
    kw = {k: _coerce(fields[k], v) for k, v in kw.items()}
    return cls(**kw)


def init_method(mcfg, params, cfg, key=None, tokenizer=None):
    """Adds the method's parameters to ``params``; returns (params, labels)."""
    mcfg = method_config(mcfg)
    key = jax.random.PRNGKey(0) if key is None else key
    return METHODS[mcfg.name][1](params, cfg, mcfg, key, tokenizer)


__all__ = ["METHODS", "PARAMETER_BASED", "PEFT_ALIASES", "PROMPT_BASED", "count", "init_method",
           "method_config", "method_options"]
