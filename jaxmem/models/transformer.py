"""The one decoder: GPT-2 and Llama as Flax Linen modules over a plain params pytree.

``Decoder(cfg).apply({"params": params}, ids, mask)`` is a pure function of the params, so
label trees and ``optax.multi_transform`` work on them unchanged. The blocks are stacked with
``nn.scan`` (every per-layer weight keeps a leading axis of length ``n_layers``; compile time
does not grow with depth), optionally under ``nn.remat`` (``ModelConfig.remat``). Linear kernels
are ``(in, out)``, and module names follow Hugging Face's, so LoRA target names read as in PEFT::

    {"wte": [V, D], "wpe": [P, D] (GPT-2),
     "layers": {"attn_norm": {"scale", "bias"?},
                "attn": {"c_attn", "c_proj"} (GPT-2) | {"q_proj", "k_proj", "v_proj", "o_proj"},
                "mlp_norm": {...},
                "mlp": {"c_fc", "c_proj"} (GPT-2) | {"gate_proj", "up_proj", "down_proj"}},
     "final_norm": {...}, "lm_head": {"kernel": [D, V]} (untied heads only),
     "prefix": {...}, "soft_prompt": {...} (prompt-based methods)}

Every weight carries logical axis names ("vocab", "embed", "heads", "kv", "mlp", "norm",
"layers", and "adapter" / "adapter_out" for a tuning method's own leaves); :data:`jaxmem.sharding.LOGICAL_RULES`
maps them onto the device mesh. A tuning method is what the modules create when
:class:`~jaxmem.models.adapters.Adapters` asks (see there).

Example:
    >>> from jaxmem import tiny_model
    >>> cfg = tiny_model().config  # a 2-layer Llama, d_model 32, 99 tokens
    >>> params = init_params(cfg, jax.random.PRNGKey(0))
    >>> ids, mask = jnp.array([[5, 6, 7, 0]]), jnp.array([[1, 1, 1, 0]])  # one padded text
    >>> hidden_states(params, cfg, ids, mask).shape  # [B, T, D]
    (1, 4, 32)
    >>> out = logits(params, cfg, ids, mask)  # [B, T, V]
    >>> out.shape, out.dtype
    ((1, 4, 99), dtype('float32'))
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxmem.models.adapters import (ADAPTER_AXES, IA3_IN, IA3_OUT, LORA_A, LORA_B, LORA_SCALE,
                                    PREFIX, SOFT_PROMPT, Adapters, Prefix, SoftPrompt,
                                    torch_uniform)
from jaxmem.models.attention import apply_rope, attention, rope_inv_freq
from jaxmem.models.config import ModelConfig

INIT_STD = 0.02  # random weights (tests, tiny experiments): N(0, 0.02), unit norms
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def _param(module: nn.Module, name: str, init, axes: tuple, shape: tuple):
    return module.param(name, nn.with_logical_partitioning(init, axes), shape)


class Dense(nn.Module):
    """A linear layer plus whatever adapters it is asked to own.

    LoRA (Hu et al., 2021; PEFT's layout): y = W x + b + s * B A drop(x), with A ``lora_a``
    [in, r] (kaiming-uniform, U(-1/sqrt(in), 1/sqrt(in))), B ``lora_b`` [r, out] (zeros) and s
    ``lora_scale`` (alpha/r or alpha/sqrt(r); a constant). IA3 (Liu et al., 2022): ``ia3_out``
    scales the output (keys, values), ``ia3_in`` the input (feed-forward layers); both start at 1.
    """

    features: int
    axes: tuple  # logical names of (in, out)
    use_bias: bool = False
    lora_rank: int = 0
    lora_init_scale: float = 1.0
    ia3: str | None = None  # "in" or "out"
    lora_dropout: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, x):
        din, dtype = x.shape[-1], x.dtype
        normal = nn.initializers.normal(INIT_STD)
        if self.ia3 == "in":
            x = x * _param(self, IA3_IN, nn.initializers.ones, ADAPTER_AXES[:1],
                           (din,)).astype(dtype)
        y = x @ _param(self, "kernel", normal, self.axes, (din, self.features)).astype(dtype)
        if self.use_bias:
            y = y + _param(self, "bias", normal, self.axes[1:], (self.features,)).astype(dtype)
        if self.lora_rank:
            a = _param(self, LORA_A, torch_uniform(din), ADAPTER_AXES, (din, self.lora_rank))
            b = _param(self, LORA_B, nn.initializers.zeros, ADAPTER_AXES,
                       (self.lora_rank, self.features))
            scale = _param(self, LORA_SCALE, nn.initializers.constant(self.lora_init_scale),
                           (), ())
            xd = x
            if self.lora_dropout > 0 and not self.deterministic:
                keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.lora_dropout,
                                            x.shape)
                xd = jnp.where(keep, x / (1.0 - self.lora_dropout), 0).astype(dtype)
            y = y + (xd @ a.astype(dtype)) @ b.astype(dtype) * scale.astype(dtype)
        if self.ia3 == "out":
            y = y * _param(self, IA3_OUT, nn.initializers.ones, ADAPTER_AXES[:1],
                           (self.features,)).astype(dtype)
        return y


class Norm(nn.Module):
    """LayerNorm (GPT-2) or RMSNorm (Llama), computed in float32 as Hugging Face does."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        d, x32 = x.shape[-1], x.astype(jnp.float32)
        scale = _param(self, "scale", nn.initializers.ones, ("norm",), (d,))
        if self.cfg.arch == "gpt2":
            bias = _param(self, "bias", nn.initializers.zeros, ("norm",), (d,))
            mean = x32.mean(-1, keepdims=True)
            var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
            y = (x32 - mean) * jax.lax.rsqrt(var + self.cfg.norm_eps)
            return (y * scale + bias).astype(x.dtype)
        y = x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + self.cfg.norm_eps)
        return scale.astype(x.dtype) * y.astype(x.dtype)


