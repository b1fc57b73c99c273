"""The one decoder: GPT-2 and Llama as a pure function of (params, token ids).

Params are plain nested dicts. Per-layer weights are stacked on a leading axis of length
``n_layers`` and the blocks run under ``jax.lax.scan``, so compile time does not grow with depth.
Linear kernels are stored ``(in, out)``; module names follow Hugging Face's, so LoRA target
patterns read the same as in PEFT::

    {"wte": [V, D], "wpe": [P, D] (GPT-2),
     "layers": {"attn_norm": {"scale", "bias"?},
                "attn": {"c_attn", "c_proj"} (GPT-2) | {"q_proj", "k_proj", "v_proj", "o_proj"},
                "mlp_norm": {...},
                "mlp": {"c_fc", "c_proj"} (GPT-2) | {"gate_proj", "up_proj", "down_proj"}},
     "final_norm": {...}, "lm_head": {"kernel": [D, V]} (untied heads only)}

Every linear layer is a dict ``{"kernel", "bias"?}`` applied by :func:`dense`; a bias is used
where present, so the checkpoint decides.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.models import adapters
from jaxmem.models.config import ModelConfig

_NEG_INF = -1e30  # finite, so fully masked rows (padding queries) give no NaN


def dense(p: dict, x: jax.Array, dropout: tuple | None = None) -> jax.Array:
    """A linear layer plus whatever adapters it carries.

    LoRA (Hu et al., 2021; PEFT's layout): y = W x + b + s * B A drop(x), with A ``lora_a`` [in, r],
    B ``lora_b`` [r, out] and s ``lora_scale`` (alpha/r or alpha/sqrt(r)). IA3 (Liu et al., 2022):
    ``ia3_out`` scales the output (keys, values), ``ia3_in`` the input (feed-forward layers).
    ``dropout`` is (rate, key) during training, applied to the LoRA branch's input only.
    """
    if "ia3_in" in p:
        x = x * p["ia3_in"].astype(x.dtype)
    y = x @ p["kernel"].astype(x.dtype)
    if "bias" in p:
        y = y + p["bias"].astype(x.dtype)
    if "lora_a" in p:
        xd = x
        if dropout is not None and dropout[0] > 0:
            rate, key = dropout
            keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
            xd = jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
        lora = (xd @ p["lora_a"].astype(x.dtype)) @ p["lora_b"].astype(x.dtype)
        y = y + lora * p["lora_scale"].astype(x.dtype)
    if "ia3_out" in p:
        y = y * p["ia3_out"].astype(x.dtype)
    return y


def norm(p: dict, x: jax.Array, cfg: ModelConfig) -> jax.Array:
    """LayerNorm (GPT-2) or RMSNorm (Llama), computed in float32 as Hugging Face does."""
    x32 = x.astype(jnp.float32)
    if cfg.arch == "gpt2":
        mean = x32.mean(-1, keepdims=True)
        var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + cfg.norm_eps)
        return (y * p["scale"] + p["bias"]).astype(x.dtype)
    y = x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + cfg.norm_eps)
    return p["scale"].astype(x.dtype) * y.astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """RoPE inverse frequencies, with Llama-3 ``rope_scaling`` applied when configured."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / d))
    inv_freq = inv_freq.astype(np.float32)
    if cfg.rope_scaling:
        s = dict(cfg.rope_scaling)
        factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old_ctx = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_ctx / lo, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_ctx / hi) & ~(wavelen > old_ctx / lo)
        inv_freq = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotates [B, T, H, Dh] by position, in Hugging Face's half-split (rotate_half) layout."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, Dh/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def attention(q, k, v, mask, impl: str = "einsum"):
    """Grouped-query attention. q [B,T,H,Dh]; k, v [B,S,KV,Dh]; mask [B,T,S] (True = attend).

    ``mask`` is what :func:`hidden_states` builds: causal, times key padding, with S - T leading
    all-True columns for prefix-tuning keys. ``impl`` (the config's ``attention_impl``) picks how
    it is computed; the outputs of real tokens agree, and no padding row gives a NaN:

    * ``"einsum"`` (default): scores by einsum, float32 softmax, one masked ``where``; a fully
      masked row (a left-padding query) gets uniform weights, so finite values and gradients.
    * ``"xla"``: ``jax.nn.dot_product_attention(..., implementation="xla")`` given the boolean
      mask (float32 logits and softmax; any mask, prefix tuning included; fully masked rows as
      above).
    * ``"cudnn"``: ``jax.nn.dot_product_attention(..., implementation="cudnn")``, cuDNN flash
      attention. A boolean mask would reach cuDNN only as a dense [B, 1, T, S] additive bias,
      which keeps the kernel from skipping the causal half and whose gradient jax's cuDNN path
      refuses unless the bias is [1, H, T, S] (jax-ml/jax#30593). So the mask is given as what
      the kernel does natively: ``is_causal=True`` plus per-row lengths
      (``query_seq_lengths`` = ``key_value_seq_lengths``, cuDNN's PADDING_CAUSAL), read off the
      mask (:func:`cudnn_lengths`). Outputs past a row's length are set to zero; an empty row
      (a batch's filler row) is given length 1, so no softmax runs over zero keys. Limits:

      - GPU only, bfloat16 or float16 compute (float32 raises a ValueError, a CPU backend a
        RuntimeError, at trace time); cuDNN itself needs a head dim that is a multiple of 8
        and at most 128 (256 on Hopper) and raises otherwise.
      - Prefix tuning (S > T) raises a ValueError: its keys need the causal diagonal shifted by
        the prefix length (bottom-right aligned), which jax's cuDNN call cannot set. Soft
        prompts (prompt tuning, P-tuning) are fine: they are ordinary leading tokens.
      - Right padding (or none) only, which is what scoring and training build. The mask is
        checked on the device; a row that is not causal-plus-length (left or inner padding)
        gets NaN outputs, so a wrong result cannot pass unnoticed.
    """
    b, t, h, dh = q.shape
    if impl == "einsum":
        kv = k.shape[2]
        q = q.reshape(b, t, kv, h // kv, dh)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) / math.sqrt(dh)
        scores = jnp.where(mask[:, None, None], scores, _NEG_INF)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, h * dh)
    if impl == "xla":
        out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="xla")
    elif impl == "cudnn":
        out = _cudnn_attention(q, k, v, mask)
    else:
        raise ValueError(f"Unknown attention implementation {impl!r}; "
                         "use 'einsum', 'xla' or 'cudnn'.")
    return out.reshape(b, t, h * dh)


