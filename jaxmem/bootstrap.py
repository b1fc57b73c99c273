"""Bootstrap confidence intervals for membership-inference metrics.

Inputs follow the conventions of :mod:`jaxmem.metrics` (1-D ``scores`` where
higher means member, 0/1 ``labels``, ``nan_policy`` for non-finite scores),
and are checked by the same validation.

* :func:`bootstrap_ci`: a percentile bootstrap confidence interval for any
  metric, resampling members and non-members separately.
* :func:`summarize`: AUC and TPR at several FPRs with their intervals, in one
  dict ready to log. Its bootstrap is vectorized but draws the same resamples
  as :func:`bootstrap_ci`, so the intervals are the same for the same seed.

Example:
    >>> from jaxmem.bootstrap import summarize
    >>> s = summarize([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], n_boot=100)
    >>> s["auc"], s["n_members"]
    (1.0, 2)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jaxmem.metrics import (TPR_KEYS, ArrayLike, auc_of_checked, check_scores,
                            check_target_fpr, tpr_key, tpr_of_checked, tpr_unsupported_reason)

__all__ = ["bootstrap_ci", "summarize", "check_bootstrap_args", "resample_indices",
           "percentile_interval", "roc_metrics_on_resamples"]

MetricFn = Callable[[np.ndarray, np.ndarray], float]


# Upper bound on the number of cells in the (resamples x distinct scores)
# count tables used by the vectorized bootstrap in ``summarize``; resamples
# are processed in chunks so that memory stays around a few tens of MB.
_MAX_TABLE_CELLS = 2_000_000


# ---------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------


def check_bootstrap_args(n_boot: int, alpha: float) -> None:
    """Refuses an ``n_boot`` that is not a positive integer or an ``alpha`` outside (0, 1)."""
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(
            f"alpha must be in (0, 1), got {alpha!r}; e.g. 0.05 for a 95% interval."
        )


def resample_indices(labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Draws stratified bootstrap resamples.

    Returns an ``(n_boot, n)`` index array. In every row the first
    ``n_members`` columns are members drawn with replacement from the members,
    and the rest are non-members drawn likewise, so each resample keeps the
    original class counts.
    """
    rng = np.random.default_rng(seed)
    member_idx = np.flatnonzero(labels)
    nonmember_idx = np.flatnonzero(~labels)
    members = member_idx[rng.integers(0, member_idx.size, size=(n_boot, member_idx.size))]
    nonmembers = nonmember_idx[
        rng.integers(0, nonmember_idx.size, size=(n_boot, nonmember_idx.size))
    ]
    return np.concatenate([members, nonmembers], axis=1)


def percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """The ``(alpha/2, 1 - alpha/2)`` quantiles of bootstrap replicates, as floats."""
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def bootstrap_ci(
    metric_fn: MetricFn,
    scores: ArrayLike,
    labels: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    nan_policy: str = "raise",
) -> tuple[float, float]:
    """Computes a percentile bootstrap confidence interval for a metric.

    Members and non-members are resampled separately (with replacement), so
    every resample has the same class counts as the data and always contains
    both classes. ``metric_fn`` is evaluated on each resample and the
    interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of the results.

    Args:
        metric_fn: ``metric_fn(scores, labels) -> float``, e.g.
            :func:`~jaxmem.metrics.roc_auc` or
            ``functools.partial(tpr_at_fpr, target_fpr=0.01)``. It gets
            float64 scores and bool labels.
        scores: 1-D attack scores; higher means more likely a member.
        labels: 1-D labels, 1/True for members and 0/False for non-members.
        n_boot: number of bootstrap resamples.
        alpha: 1 minus the confidence level; 0.05 gives a 95% interval.
        seed: seed for the resampling; the same seed gives the same interval.
        nan_policy: ``"raise"`` (default) to reject NaN/inf scores, or
            ``"drop"`` to leave those examples out.

    Returns:
        ``(low, high)`` bounds of the interval.

    Raises:
        ValueError: for malformed input, ``n_boot < 1`` or ``alpha`` outside
            (0, 1).

    Example:
        >>> from jaxmem.metrics import roc_auc
        >>> rng = np.random.default_rng(0)
        >>> scores = np.concatenate([rng.normal(1, 1, 500), rng.normal(0, 1, 500)])
        >>> labels = np.repeat([1, 0], 500)
        >>> low, high = bootstrap_ci(roc_auc, scores, labels, n_boot=200)
        >>> low < roc_auc(scores, labels) < high
        True
    """
    check_bootstrap_args(n_boot, alpha)
    scores, labels, _ = check_scores(scores, labels, nan_policy)
    indices = resample_indices(labels, int(n_boot), seed)
    values = np.array([metric_fn(scores[idx], labels[idx]) for idx in indices], dtype=np.float64)
    return percentile_interval(values, alpha)


