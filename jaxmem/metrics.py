"""ROC curve, AUC and TPR at a fixed FPR for membership-inference attacks.

Every function here (and in :mod:`jaxmem.bootstrap`) takes the same two inputs:

* ``scores``: a 1-D array of attack scores, one per example. **Higher score
  means "more likely a member"** (of the fine-tuning set). If your attack
  produces a loss, where lower means member, pass ``-loss``.
* ``labels``: a 1-D array of the same length, ``1``/``True`` for members and
  ``0``/``False`` for non-members.

If you have two separate arrays, one of member scores and one of non-member
scores, :func:`scores_and_labels` turns them into this form.

The metrics are the ones usually reported for membership inference:

* :func:`roc_curve`: the full ROC curve.
* :func:`roc_auc`: area under the ROC curve (tied scores count half).
* :func:`tpr_at_fpr`: true-positive rate at a fixed low false-positive rate,
  e.g. TPR at 1% FPR.

Confidence intervals (:func:`~jaxmem.bootstrap.bootstrap_ci`) and the one-dict
summary (:func:`~jaxmem.bootstrap.summarize`) live in :mod:`jaxmem.bootstrap`.
The FPR targets every summary, table and report uses are :data:`TPR_KEYS`.

Only numpy is needed. Results agree with scikit-learn's ``roc_curve``
(``drop_intermediate=False``) and ``roc_auc_score``.

Non-finite scores (NaN, +inf, -inf) are rejected by default. Pass
``nan_policy="drop"`` to any function to leave those examples out instead;
:func:`~jaxmem.bootstrap.summarize` reports how many were dropped.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "scores_and_labels",
    "roc_curve",
    "roc_auc",
    "tpr_at_fpr",
    "min_nonmembers",
    "tpr_unsupported_reason",
    "TPR_KEYS",
    "tpr_key",
    "check_scores",
    "check_target_fpr",
    "auc_of_checked",
    "tpr_of_checked",
    "supported_fprs",
    "strongest_attack",
]

ArrayLike = Sequence[float] | np.ndarray

_NAN_POLICIES = ("raise", "drop")


def tpr_key(target_fpr: float) -> str:
    """The name of a TPR at ``target_fpr`` in summaries and tables.

    Example:
        >>> tpr_key(0.01), tpr_key(0.001)
        ('tpr@1%fpr', 'tpr@0.1%fpr')
    """
    return f"tpr@{target_fpr * 100:.6g}%fpr"


#: The FPR grid, defined once: ``{key: FPR}`` of the TPRs that :func:`jaxmem.bootstrap.summarize`
#: reports by default and every table, results row and report shows, highest FPR first.
TPR_KEYS: dict[str, float] = {tpr_key(f): f for f in (0.1, 0.01, 0.001)}


# ---------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------


def scores_and_labels(
    member_scores: ArrayLike, nonmember_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Pools member and non-member scores into ``(scores, labels)``.

    Args:
        member_scores: 1-D scores of examples that were in the training set.
        nonmember_scores: 1-D scores of examples that were not.

    Returns:
        ``(scores, labels)``: the concatenated scores as float64, and a bool
        array that is True for the member entries.

    Example:
        >>> scores, labels = scores_and_labels([0.9, 0.7], [0.2])
        >>> scores.tolist(), labels.tolist()
        ([0.9, 0.7, 0.2], [True, True, False])
    """
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    for name, arr in (("member_scores", members), ("nonmember_scores", nonmembers)):
        if arr.ndim != 1:
            raise ValueError(
                f"{name} must be a 1-D array, got shape {arr.shape}; "
                "flatten it or pass one score per example."
            )
    scores = np.concatenate([members, nonmembers])
    labels = np.concatenate(
        [np.ones(members.size, dtype=bool), np.zeros(nonmembers.size, dtype=bool)]
    )
    return scores, labels


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Returns ``labels`` as a bool array, or raises if they are not 0/1."""
    if labels.dtype == bool:
        return labels
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(
            f"labels must be 0/1 or bool, got dtype {labels.dtype}; "
            "use 1 (or True) for members and 0 (or False) for non-members."
        )
    is_valid = (labels == 0) | (labels == 1)
    if not is_valid.all():
        bad = np.unique(labels[~is_valid])[:5].tolist()
        raise ValueError(
            f"labels must be 0/1 or bool, found other values {bad}; "
            "use 1 (or True) for members and 0 (or False) for non-members."
        )
    return labels == 1


def check_scores(
    scores: ArrayLike, labels: ArrayLike, nan_policy: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Checks inputs and returns ``(scores, labels, n_dropped)``: what every metric here and
    in :mod:`jaxmem.bootstrap` / :mod:`jaxmem.paired` runs first.

    ``scores`` comes back as finite float64, ``labels`` as bool, and
    ``n_dropped`` is the number of non-finite scores removed (always 0 when
    ``nan_policy="raise"``).
    """
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(f'nan_policy must be "raise" or "drop", got {nan_policy!r}.')
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"scores and labels must be 1-D arrays, got shapes {scores.shape} "
            f"and {labels.shape}; pass one score and one label per example."
        )
    if scores.size != labels.size:
        raise ValueError(
            f"scores and labels have different lengths ({scores.size} vs "
            f"{labels.size}); pass exactly one label per score."
        )
    if scores.size == 0:
        raise ValueError(
            "scores and labels are empty; pass at least one member and one non-member."
        )
    if not (np.issubdtype(scores.dtype, np.integer)
            or np.issubdtype(scores.dtype, np.floating)
            or scores.dtype == bool):
        raise ValueError(
            f"scores must be real numbers, got dtype {scores.dtype}; "
            "convert them to a float array."
        )
    labels = _check_labels(labels)
    scores = scores.astype(np.float64)

    finite = np.isfinite(scores)
    n_bad = int(scores.size - np.count_nonzero(finite))
    if n_bad:
        if nan_policy == "raise":
            raise ValueError(
                f"{n_bad} of {scores.size} scores are NaN or infinite; fix the "
                'attack, or pass nan_policy="drop" to leave those examples out.'
            )
        scores, labels = scores[finite], labels[finite]

    n_members = int(np.count_nonzero(labels))
    n_nonmembers = int(labels.size - n_members)
    if n_members == 0 or n_nonmembers == 0:
        dropped = f" after dropping {n_bad} non-finite scores" if n_bad else ""
        raise ValueError(
            "need both members and non-members to evaluate an attack; got "
            f"{n_members} members (label 1) and {n_nonmembers} non-members "
            f"(label 0){dropped}. Pass scores for both groups."
        )
    return scores, labels, n_bad