class _Section(nn.Module):
    """Shared by Attention and MLP: builds their linear layers with the adapters asked for."""

    cfg: ModelConfig
    adapters: Adapters = Adapters()
    lora_dropout: float = 0.0
    deterministic: bool = True

    def dense(self, section: str, name: str, features: int, axes: tuple, bias: bool) -> Dense:
        module = f"{section}.{name}"
        return Dense(features, axes, bias, self.adapters.lora_rank(module),
                     self.adapters.lora_init_scale, self.adapters.ia3_mode(module),
                     self.lora_dropout, self.deterministic, name=name)


class Attention(_Section):
    """Grouped-query self-attention (MHA, GQA, MQA); RoPE (Llama) or none (GPT-2 adds learned
    positions to the input). ``prefix`` [2, n, KV, Dh]: prefix-tuning keys and values, prepended
    and never rotated. ``cache`` (k, v) [B, S, KV, Dh]: this call's keys and values (prefix
    first) are written at slot ``index`` and the queries attend over all S slots (``mask``
    [B, T, S]). Returns (output, updated cache or None)."""

    @nn.compact
    def __call__(self, x, positions, mask, prefix=None, cache=None, index=None):
        cfg = self.cfg
        b, t, _ = x.shape
        h, kvh, dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        if cfg.arch == "gpt2":
            qkv = self.dense("attn", "c_attn", 3 * h * dh, ("embed", "heads"), True)(x)
            q, k, v = jnp.split(qkv, 3, axis=-1)
        else:
            bias = cfg.attention_bias
            q = self.dense("attn", "q_proj", h * dh, ("embed", "heads"), bias)(x)
            k = self.dense("attn", "k_proj", kvh * dh, ("embed", "kv"), bias)(x)
            v = self.dense("attn", "v_proj", kvh * dh, ("embed", "kv"), bias)(x)
        q, k, v = q.reshape(b, t, h, dh), k.reshape(b, t, kvh, dh), v.reshape(b, t, kvh, dh)
        if cfg.arch != "gpt2":
            inv_freq = rope_inv_freq(cfg)
            q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        self.sow("intermediates", "kv", (k, v))  # what a prefix must hold to stand for these tokens
        if prefix is not None:
            pk, pv = (jnp.broadcast_to(z.astype(k.dtype), (b, *z.shape)) for z in prefix)
            k, v = jnp.concatenate([pk, k], axis=1), jnp.concatenate([pv, v], axis=1)
        if cache is not None:
            k, v = (jax.lax.dynamic_update_slice(c, z.astype(c.dtype), (0, index, 0, 0))
                    for c, z in zip(cache, (k, v)))
            cache = (k, v)
        out = attention(q, k, v, mask, cfg.attention_impl)
        name = "c_proj" if cfg.arch == "gpt2" else "o_proj"
        return self.dense("attn", name, cfg.d_model, ("heads", "embed"),
                          cfg.attention_bias or cfg.arch == "gpt2")(out), cache


