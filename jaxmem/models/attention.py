"""Attention kernels and rotary position embeddings, as plain functions of arrays.

The Flax modules in :mod:`jaxmem.models.transformer` call these; they hold no parameters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.models.config import ModelConfig

_NEG_INF = -1e30  # finite, so fully masked rows (padding queries) give no NaN


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
    * ``"auto"``: cuDNN flash attention (below) where the program runs on CUDA and the call can
      express it (a GPU host with cuDNN, bfloat16/float16, no prefix), the ``"xla"`` kernel
      everywhere else. The choice is made per platform when the step is lowered
      (``jax.lax.platform_dependent``), so one program exported for ``("tpu", "cuda")`` from
      a GPU host carries cuDNN for CUDA and the XLA kernel for TPU; a host without a GPU can
      only trace the XLA kernel.
    * ``"cudnn"``: ``jax.nn.dot_product_attention(..., implementation="cudnn")``, cuDNN flash
      attention. A boolean mask would reach cuDNN only as a dense [B, 1, T, S] additive bias,
      which keeps the kernel from skipping the causal half and whose gradient jax's cuDNN path
      refuses unless the bias is [1, H, T, S] (jax-ml/jax#30593). So the mask is given as what
      the kernel does natively: ``is_causal=True`` plus per-row lengths
      (``query_seq_lengths`` = ``key_value_seq_lengths``, cuDNN's PADDING_CAUSAL), read off the
      mask (:func:`cudnn_lengths`). Outputs past a row's length are set to zero; an empty row
      (a batch's filler row) is given length 1, so no softmax runs over zero keys. Limits:

      - CUDA only, bfloat16 or float16 compute (float32 raises a ValueError, a host without a
        GPU a RuntimeError, at trace time; lowering the step for another platform, e.g. TPU,
        from a GPU host fails naming that platform: use ``"auto"`` to fall back there); cuDNN
        itself needs a head dim that is a multiple of 8 and at most 128 (256 on Hopper) and
        raises otherwise.
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
        out = _xla_attention(q, k, v, mask)
    elif impl == "cudnn":
        out = _cudnn_attention(q, k, v, mask)
    elif impl == "auto":
        out = _auto_attention(q, k, v, mask)
    else:
        raise ValueError(f"Unknown attention implementation {impl!r}; "
                         "use 'einsum', 'xla', 'cudnn' or 'auto'.")
    return out.reshape(b, t, h * dh)


def _xla_attention(q, k, v, mask):
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="xla")


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


def _cudnn_refusal(q, mask) -> Exception | None:
    """Why jax's cuDNN call cannot take this attention (None when it can)."""
    t, s = mask.shape[1:]
    if s != t:
        return ValueError(
            f"attention_impl='cudnn' cannot express prefix tuning ({s - t} prefix keys before "
            f"{t} queries): jax's cuDNN call aligns the causal mask top-left only. Use "
            "attention_impl='auto', 'xla' or 'einsum' with prefix tuning.")
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        return ValueError(
            f"attention_impl='cudnn' needs bfloat16 or float16 compute, got {q.dtype}; pass "
            "dtype=jnp.bfloat16, or use attention_impl='auto', 'xla' or 'einsum' for float32.")
    if not _gpu_backend():
        return RuntimeError(
            f"attention_impl='cudnn' needs an NVIDIA GPU with cuDNN; the default backend is "
            f"{jax.default_backend()!r}. Use attention_impl='auto', 'xla' or 'einsum' here.")
    return None


def _cudnn_attention(q, k, v, mask):
    """The ``"cudnn"`` branch of :func:`attention` (see there for what it can express)."""
    if (refusal := _cudnn_refusal(q, mask)) is not None:
        raise refusal
    # CUDA only: lowering for any other platform fails (no default branch)
    return jax.lax.platform_dependent(q, k, v, mask, cuda=_cudnn_kernel)


def _auto_attention(q, k, v, mask):
    """The ``"auto"`` branch of :func:`attention`: cuDNN on CUDA where it can run, else XLA."""
    if _cudnn_refusal(q, mask) is not None:
        return _xla_attention(q, k, v, mask)
    return jax.lax.platform_dependent(q, k, v, mask, cuda=_cudnn_kernel, default=_xla_attention)


def _cudnn_kernel(q, k, v, mask):
    t = mask.shape[1]
    lengths, row_ok = cudnn_lengths(mask)
    lengths = jnp.maximum(lengths, 1)  # an empty (filler) row: no softmax over zero keys
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lengths,
                                       key_value_seq_lengths=lengths, implementation="cudnn")
    # Rows past a length are padding: zero them whatever the kernel left there.
    real = jnp.arange(t)[None, :] < lengths[:, None]
    out = jnp.where(real[:, :, None, None], out, jnp.zeros((), out.dtype))
    return jnp.where(row_ok[:, None, None, None], out, jnp.asarray(jnp.nan, out.dtype))
