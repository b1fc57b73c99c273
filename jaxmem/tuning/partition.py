"""Label trees and the optimizer they drive.

A tuning method returns a label tree with the structure of the params: ``"trainable"`` or
``"frozen"`` per leaf. The optimizer is ``optax.multi_transform`` with AdamW on trainable leaves
and ``optax.set_to_zero()`` on frozen ones, so frozen leaves carry no optimizer state. The train
step differentiates only the trainable subtree (:func:`split` / :func:`merge`), so no weight
gradient is ever computed for a frozen leaf.

Example:
    >>> labels = label_all(params, "frozen")
    >>> tx = make_optimizer(OptimConfig(lr=1e-4), labels, total_steps=100)
    >>> opt_state = tx.init(params)
"""

from __future__ import annotations

import dataclasses

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from jaxmem.models.adapters import CONSTANTS

TRAINABLE, FROZEN = "trainable", "frozen"


def label_all(tree, label: str):
    return jax.tree.map(lambda _: label, tree)


def labels_where(params, trainable: Callable[[tuple], bool]):
    """A label tree with ``trainable`` where ``trainable(path)`` holds, ``frozen`` elsewhere;
    a path is the tuple of keys leading to a leaf (``("lm_head", "kernel")``)."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict(
        {path: TRAINABLE if trainable(path) else FROZEN for path in flat})


def with_added(params, added):
    """Merges a method's own leaves into the base params; returns (params, labels).

    The labels come from the paths alone: a leaf the method added trains (unless it is one of
    the decoder's constants, such as ``lora_scale``), every base leaf is frozen.

    Raises:
      ValueError: if ``params`` already hold one of the added leaves (an adapter on an adapter).
    """
    flat, new = traverse_util.flatten_dict(params), traverse_util.flatten_dict(added)
    clash = sorted("/".join(p) for p in set(flat) & set(new))
    if clash:
        raise ValueError(f"The params already carry {clash[0]}; pass the base model's params.")
    merged = traverse_util.unflatten_dict({**flat, **new})
    return merged, labels_where(merged, lambda p: p in new and p[-1] not in CONSTANTS)


def split(params, labels):
    """(trainable, frozen): two trees of params' structure with None where the other side lives."""
    tr = jax.tree.map(lambda p, l: p if l == TRAINABLE else None, params, labels)
    fr = jax.tree.map(lambda p, l: p if l == FROZEN else None, params, labels)
    return tr, fr


def merge(a, b):
    """Inverse of :func:`split`: takes each leaf from whichever tree has it."""
    return jax.tree.map(lambda x, y: y if x is None else x, a, b, is_leaf=lambda x: x is None)


def count(params, labels, label: str = TRAINABLE) -> int:
    return sum(int(p.size) for p, l in zip(jax.tree.leaves(params), jax.tree.leaves(labels))
               if l == label)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup, linear or cosine decay, and global-norm gradient clipping."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "linear"  # "linear", "cosine" or "constant" after warmup
    grad_clip: float | None = 1.0


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    if cfg.schedule == "linear":
        after = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, decay_steps)
    elif cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    else:
        raise ValueError(f"Unknown schedule {cfg.schedule!r}; use linear, cosine or constant.")
    if cfg.warmup_steps <= 0:
        return after
    warm = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    return optax.join_schedules([warm, after], [cfg.warmup_steps])


def make_optimizer(cfg: OptimConfig, labels, total_steps: int) -> optax.GradientTransformation:
    """AdamW (+ clipping) on trainable leaves, ``set_to_zero`` on frozen ones."""
    inner = [optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                         weight_decay=cfg.weight_decay)]
    if cfg.grad_clip:
        inner.insert(0, optax.clip_by_global_norm(cfg.grad_clip))
    return optax.multi_transform(
        {TRAINABLE: optax.chain(*inner), FROZEN: optax.set_to_zero()}, labels)


def zeros_for_frozen(grads_trainable, frozen):
    """A full gradient tree for the optimizer: frozen leaves get zeros that set_to_zero discards
    (inside jit they are never materialized)."""
    return merge(grads_trainable, jax.tree.map(
        lambda p: None if p is None else jnp.zeros_like(p), frozen, is_leaf=lambda x: x is None))
