"""Per-device memory of one training step, from a compile-only pass over abstract parameters.

Nothing is trained and no weight exists: the base model's parameters are
``jax.ShapeDtypeStruct`` leaves (:func:`jaxmem.models.abstract_params`), the method adds its
own, and the sharded train step is lowered and compiled on a ``data x fsdp`` mesh, so a model
far larger than this machine's memory is measured too. Params, gradients and optimizer state
are exact bytes per device (each leaf's shard shape); the step's temporaries come from XLA's
``compile().memory_analysis()``. On a CPU, forced host devices stand in for accelerators
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``, read when JAX's backend starts):
:func:`measure` runs the compile in a child process that sets it when this process has too few
devices. The CPU compiler fuses and schedules differently from a GPU's or TPU's, so the
temporaries approximate accelerator memory.

``layers="slice"`` compiles a 1-layer and a 2-layer copy of the model and extrapolates the
temporaries linearly in depth (the decoder scans over its layers, so the activations kept for
the backward pass grow by one layer's worth per layer); the exact state bytes are always
computed at full depth. ``docs/plans.md`` records how close it comes to a full compile.

Example:
    >>> from jaxmem.models import ModelConfig
    >>> cfg = ModelConfig(arch="llama", vocab_size=64, d_model=32, n_layers=2, n_heads=4,
    ...                   n_kv_heads=4, d_ff=64, max_positions=64)
    >>> row = step_memory(cfg, "lora", batch=2, seq_len=16)  # doctest: +SKIP
    >>> row["total"] > row["params"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

GiB = 2 ** 30


def _mesh_sizes(layout: str) -> tuple[int, int]:
    """``"4x2"`` -> (4, 2); ``"x8"`` -> (1, 8); ``"1"``, ``"none"`` or ``""`` -> (1, 1)."""
    spec = str(layout or "").strip().lower()
    if spec in ("", "none", "1", "1 device"):
        return 1, 1
    data, sep, fsdp = spec.partition("x")
    try:
        if not sep:
            raise ValueError
        d, f = int(data) if data else 1, int(fsdp)
        if d < 1 or f < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"Mesh {layout!r}: give DATAxFSDP (e.g. 4x2), xFSDP (1 x FSDP, e.g. "
                         "x8) or 1 (one device); a plan has no devices to count, so 'auto' "
                         "needs the sizes spelled out.") from None
    return d, f


def mesh_devices(layout: str) -> int:
    """The number of devices of a mesh spec (see :func:`_mesh_sizes`)."""
    d, f = _mesh_sizes(layout)
    return d * f


def _abstract_method(method: str, cfg):
    """(abstract params with the method's leaves added, labels). A prefix initialized from
    activations has the shapes of PEFT's initialization (no tokenizer needed)."""
    import flax.linen as nn
    import jax
    import numpy as np

    from jaxmem.models import abstract_params
    from jaxmem.tuning import init_method, method_config

    mcfg = method_config(method)
    if getattr(mcfg, "init", None) == "activations":
        mcfg = dataclasses.replace(mcfg, init="peft")
    base = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        nn.unbox(abstract_params(cfg)))
    labels = {}

    def init(base):  # traced: a method may compute from base weights (head copies wte)
        params, labels["tree"] = init_method(mcfg, base, cfg, jax.random.PRNGKey(0), None)
        return params

    params = jax.eval_shape(init, base)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype),
                        params), labels["tree"]


