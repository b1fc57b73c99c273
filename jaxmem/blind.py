"""Blind baseline: can members and non-members be told apart without the model?

A membership inference attack is only evidence of memorization if members and non-members come
from one distribution. When they do not (other dates, topics, sources or formatting), a
classifier that never sees the model already separates them, and every attack AUC mixes that
distribution shift with memorization (Das et al. 2024, "Blind baselines beat membership
inference attacks for foundation models"; Duan et al. 2024, "Do membership inference attacks
work on large language models?").

:func:`blind_baseline` runs two such model-free classifiers on the texts alone:

* ``"word"``: word 1-2-grams, TF-IDF (sublinear tf, lowercased), logistic regression;
* ``"char"``: character 2-5-grams within word boundaries (``char_wb``, case kept, so
  formatting and punctuation count too), TF-IDF (sublinear tf), logistic regression.

Each is scored by stratified k-fold cross-validation, repeated over :data:`N_REPEATS` fold
draws: every text's member probability comes from the classifiers fitted on the other folds
(averaged over the draws), and the AUC of these out-of-fold probabilities
gets a percentile bootstrap interval (members and non-members resampled separately, as
:func:`jaxmem.bootstrap.summarize` does for the attacks). The split is flagged ``shifted`` when
an interval lies above 0.5 and a label-permutation test confirms it (the intervals alone flag
too many fair splits: texts come in clusters, see :func:`blind_baseline`).

Example:
    >>> from jaxmem.blind import blind_baseline
    >>> members = [f"the cat sat on mat number {i}" for i in range(20)]
    >>> nonmembers = [f"stock prices rose in quarter {i}" for i in range(20)]
    >>> b = blind_baseline(members, nonmembers, n_boot=200, n_perm=19)
    >>> b["shifted"], b["auc"], b["p_value"]      # 19 permutations: p is at least 1/20
    (True, 1.0, 0.05)
"""

from __future__ import annotations

import copy
import functools
from typing import Sequence

import numpy as np

__all__ = ["FEATURES", "blind_baseline", "make_classifier", "split_check"]

#: The feature sets of :func:`blind_baseline`, as readers see them.
FEATURES = {"word": "word n-grams", "char": "character n-grams"}


def make_classifier(features: str, seed: int = 0):
    """The scikit-learn pipeline of one feature set of :func:`blind_baseline`.

    N-grams are hashed (``HashingVectorizer``: stateless, so the texts are turned into counts
    once, not once per fold), weighted by TF-IDF fitted on the training texts, and fed to an
    L2-regularized logistic regression (liblinear's dual solver, fast with more n-grams than
    texts) with balanced class weights: a fold with one more member than non-member does not
    tilt its predictions (without n-grams to go by, every probability is 0.5).

    Args:
      features: ``"word"`` or ``"char"`` (see :data:`FEATURES`).
      seed: the logistic regression's ``random_state`` (the dual solver's coordinate order).

    Returns:
      An unfitted ``Pipeline(HashingVectorizer, TfidfTransformer, LogisticRegression)``.
    """
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if features == "word":
        vec = HashingVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=True, **_COUNTS)
    elif features == "char":
        vec = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), lowercase=False,
                                **_COUNTS)
    else:
        raise ValueError(f"features must be one of {sorted(FEATURES)}, got {features!r}.")
    return make_pipeline(vec, TfidfTransformer(sublinear_tf=True),
                         LogisticRegression(C=1.0, class_weight="balanced",
                                            solver="liblinear", dual=True, random_state=seed))


# Raw n-gram counts in 2**20 hashed columns (collisions are rare at these sizes).
_COUNTS = dict(n_features=2**20, alternate_sign=False, norm=None)


