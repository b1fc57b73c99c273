"""Head-only tuning: only the output layer trains.

With a tied head (GPT-2, SmolLM2) the output layer *is* the input embedding. By default
(``untie=True``) head-only trains an untied copy, ``params["lm_head"]``, initialized to the
embedding, so the input embeddings stay frozen and only the output projection changes. With
``untie=False`` the shared matrix trains, which also moves the input embeddings.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxmem.tuning.partition import labels_where


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    name: str = "head"
    untie: bool = True


def init(params, cfg, mcfg: HeadConfig, key, tokenizer=None):
    params = dict(params)
    if "lm_head" not in params and mcfg.untie:
        params["lm_head"] = {"kernel": jnp.asarray(params["wte"]).T.copy()}
    head = ("lm_head",) if "lm_head" in params else ("wte",)
    return params, labels_where(params, lambda path: path[:1] == head)