def step_memory(cfg, method: str, *, batch: int, seq_len: int, layout: str = "1",
                remat: str = "none", dtype: str = "float32") -> dict:
    """One compile of the (sharded) train step in this process; bytes per device.

    Returns a dict: ``params``, ``optimizer``, ``gradients`` (exact), ``temporaries`` (XLA's),
    ``total`` (arguments + temporaries: the step's outputs are donated into its inputs),
    ``trainable`` (parameter count), ``compile_s``.
    """
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

    from jaxmem import sharding as sh
    from jaxmem.optim import OptimConfig, make_optimizer
    from jaxmem.train_step import make_train_step
    from jaxmem.tuning.partition import count

    data, fsdp = _mesh_sizes(layout)
    if data * fsdp > jax.device_count():
        raise ValueError(f"Mesh {layout} needs {data * fsdp} devices; this process has "
                         f"{jax.device_count()} (use measure(), which starts a child process).")
    if batch % (data * fsdp):  # the batch is split over both axes (sharding.BATCH_AXES)
        raise ValueError(f"batch {batch} is not a multiple of the mesh's {data * fsdp} devices.")
    params, labels = _abstract_method(method, cfg)
    tx = make_optimizer(OptimConfig(), labels, 100)
    opt = jax.eval_shape(tx.init, params)
    step = make_train_step(dataclasses.replace(cfg, remat=remat), tx, labels, dtype=dtype)
    if data * fsdp == 1:
        one = SingleDeviceSharding(jax.devices()[0])
        p_sh, o_sh = (jax.tree.map(lambda _: one, t) for t in (params, opt))
        b_sh, fn = one, step
    else:
        mesh = sh.make_mesh(data, fsdp, devices=jax.devices()[:data * fsdp])
        p_sh = sh.param_shardings(params, mesh, cfg)
        o_sh = sh.opt_state_shardings(opt, p_sh)
        b_sh = NamedSharding(mesh, P(None, sh.BATCH_AXES, None))
        fn = sh.shard_step(step, p_sh, o_sh, mesh)

    def per_device(tree, shardings) -> int:
        return sum(int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
                   for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))

    def abstract(tree, shardings):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            tree, shardings)

    trainable = [(x, s) for x, s, lab in zip(jax.tree.leaves(params), jax.tree.leaves(p_sh),
                                              jax.tree.leaves(labels)) if lab == "trainable"]
    ids = jax.ShapeDtypeStruct((1, batch, seq_len), np.int32, sharding=b_sh)
    t0 = time.perf_counter()
    compiled = fn.lower(abstract(params, p_sh), abstract(opt, o_sh), ids, ids,
                        jax.random.PRNGKey(0)).compile()
    m = compiled.memory_analysis()
    return {"params": per_device(params, p_sh), "optimizer": per_device(opt, o_sh),
            "gradients": per_device([x for x, _ in trainable], [s for _, s in trainable]),
            "temporaries": int(m.temp_size_in_bytes),
            "total": int(m.argument_size_in_bytes + m.temp_size_in_bytes),
            "trainable": int(count(params, labels)),
            "compile_s": round(time.perf_counter() - t0, 1)}


SLICE_DEPTHS = (2, 4)


def sliced_memory(cfg, method: str, depths: tuple = SLICE_DEPTHS, **kw) -> dict:
    """:func:`step_memory` from two shallow copies of the model (``depths`` layers; not 1: XLA
    special-cases a one-step scan), every byte count extrapolated linearly to
    ``cfg.n_layers``. The state bytes are linear in depth (every layer has the same leaves),
    so only the temporaries are an extrapolation."""
    lo, hi = depths
    if cfg.n_layers <= hi:
        return step_memory(cfg, method, **kw)
    a, b = (step_memory(dataclasses.replace(cfg, n_layers=n), method, **kw) for n in depths)
    scale = (cfg.n_layers - lo) / (hi - lo)
    out = {k: int(a[k] + scale * (b[k] - a[k]))
           for k in ("params", "optimizer", "gradients", "temporaries", "total", "trainable")}
    out["compile_s"] = round(a["compile_s"] + b["compile_s"], 1)
    return out


def _config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _config_from(d: dict):
    from jaxmem.models import ModelConfig

    if d.get("rope_scaling") is not None:
        d = {**d, "rope_scaling": tuple(tuple(p) for p in d["rope_scaling"])}
    return ModelConfig(**d)


def _run_jobs(jobs: list[dict]) -> list[dict]:
    out = []
    for j in jobs:
        fn = sliced_memory if j.pop("slice", False) else step_memory
        out.append(fn(_config_from(j.pop("cfg")), j.pop("method"), **j))
    return out


def measure(jobs: list[dict], *, devices: int | None = None) -> list[dict]:
    """Runs compile-only memory jobs, each a dict of :func:`step_memory`'s arguments (``cfg`` a
    ModelConfig, ``method``, ``batch``, ``seq_len``, ``layout``, ``remat``, ``dtype``) plus
    ``slice`` (True: :func:`sliced_memory`). In this process when it already has the devices
    the largest mesh needs (or JAX has not started and ``XLA_FLAGS`` can still ask for them);
    else in a child process with that many forced CPU devices."""
    need = max([mesh_devices(j.get("layout", "1")) for j in jobs] + [devices or 1])
    payload = [{**j, "cfg": _config_dict(j["cfg"])} for j in jobs]
    if "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "device_count" not in flags:
            os.environ["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count="
                                       f"{need}").strip()
    import jax

    if jax.device_count() >= need:
        return _run_jobs(payload)
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if "force_host_platform_device_count" not in f)
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={need}".strip()}
    proc = subprocess.run([sys.executable, "-m", "jaxmem.step_memory"], input=json.dumps(payload),
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"the compile-only memory pass failed in its child process: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # the child process of measure(): jobs on stdin, results on stdout
    print(json.dumps(_run_jobs(json.loads(sys.stdin.read()))))


__all__ = ["GiB", "SLICE_DEPTHS", "measure", "mesh_devices", "sliced_memory", "step_memory"]
