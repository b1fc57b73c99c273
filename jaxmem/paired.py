"""Paired bootstrap: several attacks' AUCs on the same resamples, and CIs on their differences.

Every method and epoch of a study is attacked on the same member and non-member texts in the
same order (:func:`jaxmem.study.run_study` hands each cell the one corpus, and
:func:`jaxmem.audit.write_results` writes ``scores.parquet`` rows in that order), so example
``i``'s score under method A and under method B belong together. Resampling the examples once
and recomputing every method's AUC on that resample keeps this pairing: the spread of
``AUC_A - AUC_B`` over resamples is then the uncertainty of the *difference*, which is much
smaller than two separate intervals suggest when both methods rank the same texts similarly.

Resampling is stratified as in :mod:`jaxmem.bootstrap` (members and non-members drawn
separately, with replacement), and uses the very same resamples for the same seed, so each
key's interval equals :func:`~jaxmem.bootstrap.summarize`'s ``auc_ci`` for its scores.

Training seeds: a two-level bootstrap (:func:`hierarchical_bootstrap`). A study may train
every method with several seeds and score every run on the same member and non-member texts.
An AUC then varies for two reasons: which texts were drawn, and which training run (seed:
initialization, data order) was drawn. The claims are about *methods*, i.e. about the AUC a run
of the method has in expectation over its training randomness, so the run is the upper stage
of the design and the text the lower one, as in the two-stage bootstrap of Davison & Hinkley
(1997, *Bootstrap Methods and their Application*, section 3.8): resample the upper-stage units
(seeds) with replacement, then the lower-stage units (texts). One difference from their nested
setting: here every seed scores the *same* texts (seeds and texts are crossed, not nested), so
the texts are resampled once per replicate and that one resample is shared by every key and
every seed (the pairing; Owen 2007's "pigeonhole" bootstrap for crossed factors does the
same). Resampling the seeds alone would miss the text-sampling variance (all seeds share the
texts), and resampling the texts alone treats one run as the method. Per replicate:

1. texts: one stratified resample of members and non-members, exactly
   :func:`paired_bootstrap`'s (the same generator, seed and draws);
2. seeds: per *group* of keys, k seeds out of k with replacement from a second generator
   (``default_rng([seed, 1])``), one draw per group in the order the groups first appear.
   Keys of one training run at different epochs share a group (and so the draw): their
   difference (claim 2) is then taken within the same runs; different methods draw seeds
   independently (independent runs);
3. a key's replicate AUC is the mean, over its drawn seeds, of that seed's AUC on the
   resampled texts (summed in the order drawn, then divided by k).

The point estimate is the mean over seeds of each seed's AUC on all texts. With one seed the
seed draw is always that seed, and every number equals :func:`paired_bootstrap`'s. Known
biases, both small against a claim's margin: with k seeds the seed stage's bootstrap variance
is (k - 1)/k of the sample variance (narrow for k = 2 or 3), while the seed-by-text
interaction enters both stages (wider), Davison & Hinkley's "strategy 2".

Tests of a claim on these replicates: :func:`p_above` / :func:`p_below` (bootstrap p-values),
:func:`holm` (step-down adjustment), :func:`judge_pairs` (every pair judged; an
intersection-union headline) and :func:`judge_equivalence` (TOST, "near chance").

Example:
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([1, 0], 200)
    >>> strong = labels * 1.0 + rng.normal(0, 1, 400)
    >>> weak = labels * 0.2 + rng.normal(0, 1, 400)
    >>> boot = paired_bootstrap({"A": strong, "B": weak}, labels, n_boot=200)
    >>> d = boot.difference("A", "B")
    >>> verdict(d), d.value > 0
    ('reproduced', True)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

from jaxmem.bootstrap import (check_bootstrap_args, percentile_interval, resample_indices,
                              roc_metrics_on_resamples)
from jaxmem.metrics import ArrayLike, auc_of_checked, check_scores

__all__ = ["Estimate", "PairedAUCs", "paired_bootstrap", "hierarchical_bootstrap",
           "two_level_indices", "verdict", "VERDICTS", "p_above", "p_below", "holm",
           "PairTest", "ClaimTest", "judge_pairs", "judge_equivalence", "ONE_SIDED_ALPHA",
           "EQUIVALENCE_ALPHA"]

VERDICTS = ("reproduced", "contradicted", "mixed", "inconclusive")

#: Level of every one-sided directional test: each end of a 95% two-sided interval, so a pair
#: reads "reproduced" about when the lower end of the 95% interval shown lies above the margin.
ONE_SIDED_ALPHA = 0.025
#: Level of the equivalence test (TOST): two one-sided tests at 5%, i.e. the 90% interval.
EQUIVALENCE_ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile interval (``low``/``high`` None without bootstrap).

    ``replicates`` holds the bootstrap replicates the interval was taken from (None without
    bootstrap), for the tests of :func:`judge_pairs`; ``level`` is the interval's confidence.
    """

    value: float
    low: float | None = None
    high: float | None = None
    level: float = 0.95
    replicates: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        """``+0.123 [95% CI +0.050, +0.190]``, signed because these are differences."""
        if self.low is None:
            return f"{self.value:+.3f} (no CI: n_boot = 0)"
        return (f"{self.value:+.3f} [{self.level * 100:g}% CI {self.low:+.3f}, "
                f"{self.high:+.3f}]")