def check_target_fpr(target_fpr: float) -> float:
    """``target_fpr`` as a float, refused unless it is a fraction in [0, 1]."""
    target = float(target_fpr)
    if not 0.0 <= target <= 1.0:
        raise ValueError(
            f"target_fpr must be a fraction in [0, 1], got {target_fpr!r}; "
            "e.g. use 0.01 for 1% FPR."
        )
    return target


def min_nonmembers(target_fpr: float) -> int:
    """The fewest non-members at which a TPR at ``target_fpr`` means anything.

    With ``n`` non-members the FPR moves in steps of ``1/n``, so a target below ``1/n`` can only
    be met at FPR 0 and the "TPR at 0.1% FPR" would really be the TPR at 0% FPR. The rule is
    ``target_fpr >= 1/n``, i.e. ``n >= ceil(1/target_fpr)``.

    Example:
        >>> min_nonmembers(0.01), min_nonmembers(0.001), min_nonmembers(0.3)
        (100, 1000, 4)
    """
    target = check_target_fpr(target_fpr)
    if target == 0.0:
        raise ValueError("FPR 0 has no sample size that supports it; use a positive target.")
    # The tolerance keeps 1/0.001 = 1000.0000000000001 (if float rounding gives it) at 1000.
    return int(np.ceil(1.0 / target - 1e-9))


def tpr_unsupported_reason(target_fpr: float, n_nonmembers: int) -> str | None:
    """Why a TPR at ``target_fpr`` is not reported for ``n_nonmembers``, or None if it is.

    The one rule used by the summaries (``metrics.json``), the study's ``results.csv`` and its
    report: the TPR is reported only where ``target_fpr >= 1/n_nonmembers``
    (see :func:`min_nonmembers`).

    Example:
        >>> tpr_unsupported_reason(0.01, 100) is None
        True
        >>> tpr_unsupported_reason(0.01, 99)
        'n/a (needs >= 100 non-members)'
    """
    if float(target_fpr) == 0.0:
        return "n/a (FPR 0 is never supported)"
    needed = min_nonmembers(target_fpr)
    return None if n_nonmembers >= needed else f"n/a (needs >= {needed} non-members)"