class MLP(_Section):
    """GELU (GPT-2: c_fc, c_proj) or SwiGLU (Llama: gate_proj, up_proj, down_proj)."""

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        up, down = ("embed", "mlp"), ("mlp", "embed")
        if cfg.arch == "gpt2":
            y = self.dense("mlp", "c_fc", cfg.d_ff, up, True)(x)
            y = jax.nn.gelu(y, approximate=cfg.activation == "gelu_tanh")
            return self.dense("mlp", "c_proj", cfg.d_model, down, True)(y)
        gate = self.dense("mlp", "gate_proj", cfg.d_ff, up, cfg.mlp_bias)(x)
        y = jax.nn.silu(gate) * self.dense("mlp", "up_proj", cfg.d_ff, up, cfg.mlp_bias)(x)
        return self.dense("mlp", "down_proj", cfg.d_model, down, cfg.mlp_bias)(y)


class Block(_Section):
    """One pre-norm transformer block: attention then MLP, each with a residual. Written as a
    scan body: (x, this layer's prefix and KV cache) -> (x, its updated cache or None)."""

    @nn.compact
    def __call__(self, x, prefix, positions, mask, cache=None, index=None):
        kw = dict(cfg=self.cfg, adapters=self.adapters, lora_dropout=self.lora_dropout,
                  deterministic=self.deterministic)
        y = Norm(self.cfg, name="attn_norm")(x)
        y, cache = Attention(**kw, name="attn")(y, positions, mask, prefix, cache, index)
        x = x + y
        y = Norm(self.cfg, name="mlp_norm")(x)
        return x + MLP(**kw, name="mlp")(y), cache


class LMHead(nn.Module):
    """Declares an untied output projection ``lm_head.kernel`` [D, V] and returns it (scoring
    applies it in vocabulary-sized chunks, see :func:`head_weight`)."""

    vocab_size: int

    @nn.compact
    def __call__(self, d_model: int):
        return _param(self, "kernel", nn.initializers.normal(INIT_STD), ("embed", "vocab"),
                      (d_model, self.vocab_size))


class KVCache(NamedTuple):
    """Keys and values of the tokens seen so far, for decoding one token at a time.

    Slots fill left to right: prefix-tuning keys first, then soft-prompt tokens, then the
    (left-padded) prompt, then each generated token. Every row writes the same slot at each
    call, so one scalar ``index`` serves the batch; ``mask`` marks the slots that hold a real
    key (padding slots stay False, so they are never attended).

    Attributes:
      k, v: [L, B, S, KV, Dh] in the compute dtype (the layout :func:`attention` takes).
      mask: bool [B, S], True where a slot holds a real key.
      index: int32 [], the next slot to write.
    """

    k: jax.Array
    v: jax.Array
    mask: jax.Array
    index: jax.Array

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, slots: int, dtype=jnp.float32) -> "KVCache":
        """A zeroed cache of ``slots`` slots (prefix + soft prompt + prompt + new tokens)."""
        kv = jnp.zeros((cfg.n_layers, batch, slots, cfg.n_kv_heads, cfg.head_dim), dtype)
        return cls(kv, kv, jnp.zeros((batch, slots), bool), jnp.zeros((), jnp.int32))


