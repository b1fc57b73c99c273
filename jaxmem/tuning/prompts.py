"""Prompt-based methods in PEFT's conventions: prefix tuning, prompt tuning and P-tuning.

* Prefix tuning (Li & Liang, 2021): n virtual keys and values in every attention layer
  (``params["prefix"]``; KV heads under GQA). Without reparameterization (PEFT's default) they are
  one embedding [n, L*2*KV*Dh], N(0, 1); with it, an embedding [n, KV*Dh] through
  Linear -> tanh -> Linear (hidden size defaults to KV*Dh).
* Prompt tuning (Lester et al., 2021): n soft token embeddings before the input
  (``params["soft_prompt"]["embedding"]``), initialized N(0, 1) (PEFT's RANDOM), from randomly
  sampled vocabulary embeddings, or from a text's token embeddings (repeated/cut to n).
* P-tuning (Liu et al., 2021): soft embeddings through a prompt encoder, an MLP
  (Linear-ReLU-Linear-ReLU-Linear) or a 2-layer bidirectional LSTM with an MLP head.

The parameters are created by the decoder's ``SoftPrompt`` and ``Prefix`` modules
(:mod:`jaxmem.models.adapters`, which also holds their layouts); this module picks their
configuration and, for prompt tuning from vocabulary or text, their initial values.
Virtual-token positions are never scored (the decoder drops them).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import check_positive_ints
from jaxmem.models.adapters import SOFT_PROMPT, Adapters, PrefixSpec, PromptSpec
from jaxmem.models.transformer import init_adapter_params
from jaxmem.tuning.partition import with_added


def _check_length(n, cfg, extra=0):
    if n + extra >= cfg.max_positions:
        raise ValueError(f"{n} virtual tokens leave no room in the model's context of "
                         f"{cfg.max_positions} positions; use fewer.")


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
    name: str = "prefix"
    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None

    def __post_init__(self):
        check_positive_ints(self, "num_virtual_tokens", method="prefix")


def init_prefix(params, cfg, mcfg: PrefixConfig, key, tokenizer=None):
    _check_length(mcfg.num_virtual_tokens, cfg)
    width = cfg.n_kv_heads * cfg.head_dim
    hidden = (mcfg.encoder_hidden_size or width) if mcfg.prefix_projection else None
    adapters = Adapters(prefix=PrefixSpec(mcfg.num_virtual_tokens, hidden))
    return with_added(params, init_adapter_params(cfg, adapters, key))


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    name: str = "prompt"
    num_virtual_tokens: int = 20
    init: str = "random"          # "random" (PEFT default), "sample_vocab" or "text"
    init_text: str | None = None

    def __post_init__(self):
        check_positive_ints(self, "num_virtual_tokens", method="prompt")


def _prompt_embedding(params, cfg, n, how, text, key, tokenizer):
    """Prompt tuning's initial embedding from the vocabulary (None: keep the module's N(0, 1))."""
    if how == "random":
        return None
    wte = np.asarray(params["wte"])
    if how == "sample_vocab":
        ids = np.asarray(jax.random.randint(key, (n,), 0, cfg.vocab_size))
        return jnp.asarray(wte[ids])
    if how == "text":
        if not text or tokenizer is None:
            raise ValueError("init='text' needs init_text and the model's tokenizer.")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = (ids * math.ceil(n / len(ids)))[:n]  # repeat or cut to n, as PEFT does
        return jnp.asarray(wte[np.asarray(ids)])
    raise ValueError(f"Unknown prompt init {how!r}; use random, sample_vocab or text.")


def init_prompt(params, cfg, mcfg: PromptConfig, key, tokenizer=None):
    n = mcfg.num_virtual_tokens
    _check_length(n, cfg)
    k_init, k_vocab = jax.random.split(key)
    emb = _prompt_embedding(params, cfg, n, mcfg.init, mcfg.init_text, k_vocab, tokenizer)
    added = init_adapter_params(cfg, Adapters(soft_prompt=PromptSpec(n)), k_init)
    if emb is not None:
        added[SOFT_PROMPT]["embedding"] = emb
    return with_added(params, added)


@dataclasses.dataclass(frozen=True)
class PTuningConfig:
    name: str = "ptuning"
    num_virtual_tokens: int = 20
    encoder: str = "mlp"                 # "mlp" (PEFT default) or "lstm"
    encoder_hidden_size: int | None = None  # default: d_model, as PEFT
    encoder_num_layers: int = 2

    def __post_init__(self):
        check_positive_ints(self, "num_virtual_tokens", method="ptuning")


def init_ptuning(params, cfg, mcfg: PTuningConfig, key, tokenizer=None):
    _check_length(mcfg.num_virtual_tokens, cfg)
    if mcfg.encoder not in ("mlp", "lstm"):
        raise ValueError(f"Unknown P-tuning encoder {mcfg.encoder!r}; use mlp or lstm.")
    spec = PromptSpec(mcfg.num_virtual_tokens, mcfg.encoder, mcfg.encoder_hidden_size,
                      mcfg.encoder_num_layers)
    return with_added(params, init_adapter_params(cfg, Adapters(soft_prompt=spec), key))
