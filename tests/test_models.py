"""Parity of the one decoder with transformers (PyTorch) on tiny random configs."""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import rel_err, save_tiny_tokenizer, tiny_hf_model, to_jaxmem
from jaxmem.models import attention, load_model, logits, transformer
from jaxmem.models.config import ModelConfig
from jaxmem.tuning import init_method, method_config

CASES = {
    "gpt2": ("gpt2", {}),
    "gpt2-untied": ("gpt2", {"tie_word_embeddings": False}),
    "llama-mha": ("llama", {}),
    "llama-gqa": ("llama", {"num_key_value_heads": 2}),
    "llama-mqa": ("llama", {"num_key_value_heads": 1}),
    "llama-tied": ("llama", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "llama3-rope-scaling": ("llama", {
        "num_key_value_heads": 2, "rope_theta": 500000.0, "max_position_embeddings": 256,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
}


def _inputs(vocab, b=3, t=40, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (b, t))
    mask = np.ones((b, t), np.int64)
    mask[1, 25:] = 0  # right padding
    mask[2, 9:] = 0
    return ids, mask


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case):
    kind, overrides = CASES[case]
    model = tiny_hf_model(kind, **overrides)
    params, cfg = to_jaxmem(model)
    ids, mask = _inputs(cfg.vocab_size)
    with torch.no_grad():
        ref = model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    ours = np.asarray(logits(params, cfg, jnp.asarray(ids), jnp.asarray(mask)))
    m = mask.astype(bool)
    assert rel_err(ours[m], ref[m]) < 1e-5
    # per-token log-probs of the actual next tokens
    lp_ref = torch.log_softmax(torch.tensor(ref), -1).numpy()
    lp = np.asarray(jax.nn.log_softmax(jnp.asarray(ours), -1))
    take = lambda a: np.take_along_axis(a[:, :-1], ids[:, 1:, None], -1)[..., 0][m[:, 1:]]
    assert rel_err(take(lp), take(lp_ref)) < 1e-5


def test_rope_scaling_changes_logits():
    """The Llama-3 case would pass vacuously if scaling were ignored; check it matters."""
    kind, overrides = CASES["llama3-rope-scaling"]
    model = tiny_hf_model(kind, **overrides)
    params, cfg = to_jaxmem(model)
    assert cfg.rope_scaling is not None
    plain = ModelConfig.from_dict({**cfg.to_dict(), "rope_scaling": None})
    ids, _ = _inputs(cfg.vocab_size, t=120)
    a = logits(params, cfg, jnp.asarray(ids))
    b = logits(params, plain, jnp.asarray(ids))
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_bfloat16_close_to_float32():
    model = tiny_hf_model("llama", num_key_value_heads=2)
    params, cfg = to_jaxmem(model)
    ids, mask = _inputs(cfg.vocab_size)
    a = logits(params, cfg, jnp.asarray(ids), jnp.asarray(mask))
    b = logits(params, cfg, jnp.asarray(ids), jnp.asarray(mask), dtype=jnp.bfloat16)
    assert b.dtype == jnp.float32
    assert rel_err(b[mask.astype(bool)], a[mask.astype(bool)]) < 5e-2


@pytest.mark.parametrize("kind,sharded", [("gpt2", False), ("llama", True)])
def test_save_pretrained_directory_loads(tmp_path, kind, sharded):
    model = tiny_hf_model(kind, **({"num_key_value_heads": 2} if kind == "llama" else {}))
    # a tiny max_shard_size forces an index + several shards
    model.save_pretrained(tmp_path, max_shard_size="20KB" if sharded else "10GB")
    save_tiny_tokenizer(tmp_path)
    if sharded:
        assert (tmp_path / "model.safetensors.index.json").exists()
    params, cfg, tok = load_model(str(tmp_path))
    ids = np.asarray(tok(["w1 w2 w3 w4 w5 w60 w7"])["input_ids"])
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    assert rel_err(logits(params, cfg, jnp.asarray(ids)), ref) < 1e-5


def test_left_padding_matches_unpadded():
    model = tiny_hf_model("llama", num_key_value_heads=2)
    params, cfg = to_jaxmem(model)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, 12))
    alone = logits(params, cfg, jnp.asarray(ids))
    padded = np.concatenate([np.zeros((1, 4), int), ids], 1)
    mask = np.concatenate([np.zeros((1, 4), int), np.ones((1, 12), int)], 1)
    out = logits(params, cfg, jnp.asarray(padded), jnp.asarray(mask))
    assert rel_err(out[:, 4:], alone) < 1e-5


# ----------------------------------------------------------------------------- attention_impl

_ON_GPU = jax.default_backend() == "gpu"