class Decoder(_Section):
    """The causal decoder: embeddings, soft prompt, prefix, scanned blocks, final norm.

    Returns the final-normed hidden states [B, T, D] of the real tokens (``input_ids`` [B, T];
    ``attention_mask`` [B, T], 1 for real tokens and 0 for padding on any side). Positions count
    real tokens, so a left-padded row sees the same positions as the row alone. Virtual tokens
    (soft prompts) take positions 0..n-1 and are dropped from the output; prefix tuning shifts
    real positions by n as a cache of n tokens would, as PEFT does. The compute dtype is the
    params' dtype (:func:`hidden_states` casts them).

    With a :class:`KVCache` it returns (hidden states, updated cache): the call's keys and
    values are written into the cache and its tokens attend to every real slot up to their
    own. An empty cache is a prefill (the prefix and soft prompt go in first);
    ``continuing=True`` appends to a filled cache, which already holds them. Positions then
    continue from the number of real slots, so prefill + steps equal one full pass.
    """

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, cache: KVCache | None = None,
                 continuing: bool = False):
        cfg, ad = self.cfg, self.adapters
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), jnp.int32)
        attention_mask = attention_mask.astype(bool)
        normal = nn.initializers.normal(INIT_STD)
        x = _param(self, "wte", normal, ("vocab", "embed"), (cfg.vocab_size, cfg.d_model))[input_ids]

        n_virtual = 0
        if ad.soft_prompt is not None and not continuing:
            virt = SoftPrompt(ad.soft_prompt, cfg.d_model, name=SOFT_PROMPT)().astype(x.dtype)
            n_virtual = virt.shape[0]
            x = jnp.concatenate([jnp.broadcast_to(virt, (b, *virt.shape)), x], axis=1)
            attention_mask = jnp.concatenate([jnp.ones((b, n_virtual), bool), attention_mask], 1)
        n_prefix, prefix = 0, None
        if ad.prefix is not None and not continuing:
            prefix = Prefix(ad.prefix, cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, name=PREFIX)()
            n_prefix = prefix.shape[2]
        positions = n_prefix + jnp.maximum(jnp.cumsum(attention_mask, axis=-1) - 1, 0)
        if cache is not None:  # after the real tokens already cached (none at a prefill)
            positions = positions + cache.mask.sum(-1, keepdims=True)
        if cfg.arch == "gpt2":
            wpe = _param(self, "wpe", normal, ("positions", "embed"), (cfg.max_positions, cfg.d_model))
            x = x + wpe[positions]

        s = x.shape[1]
        if cache is None:
            mask = jnp.tril(jnp.ones((s, s), bool))[None] & attention_mask[:, None, :]
            if n_prefix:
                mask = jnp.concatenate([jnp.ones((b, s, n_prefix), bool), mask], axis=-1)
        else:  # keys are cache slots: real ones up to the query's own slot
            new = jnp.concatenate([jnp.ones((b, n_prefix), bool), attention_mask], axis=1)
            slot_mask = jax.lax.dynamic_update_slice(cache.mask, new, (0, cache.index))
            own_slot = cache.index + n_prefix + jnp.arange(s)
            causal = jnp.arange(cache.mask.shape[1])[None, :] <= own_slot[:, None]
            mask = causal[None] & slot_mask[:, None, :]
        block = Block
        if cfg.remat != "none":
            block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
        layers = nn.scan(block, variable_axes={"params": 0, "intermediates": 0},
                         split_rngs={"params": True, "dropout": True},
                         in_axes=(nn.broadcast if prefix is None else 0, nn.broadcast,
                                  nn.broadcast, nn.broadcast if cache is None else 0,
                                  nn.broadcast),
                         length=cfg.n_layers, unroll=min(cfg.scan_unroll, cfg.n_layers),
                         metadata_params={nn.PARTITION_NAME: "layers"})
        kv = None if cache is None else (cache.k, cache.v)
        x, kv = layers(cfg, ad, self.lora_dropout, self.deterministic, name="layers")(
            x, prefix, positions, mask, kv, None if cache is None else cache.index)
        if not cfg.tie_embeddings or ad.untied_head:
            LMHead(cfg.vocab_size, name="lm_head")(cfg.d_model)
        h = Norm(cfg, name="final_norm")(x[:, n_virtual:])
        if cache is None:
            return h
        return h, KVCache(*kv, slot_mask, cache.index + n_prefix + s)


# ----------------------------------------------------------------------------- functional API

def cast_params(params, dtype):
    """Casts floating-point leaves to the compute dtype (float32 master weights stay outside)."""
    return jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)


def hidden_states(params: dict, cfg: ModelConfig, input_ids: jax.Array,
                  attention_mask: jax.Array | None = None, *, dtype=jnp.float32,
                  dropout_rng: jax.Array | None = None, lora_dropout: float = 0.0,
                  cache: KVCache | None = None, continuing: bool = False):
    """:class:`Decoder` applied to ``params`` with the adapters they carry.

    Args:
      params: the params tree (module docstring), with any tuning method's leaves.
      cfg: the architecture.
      input_ids: int [B, T].
      attention_mask: [B, T], 1 for real tokens and 0 for padding (any side).
      dtype: compute dtype (float32 or bfloat16); norms and softmax stay float32.
      dropout_rng, lora_dropout: LoRA dropout during training (off when ``dropout_rng`` is None).
      cache, continuing: decoding with a :class:`KVCache` (see :class:`Decoder`;
        :mod:`jaxmem.generate` drives it).

    Returns:
      The final-normed hidden states [B, T, D] of the real tokens; with a ``cache``, a pair
      (hidden states, updated cache).
    """
    train = dropout_rng is not None and lora_dropout > 0
    model = Decoder(cfg, Adapters.of(params), lora_dropout, deterministic=not train)
    return model.apply({"params": cast_params(params, dtype)}, input_ids, attention_mask,
                       cache, continuing, rngs={"dropout": dropout_rng} if train else None)


