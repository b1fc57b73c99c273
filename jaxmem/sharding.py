"""SPMD scale-out: data parallelism plus FSDP (ZeRO-3) sharding over a ("data", "fsdp") mesh.

Users pass a mesh to the trainer, the scorer, the attacks and the study
(``train(..., mesh=make_mesh(data=4, fsdp=2))``, ``jaxmem study ... --mesh 4x2``); this module
holds what they use. Nothing here changes the model: ``jax.jit`` follows the shardings of its
inputs, so the trainer's jitted step and :func:`jaxmem.scoring.token_stats` run sharded when
handed sharded params, optimizer state and batches. The recipe ``train`` follows::

    mesh = make_mesh(data=4, fsdp=2)                        # 8 devices
    p_sh = param_shardings(params, mesh, cfg)               # big weights split over "fsdp"
    params = jax.device_put(params, p_sh)
    opt_state, o_sh = init_opt_state(tx, params, p_sh)      # Adam moments follow their weight
    step = shard_step(make_train_step(cfg, tx, labels), p_sh, o_sh, mesh)
    params, opt_state, loss = step(params, opt_state, *shard_batch(ids, mask, mesh), rng)

Layout: every weight carries logical axis names (the decoder's modules declare them, see
:mod:`jaxmem.models.transformer`), and :data:`LOGICAL_RULES`, the one table of this module, maps
them onto the mesh, as MaxText does:

* Weight matrices (frozen, or trainable under full fine-tuning) are split over "fsdp" along their
  model dimension ("embed"). The stacked layer axis of ``layers`` leaves is never split:
  ``lax.scan`` slices it every iteration, so each layer's slice stays split along a weight
  dimension and is gathered just in time (FSDP). The vocabulary axis is never split either, so
  token lookups and the vocabulary reductions of scoring need no resharding.
* Norm scales, small leaves and a tuning method's own leaves (LoRA, IA3, prefix, soft prompt:
  logical axis "adapter") are replicated: they are tiny, and their gradients are all-reduced
  every step anyway.
* The batch is split over both mesh axes by default: "fsdp" is a data-parallel axis too (as in
  ZeRO-3), so every device sees different examples. Pass ``axes="data"`` to split over "data" only.

Multi-host: call :func:`initialize_distributed` first on every process. Every process then runs
the same code on the same data: it builds the same global batches, and :func:`place` (behind
:func:`shard_batch` and :func:`place_params`) transfers only the rows and weight shards of its
own devices, wherever the mesh puts them. Checkpoints (:func:`save_checkpoint`,
:func:`restore_checkpoint`) are written shard by shard with orbax and restore onto any mesh.
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
# Logical axis -> mesh axis (None: not split). The decoder's weights name their axes; this table
# alone decides the layout.
LOGICAL_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),    # the model dimension of every weight matrix: FSDP / ZeRO-3
    ("vocab", None),      # token lookups and vocabulary reductions stay local
    ("positions", None),
    ("heads", None),
    ("kv", None),
    ("mlp", None),
    ("layers", None),     # lax.scan slices it every iteration
    ("norm", None),
    ("adapter", None),    # a tuning method's own leaves: tiny, replicated
    ("adapter_out", None),
)


# ----------------------------------------------------------------------------- mesh

def make_mesh(data: int | None = None, fsdp: int | None = None, devices=None) -> Mesh:
    """A 2-D device mesh with axes ("data", "fsdp").

    Args:
      data: devices along the data-parallel axis. Default: whatever ``fsdp`` leaves.
      fsdp: devices along the parameter-sharding axis. Default: whatever ``data`` leaves (so
        with neither given, every device is on "data": pure data parallelism).
      devices: the devices to use (default: all of ``jax.devices()``).

    Returns:
      A ``jax.sharding.Mesh`` with GSPMD ("auto") axes, so un-annotated code shards by
      propagation from its inputs.

    Raises:
      ValueError: if ``data * fsdp`` differs from the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data is None and fsdp is None:
        data, fsdp = n, 1
    elif data is None:
        data = n // fsdp if fsdp and n % fsdp == 0 else -1
    elif fsdp is None:
        fsdp = n // data if data and n % data == 0 else -1
    if data <= 0 or fsdp <= 0 or data * fsdp != n:
        raise ValueError(f"A data x fsdp mesh must use all {n} devices: got data={data}, "
                         f"fsdp={fsdp}. Choose sizes whose product is {n}.")
    auto = (jax.sharding.AxisType.Auto,) * 2
    if devices == list(jax.devices()):  # topology-aware device order
        return jax.make_mesh((data, fsdp), AXES, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(data, fsdp), AXES, axis_types=auto)


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that keeps a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def parse_mesh(spec: str | None) -> Mesh | None:
    """A mesh from a command-line spec.

    Args:
      spec: ``None``, ``""`` or ``"none"``: no mesh (one device, the default everywhere);
        ``"auto"``: every device on "data" (pure data parallelism); ``"DxF"`` such as ``"4x2"``:
        D devices on "data" and F on "fsdp"; ``"xF"`` such as ``"x8"``: F on "fsdp", the rest
        on "data".

    Raises:
      ValueError: for a malformed spec or sizes that do not use every device.
    """
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return None
    spec = str(spec).strip().lower()
    if spec == "auto":
        return make_mesh()
    data, sep, fsdp = spec.partition("x")
    try:
        if not sep:
            raise ValueError
        return make_mesh(int(data) if data else None, int(fsdp))
    except ValueError as e:
        if "must use all" in str(e):
            raise
        raise ValueError(f"Mesh {spec!r} is not 'auto', 'none', 'DATAxFSDP' (e.g. '4x2') or "
                         f"'xFSDP' (e.g. 'x8'); this process sees {jax.device_count()} "
                         "devices.") from None