def _bootstrap_roc_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    target_fprs: Sequence[float],
    n_boot: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """AUC and TPR@FPR on every bootstrap resample, vectorized.

    Uses the same resamples as :func:`bootstrap_ci` with the same ``seed``,
    and gives the same numbers as calling :func:`~jaxmem.metrics.roc_auc`
    and :func:`~jaxmem.metrics.tpr_at_fpr` on each one.

    Returns:
        ``(aucs, tprs)`` with shapes ``(n_boot,)`` and ``(n_boot, len(target_fprs))``.
    """
    indices = resample_indices(labels, n_boot, seed)
    return roc_metrics_on_resamples(scores, labels, indices, target_fprs)


def roc_metrics_on_resamples(
    scores: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    target_fprs: Sequence[float] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """AUC and TPR@FPR on given resamples (rows of ``indices``, from :func:`resample_indices`).

    Taking the indices rather than a seed lets several score arrays be measured on the very
    same resamples (the paired bootstrap, :mod:`jaxmem.paired`). Since both metrics depend
    only on the order of the scores, each score is replaced by the index of its distinct
    value, and each resample becomes two histograms (members and non-members) over those
    indices, from which the ROC curve is a cumulative sum.

    Returns:
        ``(aucs, tprs)`` with shapes ``(n_boot,)`` and ``(n_boot, len(target_fprs))``.
    """
    distinct, value_idx = np.unique(scores, return_inverse=True)
    n_values = distinct.size
    n_boot = indices.shape[0]
    n_members = int(np.count_nonzero(labels))
    n_nonmembers = labels.size - n_members

    aucs = np.empty(n_boot)
    tprs = np.empty((n_boot, len(target_fprs)))
    chunk = max(1, _MAX_TABLE_CELLS // n_values)
    for start in range(0, n_boot, chunk):
        rows = indices[start:start + chunk]
        n_rows = rows.shape[0]
        # Offset each row so one bincount builds all the row histograms.
        offsets = (np.arange(n_rows) * n_values)[:, None]

        def histogram(cols: np.ndarray) -> np.ndarray:
            flat = (value_idx[cols] + offsets).ravel()
            return np.bincount(flat, minlength=n_rows * n_values).reshape(n_rows, n_values)

        pos = histogram(rows[:, :n_members])  # members per distinct value, ascending
        neg = histogram(rows[:, n_members:])

        # AUC: each member beats the non-members below it and ties with those
        # at its value. Doubled to stay in integers until the final division.
        neg_below = np.cumsum(neg, axis=1) - neg
        twice_u = (pos * (2 * neg_below + neg)).sum(axis=1)
        aucs[start:start + n_rows] = twice_u / (2 * n_members * n_nonmembers)

        if not len(target_fprs):
            continue
        # ROC points from the highest value down; the implicit (0, 0) start
        # point is covered by initialising the maxima below to 0.
        tpr = np.cumsum(pos[:, ::-1], axis=1) / n_members
        fpr = np.cumsum(neg[:, ::-1], axis=1) / n_nonmembers
        for j, target in enumerate(target_fprs):
            tprs[start:start + n_rows, j] = np.where(fpr <= target, tpr, 0.0).max(axis=1)
    return aucs, tprs


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summarize(
    scores: ArrayLike,
    labels: ArrayLike,
    fprs: Sequence[float] = tuple(TPR_KEYS.values()),
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    nan_policy: str = "raise",
) -> dict:
    """Computes all standard membership-inference metrics with bootstrap CIs.

    The bootstrap is vectorized and draws the same resamples as
    :func:`bootstrap_ci` with the same ``seed``, so ``summary["auc_ci"]``
    equals ``bootstrap_ci(roc_auc, scores, labels, n_boot, alpha, seed)``.

    Args:
        scores: 1-D attack scores; higher means more likely a member.
        labels: 1-D labels, 1/True for members and 0/False for non-members.
        fprs: FPR targets (fractions) at which to report the TPR; default the grid of
            :data:`jaxmem.metrics.TPR_KEYS`.
        n_boot: number of bootstrap resamples; 0 skips the bootstrap and sets
            every ``*_ci`` entry to None.
        alpha: 1 minus the confidence level; 0.05 gives 95% intervals.
        seed: seed for the resampling.
        nan_policy: ``"raise"`` (default) to reject NaN/inf scores, or
            ``"drop"`` to leave those examples out and count them in
            ``n_dropped_nan``.

    Returns:
        A dict with these keys (shown for the default ``fprs``):

        * ``"auc"``, ``"auc_ci"``: AUC and its ``(low, high)`` interval.
        * ``"tpr@10%fpr"``, ``"tpr@10%fpr_ci"``, ``"tpr@1%fpr"``,
          ``"tpr@1%fpr_ci"``, ``"tpr@0.1%fpr"``, ``"tpr@0.1%fpr_ci"``:
          TPR at each FPR target (see :func:`~jaxmem.metrics.tpr_at_fpr`)
          and its interval.
          A TPR whose FPR target is below ``1/n_nonmembers`` is not
          measurable (the FPR moves in steps of ``1/n_nonmembers``): it and
          its interval are None, and ``"tpr_na"`` says why (see
          :func:`~jaxmem.metrics.tpr_unsupported_reason`).
        * ``"tpr_na"``: ``{key: reason}`` for each TPR left out this way,
          e.g. ``{"tpr@0.1%fpr": "n/a (needs >= 1000 non-members)"}``;
          empty when every target is supported.
        * ``"n_members"``, ``"n_nonmembers"``: counts after dropping.
        * ``"n_dropped_nan"``: number of NaN/inf scores dropped.

    Raises:
        ValueError: for malformed input, an FPR target outside [0, 1],
            a negative ``n_boot`` or ``alpha`` outside (0, 1).

    Example:
        >>> s = summarize([0.9, 0.8, float("nan"), 0.3, 0.1], [1, 1, 1, 0, 0],
        ...               n_boot=100, nan_policy="drop")
        >>> s["auc"], s["tpr@10%fpr"], s["n_members"], s["n_dropped_nan"]
        (1.0, None, 2, 1)
        >>> s["tpr_na"]["tpr@10%fpr"]  # 2 non-members cannot measure a 10% FPR
        'n/a (needs >= 10 non-members)'
    """
    targets = [check_target_fpr(f) for f in fprs]
    if n_boot != 0:
        check_bootstrap_args(n_boot, alpha)
    scores, labels, n_dropped = check_scores(scores, labels, nan_policy)

    n_nonmembers = int(labels.size - np.count_nonzero(labels))
    unsupported = {tpr_key(t): tpr_unsupported_reason(t, n_nonmembers) for t in targets}
    unsupported = {k: why for k, why in unsupported.items() if why}
    measured = [t for t in targets if tpr_key(t) not in unsupported]

    summary: dict = {"auc": auc_of_checked(scores, labels), "auc_ci": None}
    for target in targets:
        key = tpr_key(target)
        summary[key] = None if key in unsupported else tpr_of_checked(scores, labels, target)
        summary[key + "_ci"] = None

    if n_boot:
        aucs, tprs = _bootstrap_roc_metrics(scores, labels, measured, int(n_boot), seed)
        summary["auc_ci"] = percentile_interval(aucs, alpha)
        for j, target in enumerate(measured):
            summary[tpr_key(target) + "_ci"] = percentile_interval(tprs[:, j], alpha)
    summary["tpr_na"] = unsupported

    n_members = int(np.count_nonzero(labels))
    summary["n_members"] = n_members
    summary["n_nonmembers"] = int(labels.size - n_members)
    summary["n_dropped_nan"] = n_dropped
    return summary
