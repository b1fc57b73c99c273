"""SPMD sharding (data x FSDP): equal results to one device, resharding checkpoints, memory.

The sharded runs need several devices, and this pytest process already started jax with one. So
one subprocess, started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (8 CPU
devices), runs everything sharded and on one device, and prints its measurements as one JSON
line; the tests below assert on them. Run with ``-s`` to see the memory figures.
"""

import json
import os
import subprocess
import sys

import jax
import pytest
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from jaxmem import sharding as sh

SCRIPT = r'''
import json, sys, time
import jax, numpy as np

from jaxmem import sharding as sh
from jaxmem.models import ModelConfig, init_params
from jaxmem.optim import OptimConfig, make_optimizer
from jaxmem.scoring import token_stats
from jaxmem.train_step import make_train_step
from jaxmem.tuning import init_method
from jaxmem.tuning.partition import TRAINABLE

t_start = time.perf_counter()
assert jax.device_count() == 8, jax.devices()
out = {}
ckpt_dir = sys.argv[1]
# tiny Llama with GQA (4 query heads, 2 KV heads), untied head; every dim divisible by 8
cfg = ModelConfig(arch="llama", vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                  d_ff=128, max_positions=64, tie_embeddings=False)
base = jax.tree.map(np.asarray, init_params(cfg, jax.random.PRNGKey(0)))
rng = np.random.default_rng(0)
ids = rng.integers(1, cfg.vocab_size, (2, 8, 16)).astype(np.int32)   # [A, B, T]
mask = np.ones_like(ids)
mask[0, 1, 9:] = 0
mask[1, 5, 3:] = 0
mesh = sh.make_mesh(data=4, fsdp=2)
dev0 = jax.devices()[0]


def max_rel(a, b):
    err = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        err = max(err, float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12)))
    return err


def allclose_ratio(a, b, rtol=1e-5, atol=1e-6):
    """max |a - b| / (atol + rtol |b|) over all leaves: <= 1 is np.allclose (the tolerances of
    test_train's grad-accumulation test)."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float((np.abs(x - y) / (atol + rtol * np.abs(y))).max()))
    return worst


def specs(tree):
    return [str(getattr(x.sharding, "spec", "single device")) for x in jax.tree.leaves(tree)]


def mem(compiled):
    m = compiled.memory_analysis()
    return {k: int(getattr(m, k + "_size_in_bytes", -1)) for k in ("argument", "output", "temp")}


timing = out["seconds_per_part"] = {}
for method in ("full", "lora"):
    t = time.perf_counter()
    params, labels = init_method(method, base, cfg, jax.random.PRNGKey(1))
    params = jax.tree.map(np.asarray, params)
    # Adam's first update is g / (|g| + eps): with eps = 1e-8, gradient entries near 1e-8 turn
    # float32 summation-order noise (any change of reduction order does it, on one device too)
    # into visible weight differences. eps = 1e-4 keeps the update smooth in g, so the
    # comparison measures the sharding, not Adam's conditioning.
    tx = make_optimizer(OptimConfig(lr=1e-3, eps=1e-4), labels, 10)
    step = make_train_step(cfg, tx, labels)
    keys = [jax.random.PRNGKey(s) for s in range(2)]
    r = out[method] = {}

    # one device
    p1 = jax.device_put(params, dev0)
    o1 = tx.init(p1)
    r["opt_bytes_single"] = sh.device_bytes(o1, dev0)
    r["param_bytes_single"] = sh.device_bytes(p1, dev0)
    compiled = step.lower(p1, o1, ids, mask, keys[0]).compile()
    r["mem_single"] = mem(compiled)
    for k in keys:
        p1, o1, l1 = compiled(p1, o1, ids, mask, k)

    # sharded, the trainer's jitted step as it is: it follows the input shardings
    psh = sh.param_shardings(params, mesh, cfg, min_size=0)
    p2 = jax.device_put(params, psh)
    o2 = tx.init(p2)
    osh = sh.opt_state_shardings(o2, psh)
    o2 = jax.device_put(o2, osh)
    bids, bmask = sh.shard_batch(ids, mask, mesh)
    r["opt_bytes_sharded"] = sh.device_bytes(o2, dev0)
    r["param_bytes_sharded"] = sh.device_bytes(p2, dev0)
    r["batch_spec"] = repr(tuple(bids.sharding.spec))
    r["batch_rows_per_device"] = int(bids.addressable_shards[0].data.shape[1])
    for k in keys:
        p2, o2, l2 = step(p2, o2, bids, bmask, k)
    r["plain_jit_keeps_param_specs"] = specs(p2) == specs(jax.device_put(params, psh))

    # sharded with the layout pinned (shard_step)
    p3 = jax.device_put(params, psh)
    o3, osh3 = sh.init_opt_state(tx, p3, psh)
    r["init_opt_state_specs_equal"] = ([str(s.spec) for s in jax.tree.leaves(osh3)] ==
                                       [str(s.spec) for s in jax.tree.leaves(osh)] == specs(o3))
    pinned = sh.shard_step(step, psh, osh, mesh).lower(p3, o3, bids, bmask, keys[0]).compile()
    r["mem_sharded"] = mem(pinned)
    for k in keys:
        p3, o3, l3 = pinned(p3, o3, bids, bmask, k)
    r["pinned_keeps_param_specs"] = specs(p3) == [str(s.spec) for s in jax.tree.leaves(psh)]
    r["pinned_keeps_opt_specs"] = specs(o3) == [str(s.spec) for s in jax.tree.leaves(osh)]
    r["n_sharded_param_leaves"] = sum(s.spec != jax.sharding.PartitionSpec()
                                      for s in jax.tree.leaves(psh))
    r["n_param_leaves"] = len(jax.tree.leaves(psh))
    r["err_params_plain"] = max_rel(p2, p1)
    r["err_params_pinned"] = max_rel(p3, p1)
    r["close_params_plain"] = allclose_ratio(p2, p1)
    r["close_params_pinned"] = allclose_ratio(p3, p1)
    r["close_opt_pinned"] = allclose_ratio(o3, o1)
    r["changed"] = max(float(np.abs(np.asarray(a) - b).max())
                       for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(params)))
    r["loss"] = [float(l1), float(l2), float(l3)]
    # what the optimizer state holds
    trainable = [x for x, l in zip(jax.tree.leaves(params), jax.tree.leaves(labels))
                 if l == TRAINABLE]
    r["n_trainable"] = int(sum(x.size for x in trainable))
    r["n_params"] = int(sum(x.size for x in jax.tree.leaves(params)))
    r["opt_state_elements"] = int(sum(x.size for x in jax.tree.leaves(o1) if x.ndim > 0))
    r["opt_state_arrays"] = int(sum(1 for x in jax.tree.leaves(o1) if x.ndim > 0))
    r["n_trainable_leaves"] = len(trainable)
    if method == "full":
        full_state = {"params": p3, "opt_state": o3}
        full_params, full_labels = params, labels
    timing[method] = time.perf_counter() - t

# scoring: per-example statistics, sharded over the batch (both axes, and "data" only)
t = time.perf_counter()
sids, smask = ids.reshape(16, 16)[:8], mask.reshape(16, 16)[:8]
ref = jax.device_get(token_stats(jax.device_put(base, dev0), cfg, sids, smask))
psh = sh.param_shardings(base, mesh, cfg, min_size=0)
pb = jax.device_put(base, psh)
out["score"] = {}
for name, axes in (("data+fsdp", sh.BATCH_AXES), ("data", "data")):
    got = jax.device_get(token_stats(pb, cfg, *sh.shard_batch(sids, smask, mesh, axes=axes)))
    m = ref.mask
    out["score"][name] = {
        "mask_equal": bool((got.mask == m).all()),
        **{k: max_rel(getattr(got, k)[m], getattr(ref, k)[m]) for k in ("logp", "mu", "sigma")},
        "nll_per_example": max_rel(-(got.logp * m).sum(1), -(ref.logp * m).sum(1))}

timing["scoring"] = time.perf_counter() - t

# checkpoints: write on 4 x 2, read onto 2 x 4, 8 x 1 and one device
t = time.perf_counter()
path = ckpt_dir + "/full_4x2"
sh.save_checkpoint(path, full_state)
expect = jax.device_get(full_state)
out["ckpt"] = {"save_s": time.perf_counter() - t}
for name, target in (("2x4", sh.make_mesh(2, 4)), ("8x1", sh.make_mesh(8, 1)), ("single", None)):
    if target is None:
        shard = jax.sharding.SingleDeviceSharding(jax.devices()[3])
        shardings = jax.tree.map(lambda _: shard, full_state)
    else:
        p_sh = sh.param_shardings(full_params, target, cfg, min_size=0)
        shardings = {"params": p_sh,
                     "opt_state": sh.opt_state_shardings(full_state["opt_state"], p_sh)}
    got = sh.restore_checkpoint(path, full_state, shardings)
    equal = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(got)),
                                                     jax.tree.leaves(expect)))
    placed = all(a.sharding.is_equivalent_to(s, a.ndim)
                 for a, s in zip(jax.tree.leaves(got), jax.tree.leaves(shardings)))
    out["ckpt"][name] = {"equal": equal, "shardings_as_asked": placed,
                         "specs": sorted(set(specs(got["params"])))}
timing["checkpoints"] = time.perf_counter() - t
out["seconds"] = time.perf_counter() - t_start
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Runs SCRIPT on 8 host devices; returns its JSON results."""
    d = tmp_path_factory.mktemp("sharding")
    script = d / "run_sharded.py"
    script.write_text(SCRIPT)
    # 8 CPU devices; skipping LLVM's code optimizations halves compile time here
    flags = os.environ.get("XLA_FLAGS", "") + (" --xla_force_host_platform_device_count=8"
                                               " --xla_backend_optimization_level=0")
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(script), str(d)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, f"sharded run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    _print_memory(res)
    return res


def _print_memory(res):
    mib = lambda b: f"{b / 2**20:.3f} MiB"  # noqa: E731
    print(f"\nsharded subprocess: {res['seconds']:.1f} s {res['seconds_per_part']}")
    for method in ("full", "lora"):
        r = res[method]
        print(f"{method}: trainable {r['n_trainable']:,} of {r['n_params']:,} params; "
              f"optimizer state {r['opt_state_arrays']} arrays, {r['opt_state_elements']:,} "
              f"elements")
        print(f"  per device, 1 device -> 4x2 mesh: params {mib(r['param_bytes_single'])} -> "
              f"{mib(r['param_bytes_sharded'])}, optimizer state {mib(r['opt_bytes_single'])} "
              f"-> {mib(r['opt_bytes_sharded'])}")
        print(f"  compiled step memory_analysis (bytes) 1 device {r['mem_single']} -> "
              f"4x2 mesh {r['mem_sharded']}")


# ----------------------------------------------------------------------------- in this process

def test_make_mesh_needs_all_devices():
    n = jax.device_count()
    mesh = sh.make_mesh()
    assert mesh.axis_names == ("data", "fsdp") and mesh.shape["data"] == n
    with pytest.raises(ValueError, match="must use all"):
        sh.make_mesh(data=n + 1)
    with pytest.raises(ValueError, match="must use all"):
        sh.make_mesh(data=n, fsdp=2)


def test_logical_rules():
    """LOGICAL_RULES on logical names: the model dimension ("embed") goes to "fsdp"."""
    mesh = jax.sharding.AbstractMesh((2, 4), ("data", "fsdp"))
    up = ("layers", "embed", "mlp")
    assert sh.mesh_spec(up, (30, 64, 256), mesh, min_size=0) == P(None, "fsdp", None)
    assert sh.mesh_spec(("layers", "mlp", "embed"), (30, 256, 64), mesh, min_size=0) == \
        P(None, None, "fsdp")
    # a dimension the mesh does not divide stays whole; the layer axis is never split
    assert sh.mesh_spec(up, (32, 63, 256), mesh, min_size=0) == P()
    assert sh.mesh_spec(("layers", "norm"), (32, 64), mesh, min_size=0) == P()
    assert sh.mesh_spec(("layers", "adapter", "adapter_out"), (32, 64, 8), mesh, min_size=0) == P()
    # embedding tables and the head: the model dimension, never the vocabulary
    assert sh.mesh_spec(("vocab", "embed"), (1000, 64), mesh, min_size=0) == P(None, "fsdp")
    assert sh.mesh_spec(("embed", "vocab"), (64, 1000), mesh, min_size=0) == P("fsdp", None)
    assert sh.mesh_spec(("vocab", "embed"), (100, 64), mesh) == P()  # under min_size
    one = jax.sharding.AbstractMesh((8, 1), ("data", "fsdp"))
    assert sh.mesh_spec(("vocab", "embed"), (1000, 64), one, min_size=0) == P()
    assert sh.mesh_spec(("batch", None), (16, 8), mesh, min_size=0) == P(("data", "fsdp"), None)


@pytest.mark.parametrize("method", ["full", "lora", "ia3", "prefix", "prompt", "ptuning"])
def test_layout_of_params_and_optimizer_state(method):
    """The layout rules on real trees, on an abstract 4 x 2 mesh (no devices needed)."""
    from jaxmem.models import ModelConfig, init_params, logical_axes
    from jaxmem.optim import OptimConfig, make_optimizer
    from jaxmem.tuning import init_method

    cfg = ModelConfig(arch="llama", vocab_size=256, d_model=64, n_layers=2, n_heads=4,
                      n_kv_heads=2, d_ff=128, max_positions=64, tie_embeddings=False)
    params, labels = init_method(method, init_params(cfg, jax.random.PRNGKey(0)), cfg)
    mesh = jax.sharding.AbstractMesh((4, 2), ("data", "fsdp"))
    p_sh = sh.param_shardings(params, mesh, cfg, min_size=0)
    logical = traverse_util.flatten_dict(logical_axes(params, cfg))
    n_adapter = 0
    for path, s in traverse_util.flatten_dict(p_sh).items():
        if "adapter" in logical[path] or path[-1] in ("scale", "lora_scale"):
            assert s.spec == P(), path  # adapters and norm scales: replicated
            n_adapter += "adapter" in logical[path]
        elif path[-1] == "kernel" and path[0] == "layers":  # [L, in, out]: the model dim
            d = list(logical[path]).index("embed")
            assert s.spec == P(*[("fsdp" if i == d else None) for i in range(3)]), path
    assert n_adapter > 0 or method == "full"
    assert p_sh["wte"].spec == P(None, "fsdp") and p_sh["lm_head"]["kernel"].spec == P("fsdp", None)
    tx = make_optimizer(OptimConfig(), labels, 10)
    o_sh = sh.opt_state_shardings(jax.eval_shape(tx.init, params), p_sh)
    moments = {sh._path(k)[-4:]: s.spec for k, s in jax.tree_util.tree_leaves_with_path(o_sh)}
    q = ("layers", "attn", "q_proj", "kernel")
    if method == "full":  # Adam moments follow their weight
        assert moments[q] == P(None, "fsdp", None)
    else:  # no moment exists for a frozen weight, and the adapters' are replicated
        assert q not in moments and all(v == P() for v in moments.values())


# ----------------------------------------------------------------------------- 8 devices

@pytest.mark.parametrize("method", ["full", "lora"])
def test_sharded_train_step_equals_single_device(sharded, method):
    r = sharded[method]
    assert r["changed"] > 1e-4  # the steps did move the weights
    # np.allclose(sharded, single, rtol=1e-5, atol=1e-6) for every weight and Adam moment
    assert r["close_params_plain"] <= 1 and r["close_params_pinned"] <= 1, r
    assert r["close_opt_pinned"] <= 1, r
    assert r["err_params_pinned"] < 1e-4, r  # relative to each leaf's largest entry
    l1, l2, l3 = r["loss"]
    assert abs(l2 - l1) < 1e-5 * abs(l1) and abs(l3 - l1) < 1e-5 * abs(l1)
    assert r["pinned_keeps_param_specs"] and r["pinned_keeps_opt_specs"]
    assert r["init_opt_state_specs_equal"]
    assert r["batch_spec"] == "(None, ('data', 'fsdp'), None)"
    assert r["batch_rows_per_device"] == 1  # 8 examples over 8 devices


def test_fsdp_shards_weights_and_full_ft_optimizer_state(sharded):
    full = sharded["full"]
    assert full["n_sharded_param_leaves"] >= 8  # 7 layer kernels + embedding + head
    # fsdp = 2: weights and Adam moments take about half the bytes per device
    assert full["param_bytes_sharded"] < 0.6 * full["param_bytes_single"]
    assert full["opt_bytes_sharded"] < 0.6 * full["opt_bytes_single"]
    assert full["mem_sharded"]["argument"] < 0.6 * full["mem_single"]["argument"]


def test_lora_optimizer_state_holds_nothing_for_frozen_weights(sharded):
    r = sharded["lora"]
    assert r["opt_state_elements"] == 2 * r["n_trainable"]  # Adam mu, nu of the LoRA leaves
    assert r["opt_state_arrays"] == 2 * r["n_trainable_leaves"]
    assert r["opt_bytes_single"] <= 2 * 4 * r["n_trainable"] + 64  # + the step counts
    assert r["opt_bytes_sharded"] == r["opt_bytes_single"]  # adapters replicated
    assert r["param_bytes_sharded"] < 0.6 * r["param_bytes_single"]  # frozen base sharded


@pytest.mark.parametrize("axes", ["data+fsdp", "data"])
def test_sharded_scoring_equals_single_device(sharded, axes):
    r = sharded["score"][axes]
    assert r["mask_equal"]
    for k in ("logp", "mu", "sigma", "nll_per_example"):
        assert r[k] < 1e-5, (k, r)


@pytest.mark.parametrize("target", ["2x4", "8x1", "single"])
def test_checkpoint_restores_onto_another_mesh(sharded, target):
    r = sharded["ckpt"][target]
    assert r["equal"] and r["shardings_as_asked"], r
    if target == "2x4":
        assert len(r["specs"]) > 1  # replicated and split leaves: really sharded there


def test_parse_mesh_specs():
    assert sh.is_main_process()
    sh.initialize_distributed(False)  # disabled: a no-op
    n = jax.device_count()
    assert sh.parse_mesh(None) is None and sh.parse_mesh("none") is None
    assert dict(sh.parse_mesh("auto").shape) == {"data": n, "fsdp": 1}
    assert dict(sh.parse_mesh(f"{n}x1").shape) == {"data": n, "fsdp": 1}
    assert dict(sh.parse_mesh("x1").shape) == {"data": n, "fsdp": 1}
    with pytest.raises(ValueError, match="is not 'auto'"):
        sh.parse_mesh("four")
    with pytest.raises(ValueError, match="must use all"):
        sh.parse_mesh(f"{n + 1}x2")