def batch_split(mesh: Mesh, axes=BATCH_AXES) -> int:
    """How many devices share a batch: the global batch must be a multiple of this."""
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh.shape[a] for a in names)


# ----------------------------------------------------------------------------- params

def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path(keypath) -> tuple[str, ...]:
    return tuple(_key_name(k) for k in keypath)


def mesh_spec(logical: Sequence[str | None], shape: Sequence[int], mesh,
              min_size: int = 2 ** 14) -> P:
    """The partition spec of one weight from its logical axis names (:data:`LOGICAL_RULES`).

    Args:
      logical: the weight's logical axis names, e.g. ``("layers", "embed", "mlp")``.
      shape: its shape.
      mesh: a ``Mesh`` or ``AbstractMesh`` with axes ("data", "fsdp").
      min_size: leaves with fewer elements are replicated.

    Returns:
      The spec (one entry per dimension), with every dimension that its mesh axis does not
      divide (or a mesh axis of size 1) left whole; ``P()`` when nothing is split.
    """
    if math.prod(shape) < min_size:
        return P()
    axes = tuple(nn.logical_to_mesh_axes(tuple(logical), LOGICAL_RULES))
    split = []
    for dim, axis in zip(shape, axes):
        names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
        size = math.prod(mesh.shape[a] for a in names)
        split.append(axis if size > 1 and dim % size == 0 else None)
    return P(*split) if any(a is not None for a in split) else P()


def param_shardings(params, mesh: Mesh, cfg, *, min_size: int = 2 ** 14):
    """A ``NamedSharding`` per leaf of ``params`` (same tree structure), from the logical axes
    the decoder gives each leaf (:func:`jaxmem.models.transformer.logical_axes`).

    Args:
      params: the params tree (arrays or anything with ``.shape``), with any method's leaves.
      mesh: a mesh from :func:`make_mesh`.
      cfg: the model's ``ModelConfig``.
      min_size: leaves with fewer elements are replicated.
    """
    from jaxmem.models.transformer import logical_axes

    axes = traverse_util.flatten_dict(logical_axes(params, cfg))
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({
        path: NamedSharding(mesh, mesh_spec(axes[path], np.shape(x), mesh, min_size))
        for path, x in flat.items()})


