"""LoRA (Hu et al., 2021) in PEFT's conventions.

For each targeted linear layer W (kernel [in, out]) the decoder's ``Dense`` layer creates
``lora_a`` [in, r] (PEFT's A, transposed; kaiming-uniform, i.e. U(-1/sqrt(in), 1/sqrt(in))),
``lora_b`` [r, out] (zeros) and the constant ``lora_scale`` = alpha / r (or alpha / sqrt(r) with
rsLoRA, Kalajdzievski 2023), and computes W x + scale * B A dropout(x). GPT-2's fused ``c_attn`` is one layer, as in PEFT.

Targets are module names as in Hugging Face / PEFT: ``q_proj`` (suffix match, as PEFT matches a
list), ``self_attn.o_proj``, or a regex matched in full against names like ``mlp.down_proj``;
or a preset:

* ``"peft"`` (default; PEFT's defaults): Llama ``q_proj, v_proj``; GPT-2 ``c_attn``
* ``"attention"``: every attention projection; ``"mlp"``: every MLP projection; ``"all"``: both
  (the placements of the paper's Table 4).
"""

from __future__ import annotations

import dataclasses
import math
import re

import jax.numpy as jnp

from jaxmem.config import check, check_positive_ints, is_number
from jaxmem.models.adapters import LORA_A, LORA_B, LORA_SCALE, Adapters
from jaxmem.models.transformer import init_adapter_params
from jaxmem.tuning.partition import with_added

PRESETS = {
    "llama": {"peft": ("q_proj", "v_proj"),
              "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
              "mlp": ("gate_proj", "up_proj", "down_proj")},
    "gpt2": {"peft": ("c_attn",), "attention": ("attn.c_attn", "attn.c_proj"),
             "mlp": ("mlp.c_fc", "mlp.c_proj")},
}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    name: str = "lora"
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    use_rslora: bool = False
    target: str | tuple = "peft"

    def __post_init__(self):
        check_positive_ints(self, "r", method="lora")
        check(self, "alpha", lambda v: is_number(v) and v > 0, "a finite number > 0",
              "lora:alpha=")
        check(self, "dropout", lambda v: is_number(v) and 0 <= v < 1, "in [0, 1)",
              "lora:dropout=")

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def module_names(params, cfg) -> dict[str, tuple[str, str]]:
    """Hugging Face-style names of the block's linear layers -> their (section, key) in params."""
    attn = "attn" if cfg.arch == "gpt2" else "self_attn"
    out = {}
    for section, hf in (("attn", attn), ("mlp", "mlp")):
        for key in params["layers"][section]:
            out[f"{hf}.{key}"] = (section, key)
    return out


def resolve_targets(target, params, cfg) -> list[str]:
    """Module names selected by a preset, a list of names/suffixes, or a regex string."""
    names = module_names(params, cfg)
    presets = PRESETS[cfg.arch]
    if isinstance(target, str) and target in (*presets, "all"):
        patterns = presets["attention"] + presets["mlp"] if target == "all" else presets[target]
        suffix = True
    elif isinstance(target, str) and re.fullmatch(r"[\w.]+", target):
        patterns, suffix = (target,), True  # a plain name, e.g. from "lora:target=q_proj"
    elif isinstance(target, str):
        patterns, suffix = (target,), False
    else:
        patterns, suffix = tuple(target), True
    if suffix:  # PEFT matches a list of names by suffix
        hits = [n for n in names for p in patterns if n == p or n.endswith("." + p)]
    else:  # and a single string as a regex over the whole name
        hits = [n for n in names if re.fullmatch(patterns[0], n)]
    hits = sorted(set(hits))
    if not hits:
        raise ValueError(f"Target {target!r} matches no layer of this {cfg.arch} model; "
                         f"its linear layers are {sorted(names)} (presets: "
                         f"{', '.join([*presets, 'all'])}).")
    return hits


def init(params, cfg, mcfg: LoraConfig, key, tokenizer=None):
    """Adds LoRA to the targeted layers (the decoder's Dense layers create the leaves)."""
    names = module_names(params, cfg)
    targets = resolve_targets(mcfg.target, params, cfg)
    adapters = Adapters(lora=tuple((".".join(names[t]), mcfg.r) for t in targets),
                        lora_init_scale=mcfg.scale)
    return with_added(params, init_adapter_params(cfg, adapters, key))


def merge_into_base(params):
    """Folds every LoRA update into its kernel (W + scale * A B) and drops the LoRA leaves."""
    def fold(node):
        if isinstance(node, dict) and LORA_A in node:
            node = dict(node)
            a, b, s = node.pop(LORA_A), node.pop(LORA_B), node.pop(LORA_SCALE)
            node["kernel"] = node["kernel"] + s[:, None, None] * jnp.einsum("lir,lro->lio", a, b)
            return node
        if isinstance(node, dict):
            return {k: fold(v) for k, v in node.items()}
        return node
    return fold(params)