@dataclasses.dataclass(frozen=True)
class PairedAUCs:
    """AUCs of several score arrays measured on the same bootstrap resamples.

    Attributes:
        auc: ``{key: AUC}`` on the full data (the mean over seeds with several seeds).
        samples: ``{key: (n_boot,) AUCs}``, row ``b`` of every key from the same resample
            ``b``; empty arrays when ``n_boot`` was 0.
        alpha: 1 minus the confidence level of the intervals.
        n_seeds: ``{key: number of training seeds}`` (1 for :func:`paired_bootstrap`).
    """

    auc: dict
    samples: dict
    alpha: float
    n_seeds: dict = dataclasses.field(default_factory=dict)

    @property
    def n_boot(self) -> int:
        return len(next(iter(self.samples.values())))

    def ci(self, key: Hashable) -> tuple[float, float] | None:
        """The percentile interval of one key's AUC (None without bootstrap)."""
        return percentile_interval(self.samples[key], self.alpha) if self.n_boot else None

    def replicates(self, weights: Mapping[Hashable, float]) -> np.ndarray:
        """``sum(w * AUC_key)`` on every resample, ``(n_boot,)``."""
        return np.asarray(sum(w * self.samples[k] for k, w in weights.items()), np.float64)

    def contrast(self, weights: Mapping[Hashable, float], alpha: float | None = None
                 ) -> Estimate:
        """``sum(w * AUC_key)`` with its paired interval.

        The weighted sum is formed on every resample before the quantiles are taken, which is
        what keeps the pairing: e.g. ``{"A": 1, "B": -1}`` is the difference A - B, and
        ``{"A": .5, "B": .5, "C": -1}`` the mean of A and B minus C. ``alpha`` overrides the
        interval's level (e.g. 0.10 for the 90% interval of an equivalence test).
        """
        alpha = self.alpha if alpha is None else alpha
        value = float(sum(w * self.auc[k] for k, w in weights.items()))
        if not self.n_boot:
            return Estimate(value, level=1 - alpha)
        stat = self.replicates(weights)
        return Estimate(value, *percentile_interval(stat, alpha), level=1 - alpha,
                        replicates=stat)

    def difference(self, a: Hashable, b: Hashable) -> Estimate:
        """``AUC_a - AUC_b`` with its paired interval."""
        return self.contrast({a: 1.0, b: -1.0})


