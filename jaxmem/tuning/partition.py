"""Label trees: which leaves of the params train.

A tuning method returns a label tree with the structure of the params: ``"trainable"`` or
``"frozen"`` per leaf, derived from parameter paths (:func:`with_added`, :func:`labels_where`).
It drives the optimizer (:func:`jaxmem.optim.make_optimizer`: AdamW on trainable leaves,
``optax.set_to_zero()`` on frozen ones, so frozen leaves carry no optimizer state), and the train
step differentiates only the trainable subtree (:func:`split` / :func:`merge`), so no weight
gradient is ever computed for a frozen leaf.

Example:
    >>> base = {"embed": {"embedding": jnp.zeros((99, 32))}}
    >>> params, labels = with_added(base, {"soft_prompt": {"embedding": jnp.zeros((20, 32))}})
    >>> labels
    {'embed': {'embedding': 'frozen'}, 'soft_prompt': {'embedding': 'trainable'}}
    >>> trainable, frozen = split(params, labels)
    >>> trainable["embed"]["embedding"] is None, count(params, labels)  # 20 x 32 train
    (True, 640)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
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


def zeros_for_frozen(grads_trainable, frozen):
    """A full gradient tree for the optimizer: frozen leaves get zeros that set_to_zero discards
    (inside jit they are never materialized)."""
    return merge(grads_trainable, jax.tree.map(
        lambda p: None if p is None else jnp.zeros_like(p), frozen, is_leaf=lambda x: x is None))
