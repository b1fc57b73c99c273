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

Virtual-token positions are never scored (the decoder drops them); see
:mod:`jaxmem.models.adapters` for how the decoder reads these parameters.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.tuning.partition import FROZEN, TRAINABLE, label_all


def torch_linear(key, din, dout):
    """torch.nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias."""
    k1, k2 = jax.random.split(key)
    b = 1.0 / math.sqrt(din)
    return {"kernel": jax.random.uniform(k1, (din, dout), jnp.float32, -b, b),
            "bias": jax.random.uniform(k2, (dout,), jnp.float32, -b, b)}


def _check_length(n, cfg, extra=0):
    if n <= 0:
        raise ValueError(f"num_virtual_tokens must be positive, got {n}.")
    if n + extra >= cfg.max_positions:
        raise ValueError(f"{n} virtual tokens leave no room in the model's context of "
                         f"{cfg.max_positions} positions; use fewer.")


def _with(params, labels, key, sub):
    params = dict(params)
    params[key] = sub
    labels = dict(labels)
    labels[key] = label_all(sub, TRAINABLE)
    return params, labels


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
    name: str = "prefix"
    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None


def init_prefix(params, cfg, mcfg: PrefixConfig, key, tokenizer=None):
    _check_length(mcfg.num_virtual_tokens, cfg)
    n, tdim = mcfg.num_virtual_tokens, cfg.n_kv_heads * cfg.head_dim
    k1, k2, k3 = jax.random.split(key, 3)
    if mcfg.prefix_projection:
        h = mcfg.encoder_hidden_size or tdim
        sub = {"embedding": jax.random.normal(k1, (n, tdim), jnp.float32),
               "transform": {"0": torch_linear(k2, tdim, h),
                             "2": torch_linear(k3, h, cfg.n_layers * 2 * tdim)}}
    else:
        sub = {"embedding": jax.random.normal(k1, (n, cfg.n_layers * 2 * tdim), jnp.float32)}
    return _with(params, label_all(params, FROZEN), "prefix", sub)


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    name: str = "prompt"
    num_virtual_tokens: int = 20
    init: str = "random"          # "random" (PEFT default), "sample_vocab" or "text"
    init_text: str | None = None


def _prompt_embedding(params, cfg, n, how, text, key, tokenizer):
    wte = np.asarray(params["wte"])
    if how == "random":
        return jax.random.normal(key, (n, cfg.d_model), jnp.float32)
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
    _check_length(mcfg.num_virtual_tokens, cfg)
    emb = _prompt_embedding(params, cfg, mcfg.num_virtual_tokens, mcfg.init, mcfg.init_text,
                            key, tokenizer)
    return _with(params, label_all(params, FROZEN), "soft_prompt", {"embedding": emb})


@dataclasses.dataclass(frozen=True)
class PTuningConfig:
    name: str = "ptuning"
    num_virtual_tokens: int = 20
    encoder: str = "mlp"                 # "mlp" (PEFT default) or "lstm"
    encoder_hidden_size: int | None = None  # default: d_model, as PEFT
    encoder_num_layers: int = 2


def _lstm_layer(key, din, h):
    b = 1.0 / math.sqrt(h)
    ks = jax.random.split(key, 4)
    u = lambda k, shape: jax.random.uniform(k, shape, jnp.float32, -b, b)  # noqa: E731
    return {"w_ih": u(ks[0], (din, 4 * h)), "w_hh": u(ks[1], (h, 4 * h)),
            "b_ih": u(ks[2], (4 * h,)), "b_hh": u(ks[3], (4 * h,))}


def init_ptuning(params, cfg, mcfg: PTuningConfig, key, tokenizer=None):
    _check_length(mcfg.num_virtual_tokens, cfg)
    d, h = cfg.d_model, mcfg.encoder_hidden_size or cfg.d_model
    keys = iter(jax.random.split(key, 16))
    sub = {"embedding": jax.random.normal(next(keys), (mcfg.num_virtual_tokens, d), jnp.float32)}
    if mcfg.encoder == "mlp":
        sub["mlp"] = {"0": torch_linear(next(keys), d, h), "2": torch_linear(next(keys), h, h),
                      "4": torch_linear(next(keys), h, d)}
    elif mcfg.encoder == "lstm":
        layers, din = [], d
        for _ in range(mcfg.encoder_num_layers):
            layers.append({"fwd": _lstm_layer(next(keys), din, h),
                           "bwd": _lstm_layer(next(keys), din, h)})
            din = 2 * h
        sub["lstm"] = layers
        sub["mlp"] = {"0": torch_linear(next(keys), 2 * h, 2 * h),
                      "2": torch_linear(next(keys), 2 * h, d)}
    else:
        raise ValueError(f"Unknown P-tuning encoder {mcfg.encoder!r}; use mlp or lstm.")
    return _with(params, label_all(params, FROZEN), "soft_prompt", sub)
