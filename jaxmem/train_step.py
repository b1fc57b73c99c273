"""One training step, compiled once: :func:`make_train_step` (token-weighted gradients over
micro-batches, or DP-SGD's clipped and noised ones) and the batches it eats,
:func:`epoch_batches`. The trainer (:func:`jaxmem.trainer.train`) jits it; the reference
models (:func:`jaxmem.references.make_reference_step`) vmap it over K models first.

Example:
    >>> from jaxmem import tiny_model
    >>> from jaxmem.batching import encode_texts
    >>> from jaxmem.optim import OptimConfig, make_optimizer
    >>> from jaxmem.trainer import TrainConfig
    >>> from jaxmem.tuning import init_method, method_config
    >>> base, cfg, tok = tiny_model()
    >>> params, labels = init_method(method_config("lora"), base, cfg, jax.random.PRNGKey(0), tok)
    >>> params = jax.tree.map(jnp.asarray, params)
    >>> tcfg = TrainConfig(batch_size=2, block_size=16)
    >>> tx = make_optimizer(OptimConfig(lr=1e-2), labels, total_steps=2)
    >>> step, opt_state = make_train_step(cfg, tx, labels), tx.init(params)
    >>> seqs, _ = encode_texts(tok, ["a cat sat", "a dog ran", "birds fly", "fish swim"], 16)
    >>> for ids, mask in epoch_batches(seqs, tcfg, epoch=1, pad_id=0):  # [1, 2, 16] each
    ...     params, opt_state, loss = step(params, opt_state, ids, mask, jax.random.PRNGKey(1))
    >>> bool(jnp.isfinite(loss))
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmem import dp as dpsgd
from jaxmem.batching import length_buckets, make_batches
from jaxmem.models.config import ModelConfig
from jaxmem.scoring import target_logp
from jaxmem.tuning.partition import merge, split, zeros_for_frozen

def _sum_nll(params, cfg, ids, mask, dtype, rng, lora_dropout):
    logp, m = target_logp(params, cfg, ids, mask, dtype=dtype, dropout_rng=rng,
                          lora_dropout=lora_dropout)
    return -jnp.sum(jnp.where(m, logp, 0.0))


def make_train_step(cfg: ModelConfig, tx: optax.GradientTransformation, labels, *,
                    dtype: str = "float32", lora_dropout: float = 0.0, jit: bool = True,
                    dp: dpsgd.DPStep | None = None):
    """A jit-compiled step over micro-batches ids/mask [A, B, T].

    Only the trainable subtree is differentiated, so XLA computes no weight gradient for frozen
    leaves; gradients are sums over tokens of all micro-batches divided by their token count.
    Returns (params, opt_state, loss). ``jit=False`` returns the plain function, for callers
    that transform it first (:func:`jaxmem.references.make_reference_step` vmaps it).
    With ``dp`` the gradient is DP-SGD's (:mod:`jaxmem.dp`) and the loss the mean over real
    examples of their mean token NLL.
    """

    def step(params, opt_state, ids, mask, rng):
        if dp is not None:
            return dp_step(params, opt_state, ids, mask, rng)
        trainable, frozen = split(params, labels)
        m = mask.astype(bool)
        # The token count is known before any gradient: scaling the loss by it gives mean
        # gradients directly (no division pass over the gradient tree afterwards).
        n = jnp.maximum(jnp.sum(m[..., 1:] & m[..., :-1]), 1)

        def mean_nll(tr, i, mk, k):
            return _sum_nll(merge(tr, frozen), cfg, i, mk, dtype, k, lora_dropout) / n

        grad = jax.value_and_grad(mean_nll)
        keys = jax.random.split(rng, ids.shape[0])
        if ids.shape[0] == 1:  # one micro-batch: no accumulator to zero-fill and add into
            loss, g = grad(trainable, ids[0], mask[0], keys[0])
        else:
            def micro(carry, xs):
                g_acc, loss_acc = carry
                loss, g = grad(trainable, *xs)
                return (jax.tree.map(jnp.add, g_acc, g), loss_acc + loss), None

            zeros = jax.tree.map(jnp.zeros_like, trainable)
            (g, loss), _ = jax.lax.scan(micro, (zeros, 0.0), (ids, mask, keys))
        updates, opt_state = tx.update(zeros_for_frozen(g, frozen), opt_state, params)
        new_trainable = optax.apply_updates(trainable, split(updates, labels)[0])
        return merge(new_trainable, frozen), opt_state, loss

    # ---- DP-SGD (jaxmem.dp): clipped per-example gradients of each example's mean token NLL,
    # summed over all micro-batches, one Gaussian draw, divided by the fixed batch size.
    def dp_step(params, opt_state, ids, mask, rng):
        trainable, frozen = split(params, labels)

        def example_loss(tr, i, mk, k):  # i, mk [1, T]
            b = mk.astype(bool)
            n = jnp.maximum(jnp.sum(b[..., 1:] & b[..., :-1]), 1)
            return _sum_nll(merge(tr, frozen), cfg, i, mk, dtype, k, lora_dropout) / n

        noise_key, drop_key = jax.random.split(rng)
        keys = jax.random.split(drop_key, ids.shape[:2])

        def micro(carry, xs):
            g_acc, loss_acc, n_acc = carry
            i, mk, k = xs
            g, losses = dpsgd.clipped_grad_sum(example_loss, trainable, i, mk, k,
                                               dp.clip)
            real = jnp.sum(mk, axis=-1) >= 2
            return (jax.tree.map(jnp.add, g_acc, g), loss_acc + jnp.sum(losses * real),
                    n_acc + jnp.sum(real)), None

        zeros = jax.tree.map(jnp.zeros_like, trainable)
        (g, loss, n), _ = jax.lax.scan(micro, (zeros, 0.0, 0), (ids, mask, keys))
        g = dpsgd.add_noise(g, noise_key, dp)
        updates, opt_state = tx.update(zeros_for_frozen(g, frozen), opt_state, params)
        new_trainable = optax.apply_updates(trainable, split(updates, labels)[0])
        return merge(new_trainable, frozen), opt_state, loss / jnp.maximum(n, 1)

    return jax.jit(step, donate_argnums=(0, 1)) if jit else step


def epoch_batches(seqs, tcfg, epoch: int, pad_id: int):
    """Shuffled [A, B, T] batches for one epoch; T from a few length buckets.

    ``tcfg`` is a :class:`jaxmem.trainer.TrainConfig` (its seed, batch_size, grad_accum and
    block_size; the trainer imports this module, so it is not named here). Every process
    builds the same global batches (the order depends only on seed and epoch); in a sharded
    run each process then transfers only its own devices' rows.
    """
    order = np.random.default_rng([tcfg.seed, epoch]).permutation(len(seqs))
    for ids, mask, _ in make_batches(seqs, tcfg.batch_size * tcfg.grad_accum,
                                     length_buckets(tcfg.block_size), pad_id, order=order):
        shape = (tcfg.grad_accum, tcfg.batch_size, ids.shape[1])
        yield ids.reshape(shape), mask.reshape(shape)


__all__ = ["epoch_batches", "make_train_step"]
