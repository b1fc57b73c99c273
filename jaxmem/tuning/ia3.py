"""IA3 (Liu et al., 2022) in PEFT's conventions: learned vectors, initialized to ones, that scale
the outputs of the key and value projections and the input of the MLP's output projection.

PEFT's defaults: Llama ``k_proj, v_proj, down_proj`` (feed-forward: ``down_proj``); GPT-2
``c_attn`` (all of q, k, v, as PEFT does for the fused layer) and ``mlp.c_proj`` (feed-forward).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxmem.tuning.lora import module_names, resolve_targets
from jaxmem.tuning.partition import FROZEN, TRAINABLE, label_all

DEFAULTS = {"llama": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
            "gpt2": (("c_attn", "mlp.c_proj"), ("mlp.c_proj",))}


@dataclasses.dataclass(frozen=True)
class IA3Config:
    name: str = "ia3"
    target: tuple | None = None        # None: PEFT's defaults for the architecture
    feedforward: tuple | None = None   # which targets scale their input instead of output


def init(params, cfg, mcfg: IA3Config, key, tokenizer=None):
    target, ff = DEFAULTS[cfg.arch]
    target = mcfg.target or target
    ff = set(resolve_targets(mcfg.feedforward or ff, params, cfg))
    names = module_names(params, cfg)
    labels = label_all(params, FROZEN)
    params = jax.tree.map(lambda x: x, params)
    for name in resolve_targets(target, params, cfg):  # a str stays a name/regex, not chars
        section, mod = names[name]
        layer = dict(params["layers"][section][mod])
        L, din, dout = layer["kernel"].shape
        leaf = "ia3_in" if name in ff else "ia3_out"
        layer[leaf] = jnp.ones((L, din if name in ff else dout), jnp.float32)
        params["layers"][section][mod] = layer
        lab = label_all(layer, FROZEN)
        lab[leaf] = TRAINABLE
        labels["layers"][section][mod] = lab
    return params, labels