def place(tree, shardings):
    """Lays out every leaf of ``tree`` as the matching sharding says.

    Host (numpy) leaves are cut on the host and each device receives only its own shard, with no
    collective: with several processes, each process must hold the same values (they all load
    the same checkpoint or build the same batch) and transfers only its devices' shards. A plain
    ``jax.device_put`` would instead check, by an all-gather of every leaf, that the processes
    agree, holding whole weights on every device for a moment. Device (jax) leaves are resharded
    with ``device_put`` (a no-op when already laid out so).
    """
    def one(x, s):
        if isinstance(x, jax.Array) and (s.is_fully_addressable or not x.is_fully_addressable):
            return jax.device_put(x, s)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(one, tree, shardings)


def place_params(params, mesh: Mesh, cfg, **kwargs):
    """``params`` laid out by :func:`param_shardings` (see :func:`place`)."""
    return place(params, param_shardings(params, mesh, cfg, **kwargs))


def opt_state_shardings(opt_state, params_shardings):
    """Shardings for an optax state: each moment follows its parameter; the rest is replicated.

    A leaf is matched to a parameter by the trailing dict keys of its tree path (optax's Adam
    ``mu`` / ``nu`` mirror the params tree, e.g. ``...mu['layers']['attn']['q_proj']['kernel']``).
    Step counts and anything unmatched are replicated.
    """
    table, mesh = {}, None
    for keypath, s in jax.tree_util.tree_leaves_with_path(params_shardings):
        table[_path(keypath)] = s
        mesh = s.mesh
    if mesh is None:
        raise ValueError("params_shardings holds no sharding.")

    def one(keypath, x):
        tail = []
        for k in reversed(keypath):
            if not isinstance(k, jax.tree_util.DictKey):
                break
            tail.insert(0, str(k.key))
        s = table.get(tuple(tail))
        if s is not None and len(s.spec) <= np.ndim(x):
            return s
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(one, opt_state)


def init_opt_state(tx, params, params_shardings):
    """``tx.init(params)`` created directly in its sharded layout (never whole on one device).

    Returns:
      (opt_state, its shardings from :func:`opt_state_shardings`).
    """
    shardings = opt_state_shardings(jax.eval_shape(tx.init, params), params_shardings)
    return jax.jit(tx.init, out_shardings=shardings)(params), shardings


def shard_step(step, params_shardings, opt_shardings, mesh: Mesh, *, axes=BATCH_AXES):
    """The trainer's step (from ``make_train_step``) with its shardings pinned.

    The step runs sharded without this, following its inputs, but then the compiler picks the
    output layouts: it may split leaves that came in replicated (LoRA matrices, norm scales), so
    the next call sees new input shardings and compiles again. Pinning ``out_shardings`` keeps
    params and optimizer state in one layout from step to step, and keeps the donation of both.
    """
    batch = NamedSharding(mesh, P(None, axes, None))
    rep = replicated(mesh)
    return jax.jit(step, in_shardings=(params_shardings, opt_shardings, batch, batch, rep),
                   out_shardings=(params_shardings, opt_shardings, rep), donate_argnums=(0, 1))


# ----------------------------------------------------------------------------- batches

def shard_batch(ids, mask, mesh: Mesh, *, axes=BATCH_AXES):
    """Places a batch with its example axis split over ``axes`` of the mesh.

    Args:
      ids, mask: the global batch, ``[B, T]`` (scoring: axis 0 is split) or ``[A, B, T]``
        micro-batches (the train step: axis 1 is split). With several processes every process
        passes the same global batch (the trainer and scorer build them deterministically) and
        transfers only the rows of its own devices, wherever the mesh puts them.
      mesh: a mesh from :func:`make_mesh`.
      axes: mesh axes the examples are split over: both (default; FSDP is data-parallel too)
        or ``"data"`` alone.

    Returns:
      (ids, mask) as global ``jax.Array`` s.

    Raises:
      ValueError: if the number of examples is not a multiple of the devices on ``axes``.
    """
    ids, mask = np.asarray(ids), np.asarray(mask)
    if ids.ndim not in (2, 3) or ids.shape != mask.shape:
        raise ValueError(f"ids and mask must both be [B, T] or [A, B, T]; got {ids.shape} and "
                         f"{mask.shape}.")
    b_axis = ids.ndim - 2
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    split = batch_split(mesh, axes)
    if ids.shape[b_axis] % split:
        raise ValueError(f"{ids.shape[b_axis]} examples per batch cannot be split over {split} "
                         f"devices (mesh axes {names}); use a batch size that is a multiple of "
                         f"{split}.")
    spec = [None] * ids.ndim
    spec[b_axis] = axes
    sharding = NamedSharding(mesh, P(*spec))
    return place((ids, mask), (sharding, sharding))