def blind_baseline(members: Sequence[str], nonmembers: Sequence[str], *, seed: int = 0,
                   n_folds: int = 5, n_boot: int = 1000, alpha: float = 0.05,
                   n_perm: int = 99) -> dict:
    """How well members and non-members can be told apart from their texts alone.

    Each feature set's AUC is that of out-of-fold member probabilities (stratified
    ``n_folds``-fold cross-validation), with a percentile bootstrap interval over the texts
    (members and non-members resampled separately). That interval holds the out-of-fold
    scores fixed, so it is too narrow for a test: texts come in clusters (paragraphs of one
    article), and a classifier fitted on some texts of a cluster scores the others, which
    spreads the AUC of a fair split well beyond it (on the demo's 256 texts, 1 in 6 random
    splits had an interval above 0.5). So where an interval lies above 0.5, a label
    permutation test decides: the larger of the two AUCs, recomputed with the labels
    shuffled ``n_perm`` times (the same texts, folds drawn the same way), must be reached by
    at most a fraction ``alpha`` of them. It is exact for any clustering, since under a random
    split every labelling of the texts is equally likely.

    The texts are sorted before the folds are drawn, so the result depends on the two sets
    alone, not on their order. Texts repeated within a class are kept once (a copy in another
    fold would be recognized, not generalized from). With fewer than ``n_folds`` distinct
    texts in a class, the folds are reduced to that many; with fewer than 2, nothing is
    computed and ``reason`` says why. Results are deterministic for a ``seed`` and cached per
    input, so every (method, epoch) of a study audited on the same texts reuses them.

    Args:
      members, nonmembers: the texts, as the model scores them (cut to its block size).
      seed: seed of the fold shuffle, the bootstrap and the permutations.
      n_folds: cross-validation folds (at least 2).
      n_boot: bootstrap resamples (at least 1).
      alpha: 1 minus the confidence level of the intervals (0.05: 95%), and the level of the
        permutation test.
      n_perm: label permutations of the test (it stops early once it cannot reach ``alpha``);
        at least ``1 / alpha - 1``, or no split could ever be flagged.

    Returns:
      A JSON-able dict:

      * ``"word"``, ``"char"``: ``{"auc", "auc_ci": [lo, hi]}`` of each feature set (None
        when nothing is computed);
      * ``"auc"``, ``"auc_ci"``, ``"features"``: those of the stronger feature set;
      * ``"p_value"``, ``"n_permutations"``: the permutation test's (None and 0 where no
        interval lies above 0.5 and it did not run);
      * ``"shifted"``: True when an interval lies above 0.5 and ``p_value <= alpha``;
      * ``"warning"``: None, or when shifted, what it means and what to do;
      * ``"n_members"``, ``"n_nonmembers"``: distinct texts per class; ``"n_duplicates"``:
        repeated texts left out; ``"n_folds"``: the folds used (0: none);
      * ``"reason"``: None, or why nothing was computed.

    Raises:
      ValueError: ``n_folds < 2``, ``n_boot < 1``, ``alpha`` outside (0, 1) or ``n_perm``
        below ``1 / alpha - 1``.
      TypeError: ``members`` or ``nonmembers`` is not a sequence of strings.

    Example:
        Members and non-members drawn at random from one corpus: nothing to tell them apart.

        >>> from jaxmem.data import load_corpus
        >>> c = load_corpus("default", n_members=128, n_nonmembers=128)
        >>> b = blind_baseline(c.members, c.nonmembers, n_boot=200)
        >>> b["word"]["auc"], b["word"]["auc_ci"], b["shifted"]
        (0.49, [0.43, 0.56], False)
    """
    if isinstance(n_folds, bool) or int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}.")
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}; e.g. 0.05 for 95%.")
    if isinstance(n_perm, bool) or int(n_perm) != n_perm or (n_perm + 1) * alpha < 1:
        raise ValueError(f"n_perm must be an integer >= 1/alpha - 1 = {1 / alpha - 1:g} (a "
                         f"p-value is at least 1/(n_perm + 1)), got {n_perm!r}.")
    for name, texts in (("members", members), ("nonmembers", nonmembers)):
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"{name} must be a sequence of strings.")
    return copy.deepcopy(_cached(tuple(members), tuple(nonmembers), int(seed), int(n_folds),
                                 int(n_boot), float(alpha), int(n_perm)))


@functools.lru_cache(maxsize=8)
def _cached(members: tuple, nonmembers: tuple, seed: int, n_folds: int, n_boot: int,
            alpha: float, n_perm: int) -> dict:
    mem, non = list(dict.fromkeys(members)), list(dict.fromkeys(nonmembers))
    out = {"word": None, "char": None, "auc": None, "auc_ci": None, "features": None,
           "p_value": None, "n_permutations": 0, "shifted": False, "warning": None,
           "n_members": len(mem), "n_nonmembers": len(non),
           "n_duplicates": len(members) - len(mem) + len(nonmembers) - len(non),
           "n_folds": 0, "reason": None}
    k = min(n_folds, len(mem), len(non))
    if k < 2:
        out["reason"] = (f"too few texts for cross-validation: needs at least 2 distinct "
                         f"members and 2 distinct non-members, got {len(mem)} and {len(non)}")
        return out
    # one order for the texts whatever order they came in (sorted, members first among equal
    # texts): the folds and so every number depend on the two sets alone, which also makes the
    # permutation test exact (the order cannot tell the labels)
    texts, labels = zip(*sorted([(t, 1) for t in mem] + [(t, 0) for t in non],
                                key=lambda tl: (tl[0], -tl[1])))
    labels = np.array(labels)
    counts = {name: _counts(name, list(texts)) for name in FEATURES}
    for name in FEATURES:
        probs = _out_of_fold(name, counts[name], labels, k, seed)
        out[name] = _auc_with_ci(probs, labels, n_boot, alpha, seed)
    best = max(FEATURES, key=lambda n: out[n]["auc"])  # ties: the word n-grams
    out.update(auc=out[best]["auc"], auc_ci=out[best]["auc_ci"], features=best, n_folds=k)
    if all(out[n]["auc_ci"][0] <= 0.5 for n in FEATURES):
        return out
    p, m = _permutation_test(counts, labels, k, seed, out["auc"], alpha, n_perm)
    out.update(p_value=p, n_permutations=m, shifted=p <= alpha)
    if out["shifted"]:
        lo, hi = out["auc_ci"]
        out["warning"] = (
            f"members and non-members can be told apart without the model (blind baseline: "
            f"{FEATURES[best]} + logistic regression, AUC {out['auc']:.2f} [{lo:.2f}, "
            f"{hi:.2f}], label-permutation p = {p:.2g}): attack AUCs mix distribution shift "
            "with memorization. Draw non-members from the members' own distribution (as "
            "jaxmem's default corpus split does: split 'auto', see jaxmem.data.split.SPLITS) "
            "or read every attack AUC against this baseline.")
    return out


