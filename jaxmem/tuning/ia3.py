"""IA3 (Liu et al., 2022) in PEFT's conventions: learned vectors, initialized to ones, that scale
the outputs of the key and value projections and the input of the MLP's output projection.

PEFT's defaults: Llama ``k_proj, v_proj, down_proj`` (feed-forward: ``down_proj``); GPT-2
``c_attn`` (all of q, k, v, as PEFT does for the fused layer) and ``mlp.c_proj`` (feed-forward).
The vectors are created by the decoder's linear layers (:class:`jaxmem.models.transformer.Dense`).
"""

from __future__ import annotations

import dataclasses

from jaxmem.models.adapters import Adapters
from jaxmem.models.transformer import init_adapter_params
from jaxmem.tuning.lora import module_names, resolve_targets
from jaxmem.tuning.partition import with_added

DEFAULTS = {"llama": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
            "gpt2": (("c_attn", "mlp.c_proj"), ("mlp.c_proj",))}


@dataclasses.dataclass(frozen=True)
class IA3Config:
    name: str = "ia3"
    target: tuple | None = None        # None: PEFT's defaults for the architecture
    feedforward: tuple | None = None   # which targets scale their input instead of output


def init(params, cfg, mcfg: IA3Config, key, tokenizer=None):
    target, ff = DEFAULTS[cfg.arch]
    ff = set(resolve_targets(mcfg.feedforward or ff, params, cfg))
    names = module_names(params, cfg)
    ia3 = tuple((".".join(names[name]), "in" if name in ff else "out")
                for name in resolve_targets(mcfg.target or target, params, cfg))
    return with_added(params, init_adapter_params(cfg, Adapters(ia3=ia3), key))
