"""The one scoring pass: per-token statistics for every attack, from one jit-compiled call.

For each scored token x_t (t >= 1) of each example it returns

* ``logp``:  log p(x_t | x_<t), the log-probability of the actual next token;
* ``mu``:    E_{z ~ p(.|x_<t)}[log p(z | x_<t)], the mean of log p over the vocabulary weighted by
  the model's own next-token distribution (minus the entropy);
* ``sigma``: the standard deviation of log p(z | x_<t) under the same distribution;
* ``top1``:  whether x_t is the model's most likely next token (its logit is the row's max;
  a tie with the max counts), what EZ-MIA (Ilić et al., 2026) restricts its score to the
  complement of.

``mu`` and ``sigma`` are exactly what Min-K%++ (Zhang et al., 2024) normalizes by. The first token
of a sequence is never scored (nothing predicts it); GPT-2 tokenizers add no BOS, so a GPT-2 text is
scored from its second token; Llama tokenizers that prepend BOS get every real token scored.

The vocabulary dimension never leaves the device: logits are computed chunk by chunk over the
sequence inside the jitted function, reduced to the three statistics, and only [B, T] arrays
come back.

Example:
    >>> from jaxmem import tiny_model
    >>> params, cfg, tok = tiny_model()  # one token per character, no BOS
    >>> stats = score_texts(params, cfg, tok, ["The cat sat on the mat.", "A dog."])
    >>> stats.logp.shape, stats.n_tokens.tolist()  # 23 and 6 characters: the first not scored
    ((2, 22), [22, 5])
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import sharding as sh
from jaxmem.batching import encode_texts, length_buckets, make_batches
from jaxmem.config import dtype_name, jnp_dtype
from jaxmem.models.config import ModelConfig
from jaxmem.models.transformer import head_weight, hidden_states, project


def vocab_stats(h: jax.Array, w: jax.Array, layout: str,
                targets: jax.Array) -> tuple[jax.Array, ...]:
    """(logp of targets, mu, sigma, top1) from hidden states h [..., D] and the head (see
    ``transformer.head_weight``).

    float32 whatever the compute dtype. One max pass, then one pass of three sums over
    e = exp(z - max): with s = sum e, A = sum e (z - max), B = sum e (z - max)^2,
    mu = A/s - log s and sigma^2 = B/s - (A/s)^2 (a variance is shift-invariant). Centering on
    the max keeps the terms small enough for float32. ``top1`` (bool) comes free from the same
    max: the target's centered logit z_t - max is exactly 0 where the target is an argmax.
    """
    z = project(h, w, layout).astype(jnp.float32)
    zc = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    e = jnp.exp(zc)
    s = jnp.sum(e, axis=-1)
    a = jnp.sum(e * zc, axis=-1) / s
    b = jnp.sum(e * zc * zc, axis=-1) / s
    log_s = jnp.log(s)
    zt = jnp.take_along_axis(zc, targets[..., None], axis=-1)[..., 0]
    return zt - log_s, a - log_s, jnp.sqrt(jnp.maximum(b - a * a, 0.0)), zt >= 0


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=("logp", "mu", "sigma", "mask", "token_ids", "truncated", "top1"),
                   meta_fields=())
@dataclasses.dataclass
class TokenStats:
    """Per-token statistics for N examples, right-padded to the longest: arrays [N, Lmax].

    What both the jitted pass (:func:`token_stats`, jax arrays, ``token_ids`` and ``truncated``
    None) and :func:`score_texts` (numpy arrays) return; a pytree, so ``jax.device_get`` works.
    ``mask`` marks scored tokens; ``n_tokens`` counts them; ``token_ids`` holds the ids of the
    scored tokens (for attacks that need the text, e.g. lowercase ratios, DC-PDD); ``top1``
    (bool) marks tokens that are the model's top-1 prediction (EZ-MIA; None when built by hand).
    """

    logp: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    token_ids: np.ndarray | None = None
    truncated: np.ndarray | None = None
    top1: np.ndarray | None = None

    def columns(self, start: int, stop: int | None = None) -> "TokenStats":
        """The per-token columns ``start:stop`` of every field ([N, L] ones; ``truncated``,
        per example, is kept as it is)."""
        cut = lambda x: None if x is None else x[:, start:stop]  # noqa: E731
        return TokenStats(logp=cut(self.logp), mu=cut(self.mu), sigma=cut(self.sigma),
                          mask=cut(self.mask), token_ids=cut(self.token_ids),
                          truncated=self.truncated, top1=cut(self.top1))

    @property
    def n_tokens(self) -> np.ndarray:
        return self.mask.sum(-1)

    def nll(self) -> np.ndarray:
        """Mean negative log-likelihood per example (NaN where no token is scored)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return -np.where(self.mask, self.logp, 0.0).sum(-1) / self.n_tokens