def _mixed_padding(vocab, t=24):
    """Rows: full, right-padded, left-padded, and an empty filler row (as make_batches adds)."""
    ids = np.random.default_rng(2).integers(0, vocab, (4, t))
    mask = np.ones((4, t), np.int64)
    mask[1, 15:] = 0
    mask[2, :6] = 0
    mask[3] = 0
    return ids, mask


def _forward(params, cfg, ids, mask, dtype=jnp.float32):
    h = transformer.hidden_states(params, cfg, ids, mask, dtype=dtype)
    return transformer.project(h, *transformer.head_weight(params)).astype(jnp.float32)


def _nll(params, cfg, ids, mask, dtype=jnp.float32):
    """(mean next-token loss over real tokens, logits): padding is ignored, as in training."""
    out = _forward(params, cfg, ids, mask, dtype)
    lp = jax.nn.log_softmax(out[:, :-1], -1)
    tok = jnp.take_along_axis(lp, ids[:, 1:, None], -1)[..., 0]
    m = (mask[:, 1:] * mask[:, :-1]).astype(jnp.float32)
    return -(tok * m).sum() / m.sum(), out


def _all_finite(tree):
    return all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(tree))


def test_attention_impl_config():
    cfg = ModelConfig.from_hf({"model_type": "llama", "vocab_size": 97, "hidden_size": 32,
                               "num_hidden_layers": 2, "num_attention_heads": 4,
                               "num_key_value_heads": 2, "intermediate_size": 48})
    assert cfg.attention_impl == "einsum"
    fast = dataclasses.replace(cfg, attention_impl="cudnn")
    assert "attention_impl" not in fast.to_dict()
    assert fast.to_dict() == cfg.to_dict()  # a run record does not see the kernel
    assert ModelConfig.from_dict(fast.to_dict()) == cfg
    assert fast != cfg and hash(fast) != hash(cfg)  # a distinct static jit argument
    with pytest.raises(ValueError, match="'einsum', 'xla', 'cudnn'"):
        dataclasses.replace(cfg, attention_impl="flash")


@pytest.mark.parametrize("case", ["gpt2", "llama-gqa"])
def test_xla_attention_matches_einsum(case):
    """"xla" against "einsum" and transformers, with right and left padding (fully masked query
    rows), an empty row and prefix-tuning keys."""
    kind, overrides = CASES[case]
    model = tiny_hf_model(kind, **overrides)
    params, cfg = to_jaxmem(model)
    prefixed, _ = init_method(method_config("prefix", num_virtual_tokens=5), params, cfg,
                              jax.random.PRNGKey(3))
    xla = dataclasses.replace(cfg, attention_impl="xla")
    ids, mask = _mixed_padding(cfg.vocab_size)
    run = jax.jit(lambda params, prefixed, ids, mask: [  # one compilation for all four
        _forward(p, c, ids, mask) for p in (params, prefixed) for c in (cfg, xla)])
    a, b, pa, pb = jax.device_get(run(params, prefixed, ids, mask))
    m = mask.astype(bool)
    assert np.isfinite(b).all() and np.isfinite(pb).all()
    assert rel_err(b[m], a[m]) < 1e-5
    assert rel_err(pb[m], pa[m]) < 1e-5
    assert rel_err(pb[m], a[m]) > 1e-2  # the prefix matters
    with torch.no_grad():  # rows 0 and 1 are right-padded: transformers counts positions alike
        ref = model(torch.tensor(ids[:2]), attention_mask=torch.tensor(mask[:2])).logits.numpy()
    assert rel_err(b[:2][m[:2]], ref[m[:2]]) < 1e-5


def _attention_case(n_prefix=0, dtype=jnp.float32, t=8):
    """GQA q, k, v and hidden_states' mask for rows: full, right-padded, left-padded, empty."""
    rng = np.random.default_rng(0)  # numpy: jax.random compiles slowly on a CPU
    q, k, v = (jnp.asarray(rng.normal(size=(4, s, h, 8)), dtype)
               for s, h in ((t, 4), (t + n_prefix, 2), (t + n_prefix, 2)))
    am = np.ones((4, t), bool)
    am[1, 5:] = am[2, :3] = am[3] = False
    mask = np.tril(np.ones((t, t), bool))[None] & am[:, None, :]
    mask = np.concatenate([np.ones((4, t, n_prefix), bool), mask], -1)
    return q, k, v, jnp.asarray(mask), jnp.asarray(am)


def _attention_grads(impl, q, k, v, mask, real):
    """Gradients of a loss over real query rows only (as the training loss ignores padding):
    NaN or inf anywhere in the forward, padding rows included, would reach them."""
    def loss(q, k, v, mask, real):
        out = attention.attention(q, k, v, mask, impl).astype(jnp.float32)
        return ((out ** 2).sum(-1) * real).sum()

    # a fresh function each call: an emulated kernel must not stay in a jit cache
    return jax.jit(jax.grad(lambda *a: loss(*a), argnums=(0, 1, 2)))(q, k, v, mask, real)