def _paired_arrays(scores_by_key: Mapping[Hashable, ArrayLike], labels: ArrayLike,
                   nan_policy: str) -> tuple[dict, np.ndarray]:
    """Validated float64 scores per key and bool labels, with the same examples in every key.

    Under ``nan_policy="drop"`` an example is dropped from every key if any key's score is
    non-finite, since dropping it from one key alone would break the pairing.
    """
    if not scores_by_key:
        raise ValueError("paired_bootstrap needs at least one score array.")
    labels = np.asarray(labels)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in scores_by_key.items()}
    for k, v in arrays.items():
        if v.shape != labels.shape:
            raise ValueError(
                f"scores of {k!r} have shape {v.shape} but labels {labels.shape}; paired "
                "scores need one score per example, for the same examples in the same order.")
    keep = np.all([np.isfinite(v) for v in arrays.values()], axis=0)
    if not keep.all() and nan_policy == "drop":
        arrays = {k: v[keep] for k, v in arrays.items()}
        labels = labels[keep]
    checked = {}
    for k, v in arrays.items():  # the metrics' own checks: labels 0/1, both classes, NaN
        checked[k], labels_ok, _ = check_scores(v, labels, nan_policy)
    return checked, labels_ok


def paired_bootstrap(scores_by_key: Mapping[Hashable, ArrayLike], labels: ArrayLike,
                     n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                     nan_policy: str = "raise") -> PairedAUCs:
    """AUC of each score array, all on the same stratified bootstrap resamples.

    Args:
        scores_by_key: ``{key: 1-D scores}`` (higher means member), each scoring the same
            examples in the same order, e.g. ``{("lora", 3): ..., ("prompt", 3): ...}``.
        labels: 1-D labels shared by every key, 1/True for members.
        n_boot: number of resamples; 0 gives point estimates only.
        seed: seed of the resampling; with the same seed each key's interval equals
            :func:`~jaxmem.bootstrap.summarize`'s ``auc_ci`` of its scores.
        alpha: 1 minus the confidence level; 0.05 gives 95% intervals.
        nan_policy: ``"raise"``, or ``"drop"`` to leave out every example that is non-finite
            under any key.

    Returns:
        A :class:`PairedAUCs`; ``.difference(a, b)`` and ``.contrast(weights)`` give paired
        intervals.

    Raises:
        ValueError: for mismatched shapes, malformed labels, a single class, NaN under
            ``"raise"``, a negative ``n_boot`` or ``alpha`` outside (0, 1).
    """
    if n_boot != 0:
        check_bootstrap_args(n_boot, alpha)
    arrays, labels = _paired_arrays(scores_by_key, labels, nan_policy)
    auc = {k: auc_of_checked(v, labels) for k, v in arrays.items()}
    ones = {k: 1 for k in arrays}
    if not n_boot:
        return PairedAUCs(auc, {k: np.empty(0) for k in arrays}, alpha, ones)
    # One set of resamples for every key: this is the pairing.
    indices = resample_indices(labels, int(n_boot), seed)
    samples = {k: roc_metrics_on_resamples(v, labels, indices)[0] for k, v in arrays.items()}
    return PairedAUCs(auc, samples, alpha, ones)


def two_level_indices(labels: ArrayLike, n_seeds: Mapping[Hashable, int], n_boot: int,
                      seed: int = 0) -> tuple[np.ndarray, dict]:
    """The resamples of :func:`hierarchical_bootstrap`, exposed so they can be checked.

    Args:
        labels: the (already filtered) labels, 1/True for members.
        n_seeds: ``{group: number of seeds}``, in the order the groups draw.
        n_boot, seed: resamples and seed.

    Returns:
        ``(texts, seeds)``: ``texts`` the ``(n_boot, n)`` stratified text indices, equal to
        :func:`paired_bootstrap`'s for the same seed; ``seeds`` ``{group: (n_boot, k)}`` seed
        positions drawn with replacement (row ``b`` goes with text resample ``b``).
    """
    texts = resample_indices(np.asarray(labels, bool), int(n_boot), seed)
    rng = np.random.default_rng([seed, 1])  # its own stream: the text draws stay as they were
    seeds = {g: rng.integers(0, k, size=(int(n_boot), k)) for g, k in n_seeds.items()}
    return texts, seeds


