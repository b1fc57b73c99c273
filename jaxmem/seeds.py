"""A study's result rows summarized over training seeds: one row per cell, mean and spread.

A study with ``seeds: [0, 1, 2]`` trains every method once per seed on the same texts and
attacks each run on the same members and non-members, so ``results.csv`` holds one row per
(model, dataset, method, seed, epoch, attack). :func:`over_seeds` turns them into one row per
(model, dataset, method, epoch, attack): every number is the mean over the seeds, the main
ones (AUC, validation perplexity, TPRs) get a sample standard deviation beside them
(``auc_sd``, ...), and ``n_seeds`` / ``seeds`` say what was averaged. The report's tables and
figures read these rows; the claims read the per-seed scores (:mod:`jaxmem.study.claims`), whose
intervals hold the seed variance. The AUC interval of a summarized row (``auc_lo`` /
``auc_hi``) is the mean of the per-seed text-bootstrap intervals: a guide to the text
noise, not an interval over seeds (``auc_sd`` is that).

Example:
    >>> rows = [{"model": "m", "dataset": "d", "method": "lora", "seed": s, "epoch": 1,
    ...          "attack": "loss", "auc": a, "val_ppl": 10.0} for s, a in ((0, .6), (1, .7))]
    >>> [round(r["auc"], 2) for r in over_seeds(rows)], over_seeds(rows)[0]["n_seeds"]
    ([0.65], 2)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CELL", "SPREAD", "over_seeds", "has_seeds", "mean_sd_text"]

#: What identifies a cell across seeds.
CELL = ("model", "dataset", "method", "epoch", "attack")
#: Columns that get a standard deviation over seeds (``<name>_sd``).
SPREAD = ("auc", "val_ppl", "val_loss", "gap", "tpr@10%fpr", "tpr@1%fpr", "tpr@0.1%fpr")


def has_seeds(rows: list[dict]) -> bool:
    """Whether any cell of ``rows`` was trained with more than one seed."""
    seen: dict[tuple, set] = {}
    for r in rows:
        seen.setdefault(tuple(r.get(k) for k in CELL), set()).add(r.get("seed"))
    return any(len(s) > 1 for s in seen.values())


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def over_seeds(rows: list[dict]) -> list[dict]:
    """One row per cell (:data:`CELL`), in first-seen order, averaged over its seeds.

    Numbers are averaged over the seeds that have them (a column empty for every seed stays
    None); other values come from the cell's first row; booleans (``comparable_utility``)
    hold only if they hold for every seed. :data:`SPREAD` columns get ``<name>_sd``, the
    sample standard deviation (ddof 1; 0.0 with one seed). ``seed`` is the first seed (where
    its per-example files are), ``seeds`` all of them, ``n_seeds`` their number.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in CELL), []).append(r)
    out = []
    for group in groups.values():
        first = group[0]
        row = dict(first)
        for k, v in first.items():
            if k in CELL or k == "seed":
                continue
            values = [g.get(k) for g in group]
            if all(isinstance(x, bool) for x in values if x is not None) and any(
                    isinstance(x, bool) for x in values):
                row[k] = all(x for x in values if x is not None)
            elif any(_is_number(x) for x in values):
                nums = [float(x) for x in values if _is_number(x) and not math.isnan(float(x))]
                row[k] = float(np.mean(nums)) if nums else None
        for k in SPREAD:
            nums = [float(g[k]) for g in group if _is_number(g.get(k))
                    and not math.isnan(float(g[k]))]
            row[f"{k}_sd"] = float(np.std(nums, ddof=1)) if len(nums) > 1 else (
                0.0 if nums else None)
        seeds = [g.get("seed") for g in group]
        row["seeds"] = " ".join(str(s) for s in seeds if s is not None)
        row["n_seeds"] = len(group)
        out.append(row)
    return out


def mean_sd_text(r: dict, key: str, fmt: str = ".3f") -> str:
    """``"0.883 ± 0.012"`` for a summarized row with several seeds, ``"0.883"`` otherwise."""
    v = r.get(key)
    if v is None:
        return "n/a"
    sd = r.get(f"{key}_sd")
    if r.get("n_seeds", 1) > 1 and sd is not None:
        return f"{v:{fmt}} ± {sd:{fmt}}"
    return f"{v:{fmt}}"
