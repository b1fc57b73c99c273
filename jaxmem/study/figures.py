"""A study report's figures (:mod:`jaxmem.study.report`), drawn from its result rows with
:mod:`jaxmem.figures`' tools: the ROC of every method at its last epoch, AUC and perplexity by
epoch, loss distributions, privacy against utility, TPR at low FPR, model size and LoRA
placement. Each takes rows or data already read and a path; none reads the study folder.

Example:
    >>> from pathlib import Path
    >>> rows = [{"model": "m", "dataset": "d", "method": meth, "epoch": e, "attack": "loss",
    ...          "auc": a, "auc_lo": a - .1, "auc_hi": a + .1, "val_ppl": 20.0}
    ...         for meth, e, a in (("base", 0, .5), ("lora", 1, .6), ("lora", 2, .7))]
    >>> auc_vs_epoch(rows, "loss", "auc_vs_epoch.png")
    >>> Path("auc_vs_epoch.png").exists()
    True
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from jaxmem.figures import COLORS, MARKERS, plain_log_ticks, pyplot, roc_panel, save
from jaxmem.study.utility import select
from jaxmem.tuning.names import display_name, family

__all__ = ["auc_vs_epoch", "auc_vs_size", "lora_placement", "loss_distributions",
           "privacy_utility", "study_roc", "tpr_low_fpr"]


def _integer_epochs(ax) -> None:
    """Epochs are counts: ticks at whole numbers only."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def study_roc(panels: list[tuple[str, dict, int, int]], path) -> None:
    """The report's ROC: one log-log panel per (model, dataset), one curve per method.

    Args:
      panels: ``(title, {label: (fpr, tpr, auc)}, n_members, n_nonmembers)``; the FPR axis
        starts at 1/n_nonmembers and the TPR axis at 1/n_members, the least each can count.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 5.2), squeeze=False)
    for ax, (title, curves, n_m, n_n) in zip(axes.flat, panels):
        roc_panel(ax, curves, 1 / n_n, 1 / n_m)
        ax.set_title(textwrap.fill(title, 64), fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    save(fig, path, dpi=120)


def auc_vs_epoch(rows, attack, path, key="auc", ylabel="AUC", title=""):
    """One line per method through its epochs (the base model at epoch 0), one panel per
    (model, dataset); for AUC the bootstrap interval shaded and chance dotted."""
    plt = pyplot()
    groups = sorted({(r["model"], r["dataset"]) for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, (model, dataset) in zip(axes.flat, groups):
        sub = select(rows, model=model, dataset=dataset, attack=attack)
        base = select(sub, method="base")
        for method in dict.fromkeys(r["method"] for r in sub if r["method"] != "base"):
            pts = sorted(base + select(sub, method=method), key=lambda r: r["epoch"])
            ls = "-" if family(method) == "parameter" else "--"
            x = [r["epoch"] for r in pts]
            ax.plot(x, [r[key] for r in pts], ls, marker="o", ms=3, label=display_name(method))
            if key == "auc":
                ax.fill_between(x, [r["auc_lo"] for r in pts], [r["auc_hi"] for r in pts],
                                alpha=0.12)
        if key == "auc":
            ax.axhline(0.5, color="k", lw=0.7, ls=":")
        _integer_epochs(ax)
        ax.set_xlabel("epoch (0 = base model)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{model} / {dataset}", fontsize=10)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    save(fig, path)


def loss_distributions(panels: list[tuple[str, np.ndarray, np.ndarray]], path) -> bool:
    """Mean-token-NLL histograms, members vs non-members, one small panel per entry
    ``(title, loss scores, member flags)`` (the paper's Figure 2), four to a row, sharing
    their x axis so the panels compare; False (nothing drawn) without panels."""
    if not panels:
        return False
    plt = pyplot()
    cols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.9 * nrows), squeeze=False,
                             sharex=True)
    nll = [-np.asarray(s, np.float64) for _, s, _ in panels]
    finite = np.concatenate([x[np.isfinite(x)] for x in nll])
    bins = np.histogram_bin_edges(finite, 30) if finite.size else 30
    for i, (ax, (name, _, m), x) in enumerate(zip(axes.flat, panels, nll)):
        m = np.asarray(m, bool)
        ax.hist(x[~m], bins=bins, alpha=0.55, density=True, color=COLORS[0], label="non-members")
        ax.hist(x[m], bins=bins, alpha=0.55, density=True, color=COLORS[1], label="members",
                hatch="//", edgecolor=COLORS[1], linewidth=0)
        ax.set_title(textwrap.fill(name, 36), fontsize=8)
        if i % cols == 0:
            ax.set_ylabel("density")
        if i >= len(panels) - cols:
            ax.set_xlabel("mean token NLL")
            ax.xaxis.set_tick_params(labelbottom=True)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    save(fig, path)
    return True


def privacy_utility(final, attack, path):
    """Last-epoch AUC against validation perplexity, one marker per method.

    The perplexity axis is logarithmic so that one diverged method (the demo's prefix tuning
    at ppl ~2900) does not squash the others into one column, and the methods are named in a
    legend rather than next to their points, where names of close points would overlap.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    shades = {"parameter": iter(plt.cm.Reds(np.linspace(0.5, 0.95, 6))),
              "prompt": iter(plt.cm.Blues(np.linspace(0.5, 0.95, 6)))}
    points = [r for r in final if r["attack"] == attack]
    several = len({(p["model"], p["dataset"]) for p in points}) > 1
    for i, r in enumerate(points):
        color = "k" if r["method"] == "base" else next(shades[family(r["method"])], "gray")
        label = display_name(r["method"])
        if several:  # the same method appears once per (model, dataset)
            label += f" ({r['model']} / {r['dataset']})"
        ax.errorbar(r["val_ppl"], r["auc"], yerr=[[r["auc"] - r["auc_lo"]],
                                                   [r["auc_hi"] - r["auc"]]],
                    fmt=MARKERS[i % len(MARKERS)], color=color, capsize=3, ms=6, label=label)
    ax.axhline(0.5, color="k", lw=0.7, ls=":")
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel("validation perplexity, log scale (lower = more useful)")
    ax.set_ylabel(f"{attack} AUC (higher = more memorization)")
    ax.set_title("Privacy vs utility (red: parameter-based, blue: prompt-based)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    ax.grid(True, which="both", axis="x", alpha=0.2)
    save(fig, path)


def auc_vs_size(final, attack, path) -> bool:
    """Last-epoch AUC against model size, one line per method (the paper's Table 3)."""
    models = {r["model"]: r.get("model_params", 0) for r in final}
    if len(models) < 2:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    for method in dict.fromkeys(r["method"] for r in final if r["method"] != "base"):
        pts = sorted((r["model_params"], r["auc"]) for r in final
                     if r["method"] == method and r["attack"] == attack)
        ax.plot(*zip(*pts), "-o" if family(method) == "parameter" else "--o",
                label=display_name(method))
    ax.set_xscale("log")
    ax.axhline(0.5, color="k", lw=0.7, ls=":")
    ax.set_xlabel("model parameters")
    ax.set_ylabel(f"{attack} AUC")
    ax.set_title("Memorization vs model size (paper Table 3)", fontsize=10)
    ax.legend(fontsize=8)
    save(fig, path)
    return True


def lora_placement(final, attack, path) -> bool:
    """Last-epoch AUC of LoRA placements (attention / MLP / both; the paper's Table 4)."""
    placements = sorted({r["method"] for r in final if r["method"].startswith("lora")})
    if len(placements) < 2:
        return False
    plt = pyplot()
    groups = sorted({(r["model"], r["dataset"]) for r in final})
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(groups) * len(placements) / 2, 4))
    width = 0.8 / len(placements)
    for i, method in enumerate(placements):
        vals = [next((r["auc"] for r in final if r["method"] == method and r["attack"] == attack
                      and (r["model"], r["dataset"]) == g), np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, vals, width, label=display_name(method))
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{m}\n{d}" for m, d in groups], fontsize=8)
    ax.axhline(0.5, color="k", lw=0.7, ls=":")
    ax.set_ylabel(f"{attack} AUC")
    ax.set_title("LoRA placement (paper Table 4)", fontsize=10)
    ax.legend(fontsize=8)
    save(fig, path)
    return True


def tpr_low_fpr(panels: list[tuple[str, list[float], list[tuple]]], path) -> bool:
    """TPR at each supported low FPR, grouped bars per method with their 95% intervals and
    chance (TPR = FPR) dotted; False (nothing drawn) without panels.

    Args:
      panels: ``(title, fprs, bars)`` per (model, dataset); ``bars`` holds ``(label,
        [(tpr, (low, high) or None) per FPR])`` per method.
    """
    if not panels:
        return False
    plt = pyplot()
    width_in = max(5.5, 1.1 * max(len(bars) for _, _, bars in panels) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(width_in * len(panels), 4.4),
                             squeeze=False)
    for ax, (title, fprs, bars) in zip(axes.flat, panels):
        x = np.arange(len(bars))
        width = 0.8 / len(fprs)
        for j, fpr in enumerate(fprs):
            pos = x - 0.4 + (j + 0.5) * width
            vals = np.array([b[1][j][0] for b in bars], float)
            cis = [b[1][j][1] for b in bars]
            err = np.array([[v - c[0], c[1] - v] if c else [0, 0] for v, c in zip(vals, cis)]).T
            ax.bar(pos, vals, width, yerr=err, capsize=2, label=f"TPR at {fpr * 100:g}% FPR")
            ax.hlines([fpr] * len(x), pos - width / 2, pos + width / 2, colors="k",
                      linestyles=":", lw=1, label="chance (TPR = FPR)" if j == 0 else None)
        ax.set_xticks(x)
        ax.set_xticklabels([b[0] for b in bars], fontsize=7)
        ax.set_ylabel("true positive rate")
        ax.set_ylim(0, 1.05)
        ax.set_title(textwrap.fill(title, 70), fontsize=9)
        ax.legend(fontsize=7)
    save(fig, path)
    return True
