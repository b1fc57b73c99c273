"""The optimizer of every fine-tune: :class:`OptimConfig`, its learning-rate :func:`schedule`
and :func:`make_optimizer` (AdamW with global-norm clipping on the trainable leaves, nothing
on the frozen ones). The trainer (:func:`jaxmem.trainer.train`) and the reference models
(:func:`jaxmem.references.train_references`) build theirs here.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxmem.tuning.partition import FROZEN, TRAINABLE
    >>> params, labels = {"w": jnp.ones(3), "base": jnp.ones(3)}, {"w": TRAINABLE, "base": FROZEN}
    >>> ocfg = OptimConfig(lr=1e-3, warmup_steps=10)
    >>> tx = make_optimizer(ocfg, labels, total_steps=100)
    >>> updates, _ = tx.update({"w": jnp.ones(3), "base": jnp.ones(3)}, tx.init(params), params)
    >>> updates["base"].tolist()  # frozen: never updated
    [0.0, 0.0, 0.0]
    >>> [round(float(schedule(ocfg, 100)(s)), 6) for s in (0, 5, 10, 100)]  # warmup, decay
    [0.0, 0.0005, 0.001, 0.0]
"""

from __future__ import annotations

import dataclasses

import optax

from jaxmem.config import check, field, is_int, is_number
from jaxmem.tuning.partition import FROZEN, TRAINABLE


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup, linear or cosine decay, and global-norm gradient clipping."""

    lr: float = field(1e-4, help="peak learning rate")
    weight_decay: float = field(0.0, help="AdamW weight decay")
    b1: float = field(0.9, help="Adam beta1")
    b2: float = field(0.999, help="Adam beta2")
    eps: float = field(1e-8, help="Adam's epsilon (not DP's: that is --dp epsilon=)",
                       flag="--adam-eps")
    warmup_steps: int = field(0, help="linear warmup steps")
    schedule: str = field("linear", help="decay after warmup",
                          choices=("linear", "cosine", "constant"))
    grad_clip: float | None = field(1.0, help="global gradient-norm clip; 0 disables")

    def __post_init__(self):
        check(self, "lr", lambda v: is_number(v) and v >= 0, "a finite number >= 0")
        check(self, "weight_decay", lambda v: is_number(v) and v >= 0, "a finite number >= 0")
        for name in ("b1", "b2"):
            check(self, name, lambda v: is_number(v) and 0 <= v < 1, "in [0, 1)")
        check(self, "eps", lambda v: is_number(v) and v > 0, "a finite number > 0",
              "--adam-eps")
        check(self, "warmup_steps", lambda v: is_int(v) and v >= 0, "an integer >= 0")
        check(self, "schedule", lambda v: v in ("linear", "cosine", "constant"),
              "one of linear, cosine, constant")
        check(self, "grad_clip", lambda v: v is None or is_number(v) and v >= 0,
              "a finite number >= 0 (0 or None: no clipping)")


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """The learning rate at each step: linear warmup to ``cfg.lr`` over ``warmup_steps``, then
    ``cfg.schedule`` (linear or cosine decay to 0 at ``total_steps``, or constant)."""
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


__all__ = ["OptimConfig", "make_optimizer", "schedule"]
