"""How a reader sees a method: its family (parameter- or prompt-based) and its display name.

Every table and figure of a report names a method with :func:`display_name`, and groups it by
:func:`family`, so two different specs never share a name and the two families the paper
compares are told apart the same way everywhere.

Example:
    >>> display_name("lora"), display_name("ptuning"), family("prefix")
    ('LoRA (q,v; r=8)', 'P-tuning', 'prompt')
"""

from __future__ import annotations

import dataclasses

from jaxmem.tuning import PARAMETER_BASED, method_config

__all__ = ["LORA_PRESETS", "METHOD_NAMES", "display_name", "family", "lora_targets",
           "method_details"]

#: How each method family is written in a report.
METHOD_NAMES = {"full": "full", "head": "head", "lora": "LoRA", "ia3": "IA3",
                "prefix": "prefix", "prompt": "prompt", "ptuning": "P-tuning"}
#: LoRA's target presets as a report writes them.
LORA_PRESETS = {"peft": "q,v", "attention": "attn", "mlp": "MLP", "all": "all"}


def family(method: str) -> str:
    """``"parameter"`` for a parameter-based method spec (full, head, LoRA, IA3), else
    ``"prompt"`` (prefix, prompt, P-tuning).

    Example:
        >>> family("lora:r=16"), family("prompt")
        ('parameter', 'prompt')
    """
    return "parameter" if method.partition(":")[0] in PARAMETER_BASED else "prompt"


def lora_targets(target) -> str:
    """``"peft"`` -> ``"q,v"`` (PEFT's Llama default), ``("q_proj", "o_proj")`` -> ``"q,o"``.

    Example:
        >>> lora_targets("mlp"), lora_targets(("q_proj", "o_proj"))
        ('MLP', 'q,o')
    """
    if isinstance(target, str):
        return LORA_PRESETS.get(target, target.removesuffix("_proj"))
    return ",".join(t.removesuffix("_proj") for t in target)


def method_details(mcfg, changed: dict) -> list[str]:
    """The parts of a method's display name its family spells specially; each part it takes
    is removed from ``changed`` (the options that differ from the defaults).

    Example:
        >>> method_details(method_config("lora:r=4"), {"r": 4})
        ['q,v', 'r=4']
    """
    parts = []
    if mcfg.name == "lora":  # targets and rank always: they say which LoRA it is
        changed.pop("target", None), changed.pop("r", None)
        parts += [lora_targets(mcfg.target), f"r={mcfg.r}"]
    if changed.pop("prefix_projection", False):
        parts.append("reparam.")
    if mcfg.name == "ptuning" and changed.get("encoder") == "lstm":
        parts.append(changed.pop("encoder").upper())
    if "num_virtual_tokens" in changed:
        parts.append(f"{changed.pop('num_virtual_tokens')} tokens")
    return parts


def display_name(method: str) -> str:
    """The name a reader sees for a method spec, in every table and figure of the report.

    ``"lora"`` -> ``"LoRA (q,v; r=8)"``, ``"prefix:prefix_projection=true"`` ->
    ``"prefix (reparam.)"``, ``"ptuning"`` -> ``"P-tuning"``, ``"base"`` -> ``"base model"``.
    Every option that differs from the method's default is shown, so two different specs never
    share a name. LoRA's ``peft`` targets read as Llama's (q,v); on GPT-2 they are the fused
    ``c_attn``.

    Example:
        >>> display_name("prefix:prefix_projection=true"), display_name("base")
        ('prefix (reparam.)', 'base model')
    """
    if method == "base":
        return "base model"
    try:
        mcfg = method_config(method)
    except (ValueError, TypeError):
        return method  # not a spec this version knows: show it as written
    default = type(mcfg)()
    changed = {f.name: getattr(mcfg, f.name) for f in dataclasses.fields(mcfg)
               if f.name != "name" and getattr(mcfg, f.name) != getattr(default, f.name)}
    parts = method_details(mcfg, changed)
    parts += [f"{k}={'+'.join(v) if isinstance(v, tuple) else v}" for k, v in changed.items()]
    name = METHOD_NAMES.get(mcfg.name, mcfg.name)
    return f"{name} ({'; '.join(parts)})" if parts else name