def head_weight(params: dict) -> tuple[jax.Array, str]:
    """The output projection and how to apply it: (lm_head kernel [D, V], "dv") or, for a tied
    head, (token embedding [V, D], "vd"), used without materializing its transpose."""
    if "lm_head" in params:
        return params["lm_head"]["kernel"], "dv"
    return params["wte"], "vd"


def project(h: jax.Array, w: jax.Array, layout: str) -> jax.Array:
    """Hidden states [..., D] -> logits [..., V] with a weight from :func:`head_weight`."""
    return jnp.einsum(f"...d,{layout}->...v", h, w.astype(h.dtype))


@functools.partial(jax.jit, static_argnames=("cfg", "dtype"))
def logits(params: dict, cfg: ModelConfig, input_ids, attention_mask=None, *,
           dtype=jnp.float32) -> jax.Array:
    """Full next-token logits [B, T, V] in float32 (for tests and small batches; scoring
    avoids materializing these, see :mod:`jaxmem.scoring`)."""
    h = hidden_states(params, cfg, input_ids, attention_mask, dtype=dtype)
    return project(h, *head_weight(params)).astype(jnp.float32)


def _init(cfg: ModelConfig, adapters: Adapters, key):
    # init needs only shapes: the einsum kernel runs anywhere, in float32 (cuDNN refuses both)
    cfg = dataclasses.replace(cfg, attention_impl="einsum")
    ids = jnp.zeros((1, 1), jnp.int32)
    return Decoder(cfg, adapters).init(key, ids)["params"]


def abstract_params(cfg: ModelConfig, adapters: Adapters = Adapters()) -> dict:
    """The params tree as boxed ``jax.ShapeDtypeStruct`` s with their logical axes (no memory)."""
    return jax.eval_shape(functools.partial(_init, cfg, adapters), jax.random.PRNGKey(0))


def logical_axes(params: dict, cfg: ModelConfig) -> dict:
    """A tree like ``params`` holding each leaf's logical axis names (a ``PartitionSpec``).

    Raises:
      ValueError: if ``params`` do not have the structure this architecture creates.
    """
    boxed = abstract_params(cfg, Adapters.of(params))
    axes = nn.get_partition_spec(boxed)
    want = set(traverse_util.flatten_dict(nn.unbox(boxed)))
    have = set(traverse_util.flatten_dict(params))
    if want != have:
        odd = sorted("/".join(p) for p in want ^ have)[:4]
        raise ValueError(f"These params do not fit the {cfg.arch} decoder of this config "
                         f"(leaves present in one but not the other: {odd}).")
    return axes


@functools.partial(jax.jit, static_argnames=("cfg", "adapters"))
def init_params(cfg: ModelConfig, key: jax.Array, adapters: Adapters = Adapters()) -> dict:
    """Random parameters (N(0, 0.02) weights, unit norms; adapters at their own inits), for
    tests and tiny experiments."""
    return nn.unbox(_init(cfg, adapters, key))


def init_adapter_params(cfg: ModelConfig, adapters: Adapters, key: jax.Array) -> dict:
    """The leaves ``adapters`` add to the base params, at their initial values (a nested dict
    holding only those leaves; the base weights are never materialized: jit drops them)."""
    return _adapter_initializer(cfg, adapters)(key)


@functools.lru_cache(maxsize=32)
def _adapter_initializer(cfg: ModelConfig, adapters: Adapters):
    """One compiled initializer per (architecture, adapters): a study loads a checkpoint per
    epoch, and each load re-creates the method's leaves."""
    base = set(traverse_util.flatten_dict(nn.unbox(abstract_params(cfg))))

    @jax.jit
    def added(key):
        flat = traverse_util.flatten_dict(nn.unbox(_init(cfg, adapters, key)))
        return traverse_util.unflatten_dict({p: v for p, v in flat.items() if p not in base})

    return added
