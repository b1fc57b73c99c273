"""Every jitted entry point lowers for TPU and CUDA in bfloat16 compute (issue 23, item 1).

``jax.export`` lowers for platforms this CPU host lacks (:mod:`jaxmem.lowering`). Each test
exports one entry point for ``("tpu", "cuda")`` over abstract arguments of a tiny model and
reads the StableHLO: no float64, no host callback, matmuls in bfloat16, and (unsharded) no
collective. The sharded step runs in one subprocess with 8 forced CPU devices (as
``test_sharding``): the exported module keeps the FSDP layout of params and optimizer state,
and the compiled module (the SPMD partitioner that TPU and GPU compilers run too) never
gathers a whole stack of layer weights. The attention kernel choice is checked per platform:
cuDNN is refused where it cannot run, and decoding falls back to the XLA kernel.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from jaxmem import dp as dpsgd
from jaxmem import lowering, tiny_model
from jaxmem.generate import GenerateConfig, generate_batch
from jaxmem.models.transformer import KVCache, cast_params, head_weight, hidden_states, project
from jaxmem.optim import OptimConfig, make_optimizer
from jaxmem.references import make_reference_step, param_axes
from jaxmem.scoring import token_stats
from jaxmem.train_step import make_train_step
from jaxmem.tuning import METHODS, init_method, method_config
from jaxmem.tuning.partition import TRAINABLE

A, B, T, K = 2, 4, 16, 3  # micro-batches, rows, tokens, reference models
IDS = jax.ShapeDtypeStruct((A, B, T), jnp.int32)
KEY = jax.ShapeDtypeStruct((2,), jnp.uint32)
ON_GPU = jax.default_backend() == "gpu"


@pytest.fixture(scope="module")
def tiny():
    base, cfg, tok = tiny_model()
    return base, cfg, tok


def method_setup(tiny, method, attention_impl="einsum"):
    base, cfg, tok = tiny
    # init with the default kernel: init_method runs a float32 forward, which "cudnn" refuses
    # (see test_init_method_with_cudnn_config)
    params, labels = init_method(method_config(method), base, cfg, jax.random.PRNGKey(0), tok)
    cfg = dataclasses.replace(cfg, attention_impl=attention_impl)
    tx = make_optimizer(OptimConfig(), labels, total_steps=10)
    ap = lowering.abstract(params)
    return cfg, labels, tx, ap, jax.eval_shape(tx.init, ap)


def check_hot_path(exp, *, collectives=False, f32_probs=False):
    """The StableHLO of an exported entry point is fit for an accelerator's hot path.
    ``f32_probs``: jax's "xla" attention multiplies float32 probabilities into bf16 values
    (``jax.nn.dot_product_attention``'s own choice, jax 0.10): the only non-bf16 dots allowed."""
    assert exp.platforms == lowering.PLATFORMS
    info = lowering.findings(exp.mlir_module())
    assert not info["f64"], info["f64"][:5]
    assert not info["host_callbacks"], info["host_callbacks"]
    assert info["dots"], "no matmul: the module is not the model"
    mixed = info["dots_not_in"]("bf16")
    assert not mixed or f32_probs and set(mixed) == {("f32", "bf16")}, mixed[:5]
    if not collectives:
        assert not info["collectives"], info["collectives"]
    return info


@pytest.mark.parametrize("dp", [False, True], ids=["plain", "dp"])
@pytest.mark.parametrize("method", list(METHODS))
def test_train_step_lowers(tiny, method, dp):
    cfg, labels, tx, ap, ao = method_setup(tiny, method)
    step = make_train_step(cfg, tx, labels, dtype="bfloat16",
                           dp=dpsgd.DPStep(clip=1.0, sigma=1.0, batch=A * B) if dp else None)
    exp = lowering.export_for(step, ap, ao, IDS, IDS, KEY)
    check_hot_path(exp)
    # the master weights and optimizer state stay float32 in and out (bf16 is compute only)
    assert {str(a.dtype) for a in exp.in_avals[:len(jax.tree.leaves(ap))]} == {"float32"}


def test_scoring_pass_lowers(tiny):
    base, cfg, _ = tiny
    ids = jax.ShapeDtypeStruct((B, T), jnp.int32)
    exp = lowering.export_for(token_stats, lowering.abstract(base), cfg, ids, ids,
                              dtype="bfloat16")
    check_hot_path(exp)
    assert [str(a.dtype) for a in exp.out_avals] == ["float32"] * 3 + ["bool"] * 2


def decode_step(params, cfg, cache, tok):
    """One decoding step with the KV cache, as :func:`jaxmem.generate.generate_batch` runs it
    in its loop (bf16 params, one new token per row)."""
    h, cache = hidden_states(params, cfg, tok, jnp.ones_like(tok), dtype=jnp.bfloat16,
                             cache=cache, continuing=True)
    return project(h[:, -1], *head_weight(params)).astype(jnp.float32), cache


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_decode_step_with_kv_cache_lowers(tiny, method):
    base, cfg, tok = tiny
    params, _ = init_method(method_config(method), base, cfg, jax.random.PRNGKey(0), tok)
    ap = lowering.abstract(jax.eval_shape(lambda p: cast_params(p, jnp.bfloat16), params))
    cache = jax.eval_shape(lambda: KVCache.empty(cfg, B, 40, jnp.bfloat16))
    step = jax.jit(decode_step, static_argnums=1)
    exp = lowering.export_for(step, ap, cfg, cache, jax.ShapeDtypeStruct((B, 1), jnp.int32))
    check_hot_path(exp)
    assert exp.out_avals[1].dtype == jnp.bfloat16  # the cache stays in the compute dtype


@pytest.mark.parametrize("impl", ["einsum", "xla", "cudnn"])
def test_generate_lowers_and_decoding_falls_back_from_cudnn(tiny, impl):
    """The whole of generate_batch (prefill, then the decode loop); with attention_impl
    "cudnn" it decodes with the XLA kernel (documented there), so it lowers for TPU too."""
    base, cfg, _ = tiny
    cfg = dataclasses.replace(cfg, attention_impl=impl)
    ids = jax.ShapeDtypeStruct((B, 8), jnp.int32)
    gcfg = GenerateConfig(max_new_tokens=4, dtype="bfloat16")
    exp = lowering.export_for(generate_batch, lowering.abstract(base), cfg, ids, ids, KEY,
                              gcfg)
    info = check_hot_path(exp, f32_probs=impl != "einsum")
    assert not [t for t in info["custom_calls"] if "cudnn" in t.lower()]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_vmapped_reference_step_lowers(tiny, method):
    cfg, labels, tx, ap, _ = method_setup(tiny, method)
    axes = param_axes(labels)
    stacked = jax.tree.map(lambda lab, x: jax.ShapeDtypeStruct((K, *x.shape), x.dtype)
                           if lab == TRAINABLE else x, labels, ap)
    opt = jax.eval_shape(jax.vmap(tx.init, in_axes=(axes,)), stacked)
    step = make_reference_step(cfg, tx, labels, dtype="bfloat16")
    ids = jax.ShapeDtypeStruct((K, A, B, T), jnp.int32)
    exp = lowering.export_for(step, stacked, opt, ids, ids,
                              jax.ShapeDtypeStruct((K, 2), jnp.uint32))
    check_hot_path(exp)
    assert exp.out_avals[-1].shape == (K,)  # one loss per reference model


# ----------------------------------------------------------------------------- attention kernels

@pytest.mark.parametrize("impl", ["einsum", "xla"])
def test_portable_attention_kernels_lower_everywhere(tiny, impl):
    cfg, labels, tx, ap, ao = method_setup(tiny, "lora", attention_impl=impl)
    step = make_train_step(cfg, tx, labels, dtype="bfloat16")
    info = check_hot_path(lowering.export_for(step, ap, ao, IDS, IDS, KEY),
                          f32_probs=impl == "xla")
    assert not info["custom_calls"]  # plain StableHLO: no vendor kernel on either platform


@pytest.mark.parametrize("platforms", [("tpu",), ("tpu", "cuda")])
def test_cudnn_attention_is_refused_for_tpu(tiny, platforms):
    """cuDNN does not exist on TPU: a step with attention_impl="cudnn" must not lower for it.
    On a host without a GPU jax cannot even trace the cuDNN call, so the refusal is jaxmem's
    RuntimeError naming the way out (on a GPU host, the platform check below)."""
    if ON_GPU:
        pytest.skip("on a GPU host jaxmem traces the cuDNN call (the check reads the host)")
    cfg, labels, tx, ap, ao = method_setup(tiny, "lora", attention_impl="cudnn")
    step = make_train_step(cfg, tx, labels, dtype="bfloat16")
    with pytest.raises(RuntimeError, match="needs an NVIDIA GPU with cuDNN.*'xla' or 'einsum'"):
        lowering.export_for(step, ap, ao, IDS, IDS, KEY, platforms=platforms)


def test_cudnn_attention_for_cuda_needs_a_gpu_host_and_bf16(tiny):
    """For CUDA alone: refused on a host without a GPU (jax's cuDNN call needs the library at
    trace time too), and float32 compute is refused on any host with a clear message."""
    cfg, labels, tx, ap, ao = method_setup(tiny, "lora", attention_impl="cudnn")
    f32 = make_train_step(cfg, tx, labels, dtype="float32")
    with pytest.raises(ValueError, match="needs bfloat16 or float16 compute"):
        lowering.export_for(f32, ap, ao, IDS, IDS, KEY, platforms=("cuda",))
    step = make_train_step(cfg, tx, labels, dtype="bfloat16")
    if ON_GPU:
        exp = lowering.export_for(step, ap, ao, IDS, IDS, KEY, platforms=("cuda",))
        assert any("cudnn" in t.lower() for t in lowering.findings(exp.mlir_module())[
            "custom_calls"])
    else:
        with pytest.raises(RuntimeError, match="needs an NVIDIA GPU with cuDNN"):
            lowering.export_for(step, ap, ao, IDS, IDS, KEY, platforms=("cuda",))


def test_auto_attention_lowers_everywhere_without_cudnn_on_this_host(tiny):
    """"auto" on a host without cuDNN is the XLA kernel for every platform."""
    cfg, labels, tx, ap, ao = method_setup(tiny, "lora", attention_impl="auto")
    step = make_train_step(cfg, tx, labels, dtype="bfloat16")
    info = check_hot_path(lowering.export_for(step, ap, ao, IDS, IDS, KEY), f32_probs=True)
    assert not info["custom_calls"]


@pytest.fixture
def gpu_host_stand_in(monkeypatch):
    """As on a GPU host, with the cuDNN kernel replaced by a stand-in that this CPU host can
    trace (jax's cuDNN call needs the library at trace time): the XLA kernel times 2, so the
    branch a platform ran is visible in the output."""
    from jaxmem.models import attention

    monkeypatch.setattr(attention, "_gpu_backend", lambda: True)
    monkeypatch.setattr(attention, "_cudnn_kernel",
                        lambda q, k, v, m: 2 * attention._xla_attention(q, k, v, m))
    return attention


def test_attention_kernel_is_chosen_per_platform_at_lowering(gpu_host_stand_in):
    """One program exported for (cpu, tpu, cuda): "auto" holds a platform switch with the
    cuDNN kernel for CUDA and XLA's elsewhere (run here on CPU: XLA's result); explicit
    "cudnn" has no branch for other platforms, so lowering it for TPU fails naming TPU."""
    attention = gpu_host_stand_in
    b, t, h, dh = 2, 8, 4, 16
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (b, t, h, dh), jnp.bfloat16)
               for i in range(3))
    mask = jnp.tril(jnp.ones((t, t), bool))[None].repeat(b, 0)
    auto = jax.jit(lambda *a: attention.attention(*a, impl="auto"))
    exp = lowering.export_for(auto, q, k, v, mask, platforms=("cpu", "tpu", "cuda"))
    assert exp.platforms == ("cpu", "tpu", "cuda")
    xla = lowering.export_for(jax.jit(lambda *a: attention.attention(*a, impl="xla")),
                              q, k, v, mask, platforms=("cpu", "tpu", "cuda"))
    # the platform switch is in the program
    assert exp.mlir_module().count("stablehlo.case") > xla.mlir_module().count("stablehlo.case")
    want = attention.attention(q, k, v, mask, impl="xla")
    assert jnp.array_equal(exp.call(q, k, v, mask), want)  # CPU took the XLA branch
    cudnn = jax.jit(lambda *a: attention.attention(*a, impl="cudnn"))
    lowering.export_for(cudnn, q, k, v, mask, platforms=("cuda",))  # CUDA alone lowers
    with pytest.raises(Exception, match="tpu"):
        lowering.export_for(cudnn, q, k, v, mask, platforms=("tpu", "cuda"))
    # what cuDNN cannot express falls back at trace time: prefix keys, float32 compute
    kp = jnp.concatenate([k, k[:, :3]], axis=1)
    pmask = jnp.concatenate([jnp.ones((b, t, 3), bool), mask], axis=-1)
    assert "case" not in jax.jit(lambda *a: attention.attention(*a, impl="auto")).lower(
        q, kp, kp, pmask).as_text()
    assert "case" not in jax.jit(lambda *a: attention.attention(*a, impl="auto")).lower(
        *(x.astype(jnp.float32) for x in (q, k, v)), mask).as_text()


