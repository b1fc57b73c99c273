"""Figures and tables: ROC curves on log-log axes, member vs non-member score histograms.

Example:
    >>> plot_roc({"loss": (fpr, tpr, auc)}, "roc.png")
    >>> plot_histograms({"loss": scores}, labels, "hist.png")
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: dict[str, tuple], path: str | Path, title: str = "") -> None:
    """ROC curves on log-log axes (where low-FPR behaviour is visible), chance as a diagonal.

    Args:
      curves: {label: (fpr, tpr, auc)}.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    floor = 1e-4
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=f"{name} (AUC {auc:.3f})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "Membership inference ROC")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_histograms(scores: dict[str, np.ndarray], labels: np.ndarray, path: str | Path,
                    title: str = "") -> None:
    """Member vs non-member distributions of each attack's score, one panel per attack
    (the paper's Figure 2)."""
    plt = _plt()
    n = len(scores)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    labels = np.asarray(labels, bool)
    for ax, (name, s) in zip(axes.flat, scores.items()):
        s = np.asarray(s, np.float64)
        ok = np.isfinite(s)
        bins = np.histogram_bin_edges(s[ok], bins=40)
        ax.hist(s[ok & ~labels], bins=bins, alpha=0.55, density=True, label="non-members")
        ax.hist(s[ok & labels], bins=bins, alpha=0.55, density=True, label="members")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("score (higher = member)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(rows: list[dict], floatfmt: str = ".4g") -> str:
    """A list of dicts as a GitHub Markdown table."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    fmt = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