def cudnn_lengths(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(lengths int32 [B], expressible bool [B]) of a [B, T, T] mask for cuDNN's
    causal-plus-lengths masking: under a causal mask the last query row sees every real key, so
    it is the key padding; a row is expressible when its mask is exactly causal & (key < length),
    i.e. right-padded (or unpadded)."""
    _, t, s = mask.shape
    lengths = mask[:, -1, :].sum(-1, dtype=jnp.int32)
    causal = jnp.tril(jnp.ones((t, s), bool))
    expected = causal[None] & (jnp.arange(s) < lengths[:, None])[:, None, :]
    return lengths, (mask == expected).all(axis=(1, 2))


def _gpu_backend() -> bool:
    return jax.default_backend() == "gpu"


def _cudnn_attention(q, k, v, mask):
    """The ``"cudnn"`` branch of :func:`attention` (see there for what it can express)."""
    t, s = mask.shape[1:]
    if s != t:
        raise ValueError(
            f"attention_impl='cudnn' cannot express prefix tuning ({s - t} prefix keys before "
            f"{t} queries): jax's cuDNN call aligns the causal mask top-left only. Use "
            "attention_impl='xla' or 'einsum' with prefix tuning.")
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(
            f"attention_impl='cudnn' needs bfloat16 or float16 compute, got {q.dtype}; pass "
            "dtype=jnp.bfloat16, or use attention_impl='xla' or 'einsum' for float32.")
    if not _gpu_backend():
        raise RuntimeError(
            f"attention_impl='cudnn' needs an NVIDIA GPU with cuDNN; the default backend is "
            f"{jax.default_backend()!r}. Use attention_impl='xla' or 'einsum' here.")
    lengths, row_ok = cudnn_lengths(mask)
    lengths = jnp.maximum(lengths, 1)  # an empty (filler) row: no softmax over zero keys
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lengths,
                                       key_value_seq_lengths=lengths, implementation="cudnn")
    # Rows past a length are padding: zero them whatever the kernel left there.
    real = jnp.arange(t)[None, :] < lengths[:, None]
    out = jnp.where(real[:, :, None, None], out, jnp.zeros((), out.dtype))
    return jnp.where(row_ok[:, None, None, None], out, jnp.asarray(jnp.nan, out.dtype))


def block(cfg: ModelConfig, lp: dict, x: jax.Array, positions, mask, inv_freq,
          prefix=None, dropout=None) -> jax.Array:
    """One pre-norm transformer block (attention then MLP, each with a residual).

    ``prefix`` is this layer's prefix-tuning keys and values [2, n, KV, Dh] (or None); they are
    prepended to the keys/values and never rotated. ``dropout`` is (rate, key) for LoRA.
    """
    b, t, _ = x.shape
    h, kvh, dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    keys = iter(jax.random.split(dropout[1], 8)) if dropout is not None else None
    lin = lambda p, y: dense(p, y, None if keys is None else (dropout[0], next(keys)))  # noqa: E731
    a = lp["attn"]
    y = norm(lp["attn_norm"], x, cfg)
    if cfg.arch == "gpt2":
        q, k, v = jnp.split(lin(a["c_attn"], y), 3, axis=-1)
    else:
        q, k, v = lin(a["q_proj"], y), lin(a["k_proj"], y), lin(a["v_proj"], y)
    q, k, v = q.reshape(b, t, h, dh), k.reshape(b, t, kvh, dh), v.reshape(b, t, kvh, dh)
    if cfg.arch != "gpt2":
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
    if prefix is not None:
        pk, pv = (jnp.broadcast_to(z.astype(k.dtype), (b, *z.shape)) for z in prefix)
        k, v = jnp.concatenate([pk, k], axis=1), jnp.concatenate([pv, v], axis=1)
    out = attention(q, k, v, mask, cfg.attention_impl)
    x = x + lin(a["c_proj"] if cfg.arch == "gpt2" else a["o_proj"], out)

    m = lp["mlp"]
    y = norm(lp["mlp_norm"], x, cfg)
    if cfg.arch == "gpt2":
        y = jax.nn.gelu(lin(m["c_fc"], y), approximate=cfg.activation == "gelu_tanh")
        y = lin(m["c_proj"], y)
    else:
        y = lin(m["down_proj"], jax.nn.silu(lin(m["gate_proj"], y)) * lin(m["up_proj"], y))
    return x + y


def cast_params(params, dtype):
    """Casts floating-point leaves to the compute dtype (float32 master weights stay outside)."""
    return jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)


def hidden_states(params: dict, cfg: ModelConfig, input_ids: jax.Array,
                  attention_mask: jax.Array | None = None, *, dtype=jnp.float32,
                  dropout_rng: jax.Array | None = None, lora_dropout: float = 0.0) -> jax.Array:
    """Runs the decoder and returns the final-normed hidden states [B, T, D] of the real tokens.

    Args:
      params: nested dict as described in the module docstring, with any tuning method's
        subtrees (soft prompt, prefix, LoRA, IA3; see :mod:`jaxmem.models.adapters`).
      cfg: the architecture.
      input_ids: int [B, T].
      attention_mask: [B, T], 1 for real tokens and 0 for padding (any side). Positions count
        real tokens only, so a left-padded row sees the same positions as the row alone.
      dtype: compute dtype (float32 or bfloat16); norms and softmax stay float32.
      dropout_rng, lora_dropout: LoRA dropout during training (off when ``dropout_rng`` is None).

    Virtual tokens (soft prompts) take positions 0..n-1 and are dropped from the output; prefix
    tuning shifts real positions by n as a cache of n tokens would, as PEFT does.
    """
    b, t = input_ids.shape
    if attention_mask is None:
        attention_mask = jnp.ones((b, t), jnp.int32)
    attention_mask = attention_mask.astype(bool)
    p = cast_params(params, dtype)
    x = p["wte"][input_ids]

    n_virtual = 0
    if "soft_prompt" in p:
        virt = adapters.soft_prompt(p["soft_prompt"]).astype(dtype)
        n_virtual = virt.shape[0]
        x = jnp.concatenate([jnp.broadcast_to(virt, (b, *virt.shape)), x], axis=1)
        attention_mask = jnp.concatenate([jnp.ones((b, n_virtual), bool), attention_mask], 1)
    n_prefix, prefix = 0, None
    if "prefix" in p:
        prefix = adapters.prefix_kv(p["prefix"], cfg.n_layers, cfg.n_kv_heads, cfg.head_dim)
        n_prefix = prefix.shape[2]
    positions = n_prefix + jnp.maximum(jnp.cumsum(attention_mask, axis=-1) - 1, 0)
    if cfg.arch == "gpt2":
        x = x + p["wpe"][positions]

    s = x.shape[1]
    causal = jnp.tril(jnp.ones((s, s), bool))
    mask = causal[None] & attention_mask[:, None, :]
    if n_prefix:
        mask = jnp.concatenate([jnp.ones((b, s, n_prefix), bool), mask], axis=-1)
    inv_freq = rope_inv_freq(cfg) if cfg.arch != "gpt2" else None
    layer_keys = (jax.random.split(dropout_rng, cfg.n_layers) if dropout_rng is not None
                  else None)

    def step(x, xs):
        lp, pre, key = xs
        drop = None if key is None else (lora_dropout, key)
        return block(cfg, lp, x, positions, mask, inv_freq, pre, drop), None

    x, _ = jax.lax.scan(step, x, (p["layers"], prefix, layer_keys))
    return norm(p["final_norm"], x[:, n_virtual:], cfg)


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


def init_params(cfg: ModelConfig, key: jax.Array, std: float = 0.02) -> dict:
    """Random parameters (normal(0, std) weights, unit norms), for tests and tiny experiments."""
    d, f, L = cfg.d_model, cfg.d_ff, cfg.n_layers
    dq, dkv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    keys = iter(jax.random.split(key, 16))

    def lin(din, dout, bias):
        p = {"kernel": std * jax.random.normal(next(keys), (L, din, dout), jnp.float32)}
        if bias:
            p["bias"] = std * jax.random.normal(next(keys), (L, dout), jnp.float32)
        return p

    def nrm(n, layers=True):
        shape = (L, n) if layers else (n,)
        p = {"scale": jnp.ones(shape, jnp.float32)}
        if cfg.arch == "gpt2":
            p["bias"] = jnp.zeros(shape, jnp.float32)
        return p

    if cfg.arch == "gpt2":
        attn = {"c_attn": lin(d, 3 * d, True), "c_proj": lin(d, d, True)}
        mlp = {"c_fc": lin(d, f, True), "c_proj": lin(f, d, True)}
    else:
        ab, mb = cfg.attention_bias, cfg.mlp_bias
        attn = {"q_proj": lin(d, dq, ab), "k_proj": lin(d, dkv, ab), "v_proj": lin(d, dkv, ab),
                "o_proj": lin(dq, d, ab)}
        mlp = {"gate_proj": lin(d, f, mb), "up_proj": lin(d, f, mb), "down_proj": lin(f, d, mb)}
    params = {
        "wte": std * jax.random.normal(next(keys), (cfg.vocab_size, d), jnp.float32),
        "layers": {"attn_norm": nrm(d), "attn": attn, "mlp_norm": nrm(d), "mlp": mlp},
        "final_norm": nrm(d, layers=False),
    }
    if cfg.arch == "gpt2":
        params["wpe"] = std * jax.random.normal(next(keys), (cfg.max_positions, d), jnp.float32)
    if not cfg.tie_embeddings:
        params["lm_head"] = {
            "kernel": std * jax.random.normal(next(keys), (d, cfg.vocab_size), jnp.float32)}
    return params