def test_dp_microbatching_is_chosen_per_platform(tiny, monkeypatch):
    """DP-SGD's CPU memory budget (one example's gradients at a time) applies only where the
    step runs on a CPU: exported for (cpu, tpu), it lowers for both, and its CPU branch gives
    the same update as the step jitted here."""
    cfg, labels, tx, ap, ao = method_setup(tiny, "lora")
    dp = dpsgd.DPStep(clip=1.0, sigma=0.5, batch=A * B)
    step = make_train_step(cfg, tx, labels, dp=dp, jit=False)

    def loops(*platforms):  # while loops in the program: microbatching adds some
        text = lowering.export_for(jax.jit(step), ap, ao, IDS, IDS, KEY,
                                   platforms=platforms).mlir_module()
        return text.count("stablehlo.while")

    whole = loops("tpu")  # the default budget holds this tiny LoRA's whole batch
    monkeypatch.setattr(dpsgd, "PER_EXAMPLE_GRADS_BYTES", 1)  # CPU: one example at a time
    assert loops("tpu") == whole < loops("cpu")
    exp = lowering.export_for(jax.jit(step), ap, ao, IDS, IDS, KEY, platforms=("cpu", "tpu"))
    base, _, tok = tiny
    params, _ = init_method(method_config("lora"), base, cfg, jax.random.PRNGKey(0), tok)
    params = jax.tree.map(jnp.asarray, params)
    ids = jax.random.randint(jax.random.PRNGKey(3), (A, B, T), 1, 90)
    args = (params, tx.init(params), ids, jnp.ones_like(ids), jax.random.PRNGKey(4))
    got, want = exp.call(*args), jax.jit(step)(*args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert jnp.allclose(g, w, rtol=1e-5, atol=1e-6)


def test_cudnn_attention_refuses_prefix_tuning(tiny):
    cfg, labels, tx, ap, ao = method_setup(tiny, "prefix", attention_impl="cudnn")
    step = make_train_step(cfg, tx, labels, dtype="bfloat16")
    with pytest.raises(ValueError, match="cannot express prefix tuning"):
        lowering.export_for(step, ap, ao, IDS, IDS, KEY, platforms=("cuda",))


def test_init_method_with_cudnn_config(tiny):
    """init needs shapes only, so a cudnn config initialises on any host, in float32 (it ran a
    float32 forward with the cuDNN kernel, which refuses float32 everywhere)."""
    base, cfg, tok = tiny
    cfg = dataclasses.replace(cfg, attention_impl="cudnn")
    params, labels = init_method(method_config("lora"), base, cfg, jax.random.PRNGKey(0), tok)
    assert jax.tree.structure(labels) == jax.tree.structure(params)


# ----------------------------------------------------------------------------- sharded (8 devices)

SCRIPT = r'''
import json, re
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxmem import dp as dpsgd, lowering, sharding as sh
from jaxmem.models import ModelConfig, init_params
from jaxmem.optim import OptimConfig, make_optimizer
from jaxmem.train_step import make_train_step
from jaxmem.tuning import init_method, method_config

assert jax.device_count() == 8, jax.devices()
# 3 layers, so no stacked weight [3, ...] shares a shape with an activation [A=2, ...]
cfg = ModelConfig(arch="llama", vocab_size=256, d_model=64, n_layers=3, n_heads=4, n_kv_heads=2,
                  d_ff=128, max_positions=64, tie_embeddings=False)
base = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
mesh = sh.make_mesh(data=4, fsdp=2)
batch = NamedSharding(mesh, P(None, sh.BATCH_AXES, None))
ids = jax.ShapeDtypeStruct((2, 8, 16), jnp.int32, sharding=batch)
key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sh.replicated(mesh))
out = {}
for method, dp in (("full", None), ("lora", None), ("full", dpsgd.DPStep(1.0, 1.0, 16))):
    params, labels = init_method(method_config(method), base, cfg, jax.random.PRNGKey(0))
    tx = make_optimizer(OptimConfig(), labels, 10)
    psh = sh.param_shardings(params, mesh, cfg, min_size=0)
    ap = lowering.abstract(params, psh)
    osh = sh.opt_state_shardings(jax.eval_shape(tx.init, ap), psh)
    ao = lowering.abstract(jax.eval_shape(tx.init, ap), osh)
    step = sh.shard_step(make_train_step(cfg, tx, labels, dtype="bfloat16", dp=dp, jit=False),
                         psh, osh, mesh)
    exp = lowering.export_for(step, ap, ao, ids, ids, key)
    info = lowering.findings(exp.mlir_module())
    n = len(jax.tree.leaves(ap)) + len(jax.tree.leaves(ao))
    # the Shardy annotations of main's arguments and results (params, opt_state come first)
    main = next(ln for ln in exp.mlir_module().splitlines() if "func.func public @main(" in ln)
    args, _, results = main.partition(") -> (")
    arg_sh, res_sh = (re.findall(r"sdy\.sharding = (#sdy\.sharding<[^>]*>)", x)
                      for x in (args, results))
    stacked = [x.shape for x, s in zip(jax.tree.leaves(ap), jax.tree.leaves(psh))
               if x.ndim == 3 and x.shape[0] == cfg.n_layers and s.spec != P()]
    # compiling takes most of the time: DP's step is checked as exported only
    hlo = "" if dp else step.lower(ap, ao, ids, ids, key).compile().as_text()
    gathers = lowering.all_gathers(hlo)
    out[method + ("+dp" if dp else "")] = {
        "platforms": list(exp.platforms), "nr_devices": exp.nr_devices,
        "f64": info["f64"][:3], "host_callbacks": info["host_callbacks"],
        "dots_not_bf16": [list(d) for d in info["dots_not_in"]("bf16")][:3],
        "collectives_in_stablehlo": info["collectives"],
        "n_sharded_stacked": len(stacked),
        "split_args": sum('"fsdp"' in a for a in arg_sh[:n]),
        "layout_kept": len(arg_sh) >= n and arg_sh[:n] == res_sh[:n],
        "n_gathers_compiled": len(gathers),
        "stacked_weight_gathers": [list(map(str, g)) for g in
                                   lowering.full_weight_gathers(hlo, ap, psh)
                                   if g[1] in stacked],
    }
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    script = tmp_path_factory.mktemp("lowering") / "lower_sharded.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("case", ["full", "lora", "full+dp"])
def test_sharded_step_lowers_with_fsdp_layout(sharded, case):
    r = sharded[case]
    assert r["platforms"] == ["tpu", "cuda"] and r["nr_devices"] == 8
    assert not r["f64"] and not r["host_callbacks"] and not r["dots_not_bf16"], r
    # GSPMD/Shardy partitions on the target: the exported module holds shardings, not
    # collectives, and every param / optimizer leaf leaves the step in the layout it came in
    # (no weight comes out replicated, i.e. gathered whole, for the next step)
    assert not r["collectives_in_stablehlo"], r
    assert r["n_sharded_stacked"] == 7 and r["split_args"] >= 7, r
    assert r["layout_kept"], r


@pytest.mark.parametrize("case", ["full", "lora"])
def test_sharded_step_never_gathers_all_layers(sharded, case):
    """What FSDP needs gathered is one layer's weight at a time (inside the layer scan), and
    the unstacked embedding and head, whole, for their matmuls. An all-gather whose result is
    a whole stack [L, ...] of a sharded layer weight (master weight, bf16 copy, gradient or
    Adam moment: any dtype) holds every layer on every device at once: unintended. Read from
    the module compiled on 8 CPU devices, whose SPMD partitioner TPU and GPU compilers share.
    """
    r = sharded[case]
    assert r["n_gathers_compiled"] > 0, r  # the partitioner did insert collectives
    assert r["stacked_weight_gathers"] == [], r
