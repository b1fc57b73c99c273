"""Reference models (one vmapped step for K adapters) and offline LiRA / RMIA."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CharTok, random_texts, tiny_hf_model, to_jaxmem
from jaxmem.references import (A_GRID, lira_offline, make_reference_step, param_axes,
                               reference_params, reference_splits, rmia_offline,
                               stack_references, train_references, tune_rmia_a)
from jaxmem.optim import OptimConfig, make_optimizer
from jaxmem.train_step import make_train_step
from jaxmem.trainer import TrainConfig, train
from jaxmem.tuning import init_method


@pytest.fixture(scope="module")
def tiny():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


@pytest.mark.parametrize("method", ["lora:dropout=0.1", "prompt"])
def test_vmapped_reference_step_equals_separate_steps(tiny, method):
    params, cfg = tiny
    k = 3
    inits = [init_method(method, params, cfg, jax.random.PRNGKey(10 + i)) for i in range(k)]
    labels = inits[0][1]
    trees = [jax.tree.map(jnp.asarray, p) for p, _ in inits]
    # Adam's eps at 1 makes the update about lr * g: it follows the gradient, and float32
    # rounding of a near-zero gradient cannot swing its sign-like step (lr * g / |g|)
    tx = make_optimizer(OptimConfig(lr=1e-2, eps=1.0), labels, 10)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, cfg.vocab_size, (2, k, 2, 2, 12)), jnp.int32)  # steps, K, A, B, T
    mask = jnp.ones_like(ids).at[:, 1, 0, 1, 7:].set(0)
    keys = jnp.stack([jax.random.PRNGKey(100 + i) for i in range(k)])

    one = make_train_step(cfg, tx, labels, lora_dropout=0.1)
    want = []
    for i in range(k):
        p, s = jax.tree.map(jnp.copy, trees[i]), tx.init(trees[i])
        for t in range(2):
            p, s, loss = one(p, s, ids[t, i], mask[t, i], keys[i])
        want.append((p, loss))

    stacked = stack_references(trees, labels)
    state = jax.vmap(tx.init, in_axes=(param_axes(labels),))(stacked)
    step = make_reference_step(cfg, tx, labels, lora_dropout=0.1)
    for t in range(2):
        stacked, state, losses = step(stacked, state, ids[t], mask[t], keys)
    for i in range(k):
        np.testing.assert_allclose(losses[i], want[i][1], rtol=1e-5)
        got = reference_params(stacked, labels, i)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want[i][0])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the frozen base stays one shared, unbatched copy
    assert stacked["wte"].shape == params["wte"].shape


def test_train_references_equal_ordinary_runs_on_their_halves(tiny, tmp_path):
    params, cfg = tiny
    pop = random_texts(10, seed=5)
    tcfg = TrainConfig(epochs=2, batch_size=2, block_size=48, optim=OptimConfig(lr=1e-2))
    refs = train_references(params, cfg, CharTok(), "lora", pop, tcfg, n_refs=2)
    assert refs.membership.shape == (2, 10)
    assert (refs.membership.sum(0) == 1).all() and (refs.membership.sum(1) == 5).all()
    assert refs.params["layers"]["attn"]["q_proj"]["lora_a"].shape[0] == 2
    assert refs.train_loss.shape == (2, 2) and np.isfinite(refs.train_loss).all()
    # reference k is the trainer's own run with seed + 1 + k on its half
    k = 1
    half = [t for t, m in zip(pop, refs.membership[k]) if m]
    alone = train(params, cfg, CharTok(), "lora", half, pop[:2], tmp_path,
                  dataclasses.replace(tcfg, seed=tcfg.seed + 1 + k), progress=False)
    got = reference_params(refs.params, refs.labels, k)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(alone.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="even number"):
        reference_splits(10, 3)


# ----------------------------------------------------------------------------- attack formulas

def _synthetic(seed=0, n=40, k=4, m=30):
    rng = np.random.default_rng(seed)
    base = rng.uniform(-4, -0.5, n)
    return (np.minimum(base + rng.normal(0.2, 0.3, n), -0.01),
            np.minimum(base + rng.normal(0, 0.2, (k, n)), -0.01),
            rng.uniform(-4, -0.5, m), rng.uniform(-4, -0.5, (k, m)))


def _phi(ll):
    p = math.exp(ll)
    return math.log(p / (1 - p))


def _log_cdf(z):
    """log Phi(z) in float64; for z > 0 as log1p(-Phi(-z)), which keeps Phi near 1 exact."""
    if z > 0:
        return math.log1p(-0.5 * math.erfc(z / math.sqrt(2)))
    return math.log(0.5 * math.erfc(-z / math.sqrt(2)))


@pytest.mark.parametrize("variance", ["global", "per_example"])
def test_lira_offline_matches_a_float64_loop(variance):
    target, refs, _, _ = _synthetic()
    k, n = refs.shape
    phis = [[_phi(refs[j, i]) for j in range(k)] for i in range(n)]
    mus = [sum(row) / k for row in phis]
    variances = [sum((v - mu) ** 2 for v in row) / k for row, mu in zip(phis, mus)]
    if variance == "global":
        variances = [sum(variances) / n] * n
    want = [_log_cdf((_phi(target[i]) - mus[i]) / math.sqrt(variances[i])) for i in range(n)]
    np.testing.assert_allclose(lira_offline(target, refs, variance=variance), want, rtol=1e-10)
    try:  # the same Gaussian through scipy, when installed
        from scipy.stats import norm
        np.testing.assert_allclose(
            lira_offline(target, refs, variance=variance),
            norm.logcdf(_phi_all(target), np.mean(_phi_all(refs), 0),
                        np.sqrt(np.array(variances))), rtol=1e-10)
    except ImportError:
        pass


def _phi_all(x):
    return np.vectorize(_phi)(x)


def _rmia_loop(target, refs, z_target, z_refs, ref_out, z_out, a, gamma):
    """RMIA's score, one text and one z at a time, in float64 Python."""
    k = refs.shape[0]

    def pr_marginal(values):
        return (1 + a) / 2 * (sum(values) / len(values)) + (1 - a) / 2

    want = []
    for i in range(len(target)):
        outs = [math.exp(refs[j, i]) for j in range(k) if ref_out[j, i]]
        lr_x = math.exp(target[i]) / pr_marginal(outs)
        hits = 0
        for q in range(len(z_target)):
            outs = [math.exp(z_refs[j, q]) for j in range(k) if z_out[j, q]]
            lr_z = math.exp(z_target[q]) / pr_marginal(outs)
            hits += lr_x / lr_z > gamma
        want.append(hits / len(z_target))
    return np.array(want)


