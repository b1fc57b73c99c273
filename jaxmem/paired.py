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
from typing import Hashable, Mapping

import numpy as np

from jaxmem.bootstrap import (_check_bootstrap_args, _percentile_interval, _resample_indices,
                              _roc_metrics_on_resamples)
from jaxmem.metrics import ArrayLike, _auc, _validate

__all__ = ["Estimate", "PairedAUCs", "paired_bootstrap", "verdict", "VERDICTS"]

VERDICTS = ("reproduced", "contradicted", "inconclusive")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile interval (``low``/``high`` None without bootstrap)."""

    value: float
    low: float | None = None
    high: float | None = None

    def __str__(self) -> str:
        """``+0.123 [95% CI +0.050, +0.190]``, signed because these are differences."""
        if self.low is None:
            return f"{self.value:+.3f} (no CI: n_boot = 0)"
        return f"{self.value:+.3f} [95% CI {self.low:+.3f}, {self.high:+.3f}]"


@dataclasses.dataclass(frozen=True)
class PairedAUCs:
    """AUCs of several score arrays measured on the same bootstrap resamples.

    Attributes:
        auc: ``{key: AUC}`` on the full data.
        samples: ``{key: (n_boot,) AUCs}``, row ``b`` of every key from the same resample
            ``b``; empty arrays when ``n_boot`` was 0.
        alpha: 1 minus the confidence level of the intervals.
    """

    auc: dict
    samples: dict
    alpha: float

    @property
    def n_boot(self) -> int:
        return len(next(iter(self.samples.values())))

    def ci(self, key: Hashable) -> tuple[float, float] | None:
        """The percentile interval of one key's AUC (None without bootstrap)."""
        return _percentile_interval(self.samples[key], self.alpha) if self.n_boot else None

    def contrast(self, weights: Mapping[Hashable, float]) -> Estimate:
        """``sum(w * AUC_key)`` with its paired interval.

        The weighted sum is formed on every resample before the quantiles are taken, which is
        what keeps the pairing: e.g. ``{"A": 1, "B": -1}`` is the difference A - B, and
        ``{"A": .5, "B": .5, "C": -1}`` the mean of A and B minus C.
        """
        value = float(sum(w * self.auc[k] for k, w in weights.items()))
        if not self.n_boot:
            return Estimate(value)
        stat = sum(w * self.samples[k] for k, w in weights.items())
        return Estimate(value, *_percentile_interval(np.asarray(stat), self.alpha))

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
        checked[k], labels_ok, _ = _validate(v, labels, nan_policy)
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
        _check_bootstrap_args(n_boot, alpha)
    arrays, labels = _paired_arrays(scores_by_key, labels, nan_policy)
    auc = {k: _auc(v, labels) for k, v in arrays.items()}
    if not n_boot:
        return PairedAUCs(auc, {k: np.empty(0) for k in arrays}, alpha)
    # One set of resamples for every key: this is the pairing.
    indices = _resample_indices(labels, int(n_boot), seed)
    samples = {k: _roc_metrics_on_resamples(v, labels, indices)[0] for k, v in arrays.items()}
    return PairedAUCs(auc, samples, alpha)


def verdict(estimate: Estimate, claimed_sign: int = 1) -> str:
    """What a difference's interval says about a claim that it is positive (or negative).

    ``"reproduced"`` when the interval lies entirely on the claimed side of 0,
    ``"contradicted"`` when it lies entirely on the other side, ``"inconclusive"`` otherwise
    (including an interval touching 0, and no interval at all).

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