# ---------------------------------------------------------------------------
# Point estimates
# ---------------------------------------------------------------------------


def _roc_points(scores: np.ndarray, labels: np.ndarray):
    """ROC curve of already-validated inputs.

    Returns ``(fpr, tpr, thresholds)``. Point ``i`` is the result of
    predicting "member" for every score ``>= thresholds[i]``; the first point
    uses ``thresholds[0] = inf`` and is always ``(0, 0)``.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    # Last position of each run of equal scores: the curve only moves there,
    # so tied scores become a single point.
    run_ends = np.flatnonzero(np.diff(sorted_scores))
    run_ends = np.append(run_ends, sorted_scores.size - 1)

    true_pos = np.cumsum(sorted_labels)[run_ends]
    false_pos = (run_ends + 1) - true_pos
    true_pos = np.concatenate([[0], true_pos])
    false_pos = np.concatenate([[0], false_pos])
    thresholds = np.concatenate([[np.inf], sorted_scores[run_ends]])
    return false_pos / false_pos[-1], true_pos / true_pos[-1], thresholds


def roc_curve(
    scores: ArrayLike, labels: ArrayLike, *, nan_policy: str = "raise"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Computes the ROC curve of a membership-inference attack.

    An example is predicted "member" when its score is ``>=`` the threshold.
    There is one point per distinct score (tied scores are one point), plus
    a starting point ``(0, 0)`` whose threshold is ``inf``. This is the same
    as ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``.

    Args:
        scores: 1-D attack scores; higher means more likely a member.
        labels: 1-D labels, 1/True for members and 0/False for non-members.
        nan_policy: ``"raise"`` (default) to reject NaN/inf scores, or
            ``"drop"`` to leave those examples out.

    Returns:
        ``(fpr, tpr, thresholds)``, three float64 arrays of the same length.
        ``fpr`` and ``tpr`` increase from 0 to 1; ``thresholds`` decrease.

    Raises:
        ValueError: for malformed input (see the module docstring).

    Example:
        >>> fpr, tpr, thr = roc_curve([0.9, 0.8, 0.8, 0.1], [1, 1, 0, 0])
        >>> fpr.tolist(), tpr.tolist(), thr.tolist()
        ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0], [inf, 0.9, 0.8, 0.1])
    """
    scores, labels, _ = check_scores(scores, labels, nan_policy)
    return _roc_points(scores, labels)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values all get the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Start index of each run of equal values, and the run each item is in.
    is_start = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    starts = np.flatnonzero(is_start)
    ends = np.append(starts[1:], x.size)  # exclusive
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = run_rank[np.cumsum(is_start) - 1]
    return ranks


def auc_of_checked(scores: np.ndarray, labels: np.ndarray) -> float:
    """:func:`roc_auc` of inputs :func:`check_scores` has already checked."""
    n_members = int(np.count_nonzero(labels))
    n_nonmembers = labels.size - n_members
    # Mann-Whitney U: number of (member, non-member) pairs where the member
    # scores higher, with ties counting half.
    u = _average_ranks(scores)[labels].sum() - n_members * (n_members + 1) / 2.0
    return float(u / (n_members * n_nonmembers))


def roc_auc(scores: ArrayLike, labels: ArrayLike, *, nan_policy: str = "raise") -> float:
    """Computes the area under the ROC curve.

    This is the probability that a random member scores higher than a random
    non-member, with ties counting half (the Mann-Whitney U statistic divided
    by ``n_members * n_nonmembers``). 0.5 is chance; 1.0 is perfect.

    Args:
        scores: 1-D attack scores; higher means more likely a member.
        labels: 1-D labels, 1/True for members and 0/False for non-members.
        nan_policy: ``"raise"`` (default) to reject NaN/inf scores, or
            ``"drop"`` to leave those examples out.

    Returns:
        The AUC as a float in [0, 1].

    Raises:
        ValueError: for malformed input (see the module docstring).

    Example:
        >>> roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
        0.75
        >>> roc_auc([0.5, 0.5], [1, 0])  # a tie counts half
        0.5
    """
    scores, labels, _ = check_scores(scores, labels, nan_policy)
    return auc_of_checked(scores, labels)