@pytest.mark.parametrize("a,gamma", [(0.3, 1.0), (0.0, 2.0), (1.0, 0.5)])
def test_rmia_offline_matches_a_float64_loop(a, gamma):
    target, refs, z_target, z_refs = _synthetic(seed=1)
    ref_out = np.ones_like(refs, bool)
    ref_out[2, ::3] = False
    z_out = np.ones_like(z_refs, bool)
    z_out[0, ::2] = False  # some z were in reference 0's training half
    z_out[1, 1::2] = False
    want = _rmia_loop(target, refs, z_target, z_refs, ref_out, z_out, a, gamma)
    got = rmia_offline(target, refs, z_target, z_refs, ref_out=ref_out, z_ref_out=z_out, a=a,
                       gamma=gamma)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    default = rmia_offline(target, refs, z_target, z_refs, z_ref_out=z_out, a=a, gamma=gamma)
    np.testing.assert_allclose(default, _rmia_loop(target, refs, z_target, z_refs,
                                                   np.ones_like(refs, bool), z_out, a, gamma))


def test_tune_rmia_a_picks_the_best_mean_auc_of_the_pseudo_targets():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    member = reference_splits(16, 4, seed=3)
    ease = rng.uniform(-4, -1, 16)  # how easy each text is, shared by every model
    ll = np.minimum(ease + 0.4 * member + rng.normal(0, 0.1, member.shape), -0.01)
    best, aucs = tune_rmia_a(ll, member)
    want = {}
    for a in A_GRID:
        per_k = []
        for k in range(4):
            o = [j for j in range(4) if j != k]
            z = ~member[k]
            s = _rmia_loop(ll[k], ll[o], ll[k, z], ll[o][:, z], ~member[o], ~member[o][:, z],
                           a, 1.0)
            per_k.append(roc_auc_score(member[k], s))
        want[a] = np.mean(per_k)
    assert aucs.keys() == want.keys()
    np.testing.assert_allclose([aucs[a] for a in A_GRID], [want[a] for a in A_GRID])
    assert aucs[best] == max(want.values()) and best == min(a for a in A_GRID
                                                            if want[a] == max(want.values()))
    with pytest.raises(ValueError, match="at least 4 references"):
        tune_rmia_a(ll[:2], member[:2])


def test_attacks_refuse_bad_inputs():
    target, refs, z_target, z_refs = _synthetic()
    with pytest.raises(ValueError, match="at least 2 reference"):
        lira_offline(target, refs[:1])
    with pytest.raises(ValueError, match="positive"):
        lira_offline(-target, refs)
    with pytest.raises(ValueError, match="shapes"):
        lira_offline(target[:-1], refs)
    with pytest.raises(ValueError, match="a must be"):
        rmia_offline(target, refs, z_target, z_refs, a=1.5)
    with pytest.raises(ValueError, match="IN for every reference"):
        rmia_offline(target, refs, z_target, z_refs, ref_out=np.zeros_like(refs, bool))
    with pytest.raises(ValueError, match="IN for every reference"):
        rmia_offline(target, refs, z_target, z_refs, z_ref_out=np.zeros_like(z_refs, bool))
