"""Gradient-norm membership inference: how hard a text still pulls on the weights.

A model fitted to a text sits near a minimum of that text's loss, so the gradient of its loss is
small. MIMIR (Duan et al., 2024, "Do Membership Inference Attacks Work on Large Language
Models?", ``mimir/attacks/gradnorm.py``) scores a text x by

    L(x)  = -(1/N) sum_t log p(x_t | x_<t)           (the mean token loss, as in training)
    g_j   = dL/dW_j                                  for every parameter tensor W_j
    score = -(1/J) sum_j ||g_j||_p                   (p = inf by default; 1 and 2 also)

i.e. minus the **mean over parameter tensors** of each tensor's p-norm (not one global norm).
Higher means member, like every jaxmem attack. "Tensor" means what PyTorch calls one: jaxmem
stacks the per-layer weights of the scanned blocks along a leading axis (``params["layers"]``),
so each of those leaves counts as ``n_layers`` tensors, one norm per layer, exactly as MIMIR
sees a Hugging Face model. Which tensors: ``which="trainable"`` takes the method's trainable
leaves (the label tree of :mod:`jaxmem.tuning`; for a PEFT model this is what MIMIR measures,
since only the adapter has ``requires_grad``), ``which="all"`` every parameter (the decoder's
constants such as ``lora_scale`` are not parameters and are left out).

The loss is the trainer's (:func:`jaxmem.scoring.target_logp`). Per-example gradients come from
``jax.vmap(jax.grad(...))`` over ``micro_batch`` examples at a time, reduced to [micro_batch, J]
norms inside the compiled function, with ``lax.map`` over the micro-batches of one batch: peak
memory is ``micro_batch`` gradients whatever the number of texts, so full fine-tuning's
[B, params] gradient never exists.

Example:
    >>> from jaxmem import tiny_model
    >>> from jaxmem.tuning import init_method, method_config
    >>> base, cfg, tok = tiny_model()
    >>> params, labels = init_method(method_config("lora"), base, cfg)  # or a trained run's
    >>> members, nonmembers = ["The cat sat.", "A dog ran far."], ["Birds fly.", "Fish swim."]
    >>> scores = grad_norm_scores(params, cfg, labels, tok, members + nonmembers,
    ...                           which="trainable", batch_size=4, block_size=32)
    >>> scores.shape, bool((scores < 0).all())  # minus a mean of norms: higher = member
    ((4,), True)
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxmem.batching import encode_texts, length_buckets, make_batches
from jaxmem.config import dtype_name
from jaxmem.models.adapters import CONSTANTS
from jaxmem.scoring import target_logp
from jaxmem.tuning.partition import TRAINABLE

NORMS = {"1": 1, "2": 2, "inf": math.inf}
STACKED = "layers"  # the scanned blocks' subtree: every leaf under it has a leading layer axis


def selected_paths(params, labels, which: str) -> list[tuple]:
    """The paths of the leaves whose gradients count, in a fixed (sorted) order.

    Raises:
      ValueError: an unknown ``which``, or labels that mark no leaf trainable.
    """
    flat = traverse_util.flatten_dict(params)
    if which == "all":
        paths = [p for p in flat if p[-1] not in CONSTANTS]
    elif which == "trainable":
        lab = traverse_util.flatten_dict(labels)
        paths = [p for p in flat if lab.get(p) == TRAINABLE]
        if not paths:
            raise ValueError("The label tree marks no leaf trainable; pass the labels the "
                             "method's init returned, or which='all'.")
    else:
        raise ValueError(f"which must be 'trainable' or 'all', got {which!r}.")
    return sorted(paths)


def _tensor_norms(grads: dict, p: float) -> jax.Array:
    """[J] p-norms of a flat {path: gradient} dict; a stacked leaf gives one norm per layer."""
    out = []
    for path in sorted(grads):
        g = grads[path].astype(jnp.float32)
        axes = tuple(range(1 if path[0] == STACKED else 0, g.ndim))
        a = jnp.abs(g)
        if p == math.inf:
            n = jnp.max(a, axis=axes)
        elif p == 1:
            n = jnp.sum(a, axis=axes)
        else:
            n = jnp.sqrt(jnp.sum(a * a, axis=axes))
        out.append(jnp.atleast_1d(n))
    return jnp.concatenate(out)


@functools.partial(jax.jit, static_argnames=("cfg", "paths", "p", "micro_batch", "dtype"))
def _batch_norms(params, cfg, paths, ids, mask, *, p, micro_batch, dtype):
    """[B, J] per-tensor gradient norms of each row's mean token loss (ids, mask [B, T])."""
    flat = traverse_util.flatten_dict(params)
    wrt = {path: flat[path] for path in paths}
    rest = {path: v for path, v in flat.items() if path not in wrt}

    def mean_loss(w, i, m):  # one example: i, m [T]
        full = traverse_util.unflatten_dict({**rest, **w})
        logp, keep = target_logp(full, cfg, i[None], m[None], dtype=dtype)
        # an empty (filler) row has no scored token: its loss is 0, its gradient 0
        return -jnp.sum(jnp.where(keep, logp, 0.0)) / jnp.maximum(jnp.sum(keep), 1)

    per_example = jax.vmap(lambda i, m: _tensor_norms(jax.grad(mean_loss)(wrt, i, m), p))
    b, t = ids.shape
    chunks = (ids.reshape(b // micro_batch, micro_batch, t),
              mask.reshape(b // micro_batch, micro_batch, t))
    return jax.lax.map(lambda c: per_example(*c), chunks).reshape(b, -1)


def grad_norm_scores(params, cfg, labels, tokenizer, texts: Sequence[str], *,
                     which: str = "trainable", p: float | str = math.inf, batch_size: int = 8,
                     micro_batch: int = 1, block_size: int | None = None,
                     dtype="float32", progress: bool = False) -> np.ndarray:
    """MIMIR's gradient-norm score of each text: -(mean over tensors of ||dL/dW_j||_p).

    Args:
      params, cfg, tokenizer: the target model (base + a method's leaves, or fine-tuned).
      labels: the method's label tree (:func:`jaxmem.tuning.init_method`,
        :func:`jaxmem.trainer.load_checkpoint`); read only when ``which="trainable"``.
      texts: the texts to score.
      which: "trainable" (the method's trainable leaves) or "all" (every parameter).
      p: the norm: 1, 2 or inf (MIMIR's default), or their names "1", "2", "inf".
      batch_size: texts per compiled call (length-sorted batches of
        :func:`jaxmem.batching.make_batches`; the last is filled with empty rows).
      micro_batch: examples whose gradients exist at once; must divide ``batch_size``. Peak
        memory grows with it; 1 is the safe choice for full fine-tuning.
      block_size: tokens per text, longer texts truncated (default: the model's context,
        capped at 1024).
      dtype: compute dtype of the forward pass.

    Returns:
      float64 [len(texts)]: higher means member (smaller gradients). A text with fewer than two
      tokens has no loss and gets NaN.

    Example:
        >>> from jaxmem import tiny_model
        >>> params, cfg, tok = tiny_model()  # the base model: labels are not read for "all"
        >>> s = grad_norm_scores(params, cfg, None, tok, ["The cat sat.", "A"], which="all",
        ...                      block_size=32)
        >>> s.round(2)  # "A" is one token: no loss, no score
        array([-0.05, nan])
    """
    p = NORMS.get(str(p).lower(), p) if not isinstance(p, (int, float)) else p
    if p not in (1, 2, math.inf):
        raise ValueError(f"p must be 1, 2 or inf (MIMIR's choices), got {p!r}.")
    if not isinstance(micro_batch, int) or micro_batch < 1 or batch_size % micro_batch:
        raise ValueError(f"micro_batch ({micro_batch}) must be a positive divisor of batch_size "
                         f"({batch_size}).")
    if not texts:
        raise ValueError("Nothing to score: the list of texts is empty.")
    block_size = block_size or min(cfg.max_positions, 1024)
    if block_size > cfg.max_positions:
        raise ValueError(f"block_size {block_size} exceeds the model's context "
                         f"({cfg.max_positions} positions); lower it.")
    paths = tuple(selected_paths(params, labels, which))
    params = jax.tree.map(jnp.asarray, params)
    seqs, _ = encode_texts(tokenizer, texts, block_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.full(len(texts), np.nan)
    batches = make_batches(seqs, batch_size, length_buckets(max(block_size, 2)), pad_id)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, total=math.ceil(len(seqs) / batch_size), desc="grad norms")
    for ids, mask, index in batches:
        norms = np.asarray(_batch_norms(params, cfg, paths, jnp.asarray(ids), jnp.asarray(mask),
                                        p=p, micro_batch=micro_batch, dtype=dtype_name(dtype)),
                           np.float64)
        keep = index >= 0
        out[index[keep]] = -norms[keep].mean(-1)
    n_tok = np.array([len(s) for s in seqs])
    out[n_tok < 2] = np.nan
    return out


__all__ = ["grad_norm_scores", "selected_paths"]
