"""DP-SGD (jaxmem.dp): clipping, noise, the step, accounting, config, empirical epsilon."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import CharTok, random_texts, tiny_hf_model, to_jaxmem
from jaxmem import dp as dpsgd
from jaxmem.models.transformer import logits
from jaxmem.optim import OptimConfig, make_optimizer
from jaxmem.train_step import make_train_step
from jaxmem.trainer import TrainConfig, train
from jaxmem.tuning import init_method
from jaxmem.tuning.partition import FROZEN, TRAINABLE, split

METHODS = ["full", "head", "lora", "prefix", "prompt", "ptuning"]


@pytest.fixture(scope="module")
def tiny():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


def _init(tiny, method):
    params, cfg = tiny
    params, labels = init_method(method, params, cfg, jax.random.PRNGKey(0))
    return jax.tree.map(jnp.asarray, params), labels, cfg


def _batch(cfg, a=1, b=4, t=12, seed=0):
    ids = np.random.default_rng(seed).integers(1, cfg.vocab_size, (a, b, t)).astype(np.int32)
    return jnp.asarray(ids), jnp.ones((a, b, t), jnp.int32)


def _recorder(labels):
    """An 'optimizer' that changes nothing and keeps the last gradient as its state."""
    def update(g, state, params=None):
        return jax.tree.map(jnp.zeros_like, g), g
    rec = optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p), update)
    return optax.multi_transform({TRAINABLE: rec, FROZEN: optax.set_to_zero()}, labels)


def _grad_of_step(params, labels, cfg, ids, mask, dp, key=0):
    tx = _recorder(labels)
    state = tx.init(params)
    _, state, loss = make_train_step(cfg, tx, labels, dp=dp)(
        jax.tree.map(jnp.copy, params), state, ids, mask, jax.random.PRNGKey(key))
    # the trainable leaves' gradients, in tree order (frozen ones are masked out)
    return jax.tree.leaves(state.inner_states[TRAINABLE].inner_state), float(loss)


@pytest.mark.parametrize("method, one_at_a_time", [("lora", False), ("full", False),
                                                   ("full", True)])
def test_clipped_gradient_sum_equals_a_loop_over_examples(tiny, method, one_at_a_time,
                                                          monkeypatch):
    params, labels, cfg = _init(tiny, method)
    if one_at_a_time:  # gradients too big to vmap together: microbatches of one example
        monkeypatch.setattr(dpsgd, "PER_EXAMPLE_GRADS_BYTES", 1)
        assert dpsgd.microbatch_size(split(params, labels)[0], 3) == 1
    ids, mask = _batch(cfg, a=2, b=3)
    mask = mask.at[0, 1, 7:].set(0).at[1, 2, :].set(0)  # a shorter row and a filler row
    trainable, frozen = split(params, labels)

    def mean_nll(tr, i, m):  # reference loss from the full logits, one example
        p = jax.tree.map(lambda x, y: y if x is None else x, tr, frozen,
                         is_leaf=lambda x: x is None)
        lp = jax.nn.log_softmax(logits(p, cfg, i[None], m[None])[0, :-1], -1)
        tok = jnp.take_along_axis(lp, i[1:, None], -1)[:, 0]
        keep = (m[1:] * m[:-1]).astype(jnp.float32)
        return -jnp.sum(tok * keep) / jnp.maximum(keep.sum(), 1)

    grads, norms = [], []
    for a in range(2):
        for b in range(3):
            if mask[a, b].sum() < 2:
                continue
            g = [np.asarray(x, np.float64) for x in jax.tree.leaves(
                jax.grad(mean_nll)(trainable, ids[a, b], mask[a, b]))]
            grads.append(g)
            norms.append(math.sqrt(sum((x ** 2).sum() for x in g)))
    clip = float(np.median(norms))  # some rows clipped, some not
    want = [sum(g[j] * min(1.0, clip / n) for g, n in zip(grads, norms)) / 6
            for j in range(len(grads[0]))]
    got, _ = _grad_of_step(params, labels, cfg, ids, mask, dpsgd.DPStep(clip, 0.0, 6))
    assert len(got) == len(want)
    for x, y in zip(got, want):
        np.testing.assert_allclose(np.asarray(x, np.float64), y, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_noise_off_and_huge_clip_is_the_normal_step(tiny, method):
    params, labels, cfg = _init(tiny, method)
    # Adam's eps at 1 makes the update about lr * g: it follows the gradient, and float32
    # rounding of a near-zero gradient cannot swing its sign-like step (lr * g / |g|)
    tx = make_optimizer(OptimConfig(lr=1e-2, eps=1.0), labels, 10)
    ids, mask = _batch(cfg, a=2, b=2)  # equal token counts: mean of means = token mean
    plain = make_train_step(cfg, tx, labels)(jax.tree.map(jnp.copy, params), tx.init(params),
                                             ids, mask, jax.random.PRNGKey(0))
    dp = make_train_step(cfg, tx, labels, dp=dpsgd.DPStep(1e6, 0.0, 4))(
        jax.tree.map(jnp.copy, params), tx.init(params), ids, mask, jax.random.PRNGKey(0))
    assert abs(float(plain[2]) - float(dp[2])) < 1e-5
    for a, b in zip(jax.tree.leaves(plain[0]), jax.tree.leaves(dp[0])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_noise_has_std_sigma_clip_over_batch(tiny):
    params, labels, cfg = _init(tiny, "full")
    ids, mask = _batch(cfg, b=4)
    clean, _ = _grad_of_step(params, labels, cfg, ids, mask, dpsgd.DPStep(0.5, 0.0, 4))
    noisy, _ = _grad_of_step(params, labels, cfg, ids, mask, dpsgd.DPStep(0.5, 2.0, 4))
    diff = np.concatenate([np.ravel(a - b) for a, b in
                           zip(noisy, clean)])
    assert diff.size > 10_000
    assert abs(diff.std() / (2.0 * 0.5 / 4) - 1) < 0.03
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(diff.size)


def test_dp_training_resumes_exactly_and_records_sigma(tiny, tmp_path):
    params, cfg = tiny
    # texts longer than the block: one batch shape, one compile
    texts = [(t + " ") * 20 for t in random_texts(8)]
    val = random_texts(2, seed=1)
    tcfg = TrainConfig(epochs=2, batch_size=4, block_size=16, optim=OptimConfig(lr=1e-2),
                       dp="epsilon=8,delta=1e-5,clip=1.0")
    # uninterrupted in a/, then b/ stopped after epoch 1 (as if killed) and resumed
    full, _, resumed = [train(params, cfg, CharTok(), "lora:dropout=0.1", texts, val,
                              tmp_path / name, tcfg, progress=False, stop_after_epoch=stop)
                        for name, stop in (("a", None), ("b", 1), ("b", None))]
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    spec = json.loads((tmp_path / "b" / "run.json").read_text())["dp"]
    assert spec["steps"] == 4 and spec["sampling_rate"] == 0.5
    assert spec["epsilon"] <= 8 and spec["noise_multiplier"] > 0
    h = resumed.history
    assert h[-1]["dp_noise_multiplier"] == spec["noise_multiplier"]
    assert h[0]["dp_epsilon"] < h[1]["dp_epsilon"] == pytest.approx(spec["epsilon"])


def _rdp_epsilon(sigma, q, steps, delta, orders=None):
    import dp_accounting
    acc = dp_accounting.rdp.RdpAccountant(orders)
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)),
                steps)
    return acc.get_epsilon(delta)


@pytest.mark.parametrize("n, batch, epochs, eps", [(1000, 8, 3, 8.0), (128, 16, 5, 1.0)])
def test_accountant_matches_dp_accounting_and_opacus(n, batch, epochs, eps):
    dp = dpsgd.DPConfig(epsilon=eps, delta=1e-5)
    steps, q = dpsgd.steps_and_rate(n, batch, epochs)
    sigma = dpsgd.noise_multiplier(dp, n_train=n, batch=batch, steps=steps)
    got = dpsgd.epsilon_spent(sigma, n_train=n, batch=batch, steps=steps, delta=1e-5)
    orders = dpsgd.rdp_orders()
    assert got == pytest.approx(_rdp_epsilon(sigma, q, steps, 1e-5, orders), rel=1e-9)
    assert got <= _rdp_epsilon(sigma, q, steps, 1e-5) + 1e-12  # more orders: never looser
    assert got <= eps and _rdp_epsilon(sigma - 2e-3, q, steps, 1e-5, orders) > eps  # tight
    opacus = pytest.importorskip("opacus.accountants")
    acc = opacus.RDPAccountant()
    acc.history = [(sigma, q, steps)]
    # different RDP orders and conversions: agree to a few percent
    assert acc.get_epsilon(1e-5) == pytest.approx(got, rel=0.05)


def test_fixed_noise_multiplier_and_zero_noise():
    dp = dpsgd.parse_dp("noise_multiplier=1.1,clip=0.5")
    assert dp.noise_multiplier == 1.1 and dp.epsilon is None
    assert dpsgd.noise_multiplier(dp, n_train=100, batch=10, steps=10) == 1.1
    assert dpsgd.epsilon_spent(0.0, n_train=100, batch=10, steps=10, delta=1e-5) == math.inf


@pytest.mark.parametrize("spec, match", [
    ("epsilon=0", "epsilon"), ("epsilon=-1", "epsilon"), ("epsilon=8,delta=1", "delta"),
    ("epsilon=8,delta=0", "delta"), ("epsilon=8,clip=0", "clip"), ("epsilon=8,clip=-1", "clip"),
    ("epsilon=8,sigma=1", "Unknown DP setting 'sigma=1'"), ("epsilon", "Unknown DP setting"),
    ("epsilon=eight", "not a number"), ("delta=1e-5", "target epsilon"),
    ("noise_multiplier=-1", "noise_multiplier")])
def test_bad_dp_settings(spec, match):
    with pytest.raises(ValueError, match=match):
        dpsgd.parse_dp(spec)
    with pytest.raises(ValueError, match=match):
        TrainConfig(dp=spec)


def test_dp_flag_and_study_yaml():
    import argparse
    from jaxmem.config import add_dataclass_args, dataclass_from_args
    from jaxmem.study import StudyConfig
    p = argparse.ArgumentParser()
    add_dataclass_args(p, TrainConfig)
    t = dataclass_from_args(TrainConfig, p.parse_args(["--dp", "epsilon=8,delta=1e-5,clip=1.0"]))
    assert t.dp == dpsgd.DPConfig(8.0, 1e-5, 1.0)  # parsed once, where the config is made
    assert t.to_dict()["dp"] == "epsilon=8,delta=1e-5,clip=1.0"  # run.json: as given
    s = StudyConfig.from_dict({"train": {"dp": "epsilon=4,clip=0.5"}})
    assert s.train_config("lora").dp == dpsgd.DPConfig(epsilon=4.0, clip=0.5)
    assert s.to_dict()["train"]["dp"] == "epsilon=4,clip=0.5"
    assert TrainConfig.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="Unknown DP setting"):
        StudyConfig.from_dict({"train": {"dp": "eps=4"}})


def _empirical_reference(scores, labels, delta, alpha):
    from scipy.stats import beta
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    best = 0.0
    for t in sorted(set(scores)):
        tp, fp = sum(s >= t for s in pos), sum(s >= t for s in neg)
        tpr_lo = beta.ppf(alpha / 2, tp, len(pos) - tp + 1) if tp > 0 else 0.0
        fpr_hi = beta.ppf(1 - alpha / 2, fp + 1, len(neg) - fp) if fp < len(neg) else 1.0
        if tpr_lo - delta > 0:
            best = max(best, math.log((tpr_lo - delta) / fpr_hi))
        if 1 - fpr_hi - delta > 0:
            best = max(best, math.log((1 - fpr_hi - delta) / (1 - tpr_lo)))
    return best


@pytest.mark.parametrize("shift", [0.0, 1.5, 6.0])
def test_empirical_epsilon_matches_a_scipy_loop(shift):
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(shift, 1, 150), rng.normal(0, 1, 200)]).round(2)
    labels = np.r_[np.ones(150, int), np.zeros(200, int)]
    got = dpsgd.empirical_epsilon(scores, labels, delta=1e-5, alpha=0.05)
    want = _empirical_reference(list(scores), list(labels), 1e-5, 0.05)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert (got > 0) == (shift > 0)


def test_empirical_epsilon_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        dpsgd.empirical_epsilon([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        dpsgd.empirical_epsilon([np.nan, 0.2], [1, 0])
    with pytest.raises(ValueError, match="one length"):
        dpsgd.empirical_epsilon([0.1, 0.2, 0.3], [1, 0])


def test_microbatch_size_is_a_divisor_within_the_budget(monkeypatch):
    tree = {"w": jnp.zeros((1024,), jnp.float32)}  # 4 KiB per example
    assert dpsgd.microbatch_size(tree, 8) is None  # the default budget holds them all
    monkeypatch.setattr(dpsgd, "PER_EXAMPLE_GRADS_BYTES", 3 * 4096)
    assert dpsgd.microbatch_size(tree, 8) == 2  # 3 fit, the largest divisor of 8 below is 2
    assert dpsgd.microbatch_size(tree, 9) == 3
    monkeypatch.setattr(dpsgd, "PER_EXAMPLE_GRADS_BYTES", 100)
    assert dpsgd.microbatch_size(tree, 8) == 1  # never less than one example