def tpr_of_checked(scores: np.ndarray, labels: np.ndarray, target_fpr: float) -> float:
    """:func:`tpr_at_fpr` of inputs :func:`check_scores` has already checked."""
    fpr, tpr, _ = _roc_points(scores, labels)
    # fpr[0] == 0, so at least one point always qualifies.
    return float(tpr[fpr <= target_fpr].max())


def tpr_at_fpr(
    scores: ArrayLike,
    labels: ArrayLike,
    target_fpr: float,
    *,
    nan_policy: str = "raise",
) -> float:
    """Computes the true-positive rate at a fixed false-positive rate.

    Defined exactly as the highest TPR over all thresholds of
    :func:`roc_curve` whose FPR is ``<= target_fpr``. Nothing is
    interpolated, so with ``n`` non-members the FPR can only take the values
    ``0, 1/n, 2/n, ...``: a target below ``1/n`` gives the TPR at FPR 0
    (members that score strictly above every non-member). To measure TPR at
    0.1% FPR meaningfully you need well over 1000 non-members.

    Args:
        scores: 1-D attack scores; higher means more likely a member.
        labels: 1-D labels, 1/True for members and 0/False for non-members.
        target_fpr: the FPR budget as a fraction in [0, 1], e.g. 0.01 for 1%.
        nan_policy: ``"raise"`` (default) to reject NaN/inf scores, or
            ``"drop"`` to leave those examples out.

    Returns:
        The TPR as a float in [0, 1].

    Raises:
        ValueError: for malformed input or a ``target_fpr`` outside [0, 1].

    Example:
        >>> scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
        >>> labels = [1, 1, 0, 1, 0, 0]
        >>> tpr_at_fpr(scores, labels, 0.0)  # 2 of 3 members above all non-members
        0.6666666666666666
        >>> tpr_at_fpr(scores, labels, 0.34)  # one false positive allowed
        1.0
    """
    target = check_target_fpr(target_fpr)
    scores, labels, _ = check_scores(scores, labels, nan_policy)
    return tpr_of_checked(scores, labels, target)


# ---------------------------------------------------------------------------
# The strongest of several attacks
# ---------------------------------------------------------------------------

def supported_fprs(rows) -> list[float]:
    """The FPRs of :data:`TPR_KEYS` that every row's non-members (``n_nonmembers``) support,
    highest first.

    Example:
        >>> supported_fprs([{"n_nonmembers": 100}, {"n_nonmembers": 500}])
        [0.1, 0.01]
    """
    n = min(r["n_nonmembers"] for r in rows)
    return [f for f in TPR_KEYS.values() if not tpr_unsupported_reason(f, n)]


def strongest_attack(metrics: dict[str, dict]) -> dict | None:
    """Of one model's attacks, the one with the highest TPR at the lowest FPR of
    :data:`TPR_KEYS` that its non-members support (ties: the higher AUC, then the first).

    Args:
      metrics: ``{attack: m}``, each ``m`` with ``auc``, ``n_nonmembers`` and the TPR keys:
        an audit's ``metrics`` (``metrics.json``) or one (method, epoch)'s study rows.

    Returns:
      ``{"attack", "tpr", "fpr"}``, or None when no FPR is supported (too few non-members).

    Example:
        >>> m = {"auc": .6, "n_nonmembers": 100, "tpr@10%fpr": .2, "tpr@1%fpr": .03,
        ...      "tpr@0.1%fpr": None}
        >>> strongest_attack({"loss": m, "zlib": dict(m, auc=.7)})  # 1000 needed for 0.1%
        {'attack': 'zlib', 'tpr': 0.03, 'fpr': 0.01}
    """
    fprs = supported_fprs(list(metrics.values())) if metrics else []
    if not fprs:
        return None
    key = next(k for k, f in TPR_KEYS.items() if f == fprs[-1])
    name = max(metrics, key=lambda a: (metrics[a][key], metrics[a]["auc"]))
    return {"attack": name, "tpr": float(metrics[name][key]), "fpr": fprs[-1]}