def _seed_mean(values) -> np.ndarray | float:
    """Sum in order, then divide: the same floats as a plain loop ``s += v; s / k``."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total / len(values)


def hierarchical_bootstrap(scores_by_key: Mapping[Hashable, Sequence[ArrayLike]],
                           labels: ArrayLike, n_boot: int = 1000, seed: int = 0,
                           alpha: float = 0.05, nan_policy: str = "raise",
                           group: Callable[[Hashable], Hashable] | None = None) -> PairedAUCs:
    """AUCs over several training seeds and the texts: the two-level bootstrap of the module
    docstring (texts resampled once per replicate for every key and seed, seeds per group).

    Args:
        scores_by_key: ``{key: [scores of seed 1, scores of seed 2, ...]}``, every array
            scoring the same examples in the same order; e.g. ``{("lora", 3): [s0, s1, s2]}``.
            Keys of one group list their seeds in the same order (position j is the same
            training run).
        labels: 1-D labels shared by every key and seed, 1/True for members.
        n_boot, seed, alpha, nan_policy: as :func:`paired_bootstrap` (``"drop"`` leaves out an
            example non-finite under any key or seed).
        group: ``key -> group``; keys of one group share each replicate's seed draw (e.g.
            ``lambda key: key[0]``: the epochs of one method's runs). Default: every key is
            its own group.

    Returns:
        A :class:`PairedAUCs` whose ``auc`` is the mean over seeds of the full-data AUC, whose
        ``samples`` are the replicate means over the drawn seeds, and ``n_seeds`` per key.
        With one seed per key, equal to :func:`paired_bootstrap` for the same seed.

    Raises:
        ValueError: a key without seeds, keys of one group with different numbers of seeds,
            or anything :func:`paired_bootstrap` refuses.
    """
    group = group or (lambda key: key)
    per_key = {k: list(v) for k, v in scores_by_key.items()}
    n_seeds: dict = {}
    for k, arrays in per_key.items():
        if not arrays:
            raise ValueError(f"{k!r} has no seeds' scores.")
        g = group(k)
        if n_seeds.setdefault(g, len(arrays)) != len(arrays):
            raise ValueError(f"keys of group {g!r} have different numbers of seeds "
                             f"({n_seeds[g]} and {len(arrays)} for {k!r}); they must list the "
                             "same training runs.")
    if n_boot != 0:
        check_bootstrap_args(n_boot, alpha)
    flat, labels = _paired_arrays({(k, j): a for k, arrays in per_key.items()
                                   for j, a in enumerate(arrays)}, labels, nan_policy)
    auc = {k: float(_seed_mean([auc_of_checked(flat[k, j], labels)
                                for j in range(len(arrays))]))
           for k, arrays in per_key.items()}
    counts = {k: len(arrays) for k, arrays in per_key.items()}
    if not n_boot:
        return PairedAUCs(auc, {k: np.empty(0) for k in per_key}, alpha, counts)
    texts, draws = two_level_indices(labels, n_seeds, int(n_boot), seed)
    rows = np.arange(int(n_boot))
    samples = {}
    for k, arrays in per_key.items():
        per_seed = np.stack([roc_metrics_on_resamples(flat[k, j], labels, texts)[0]
                             for j in range(len(arrays))])  # (k, n_boot)
        drawn = draws[group(k)]
        samples[k] = _seed_mean([per_seed[drawn[:, j], rows] for j in range(drawn.shape[1])])
    return PairedAUCs(auc, samples, alpha, counts)


def verdict(estimate: Estimate, claimed_sign: int = 1) -> str:
    """What a difference's interval says about a claim that it is positive (or negative).

    ``"reproduced"`` when the interval lies entirely on the claimed side of 0,
    ``"contradicted"`` when it lies entirely on the other side, ``"inconclusive"`` otherwise
    (including an interval touching 0, and no interval at all). The study report's claims use
    :func:`judge_pairs` instead (a margin, every pair, Holm).

    Args:
        estimate: the difference, e.g. ``PairedAUCs.difference("lora", "prompt")``.
        claimed_sign: +1 if the claim is that the difference is above 0, -1 if below.
    """
    if claimed_sign not in (1, -1):
        raise ValueError(f"claimed_sign must be +1 or -1, got {claimed_sign!r}.")
    if estimate.low is None:
        return "inconclusive"
    low, high = sorted((claimed_sign * estimate.low, claimed_sign * estimate.high))
    if low > 0:
        return "reproduced"
    if high < 0:
        return "contradicted"
    return "inconclusive"


# ----------------------------------------------------------------------------- tests of claims

def p_above(replicates: ArrayLike | None, margin: float) -> float:
    """Bootstrap p-value of H0: theta <= margin against theta > margin.

    The fraction of bootstrap replicates at or below the margin, with the usual +1 correction
    (as Davison & Hinkley 1997's Monte Carlo p-values, section 4.2):
    ``(1 + #{theta*_b <= margin}) / (B + 1)``. It is the
    percentile interval turned around: below alpha about when the one-sided lower
    ``alpha``-quantile lies above the margin; never below ``1 / (B + 1)``. NaN without
    replicates.
    """
    if replicates is None or not len(replicates):
        return float("nan")
    r = np.asarray(replicates, np.float64)
    return float((1 + np.count_nonzero(r <= margin)) / (r.size + 1))


def p_below(replicates: ArrayLike | None, margin: float) -> float:
    """Bootstrap p-value of H0: theta >= margin against theta < margin:
    ``(1 + #{theta*_b >= margin}) / (B + 1)`` (as :func:`p_above`, mirrored)."""
    if replicates is None or not len(replicates):
        return float("nan")
    r = np.asarray(replicates, np.float64)
    return float((1 + np.count_nonzero(r >= margin)) / (r.size + 1))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order.

    With the m p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``
    (1-based ranks; ties keep their input order); rejecting where ``p_adj < alpha`` controls
    the family-wise error at alpha. NaN (no test) is left out of m and stays NaN.
    """
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = order.size, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]


@dataclasses.dataclass(frozen=True)
class PairTest:
    """One pair of a claim: its difference and the two one-sided tests on it.

    Attributes:
        estimate: the difference with its interval and replicates.
        p_above, p_below: raw p-values of H0 "difference <= margin" and H0 "difference >= 0".
        p_above_holm, p_below_holm: the same, Holm-adjusted over the claim's pairs.
        verdict: ``"reproduced"`` (Holm-adjusted ``p_above`` below alpha), ``"contradicted"``
            (Holm-adjusted ``p_below`` below alpha) or ``"inconclusive"``.
    """

    estimate: Estimate
    p_above: float
    p_below: float
    p_above_holm: float
    p_below_holm: float
    verdict: str


@dataclasses.dataclass(frozen=True)
class ClaimTest:
    """A claim judged on every pair: :func:`judge_pairs` or :func:`judge_equivalence`."""

    verdict: str
    pairs: dict
    margin: float
    alpha: float

    def count(self, verdict: str) -> int:
        return sum(p.verdict == verdict for p in self.pairs.values())


def judge_pairs(estimates: Mapping[Hashable, Estimate], margin: float,
                alpha: float = ONE_SIDED_ALPHA) -> ClaimTest:
    """A claim that *every* difference is positive, judged pair by pair.

    Each pair gets two one-sided bootstrap tests on its replicates: H0 "difference <=
    ``margin``" (:func:`p_above`: the claimed effect, at least the minimum effect) and H0
    "difference >= 0" (:func:`p_below`: a significant reversal). The headline:

    - ``"reproduced"``: every pair's raw ``p_above`` is below alpha. This is the
      intersection-union test (Berger 1982) of "every difference > margin": it rejects the
      union of the pairs' nulls only when each is rejected at alpha, and needs no
      multiplicity correction;
    - ``"contradicted"``: every pair's raw ``p_below`` is below alpha (the same test for "every
      difference < 0");
    - ``"mixed"``: some pairs are reproduced and some contradicted, each Holm-adjusted over
      the pairs (:func:`holm`, per direction: at most alpha + alpha in all);
    - ``"inconclusive"``: otherwise, and always without replicates (``n_boot`` 0).

    Each pair's own verdict is Holm-adjusted (statements about single pairs), so a headline
    may read reproduced while a pair alone reads inconclusive: the IUT is the stronger test of
    the claim as a whole.
    """
    keys = list(estimates)
    up = [p_above(estimates[k].replicates, margin) for k in keys]
    down = [p_below(estimates[k].replicates, 0.0) for k in keys]
    up_h, down_h = holm(up), holm(down)
    pairs = {}
    for i, k in enumerate(keys):
        v = ("reproduced" if up_h[i] < alpha else "contradicted" if down_h[i] < alpha
             else "inconclusive")
        pairs[k] = PairTest(estimates[k], up[i], down[i], up_h[i], down_h[i], v)
    if keys and all(p < alpha for p in up):
        head = "reproduced"
    elif keys and all(p < alpha for p in down):
        head = "contradicted"
    elif any(p.verdict == "reproduced" for p in pairs.values()) and any(
            p.verdict == "contradicted" for p in pairs.values()):
        head = "mixed"
    else:
        head = "inconclusive"
    return ClaimTest(head, pairs, margin, alpha)


def judge_equivalence(estimates: Mapping[Hashable, Estimate], center: float, margin: float,
                      alpha: float = EQUIVALENCE_ALPHA) -> ClaimTest:
    """A claim that *every* value lies within ``center +- margin`` ("near chance": AUC 0.5).

    Each value is tested by TOST (Schuirmann 1987): two one-sided tests at alpha against
    ``center - margin`` and ``center + margin``, i.e. "equivalent" when its ``1 - 2 alpha``
    percentile interval (90% at alpha 0.05; pass ``estimates`` at that level) lies strictly
    inside the band. Away from the band: the two-sided p-value ``min(1, 2 min(p_above(center
    + margin), p_below(center - margin)))``, Holm-adjusted over the values, below alpha.

    Headline: ``"reproduced"`` when every value is equivalent (TOST is itself an
    intersection-union test, and so is "all of them": no correction), ``"contradicted"`` when
    some value is Holm-significantly outside the band, ``"inconclusive"`` otherwise. Per value:
    ``"equivalent"``, ``"not equivalent"`` or ``"inconclusive"``; :class:`PairTest`'s
    ``p_above`` / ``p_below`` hold the TOST p-value and the raw two-sided "outside" p-value.
    """
    keys = list(estimates)
    lo, hi = center - margin, center + margin
    tost, away = [], []
    for k in keys:
        r = estimates[k].replicates
        tost.append(max(p_above(r, lo), p_below(r, hi)))
        away.append(min(1.0, 2 * min(p_above(r, hi), p_below(r, lo))))
    away_h = holm(away)
    pairs = {}
    for i, k in enumerate(keys):
        e = estimates[k]
        if e.low is not None and lo < e.low and e.high < hi:
            v = "equivalent"
        elif away_h[i] < alpha:
            v = "not equivalent"
        else:
            v = "inconclusive"
        pairs[k] = PairTest(e, tost[i], away[i], tost[i], away_h[i], v)
    verdicts = [p.verdict for p in pairs.values()]
    head = ("reproduced" if verdicts and all(v == "equivalent" for v in verdicts)
            else "contradicted" if "not equivalent" in verdicts else "inconclusive")
    return ClaimTest(head, pairs, margin, alpha)