# Bytes of float32 logits one vocabulary chunk may hold. Below it the whole sequence is one
# chunk, kept for the backward pass (measured 17% faster per full fine-tuning step on CPU than
# 32-position chunks recomputed in the backward pass); above it, chunks are recomputed.
LOGITS_BYTES = 256 * 2**20


def _chunk_len(b: int, n: int, vocab: int, chunk: int | None) -> int:
    """Positions per vocabulary chunk: ``chunk`` if given, else as many as fit LOGITS_BYTES,
    balanced so that the last chunk is not mostly padding."""
    c = chunk or max(1, LOGITS_BYTES // (4 * b * vocab))
    k = -(-n // min(c, n))
    return -(-n // k)


def _over_chunks(reduce, h: jax.Array, targets: jax.Array, w: jax.Array, layout: str,
                 chunk: int | None):
    """``reduce(h [B, c, D], w, layout, targets [B, c]) -> tuple of [B, c]`` over the time
    axis in chunks.

    One chunk: a plain call. Several: ``lax.map`` over chunks, each under ``jax.checkpoint``,
    so a gradient never holds more than one chunk's [B, c, V] logits.
    """
    b, n = targets.shape
    fn = lambda hc, tc: reduce(hc, w, layout, tc)  # noqa: E731
    c = _chunk_len(b, n, w.shape[1] if layout == "dv" else w.shape[0], chunk)
    if c >= n:
        return fn(h, targets)
    pad = (-n) % c
    if pad:  # pad the time axis to whole chunks; the padded columns are sliced off below
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    k = (n + pad) // c
    outs = jax.lax.map(lambda a: jax.checkpoint(fn)(*a),
                       (h.reshape(b, k, c, -1).swapaxes(0, 1), targets.reshape(b, k, c).swapaxes(0, 1)))
    return tuple(x.swapaxes(0, 1).reshape(b, k * c)[:, :n] for x in outs)


def _head(params, cfg, input_ids, attention_mask, dtype, forward_kwargs):
    """(hidden states [B, T-1, D] of predicting positions, targets [B, T-1], head, layout,
    scored-token mask [B, T-1])."""
    dt = jnp_dtype(dtype)
    h = hidden_states(params, cfg, input_ids, attention_mask, dtype=dt, **forward_kwargs)[:, :-1]
    w, layout = head_weight(params)
    m = attention_mask.astype(bool)
    return h, input_ids[:, 1:], w.astype(dt), layout, m[:, 1:] & m[:, :-1]


def per_token(params: dict, cfg: ModelConfig, input_ids: jax.Array, attention_mask: jax.Array,
              *, dtype="float32", chunk: int | None = None, **forward_kwargs) -> "TokenStats":
    """Per-token statistics for a padded batch (un-jitted, so it can be differentiated).

    Args:
      params: model params (any extra method parameters the decoder reads included).
      cfg: the architecture.
      input_ids: int32 [B, T]; attention_mask: [B, T] with 1 for real tokens (right padding).
      dtype: compute dtype, a name ("float32", "bfloat16") or a jax dtype.
      chunk: positions per vocabulary chunk (default: as many as fit :data:`LOGITS_BYTES` of
        [B, chunk, V] float32 logits); several chunks are rematerialized in a backward pass.
      forward_kwargs: passed to the decoder (LoRA dropout during training).

    Returns:
      :class:`TokenStats` of float32 [B, T-1] arrays ``logp``, ``mu``, ``sigma`` and bool
      ``mask`` and ``top1`` (``token_ids`` and ``truncated`` None); column t describes token
      t+1 predicted from tokens 0..t.
    """
    h, targets, w, layout, mask = _head(params, cfg, input_ids, attention_mask, dtype,
                                        forward_kwargs)
    logp, mu, sigma, top1 = _over_chunks(vocab_stats, h, targets, w, layout, chunk)
    return TokenStats(logp=logp, mu=mu, sigma=sigma, mask=mask, top1=top1)


def target_logp_of(h: jax.Array, w: jax.Array, layout: str, targets: jax.Array) -> tuple:
    """(log p of targets,) from hidden states: log-sum-exp and the target's logit only."""
    z = project(h, w, layout).astype(jnp.float32)
    return (jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
            - jax.nn.logsumexp(z, axis=-1),)


def target_logp(params: dict, cfg: ModelConfig, input_ids: jax.Array, attention_mask: jax.Array,
                *, dtype="float32", chunk: int | None = None,
                **forward_kwargs) -> tuple[jax.Array, jax.Array]:
    """(log p(x_t | x_<t) [B, T-1], scored-token mask [B, T-1]): the training loss's input.

    :func:`per_token`'s ``logp`` without the mu/sigma sums (the loss needs neither), chunked
    the same way.
    """
    h, targets, w, layout, mask = _head(params, cfg, input_ids, attention_mask, dtype,
                                        forward_kwargs)
    (logp,) = _over_chunks(target_logp_of, h, targets, w, layout, chunk)
    return logp, mask


token_stats = jax.jit(per_token, static_argnames=("cfg", "dtype", "chunk"))
token_stats.__doc__ = "jit-compiled :func:`per_token`: the one scoring pass behind every attack."


@functools.lru_cache(maxsize=8)
def sharded_token_stats(mesh):
    """:func:`token_stats` for a batch split over ``mesh``, with results replicated.

    The [B, T] statistics are small, so gathering them onto every device costs little, and it
    lets every process (multi-host) read all of them.
    """
    return jax.jit(per_token, static_argnames=("cfg", "dtype", "chunk"),
                   out_shardings=sh.replicated(mesh))


# ----------------------------------------------------------------------------- texts in, stats out

def score_sequences(params: dict, cfg: ModelConfig, seqs: Sequence[Sequence[int]], *,
                    batch_size: int = 8, block_size: int | None = None, dtype="float32",
                    pad_id: int = 0, progress: bool | str = False, mesh=None) -> TokenStats:
    """Scores already-tokenized sequences (each at most ``block_size`` tokens).

    ``progress``: a bar over the batches on stderr (a string: the bar's label).

    With a ``mesh`` (:func:`jaxmem.sharding.make_mesh`) each batch is split over all its devices
    and the params are laid out FSDP-style (:func:`jaxmem.sharding.place_params`, a no-op when
    they already are); ``batch_size`` is rounded up to a multiple of the device count. With
    several processes, every process passes the same ``seqs``, transfers only its own devices'
    rows of each batch, and gets every example's statistics back.
    """
    if len(seqs) == 0:
        raise ValueError("Nothing to score: the list of texts is empty.")
    block_size = block_size or max(len(s) for s in seqs)
    if block_size > cfg.max_positions:
        raise ValueError(f"block_size {block_size} exceeds the model's context "
                         f"({cfg.max_positions} positions); lower it.")
    buckets = length_buckets(max(block_size, 2))
    lmax = max(max(len(s) for s in seqs) - 1, 1)
    out = {k: np.zeros((len(seqs), lmax), np.float32) for k in ("logp", "mu", "sigma")}
    out["mask"] = np.zeros((len(seqs), lmax), bool)
    out["top1"] = np.zeros((len(seqs), lmax), bool)
    token_ids = np.zeros((len(seqs), lmax), np.int32)
    fn = token_stats
    dtype = dtype_name(dtype)  # one compiled function per dtype, however it was spelled
    if mesh is not None:
        split = sh.batch_split(mesh)
        batch_size = -(-batch_size // split) * split
        params = sh.place_params(params, mesh, cfg)
        fn = sharded_token_stats(mesh)
    batches = make_batches(seqs, batch_size, buckets, pad_id)
    if progress and jax.process_index() == 0:  # a string progress names the bar
        from tqdm.auto import tqdm
        batches = tqdm(batches, total=math.ceil(len(seqs) / batch_size), unit="batch",
                       desc=progress if isinstance(progress, str) else "scoring", leave=False)
    for ids, mask, index in batches:
        x = ((jnp.asarray(ids), jnp.asarray(mask)) if mesh is None
             else sh.shard_batch(ids, mask, mesh))
        res = jax.device_get(fn(params, cfg, *x, dtype=dtype))
        keep = index >= 0
        w = min(ids.shape[1] - 1, lmax)
        for k in out:
            out[k][index[keep], :w] = getattr(res, k)[keep, :w]
        token_ids[index[keep], :w] = ids[keep, 1:w + 1]
    return TokenStats(**out, token_ids=token_ids, truncated=np.zeros(len(seqs), bool))


def score_texts(params: dict, cfg: ModelConfig, tokenizer, texts: Sequence[str], *,
                batch_size: int = 8, block_size: int | None = None, dtype="float32",
                on_overflow: str = "truncate", progress: bool | str = False,
                mesh=None) -> TokenStats:
    """Tokenizes and scores texts; see :func:`token_stats` for what is computed.

    Args:
      block_size: tokens per text (default: the model's context, capped at 1024).
      dtype: compute dtype, a name ("float32", "bfloat16") or a jax dtype.
      on_overflow: "truncate" (default; warns with the count) or "error" for longer texts.
      progress: a bar over the batches on stderr (a string: the bar's label).
      mesh: split every batch over this mesh's devices (see :func:`score_sequences`).

    Returns:
      :class:`TokenStats`, numpy arrays [len(texts), longest - 1].

    Example:
        >>> import jaxmem
        >>> params, cfg, tok = jaxmem.tiny_model()
        >>> stats = jaxmem.score_texts(params, cfg, tok, ["The cat sat on the mat."],
        ...                            block_size=32, dtype="bfloat16")
        >>> stats.nll().round(1)  # mean negative log-likelihood per text, in nats
        array([4.6])
    """
    block_size = block_size or min(cfg.max_positions, 1024)
    if block_size > cfg.max_positions:
        raise ValueError(f"block_size {block_size} exceeds the model's context "
                         f"({cfg.max_positions} positions); lower it.")
    seqs, truncated = encode_texts(tokenizer, texts, block_size, on_overflow)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stats = score_sequences(params, cfg, seqs, batch_size=batch_size, block_size=block_size,
                            dtype=dtype, pad_id=pad_id, progress=progress, mesh=mesh)
    stats.truncated = truncated
    return stats


def prefix_ids(tokenizer, prefix: str, room: int) -> list[int]:
    """``prefix`` tokenized as the tokenizer does by default, cut to its last ``room`` tokens
    (the ones nearest the text that follows; a leading BOS is kept), with a warning if cut.

    Raises:
      ValueError: an empty prefix, or no room for one (``room`` < 1).
    """
    ids = list(tokenizer([prefix])["input_ids"][0])
    if not prefix or not ids:
        raise ValueError("The prefix is empty; give ReCaLL at least one non-member text.")
    if room < 1:
        raise ValueError(f"No room for a prefix: the texts take the model's whole context "
                         f"({room} positions left); lower block_size.")
    if len(ids) > room:
        bos = getattr(tokenizer, "bos_token_id", None)
        keep = [ids[0]] if bos is not None and ids[0] == bos and room > 1 else []
        warnings.warn(f"The prefix has {len(ids)} tokens but only {room} fit beside "
                      f"block_size-token texts in the model's context; its first "
                      f"{len(ids) - room} tokens{' after BOS' if keep else ''} are dropped.",
                      stacklevel=2)
        ids = keep + ids[len(ids) - room + len(keep):]
    return ids


def score_after_prefix(params: dict, cfg: ModelConfig, tokenizer, prefix: str,
                       texts: Sequence[str], *, batch_size: int = 8,
                       block_size: int | None = None, dtype="float32",
                       on_overflow: str = "truncate", progress: bool = False,
                       mesh=None) -> TokenStats:
    """:func:`score_texts` of each text conditioned on a fixed ``prefix``: the pass ReCaLL needs.

    Each text is tokenized exactly as :func:`score_texts` does (same truncation), put after the
    prefix's tokens (P's tokens, then x's, BOS included where the tokenizer adds one, as in
    the ReCaLL reference code), and only the text's tokens are kept: the result has
    :func:`score_texts`'s shape and scored tokens, column t holding log p(x_{t+1} | P, x_<=t).
    The prefix is cut from the left to fit ``cfg.max_positions - block_size`` tokens.

    Example:
        >>> from jaxmem import tiny_model
        >>> params, cfg, tok = tiny_model()
        >>> texts = ["The cat sat.", "A dog ran far."]
        >>> stats = score_after_prefix(params, cfg, tok, "Some held-out text.", texts,
        ...                            block_size=32)
        >>> stats.logp.shape == score_texts(params, cfg, tok, texts, block_size=32).logp.shape
        True
        >>> recall = stats.nll() / score_texts(params, cfg, tok, texts, block_size=32).nll()
        >>> recall.round(1)  # ReCaLL's ratio; about 1 on a random model
        array([1., 1.])
    """
    block_size = block_size or min(cfg.max_positions, 1024)
    if block_size > cfg.max_positions:
        raise ValueError(f"block_size {block_size} exceeds the model's context "
                         f"({cfg.max_positions} positions); lower it.")
    p = prefix_ids(tokenizer, prefix, cfg.max_positions - block_size)
    seqs, truncated = encode_texts(tokenizer, texts, block_size, on_overflow)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stats = score_sequences(params, cfg, [p + s for s in seqs], batch_size=batch_size,
                            block_size=len(p) + block_size, dtype=dtype, pad_id=pad_id,
                            progress=progress, mesh=mesh)
    # column len(p) - 1 + j predicts x_j; score_texts' column t predicts x_{t+1}
    stats = stats.columns(len(p), len(p) + max(max(len(s) for s in seqs) - 1, 1))
    stats.truncated = truncated
    return stats