# ----------------------------------------------------------------------------- multi-host

def initialize_distributed(enabled: bool, timeout: int = 120, **kwargs) -> None:
    """Starts multi-process JAX (``jax.distributed.initialize``) when ``enabled``.

    Call it first on every process, before any other JAX call. ``kwargs`` go to
    ``jax.distributed.initialize`` (coordinator address, process count and id); on Cloud TPU,
    SLURM and Open MPI they are detected. A second call is a no-op.

    Args:
      timeout: seconds to wait for every process to join (JAX's own default is 300).

    Raises:
      RuntimeError: the processes did not all join within ``timeout``, naming the coordinator.
    """
    if enabled and not jax.distributed.is_initialized():
        where = kwargs.get("coordinator_address") or "the auto-detected coordinator"
        who = (f"process {kwargs['process_id']} of {kwargs['num_processes']}"
               if "process_id" in kwargs and "num_processes" in kwargs else "this process")
        print(f"jaxmem: {who} waiting up to {timeout}s for {where}", file=sys.stderr)
        if kwargs.get("coordinator_address") and kwargs.get("process_id", 0) != 0:
            # JAX's client aborts the whole process (SIGABRT, a C++ stack) when it cannot reach
            # the coordinator; knock first, so an unreachable address is a Python error
            _wait_for(kwargs["coordinator_address"], timeout, who)
        try:
            # On CPU the processes talk over gloo (JAX's default for CPU collectives), so the
            # multi-process code paths run, and are tested, on plain CPU hosts.
            jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
        except Exception as e:
            raise RuntimeError(
                f"--distributed: {who} could not join {where} within {timeout}s "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). Start "
                "the same command in every process, check JAX_COORDINATOR_ADDRESS (host:port of "
                "process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID, or raise the wait with "
                "JAXMEM_COORDINATOR_TIMEOUT.") from e


def _wait_for(address: str, timeout: float, who: str) -> None:
    """Waits until something listens at ``host:port``.

    Raises:
      RuntimeError: nothing did within ``timeout`` seconds.
    """
    import socket
    import time

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except (OSError, ValueError) as e:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"--distributed: {who} found no coordinator at {address} within {timeout}s "
                    f"({e}). Start process 0 with the same command, check "
                    "JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and "
                    "JAX_PROCESS_ID, or raise the wait with JAXMEM_COORDINATOR_TIMEOUT.") from None
            time.sleep(0.5)


def is_main_process() -> bool:
    """True on process 0, the one that should write logs and reports."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Waits until every process reaches this point (a no-op with one process).

    Used after process 0 writes a file that the others read next (shared filesystem).
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------- memory

def device_bytes(tree, device=None) -> int:
    """Bytes of ``tree`` 's arrays resident on one device (default: the first local device).

    For a sharded array this counts only that device's shards, so it is what each device holds.
    """
    device = device or jax.local_devices()[0]
    total = 0
    for x in jax.tree.leaves(tree):
        if isinstance(x, jax.Array):
            total += sum(s.data.nbytes for s in x.addressable_shards if s.device == device)
        else:
            total += np.asarray(x).nbytes
    return total


# ----------------------------------------------------------------------------- checkpoints

# One orbax path for the trainer and for restoring onto another mesh: see jaxmem.checkpointing.
from jaxmem.checkpointing import restore_checkpoint, save_checkpoint  # noqa: E402


__all__ = ["AXES", "BATCH_AXES", "LOGICAL_RULES", "batch_split", "device_bytes", "mesh_spec",
           "init_opt_state", "initialize_distributed", "is_main_process", "make_mesh",
           "opt_state_shardings", "param_shardings", "parse_mesh", "place", "place_params", "replicated",
           "restore_checkpoint", "save_checkpoint", "shard_batch", "shard_step", "sync"]
