"""Memorization or overfitting? Each cell's train-validation loss gap, and how the attacks track it.

A method that fits its training texts better than held-out ones (a larger generalization gap)
raises every loss-based attack's AUC whether or not it memorizes anything beyond what
overfitting implies. A reader who wants to know whether a method's extra memorization is more
than its extra overfitting needs both numbers side by side, and the correlation of AUC with the
gap across cells (a 2026 five-method study found Pearson r 0.84-0.996 across attacks).

* :func:`member_loss`: the mean loss of a cell's members (the per-text mean token NLL, from the
  ``loss`` column of its ``scores.parquet``: the texts it trained on, at the epoch attacked,
  without dropout).
* the gap of a row (``jaxmem.study``): ``val_loss - member_loss``, validation texts being held
  out from the same distribution (the fair split, :mod:`jaxmem.data.split`).
* :func:`gap_correlations`: per attack, Pearson's and Spearman's r of AUC with the gap over the
  fine-tuned cells (every method, epoch and seed), and :func:`gap_lines` for the report.

Example:
    >>> rows = [{"method": m, "attack": "loss", "auc": a, "gap": g}
    ...         for m, a, g in (("full", .9, .5), ("head", .7, .2), ("lora", .6, .1),
    ...                         ("prompt", .5, .0))]
    >>> round(gap_correlations(rows)[0]["spearman_r"], 3)
    1.0
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmem import runs

__all__ = ["member_loss", "gap_correlations", "gap_lines"]

MIN_CELLS = 4  # fewer fine-tuned cells than this: no correlation is worth printing


def member_loss(where: str | Path) -> float | None:
    """Mean over a cell's members of their mean token NLL (the ``loss`` attack's score is its
    negative), None without a ``loss`` column."""
    import pyarrow.parquet as pq

    f = Path(where) / runs.SCORES
    if not f.exists() or "loss" not in pq.read_schema(f).names:
        return None
    t = pq.read_table(f, columns=["member", "loss"]).to_pydict()
    s = np.asarray(t["loss"], np.float64)[np.asarray(t["member"], bool)]
    s = s[np.isfinite(s)]
    return float(-s.mean()) if len(s) else None


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def gap_correlations(rows: list[dict]) -> list[dict]:
    """Per attack, the correlation over fine-tuned cells (``method`` not ``base``) of AUC with
    the train-validation gap: ``attack``, ``n_cells``, ``pearson_r``, ``spearman_r``; attacks
    with fewer than :data:`MIN_CELLS` cells that have a gap, or a constant AUC or gap, are
    left out."""
    out = []
    for attack in dict.fromkeys(r["attack"] for r in rows):
        pts = [(r["gap"], r["auc"]) for r in rows if r["attack"] == attack
               and r["method"] != "base" and r.get("gap") is not None
               and np.isfinite(r["gap"]) and np.isfinite(r["auc"])]
        if len(pts) < MIN_CELLS:
            continue
        g, a = np.asarray(pts, np.float64).T
        if np.ptp(g) == 0 or np.ptp(a) == 0:
            continue
        out.append({"attack": attack, "n_cells": len(pts),
                    "pearson_r": float(np.corrcoef(g, a)[0, 1]),
                    "spearman_r": float(np.corrcoef(_ranks(g), _ranks(a))[0, 1])})
    return out


def gap_lines(rows: list[dict]) -> list[str]:
    """The report's paragraph: what the gap is and how each attack's AUC follows it."""
    corr = gap_correlations(rows)
    if not corr:
        return []
    n = corr[0]["n_cells"]
    return ["**Memorization or overfitting?** The train-validation gap of a cell is its "
            "validation loss minus its members' mean loss (both per-token NLL, at the attacked "
            "epoch; `gap` in results.csv). Across the "
            f"{n} fine-tuned cells (every method, epoch and seed), each attack's AUC against "
            "the gap: " + "; ".join(
                f"{c['attack']} Pearson r {c['pearson_r']:+.2f} (Spearman {c['spearman_r']:+.2f})"
                for c in corr)
            + ". An r near 1 says the attack measures overfitting; a method above the trend "
            "memorizes more than its overfitting explains.", ""]