def _counts(features: str, texts: list[str]):
    """The hashed n-gram counts of :func:`make_classifier`'s first (stateless) step, once for
    all texts, without the hashed columns no text uses: their TF-IDF values and weights are 0
    in every fold, so dropping them leaves every probability as it is and makes each fit
    ~10x faster."""
    counts = make_classifier(features)[0].transform(texts)
    used = np.unique(counts.indices)
    # texts with no such n-gram at all (e.g. no word of 2+ letters): one empty column, so the
    # classifier learns nothing and every probability is the same (AUC 0.5)
    return counts[:, used if used.size else [0]]


#: Cross-validation is repeated this many times with other fold draws (fold seeds ``seed``,
#: ``seed + 1``, ...) and each text's out-of-fold probabilities averaged: one fold draw alone
#: moved the demo's AUC by up to 0.07 (texts cluster by article, and which of an article's
#: texts share a fold decides much), enough to push a fair split's interval off 0.5.
N_REPEATS = 5


def _out_of_fold(features: str, counts, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each text's member probability from the classifier fitted on the other folds:
    ``cross_val_predict`` of :func:`make_classifier`'s pipeline on the texts (its first step
    applied already: ``counts``), averaged over :data:`N_REPEATS` fold draws."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    runs = [cross_val_predict(make_classifier(features, seed)[1:], counts, labels,
                              cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + r),
                              method="predict_proba")[:, 1] for r in range(N_REPEATS)]
    return np.mean(runs, axis=0)


def _permutation_test(counts: dict, labels: np.ndarray, k: int, seed: int, observed: float,
                      alpha: float, n_perm: int) -> tuple[float, int]:
    """(p-value, permutations run) of the larger out-of-fold AUC ``observed`` against the same
    statistic with the labels shuffled: (1 + #shuffles reaching it) / (1 + #shuffles). Stops
    as soon as the count rules out ``p <= alpha``."""
    from jaxmem.metrics import roc_auc

    rng = np.random.default_rng([seed, 0x5EED])
    # p <= alpha needs at most this many shuffles reaching it (1e-9: rounding of alpha * n)
    limit = alpha * (n_perm + 1) - 1 + 1e-9
    reached = 0
    for i in range(1, n_perm + 1):
        y = rng.permutation(labels)
        stat = max(roc_auc(_out_of_fold(n, counts[n], y, k, seed), y) for n in counts)
        reached += stat >= observed
        if reached > limit:
            break
    return (1 + reached) / (1 + i), i


def _auc_with_ci(probs: np.ndarray, labels: np.ndarray, n_boot: int, alpha: float,
                 seed: int) -> dict:
    """AUC of out-of-fold probabilities and its stratified percentile bootstrap interval."""
    from jaxmem.bootstrap import summarize

    s = summarize(probs, labels, fprs=(), n_boot=n_boot, alpha=alpha, seed=seed)
    return {"auc": float(s["auc"]), "auc_ci": [float(x) for x in s["auc_ci"]]}


def split_check(blind: dict | None, markdown: bool = False) -> str:
    """A :func:`blind_baseline` result as a paragraph for readers (the study report's "Split
    check"); ``markdown``: the warning in bold. Empty for None (an audit written before the
    blind baseline existed, or with it off)."""
    if not blind:
        return ""
    if blind.get("reason"):
        return f"Split check (blind baseline, no model): not computed, {blind['reason']}."
    aucs = ", ".join(f"{FEATURES[n]} AUC {blind[n]['auc']:.3f} [{blind[n]['auc_ci'][0]:.2f}, "
                     f"{blind[n]['auc_ci'][1]:.2f}]" for n in FEATURES)
    head = f"Split check (blind baseline, no model: {aucs}): members and non-members "
    if blind["shifted"]:
        warning = blind["warning"][0].upper() + blind["warning"][1:]
        return (head + "CAN BE TOLD APART: " + (f"**{warning}**" if markdown else warning)
                + " An attack AUC is evidence of memorization only by how far it exceeds "
                f"{blind['auc']:.3f}.")
    why = ("both intervals reach down to 0.5" if blind.get("p_value") is None else
           "an interval lies above 0.5, but as often with the labels shuffled: label-"
           f"permutation p = {blind['p_value']:.2g}")
    return (head + f"are indistinguishable ({why}). Read every attack AUC against this "
            "baseline: an attack is evidence of memorization where it beats it.")
