"""The paired bootstrap (jaxmem.paired) against an independent plain loop, and its verdicts."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxmem.bootstrap import summarize
from jaxmem.paired import Estimate, paired_bootstrap, verdict


def _reference(scores_by_key, labels, n_boot, seed, alpha):
    """The documented scheme written out as a loop: one stratified resample per round (members
    then non-members, drawn as two (n_boot, n) integer tables from default_rng(seed)), every
    key's AUC by scikit-learn on that resample, and percentile intervals."""
    rng = np.random.default_rng(seed)
    member_idx = np.flatnonzero(labels == 1)
    nonmember_idx = np.flatnonzero(labels == 0)
    draw_m = rng.integers(0, member_idx.size, size=(n_boot, member_idx.size))
    draw_n = rng.integers(0, nonmember_idx.size, size=(n_boot, nonmember_idx.size))
    per_key = {k: [] for k in scores_by_key}
    for b in range(n_boot):
        idx = np.concatenate([member_idx[draw_m[b]], nonmember_idx[draw_n[b]]])
        for k, s in scores_by_key.items():
            per_key[k].append(roc_auc_score(labels[idx], s[idx]))
    per_key = {k: np.array(v) for k, v in per_key.items()}
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    return per_key, lambda values: tuple(np.percentile(values, q))


def _data(seed=0, n_members=30, n_nonmembers=40):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.ones(n_members, int), np.zeros(n_nonmembers, int)])
    rng.shuffle(labels)
    shared = rng.normal(0, 1, labels.size)  # both methods see the same texts: correlated scores
    return labels, {
        "A": labels * 0.8 + shared + rng.normal(0, 0.5, labels.size),
        "B": labels * 0.3 + shared + rng.normal(0, 0.5, labels.size),
        "C": np.round(labels * 0.5 + rng.normal(0, 1, labels.size)),  # many ties
    }


def test_paired_bootstrap_matches_a_plain_loop_with_sklearn():
    labels, scores = _data()
    n_boot, seed, alpha = 60, 7, 0.1
    boot = paired_bootstrap(scores, labels, n_boot=n_boot, seed=seed, alpha=alpha)
    ref, interval = _reference(scores, labels, n_boot, seed, alpha)
    for k in scores:
        assert boot.auc[k] == pytest.approx(roc_auc_score(labels, scores[k]), abs=1e-12)
        np.testing.assert_allclose(boot.samples[k], ref[k], atol=1e-12)
        assert boot.ci(k) == pytest.approx(interval(ref[k]), abs=1e-12)
    d = boot.difference("A", "B")
    assert d.value == pytest.approx(boot.auc["A"] - boot.auc["B"], abs=1e-12)
    assert (d.low, d.high) == pytest.approx(interval(ref["A"] - ref["B"]), abs=1e-12)
    mean = boot.contrast({"A": 0.5, "C": 0.5, "B": -1.0})
    assert (mean.low, mean.high) == pytest.approx(
        interval((ref["A"] + ref["C"]) / 2 - ref["B"]), abs=1e-12)


def test_each_keys_interval_is_summarizes_auc_ci():
    labels, scores = _data(1, 50, 80)
    boot = paired_bootstrap(scores, labels, n_boot=100, seed=3)
    for k, s in scores.items():
        assert boot.ci(k) == pytest.approx(summarize(s, labels, n_boot=100, seed=3)["auc_ci"])


def test_pairing_narrows_the_interval_of_a_difference():
    """Correlated scores: the paired interval of A - B is narrower than the unpaired one."""
    labels, scores = _data(2, 100, 100)
    paired = paired_bootstrap(scores, labels, n_boot=300, seed=0).difference("A", "B")
    a = paired_bootstrap({"A": scores["A"]}, labels, n_boot=300, seed=0).samples["A"]
    b = paired_bootstrap({"B": scores["B"]}, labels, n_boot=300, seed=1).samples["B"]
    unpaired = np.quantile(a - b, [0.025, 0.975])
    assert paired.high - paired.low < unpaired[1] - unpaired[0]


def test_verdicts_on_constructed_scores():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], 150)
    noise = rng.normal(0, 1, labels.size)
    strong = labels * 2.0 + noise
    weak = labels * 0.2 + rng.normal(0, 1, labels.size)
    boot = paired_bootstrap({"A": strong, "B": weak, "A2": strong.copy()}, labels, n_boot=200)
    assert verdict(boot.difference("A", "B")) == "reproduced"
    assert verdict(boot.difference("B", "A")) == "contradicted"
    assert verdict(boot.difference("A", "B"), claimed_sign=-1) == "contradicted"
    identical = boot.difference("A", "A2")
    assert (identical.value, identical.low, identical.high) == (0.0, 0.0, 0.0)
    assert verdict(identical) == "inconclusive"  # an interval touching 0 decides nothing


def test_verdict_boundaries():
    assert verdict(Estimate(0.1, 0.01, 0.2)) == "reproduced"
    assert verdict(Estimate(0.1, 0.0, 0.2)) == "inconclusive"
    assert verdict(Estimate(-0.1, -0.2, -0.01)) == "contradicted"
    assert verdict(Estimate(-0.1, -0.2, -0.01), claimed_sign=-1) == "reproduced"
    assert verdict(Estimate(0.3)) == "inconclusive"  # no bootstrap, no verdict
    with pytest.raises(ValueError, match="claimed_sign"):
        verdict(Estimate(0.1, 0.05, 0.2), claimed_sign=0)


def test_no_bootstrap_and_nan_handling():
    labels, scores = _data(3)
    boot = paired_bootstrap(scores, labels, n_boot=0)
    assert boot.ci("A") is None and boot.difference("A", "B").low is None
    bad = dict(scores, B=np.where(np.arange(labels.size) == 4, np.nan, scores["B"]))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap(bad, labels, n_boot=10)
    dropped = paired_bootstrap(bad, labels, n_boot=10, nan_policy="drop")
    keep = np.arange(labels.size) != 4  # dropped from every key, so the pairs stay pairs
    assert dropped.auc["A"] == pytest.approx(roc_auc_score(labels[keep], scores["A"][keep]))
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap({"A": scores["A"][:-1]}, labels)
