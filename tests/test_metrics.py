"""Tests for jaxmem.metrics and jaxmem.bootstrap, checked against scikit-learn as the reference."""

import functools
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from jaxmem import bootstrap, metrics
from jaxmem.bootstrap import bootstrap_ci, summarize
from jaxmem.metrics import roc_auc, roc_curve, scores_and_labels, tpr_at_fpr

TARGET_FPRS = (0.1, 0.01, 0.001)


def continuous_data(seed, n_members, n_nonmembers, shift=0.5):
    rng = np.random.default_rng(seed)
    scores = np.concatenate(
        [rng.normal(shift, 1.0, n_members), rng.normal(0.0, 1.0, n_nonmembers)]
    )
    labels = np.concatenate([np.ones(n_members, int), np.zeros(n_nonmembers, int)])
    perm = rng.permutation(scores.size)
    return scores[perm], labels[perm]


def tied_data(seed, n_members, n_nonmembers, n_levels=5):
    """Integer scores in a small range, so almost every score is tied."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate(
        [rng.integers(1, n_levels + 1, n_members), rng.integers(0, n_levels, n_nonmembers)]
    ).astype(float)
    labels = np.concatenate([np.ones(n_members, int), np.zeros(n_nonmembers, int)])
    perm = rng.permutation(scores.size)
    return scores[perm], labels[perm]


DATASETS = {
    "continuous_balanced": lambda: continuous_data(0, 300, 300),
    "continuous_unbalanced": lambda: continuous_data(1, 50, 2000),
    "continuous_many_nonmembers": lambda: continuous_data(2, 1500, 3000, shift=1.0),
    "ties_5_levels": lambda: tied_data(3, 400, 600, n_levels=5),
    "ties_2_levels": lambda: tied_data(4, 1000, 1200, n_levels=2),
    "ties_20_levels": lambda: tied_data(5, 1500, 2500, n_levels=20),
}


def sklearn_tpr_at_fpr(scores, labels, target):
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    return tpr[fpr <= target].max()


# --- agreement with scikit-learn --------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_roc_curve_matches_sklearn(name):
    scores, labels = DATASETS[name]()
    fpr, tpr, thresholds = roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thresholds = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(tpr, sk_tpr)
    np.testing.assert_array_equal(thresholds, sk_thresholds)
    # One point per distinct score plus the (0, 0) start.
    assert len(fpr) == np.unique(scores).size + 1
    assert (fpr[0], tpr[0], thresholds[0]) == (0.0, 0.0, np.inf)


@pytest.mark.parametrize("name", DATASETS)
def test_roc_auc_matches_sklearn(name):
    scores, labels = DATASETS[name]()
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("target", TARGET_FPRS)
def test_tpr_at_fpr_matches_sklearn(name, target):
    scores, labels = DATASETS[name]()
    assert tpr_at_fpr(scores, labels, target) == sklearn_tpr_at_fpr(scores, labels, target)


def test_tpr_at_fpr_values_are_nontrivial():
    # Guard against the comparisons above passing only because everything is 0.
    scores, labels = DATASETS["continuous_many_nonmembers"]()
    values = [tpr_at_fpr(scores, labels, t) for t in TARGET_FPRS]
    assert values[0] > values[1] > values[2] > 0


def test_auc_with_ties_counts_half():
    # Pairs (member, non-member): (2,1) win, (2,2) tie, (1,1) tie, (1,2) loss.
    assert roc_auc([2, 1, 1, 2], [1, 1, 0, 0]) == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)


def test_tpr_at_fpr_uses_no_interpolation():
    # 4 non-members: FPR can only be 0, .25, .5, ... A target of 0.3 must use
    # the FPR=0.25 point, not interpolate towards FPR=0.5.
    scores = [10, 9, 8, 7, 6, 5, 4, 3]
    labels = [1, 0, 1, 1, 0, 1, 0, 0]
    assert tpr_at_fpr(scores, labels, 0.0) == 0.25
    assert tpr_at_fpr(scores, labels, 0.3) == 0.75
    assert tpr_at_fpr(scores, labels, 0.25) == 0.75
    assert tpr_at_fpr(scores, labels, 0.5) == 1.0
    assert tpr_at_fpr(scores, labels, 1.0) == 1.0


def test_tied_member_and_nonmember_cannot_be_split():
    # The top member ties with a non-member, so no threshold reaches FPR 0
    # with any true positive.
    assert tpr_at_fpr([5, 5, 1], [1, 0, 1], 0.0) == 0.0


# --- edge cases ---------------------------------------------------------------


def test_all_scores_equal():
    scores = np.full(100, 3.0)
    labels = np.arange(100) % 2
    assert roc_auc(scores, labels) == 0.5
    fpr, tpr, thresholds = roc_curve(scores, labels)
    np.testing.assert_array_equal(fpr, [0.0, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 1.0])
    np.testing.assert_array_equal(thresholds, [np.inf, 3.0])
    assert tpr_at_fpr(scores, labels, 0.1) == 0.0
    assert roc_auc_score(labels, scores) == 0.5


def test_perfect_and_reversed_separation():
    scores = np.arange(20.0)
    labels = (scores >= 10).astype(int)
    assert roc_auc(scores, labels) == 1.0
    assert roc_auc(-scores, labels) == 0.0
    assert tpr_at_fpr(scores, labels, 0.0) == 1.0
    assert tpr_at_fpr(-scores, labels, 0.5) == 0.0
    assert tpr_at_fpr(-scores, labels, 1.0) == 1.0


def test_single_pair():
    assert roc_auc([1.0, 0.0], [1, 0]) == 1.0
    assert roc_auc([0.0, 1.0], [1, 0]) == 0.0


@pytest.mark.parametrize(
    "labels",
    [
        [1, 0, 1, 0],
        [True, False, True, False],
        np.array([1.0, 0.0, 1.0, 0.0]),
        np.array([1, 0, 1, 0], dtype=np.int8),
    ],
)
def test_label_types_accepted(labels):
    assert roc_auc([0.9, 0.2, 0.8, 0.1], labels) == 1.0


def test_integer_scores_accepted():
    assert roc_auc(np.array([3, 1, 2, 0]), [1, 0, 1, 0]) == 1.0


def test_scores_and_labels():
    scores, labels = scores_and_labels([3.0, 2.0], [1.0, 2.5, 0.0])
    np.testing.assert_array_equal(scores, [3.0, 2.0, 1.0, 2.5, 0.0])
    np.testing.assert_array_equal(labels, [True, True, False, False, False])
    assert roc_auc(scores, labels) == pytest.approx(5 / 6)


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("fn", [roc_curve, roc_auc, functools.partial(tpr_at_fpr, target_fpr=0.1)])
@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0], [False] * 3])
def test_single_class_raises(fn, labels):
    with pytest.raises(ValueError, match="need both members and non-members"):
        fn([0.1, 0.2, 0.3], labels)


def test_single_class_after_dropping_nan_raises():
    with pytest.raises(ValueError, match="need both members and non-members.*dropping 1"):
        summarize([0.1, np.nan, 0.3], [1, 0, 1], nan_policy="drop")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_raises_with_count_and_fix(bad):
    scores = [0.1, bad, 0.3, bad, 0.5]
    labels = [1, 0, 1, 0, 0]
    for call in (
        lambda: roc_auc(scores, labels),
        lambda: roc_curve(scores, labels),
        lambda: tpr_at_fpr(scores, labels, 0.1),
        lambda: bootstrap_ci(roc_auc, scores, labels, n_boot=10),
        lambda: summarize(scores, labels, n_boot=10),
    ):
        with pytest.raises(ValueError, match=r'2 of 5 scores.*nan_policy="drop"'):
            call()


def test_nan_drop():
    scores, labels = continuous_data(7, 200, 300)
    dirty = scores.copy()
    bad = np.zeros(scores.size, bool)
    bad[[3, 50, 51, 400]] = True
    dirty[[3, 50]] = np.nan
    dirty[51] = np.inf
    dirty[400] = -np.inf
    clean_scores, clean_labels = scores[~bad], labels[~bad]

    result = summarize(dirty, labels, n_boot=50, nan_policy="drop")
    expected = summarize(clean_scores, clean_labels, n_boot=50)
    assert result["n_dropped_nan"] == 4
    assert expected["n_dropped_nan"] == 0
    assert result["n_members"] == int(clean_labels.sum())
    assert result["n_nonmembers"] == int((clean_labels == 0).sum())
    assert result["n_members"] + result["n_nonmembers"] == scores.size - 4
    assert result["auc"] == pytest.approx(roc_auc_score(clean_labels, clean_scores), abs=1e-12)
    for key in expected:
        if key != "n_dropped_nan":
            assert result[key] == expected[key], key

    assert roc_auc(dirty, labels, nan_policy="drop") == result["auc"]
    assert tpr_at_fpr(dirty, labels, 0.1, nan_policy="drop") == result["tpr@10%fpr"]


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, 0.2, 0.3], [1, 0], "different lengths"),
        ([], [], "empty"),
        ([[0.1, 0.2], [0.3, 0.4]], [[1, 0], [1, 0]], "1-D"),
        ([0.1, 0.2, 0.3], [1, 0, 2], r"0/1 or bool.*\[2\]"),
        ([0.1, 0.2, 0.3], [1, 0, -1], r"0/1 or bool"),
        ([0.1, 0.2, 0.3], [1, 0, 0.5], r"0/1 or bool"),
        ([0.1, 0.2, 0.3], ["1", "0", "0"], r"0/1 or bool"),
        (["a", "b"], [1, 0], "real numbers"),
    ],
)
def test_bad_input_raises(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(scores, labels)


@pytest.mark.parametrize("target", [-0.01, 1.5])
def test_bad_target_fpr_raises(target):
    with pytest.raises(ValueError, match="target_fpr"):
        tpr_at_fpr([0.2, 0.1], [1, 0], target)
    with pytest.raises(ValueError, match="target_fpr"):
        summarize([0.2, 0.1], [1, 0], fprs=(target,))


def test_bad_options_raise():
    scores, labels = [0.2, 0.1], [1, 0]
    with pytest.raises(ValueError, match="nan_policy"):
        roc_auc(scores, labels, nan_policy="omit")
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(roc_auc, scores, labels, n_boot=0)
    with pytest.raises(ValueError, match="n_boot"):
        summarize(scores, labels, n_boot=-1)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(roc_auc, scores, labels, alpha=1.5)


# --- bootstrap ------------------------------------------------------------------


def test_bootstrap_resamples_are_stratified():
    scores, labels = continuous_data(8, 30, 70)
    seen = []

    def record(s, y):
        seen.append((s.size, int(y.sum()), set(s[y].tolist()) <= set(scores[labels == 1])))
        return 0.0

    bootstrap_ci(record, scores, labels, n_boot=50)
    assert len(seen) == 50
    assert all(item == (100, 30, True) for item in seen)


def test_bootstrap_ci_contains_estimate_and_narrows():
    widths = []
    for n in (100, 2000):
        scores, labels = continuous_data(9, n, n)
        low, high = bootstrap_ci(roc_auc, scores, labels, n_boot=300)
        assert low < roc_auc(scores, labels) < high
        widths.append(high - low)
    # Width scales like 1/sqrt(n): 20x the data should be ~4.5x narrower.
    assert widths[1] < widths[0] / 3


def test_bootstrap_ci_level():
    scores, labels = continuous_data(10, 300, 300)
    low95, high95 = bootstrap_ci(roc_auc, scores, labels, n_boot=300, alpha=0.05)
    low50, high50 = bootstrap_ci(roc_auc, scores, labels, n_boot=300, alpha=0.5)
    assert low95 < low50 < high50 < high95


def test_bootstrap_ci_is_deterministic_given_seed():
    scores, labels = continuous_data(11, 200, 200)
    a = bootstrap_ci(roc_auc, scores, labels, n_boot=200, seed=123)
    b = bootstrap_ci(roc_auc, scores, labels, n_boot=200, seed=123)
    c = bootstrap_ci(roc_auc, scores, labels, n_boot=200, seed=124)
    assert a == b
    assert a != c
    assert summarize(scores, labels, n_boot=200, seed=5) == summarize(
        scores, labels, n_boot=200, seed=5
    )
    assert summarize(scores, labels, n_boot=200, seed=5)["auc_ci"] != summarize(
        scores, labels, n_boot=200, seed=6
    )["auc_ci"]


# --- summarize --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["continuous_unbalanced", "ties_5_levels", "ties_20_levels"])
def test_summarize_matches_individual_functions(name):
    # summarize uses a vectorized bootstrap; it must give exactly what the
    # generic bootstrap_ci gives with the same seed.
    scores, labels = DATASETS[name]()
    n_boot, seed = 200, 3
    result = summarize(scores, labels, n_boot=n_boot, seed=seed)

    assert set(result) == {
        "auc", "auc_ci",
        "tpr@10%fpr", "tpr@10%fpr_ci",
        "tpr@1%fpr", "tpr@1%fpr_ci",
        "tpr@0.1%fpr", "tpr@0.1%fpr_ci", "tpr_na",
        "n_members", "n_nonmembers", "n_dropped_nan",
    }
    assert result["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result["auc_ci"] == pytest.approx(
        bootstrap_ci(roc_auc, scores, labels, n_boot=n_boot, seed=seed), abs=1e-12
    )
    for target, key in zip(TARGET_FPRS, ["tpr@10%fpr", "tpr@1%fpr", "tpr@0.1%fpr"]):
        if target * (labels == 0).sum() < 1:  # ties_5_levels: 600 non-members, no 0.1% FPR
            assert result[key] is None and result[key + "_ci"] is None
            assert result["tpr_na"][key] == "n/a (needs >= 1000 non-members)"
            continue
        assert key not in result["tpr_na"]
        assert result[key] == sklearn_tpr_at_fpr(scores, labels, target)
        metric = functools.partial(tpr_at_fpr, target_fpr=target)
        assert result[key + "_ci"] == pytest.approx(
            bootstrap_ci(metric, scores, labels, n_boot=n_boot, seed=seed), abs=1e-12
        )
    assert result["n_members"] == int(labels.sum())
    assert result["n_nonmembers"] == int((labels == 0).sum())
    assert result["n_dropped_nan"] == 0


def test_summarize_custom_fprs_and_no_bootstrap():
    scores, labels = continuous_data(12, 100, 100)
    result = summarize(scores, labels, fprs=(0.05, 0.0001), n_boot=0)
    assert result["tpr@5%fpr"] == sklearn_tpr_at_fpr(scores, labels, 0.05)
    assert result["tpr@0.01%fpr"] is None  # 100 non-members cannot measure 0.01% FPR
    assert result["tpr_na"] == {"tpr@0.01%fpr": "n/a (needs >= 10000 non-members)"}
    assert result["auc_ci"] is None
    assert result["tpr@5%fpr_ci"] is None


@pytest.mark.parametrize("target, needed", [(0.1, 10), (0.01, 100), (0.001, 1000),
                                            (0.05, 20), (0.3, 4), (1.0, 1)])
def test_min_nonmembers_is_ceil_of_one_over_fpr(target, needed):
    assert metrics.min_nonmembers(target) == needed
    assert metrics.tpr_unsupported_reason(target, needed) is None
    if needed > 1:
        assert metrics.tpr_unsupported_reason(target, needed - 1) == (
            f"n/a (needs >= {needed} non-members)")


@pytest.mark.parametrize("n_nonmembers", [99, 100, 101])
def test_summarize_reports_tpr_only_where_the_nonmembers_support_it(n_nonmembers):
    """TPR at 1% FPR needs FPR >= 1/n_nonmembers: 100 non-members, not 99."""
    scores, labels = continuous_data(14, 50, n_nonmembers)
    result = summarize(scores, labels, fprs=(0.1, 0.01), n_boot=20)
    assert result["tpr@10%fpr"] == sklearn_tpr_at_fpr(scores, labels, 0.1)
    if n_nonmembers >= 100:
        assert result["tpr@1%fpr"] == sklearn_tpr_at_fpr(scores, labels, 0.01)
        assert result["tpr@1%fpr_ci"] is not None and result["tpr_na"] == {}
    else:
        assert result["tpr@1%fpr"] is None and result["tpr@1%fpr_ci"] is None
        assert result["tpr_na"] == {"tpr@1%fpr": "n/a (needs >= 100 non-members)"}
    with pytest.raises(ValueError, match="FPR 0"):
        metrics.min_nonmembers(0.0)


def test_summarize_ci_contains_estimates():
    scores, labels = continuous_data(13, 2000, 2000, shift=1.0)
    result = summarize(scores, labels, n_boot=500)
    for key in ("auc", "tpr@10%fpr", "tpr@1%fpr", "tpr@0.1%fpr"):
        low, high = result[key + "_ci"]
        assert low <= result[key] <= high, key
        assert high - low > 0, key


# --- module layout ----------------------------------------------------------------


def test_bootstrap_names_live_in_bootstrap_only():
    """No re-export: the metrics module holds the point estimates, bootstrap the intervals."""
    for name in ("bootstrap_ci", "summarize"):
        assert not hasattr(metrics, name) and name in bootstrap.__all__
    with pytest.raises(AttributeError):
        metrics.no_such_name


def test_fpr_grid_defined_once():
    assert metrics.TPR_KEYS == {"tpr@10%fpr": 0.1, "tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.001}
    s = summarize([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], n_boot=0)
    assert [k for k in s if k.startswith("tpr@") and not k.endswith("_ci")] == list(
        metrics.TPR_KEYS)


@pytest.mark.parametrize("first", ["jaxmem.bootstrap", "jaxmem.metrics"])
def test_modules_import_in_either_order(first):
    code = (f"import {first}; from jaxmem.bootstrap import summarize, bootstrap_ci; "
            "from jaxmem.metrics import roc_auc, TPR_KEYS")
    subprocess.run([sys.executable, "-c", code], check=True)
