"""The one orbax path: a pytree of (possibly sharded) arrays to a checkpoint folder and back.

The trainer's per-epoch checkpoints (:mod:`jaxmem.trainer`), :func:`jaxmem.trainer.load_checkpoint`
and :mod:`jaxmem.sharding`'s restore-onto-another-mesh all go through :func:`save_checkpoint`
and :func:`restore_checkpoint`. Where a run keeps its checkpoints, and which of them are finished,
is :mod:`jaxmem.runs`' business.

Example:
    >>> import jax.numpy as jnp
    >>> tree = {"params": {"w": jnp.arange(4.0)}, "step": jnp.int32(7)}
    >>> save_checkpoint("ckpt/epoch_001", tree)
    >>> back = restore_checkpoint("ckpt/epoch_001", tree)  # tree gives shapes and shardings
    >>> back["params"]["w"].tolist(), int(back["step"])
    ([0.0, 1.0, 2.0, 3.0], 7)
    >>> restore_checkpoint("ckpt/epoch_001", {"step": tree["step"]}, partial=True)  # one key
    {'step': Array(7, dtype=int32)}
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import jax


class CheckpointError(RuntimeError):
    """A run folder or checkpoint that cannot be used as asked."""


def save_checkpoint(path: str | os.PathLike, tree, *, overwrite: bool = False) -> None:
    """Writes a pytree of (possibly sharded) arrays with orbax, each device writing its shards.

    Every process must call it. The layout on disk does not depend on the mesh, so
    :func:`restore_checkpoint` can read it onto any other mesh or a single device.

    Args:
      path: the checkpoint folder (made absolute; orbax wants that).
      tree: the pytree to save.
      overwrite: replace an existing folder at ``path`` instead of failing.
    """
    import orbax.checkpoint as ocp

    with _quiet_background_errors(), ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(path), tree, force=overwrite)
        ckptr.wait_until_finished()


@contextlib.contextmanager
def _quiet_background_errors():
    """Mutes what orbax's writer threads log while a save fails (absl ERROR lines with
    tracebacks, asyncio's unretrieved futures, one per array on a full disk): the failure
    itself still reaches the caller as an exception, which the CLI prints as one line."""
    import logging

    loggers = [logging.getLogger(n) for n in ("absl", "asyncio")]
    levels = [lg.level for lg in loggers]
    hooks = threading.excepthook, sys.excepthook, sys.unraisablehook
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    # a writer thread's error reaches us as well; tensorstore's callbacks into a closed loop
    threading.excepthook = sys.unraisablehook = lambda *a: None
    sys.excepthook = lambda *a: None
    try:
        yield
    except BaseException as e:
        import gc

        # the failed writes' tasks, held by orbax's frames, log "never retrieved" when they are
        # collected: drop those frames and collect them now, while muted
        seen = set()
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            e.__traceback__ = None
            e = e.__cause__ or e.__context__
        gc.collect()
        raise
    finally:
        threading.excepthook, sys.excepthook, sys.unraisablehook = hooks
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def restore_checkpoint(path: str | os.PathLike, like, shardings=None, *, partial: bool = False):
    """Reads a checkpoint from :func:`save_checkpoint` straight into the target shardings.

    Args:
      path: the checkpoint folder.
      like: a tree with the checkpoint's structure whose leaves give shape and dtype (arrays or
        ``jax.ShapeDtypeStruct``; no data is read from them).
      shardings: a matching tree of target ``jax.sharding.Sharding`` s, e.g. from
        :func:`jaxmem.sharding.param_shardings` on another mesh. Default: the shardings
        ``like``'s arrays have.
      partial: ``like`` may be a subtree of what was saved (top-level keys left out are not
        read at all): loading a run's parameters for attacks never reads its optimizer state.

    Returns:
      The tree, each array laid out as its target sharding says (orbax reads each device's part).
    """
    import orbax.checkpoint as ocp

    def target(x, s=None):
        sds = ocp.utils.to_shape_dtype_struct(x)
        if not isinstance(sds, jax.ShapeDtypeStruct):  # a Python scalar
            return sds
        s = s if s is not None else getattr(sds, "sharding", None)
        return jax.ShapeDtypeStruct(sds.shape, sds.dtype, sharding=s)

    abstract = (jax.tree.map(target, like) if shardings is None
                else jax.tree.map(target, like, shardings))
    path = os.path.abspath(path)
    if not partial:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(path, abstract)
    with ocp.PyTreeCheckpointer() as ckptr:
        return ckptr.restore(path, args=ocp.args.PyTreeRestore(
            item=abstract, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)))


def tree_digest(tree) -> str | None:
    """A checksum of a tree's arrays (paths, dtypes, bytes), or None when this process does not
    hold every array whole (several processes: each checks only what it wrote)."""
    import hashlib

    import jax
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    for keypath, x in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return None
        a = np.ascontiguousarray(np.asarray(x))
        h.update(jax.tree_util.keystr(keypath).encode() + str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()


__all__ = ["CheckpointError", "restore_checkpoint", "save_checkpoint", "tree_digest"]