@pytest.mark.parametrize("n_prefix", [0, 3])
def test_attention_gradients_finite_with_padding(n_prefix):
    q, k, v, mask, real = _attention_case(n_prefix)
    ga = _attention_grads("einsum", q, k, v, mask, real)
    gb = _attention_grads("xla", q, k, v, mask, real)
    assert _all_finite(ga) and _all_finite(gb)
    for a, b in zip(ga, gb):
        assert rel_err(b, a) < 1e-5


def test_cudnn_mask_lengths():
    t = 6
    am = jnp.array([[1] * 6, [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0] * 6, [1, 0, 1, 1, 1, 1]])
    mask = jnp.tril(jnp.ones((t, t), bool))[None] & am.astype(bool)[:, None, :]
    lengths, ok = attention.cudnn_lengths(mask)
    assert lengths.tolist() == [6, 3, 4, 0, 5]
    assert ok.tolist() == [True, True, False, True, False]  # left and inner padding are not


@pytest.mark.skipif(_ON_GPU, reason="checks the CPU error; a GPU runs the real kernel")
def test_cudnn_on_cpu_errors_clearly():
    params, cfg = to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))
    cudnn = dataclasses.replace(cfg, attention_impl="cudnn")
    ids, mask = (jnp.asarray(x) for x in _inputs(cfg.vocab_size))
    with pytest.raises(RuntimeError, match="needs an NVIDIA GPU"):
        logits(params, cudnn, ids, mask, dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        logits(params, cudnn, ids, mask)
    prefixed, _ = init_method(method_config("prefix", num_virtual_tokens=3), params, cfg)
    with pytest.raises(ValueError, match="prefix tuning"):
        logits(prefixed, cudnn, ids, mask, dtype=jnp.bfloat16)


def _check_cudnn_against_einsum(kind, with_model_grads=False):
    """bfloat16 "cudnn" against "einsum" on right padding and an empty row; a left-padded row
    comes out NaN (refused) while the other rows are untouched; finite gradients."""
    params, cfg = to_jaxmem(tiny_hf_model(kind, **CASES[kind][1]))  # head dim 8
    cudnn = dataclasses.replace(cfg, attention_impl="cudnn")
    ids, mask = _mixed_padding(cfg.vocab_size)
    right = mask.copy()
    right[2] = 1
    # fresh functions: an emulated kernel must not stay in a jit cache
    ref = jax.jit(lambda params, ids, mask: _forward(params, cfg, ids, mask, jnp.bfloat16))
    run = jax.jit(lambda params, ids, mask: _forward(params, cudnn, ids, mask, jnp.bfloat16))
    a, b, c = (np.asarray(f(params, ids, m)) for f, m in ((ref, right), (run, right), (run, mask)))
    m = right.astype(bool)
    assert np.isfinite(b).all()
    assert rel_err(b[m], a[m]) < 2e-2
    assert np.isnan(c[2]).all() and np.isfinite(c[[0, 1, 3]]).all()

    q, k, v, amask, real = _attention_case(dtype=jnp.bfloat16)
    keep = np.array([0, 1, 3])  # the rows cuDNN can express (row 2 is left-padded)
    assert _all_finite(_attention_grads("cudnn", q[keep], k[keep], v[keep], amask[keep],
                                        real[keep]))
    if with_model_grads:
        g, _ = jax.grad(_nll, has_aux=True)(params, cudnn, ids, right, jnp.bfloat16)
        assert _all_finite(g)


def test_cudnn_branch_emulated_on_cpu(monkeypatch):
    """The cudnn branch's masking (causal + lengths, zeroed padding rows, the NaN guard) with
    cuDNN's call routed to jax's reference implementation of the same arguments."""
    real = jax.nn.dot_product_attention

    def as_xla(*args, implementation=None, **kw):
        assert implementation == "cudnn" and "mask" not in kw and kw["is_causal"]
        return real(*args, implementation="xla", **kw)

    monkeypatch.setattr(attention, "_gpu_backend", lambda: True)
    monkeypatch.setattr(jax.nn, "dot_product_attention", as_xla)
    # the branch is CUDA-only (jax.lax.platform_dependent with no default): take its cuda arm
    monkeypatch.setattr(jax.lax, "platform_dependent", lambda *args, cuda, **kw: cuda(*args))
    _check_cudnn_against_einsum("llama-gqa")


@pytest.mark.skipif(not _ON_GPU, reason="cuDNN attention needs a GPU")
@pytest.mark.parametrize("kind", ["gpt2", "llama-gqa"])
def test_cudnn_attention_on_gpu(kind):
    _check_cudnn_against_einsum(kind, with_model_grads=True)


# ----------------------------------------------------------------------------- Flax layout

def _tiny_llama():
    return ModelConfig(arch="llama", vocab_size=64, d_model=32, n_layers=3, n_heads=4,
                       n_kv_heads=2, d_ff=48, max_positions=64, tie_embeddings=False)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_the_same_loss_and_gradients(remat):
    """nn.remat changes what the backward pass keeps, never what it computes."""
    cfg = _tiny_llama()
    params, _ = init_method("lora:r=4,target=all", transformer.init_params(
        cfg, jax.random.PRNGKey(0)), cfg, jax.random.PRNGKey(1))
    ids, mask = (jnp.asarray(x) for x in _inputs(cfg.vocab_size, t=16))
    grad = lambda c: jax.grad(_nll, has_aux=True)(params, c, ids, mask)  # noqa: E731
    (g0, out0), (g1, out1) = grad(cfg), grad(dataclasses.replace(cfg, remat=remat))
    assert rel_err(out1, out0) < 1e-6
    flat0, flat1 = jax.tree.leaves(g0), jax.tree.leaves(g1)
    assert len(flat0) == len(flat1) and all(rel_err(b, a) < 1e-5 for a, b in zip(flat0, flat1))
    with pytest.raises(ValueError, match="remat must be one of"):
        dataclasses.replace(cfg, remat="some")


@pytest.mark.parametrize("method", ["lora:target=all", "ia3", "prefix:prefix_projection=true",
                                    "prompt", "ptuning:encoder=lstm", "head"])
def test_methods_are_what_the_modules_create(method):
    """A method's leaves come from the decoder's own modules: re-initializing the decoder with
    the adapters read off the tuned params gives the same tree (paths, shapes, logical axes),
    and exactly the added leaves train (lora_scale, a constant, does not)."""
    from flax import traverse_util

    from jaxmem.models import Adapters, abstract_params, logical_axes

    cfg = dataclasses.replace(_tiny_llama(), tie_embeddings=True)
    base = transformer.init_params(cfg, jax.random.PRNGKey(0))
    params, labels = init_method(method, base, cfg, jax.random.PRNGKey(1))
    ad = Adapters.of(params)
    fresh = jax.tree.map(jnp.shape, flax.linen.unbox(abstract_params(cfg, ad)))
    assert fresh == jax.tree.map(jnp.shape, params)
    axes = traverse_util.flatten_dict(logical_axes(params, cfg))
    flat_base = traverse_util.flatten_dict(base)
    for path, label in traverse_util.flatten_dict(labels).items():
        added = path not in flat_base
        assert (label == "trainable") == ((added and path[-1] != "lora_scale")
                                          or (method == "head" and path[0] == "lm_head")), path
        if added and method != "head":  # a method's own leaves: replicated logical axes
            assert set(axes[path]) <= {"layers", "adapter", "adapter_out"}, (path, axes[path])


def test_param_table_and_info():
    from jaxmem.models.summary import format_param_table, param_table

    cfg = _tiny_llama()
    params, labels = init_method("lora", transformer.init_params(cfg, jax.random.PRNGKey(0)),
                                 cfg)
    rows = param_table(params, cfg, labels)
    by_name = {r["name"]: r for r in rows}
    q = by_name["layers/attn/q_proj/lora_a"]
    assert q["shape"] == (3, 32, 8) and q["trains"] and q["logical axes"] == (
        "layers", "adapter", "adapter_out")
    assert by_name["layers/attn/q_proj/kernel"]["logical axes"] == ("layers", "embed", "heads")
    assert by_name["wte"]["logical axes"] == ("vocab", "embed") and not by_name["wte"]["trains"]
    assert sum(r["count"] for r in rows) == sum(x.size for x in jax.tree.leaves(params))
    text = format_param_table(rows)
    assert "layers/mlp/down_proj/kernel" in text and "trainable: 2,688 " in text


def test_info_from_a_config_alone(tmp_path, capsys):
    """`jaxmem info` on a directory holding only a Llama-2-7B config.json: shapes from the
    config (no weights anywhere), with the trainable leaves of a method."""
    import json

    from jaxmem.cli import main

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
        "max_position_embeddings": 4096}))
    assert main(["info", str(tmp_path), "--method", "lora:r=8"]) == 0
    out = capsys.readouterr().out
    assert "layers/mlp/down_proj/kernel" in out and "32x11008x4096" in out
    assert "6,742,609,984 parameters" in out and "trainable: 4,194,304 " in out
