"""jaxmem's figures: how every one is drawn and saved, an attack's ROC and score histograms, the
privacy-utility frontier and canary exposure (a study report's own figures, drawn with these
tools: :mod:`jaxmem.study.figures`).

Each function takes the numbers to draw (rows, curves, tables already read) and a path; none
reads jaxmem's folders, so any caller can draw from its own data. Lines that share a panel
differ in colour (Okabe-Ito, readable with colour-blindness), marker and line style, so a
figure printed in grey still tells them apart. ROC curves are log-log (where the low-FPR
behaviour is visible) and stop at the resolution the non-members allow (1/n).

Example:
    >>> from pathlib import Path
    >>> plot_roc({"loss": ([0, .25, .5, 1], [0, .5, 1, 1], .81)}, "roc.png")  # (fpr, tpr, auc)
    >>> Path("roc.png").read_bytes()[1:4]
    b'PNG'
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jaxmem.io import atomic_write
from jaxmem.tuning.names import display_name, family

__all__ = ["COLORS", "LINESTYLES", "MARKERS", "plain_log_ticks", "plot_exposure",
           "plot_frontier", "plot_histograms", "plot_roc", "pyplot", "roc_panel", "save", "style"]

#: Markers, line styles and colours (Okabe-Ito) that tell the lines of one panel apart.
MARKERS = "osD^vP*Xph<>"
LINESTYLES = ("-", "--", "-.", ":")
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
          "#000000")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend: every figure of jaxmem draws with it.

    Example:
        >>> plt = pyplot(); fig, ax = plt.subplots(); plt.close(fig)
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def save(fig, path, dpi: int = 110) -> None:
    """Lays out ``fig``, writes it as PNG atomically (:func:`jaxmem.io.atomic_write`) and
    closes it."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    pyplot().close(fig)


def style(i: int) -> dict:
    """The ``i``-th line's look: colour, marker and line style all change with ``i``."""
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)],
            "ls": LINESTYLES[i % len(LINESTYLES)]}


def plain_log_ticks(axis) -> None:
    """Tick labels of a log axis as plain numbers (96, 300, 2000), not 9.6x10^1.

    A range narrower than a decade has only minor ticks, so those are labelled too; over a
    wider range only the minor ticks at 2 and 5 are, so that the labels do not run together.
    """
    from matplotlib.ticker import FuncFormatter

    low, high = axis.get_view_interval()
    wide = high / low >= 10

    def minor(v, _):
        mantissa = v / 10 ** np.floor(np.log10(v))
        return f"{v:g}" if not wide or np.isclose(mantissa, [2, 5]).any() else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))
    axis.set_tick_params(which="both", labelsize=8)


# ----------------------------------------------------------------------------- one attack

def _fpr_floor(curves) -> float:
    """1/n non-members, read off the curves (an FPR is a multiple of it); 1e-4 if unknown."""
    steps = [np.diff(np.unique(np.asarray(c[0], np.float64))) for c in curves]
    steps = np.concatenate(steps) if steps else np.array([])
    steps = steps[steps > 0]
    return float(steps.min()) if steps.size else 1e-4


def roc_panel(ax, curves: dict, floor: float, tpr_floor: float | None = None) -> None:
    """ROC curves on log-log axes from FPR ``floor`` (1/n non-members: nothing below it can be
    measured) to 1, chance dashed; each curve with its own colour, marker and line style."""
    tpr_floor = floor if tpr_floor is None else tpr_floor
    for i, (name, (fpr, tpr, auc)) in enumerate(curves.items()):
        fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
        keep = fpr >= floor  # the curve from the first measurable FPR on
        ax.plot(fpr[keep], np.maximum(tpr[keep], tpr_floor), lw=1.3, ms=4, markevery=0.1,
                label=f"{name} (AUC {auc:.3f})", **style(i))
    ax.plot([floor, 1], [floor, 1], color="0.4", ls=(0, (4, 3)), lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(min(floor, tpr_floor), 1.05)
    n = round(1 / floor)
    ax.set_xlabel(f"false positive rate, log scale (from 1/{n}: one of {n} non-members)")
    ax.set_ylabel("true positive rate, log scale")
    ax.grid(True, which="both", alpha=0.2)


def plot_roc(curves: dict[str, tuple], path: str | Path, title: str = "",
             n_nonmembers: int | None = None) -> None:
    """ROC curves on log-log axes, chance as a diagonal, the FPR axis starting at
    1/``n_nonmembers`` (read off the curves when not given).

    Args:
      curves: {label: (fpr, tpr, auc)}.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2 + 0.9 * (len(curves) > 6), 4.8))
    roc_panel(ax, curves, 1 / n_nonmembers if n_nonmembers else _fpr_floor(curves.values()))
    ax.set_title(title or "Membership inference ROC", fontsize=10)
    ax.legend(fontsize=7, loc="lower right", ncol=1 + (len(curves) > 6))
    save(fig, path, dpi=120)


def plot_histograms(scores: dict[str, np.ndarray], labels: np.ndarray, path: str | Path,
                    title: str = "") -> None:
    """Member vs non-member distributions of each attack's score, one panel per attack
    (the paper's Figure 2)."""
    plt = pyplot()
    n = len(scores)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    labels = np.asarray(labels, bool)
    for ax, (name, s) in zip(axes.flat, scores.items()):
        s = np.asarray(s, np.float64)
        ok = np.isfinite(s)
        lo, hi = (s[ok].min(), s[ok].max()) if ok.any() else (0.0, 1.0)
        if not hi - lo > 1e-9 * max(1.0, abs(lo)):  # (near-)constant: 40 bins would collapse
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 41)
        ax.hist(s[ok & ~labels], bins=bins, alpha=0.55, density=True, label="non-members")
        ax.hist(s[ok & labels], bins=bins, alpha=0.55, density=True, label="members")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("score (higher = member)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    save(fig, path)


# ----------------------------------------------------------------------------- frontier, canaries

def _eps(e) -> str:
    return "inf" if e is None or math.isinf(e) else f"{e:g}"


def _overlap(a, b) -> float:
    """The area two display boxes share (0 when apart)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _place_labels(fig, ax, notes, points) -> None:
    """Moves each annotation to the spot around its point, nearest first, that overlaps the
    labels placed before it, the data points (``points``, display coordinates) and the axes'
    edges least, so that labels of close points neither run together nor leave the figure; a
    label set further out gets a thin leader line to its point."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    marks = [Bbox.from_extents(x - 4, y - 4, x + 4, y + 4) for x, y in points]
    for line in ax.get_lines():  # the lines too, sampled every few display points
        xy = line.get_transform().transform(line.get_xydata())
        for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:]):
            n = int(math.hypot(x1 - x0, y1 - y0) // 3) + 1
            marks += [Bbox.from_extents(x - 1, y - 1, x + 1, y + 1)
                      for x, y in zip(np.linspace(x0, x1, n), np.linspace(y0, y1, n))]
    spots = [(r * math.cos(t), r * math.sin(t)) for r in (6, 13, 22, 32)
             for t in np.radians([20, 160, -20, -160, 90, -90, 55, 125, -55, -125])]
    placed = []
    for note in notes:
        best = None
        for dx, dy in spots:
            note.set_position((dx, dy))
            note.set_horizontalalignment("left" if dx > 1 else "right" if dx < -1 else "center")
            note.set_verticalalignment("bottom" if dy > 1 else "top" if dy < -1 else "center")
            box = note.get_window_extent(renderer)
            cost = (sum(_overlap(box, b) for b in placed) + sum(_overlap(box, m) for m in marks)
                    + 10 * (box.width * box.height - _overlap(box, frame)))
            if best is None or cost < best[0] - 1e-9:
                best = (cost, dx, dy)
            if cost == 0:
                break
        _, dx, dy = best
        note.set_position((dx, dy))
        note.set_horizontalalignment("left" if dx > 1 else "right" if dx < -1 else "center")
        note.set_verticalalignment("bottom" if dy > 1 else "top" if dy < -1 else "center")
        if math.hypot(dx, dy) > 10:
            note.arrow_patch = None
            note.arrowprops = {"arrowstyle": "-", "lw": 0.4, "color": note.get_color(),
                               "shrinkA": 0, "shrinkB": 2}
            note._arrow_relpos = (0.5, 0.5)
        placed.append(note.get_window_extent(renderer))


def _eps_groups(ax, pts) -> list[tuple[dict, list]]:
    """A method's points (highest epsilon first) in runs that lie within 8 display points of
    one another: one label each ("ε=8, 1"), not one per point on top of each other."""
    groups = []
    for p in pts:
        xy = ax.transData.transform((p["val_ppl"], p["strongest_tpr"]))
        if groups and math.dist(groups[-1][2], xy) < 8:
            groups[-1][1].append(p)
        else:
            groups.append((p, [p], xy))
    return [(p, ps) for p, ps, _ in groups]


def plot_frontier(rows: list[dict], path) -> None:
    """Validation perplexity (log scale) against the strongest attack's TPR, one curve per
    method through its epsilons (each point labelled, labels kept apart and inside the axes),
    the base model as a black star and chance (TPR = FPR) dotted; one panel per (model,
    dataset). ``rows`` are :func:`jaxmem.study.frontier.frontier_rows`."""
    plt = pyplot()
    groups = list(dict.fromkeys((r["model"], r["dataset"]) for r in rows))
    fig, axes = plt.subplots(1, len(groups), figsize=(7.6 * len(groups), 4.8), squeeze=False)
    shades = {"parameter": iter(plt.cm.Reds(np.linspace(0.55, 0.95, 6))),
              "prompt": iter(plt.cm.Blues(np.linspace(0.55, 0.95, 6)))}
    colors, notes = {}, []
    for ax, (model, dataset) in zip(axes.flat, groups):
        sub = [r for r in rows if (r["model"], r["dataset"]) == (model, dataset)
               and r["strongest_tpr"] is not None]
        fprs = {r["strongest_fpr"] for r in sub}
        labelled = []
        for i, method in enumerate(dict.fromkeys(r["method"] for r in sub)):
            pts = sorted((r for r in sub if r["method"] == method),
                         key=lambda r: -(r["epsilon"] if r["epsilon"] is not None else math.inf))
            if method == "base":
                ax.plot(pts[0]["val_ppl"], pts[0]["strongest_tpr"], "*", color="k", ms=12,
                        label="base model (no fine-tuning)")
                continue
            c = colors.setdefault(method, next(shades[family(method)], "gray"))
            ax.plot([p["val_ppl"] for p in pts], [p["strongest_tpr"] for p in pts],
                    MARKERS[i % len(MARKERS)] + LINESTYLES[i % 2], color=c, ms=6, lw=1.2,
                    label=display_name(method))
            labelled.append((pts, c))
        for fpr in sorted(fprs):
            ax.axhline(fpr, color="k", lw=0.8, ls=":", label=f"chance (TPR = {fpr:g})")
        ax.set_xscale("log")
        ax.margins(x=0.12)  # room for the labels of the outermost points
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel("validation perplexity, log scale (lower = more useful)")
        what = " / ".join(f"{f * 100:g}%" for f in sorted(fprs)) or "low"
        ax.set_ylabel(f"strongest attack's TPR at {what} FPR")
        ax.set_ylim(-0.04, 1.08)
        short = [Path(n).name if "/" in n else n for n in (model, dataset)]
        ax.set_title(f"{short[0]} / {short[1]}: privacy vs utility under DP-SGD\n"
                     "(red: parameter-based, blue: prompt-based)", fontsize=9)
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        notes.append((ax, labelled, sub))
    fig.tight_layout()
    for ax, labelled, sub in notes:  # labels once the axes have their final size
        mine = [ax.annotate("ε=" + ", ".join(_eps(q["epsilon"]) for q in ps),
                            (p["val_ppl"], p["strongest_tpr"]), textcoords="offset points",
                            xytext=(6, 2), fontsize=6, color=c,
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                                  "alpha": 0.8})
                for pts, c in labelled for p, ps in _eps_groups(ax, pts)]
        _place_labels(fig, ax, mine, [ax.transData.transform((r["val_ppl"], r["strongest_tpr"]))
                                      for r in sub])
    save(fig, path)


def plot_exposure(reports: dict[str, dict], path, title: str = "") -> None:
    """Mean exposure against repetitions: one panel per estimator, one line per entry of
    ``reports`` (e.g. a tuning method or epoch: ``{name: exposure_report(...)}``), log2 |R|
    (the most a rank can show) dashed, and on the sampled panel log2(m + 1) (the most m
    references can show) dotted; the legend beside the panels, off the data.

    Example:
        Two reports, cut down to what the figure reads (the sampled estimator only):

        >>> from pathlib import Path
        >>> def report(at_1, at_10):
        ...     return {"estimators": ["sampled"], "log2_space": 20.0, "n_samples": 1000,
        ...             "by_repeats": {"1": {"sampled": at_1}, "10": {"sampled": at_10}}}
        >>> plot_exposure({"lora": report(0.4, 1.8), "full": report(0.9, 6.5)}, "exposure.png")
        >>> Path("exposure.png").exists()
        True
    """
    plt = pyplot()
    estimators = [e for e in ("exact", "sampled", "skewnorm")  # jaxmem.canaries.ESTIMATORS
                  if any(e in r["estimators"] for r in reports.values())]
    fig, axes = plt.subplots(1, len(estimators), figsize=(4.2 * len(estimators) + 2.4, 3.8),
                             squeeze=False, sharey=True)
    for ax, est in zip(axes[0], estimators):
        for i, (name, rep) in enumerate(reports.items()):
            if est not in rep["estimators"]:
                continue
            reps = sorted(int(r) for r in rep["by_repeats"])
            y = [rep["by_repeats"][str(r)][est] for r in reps]
            ax.plot(reps, [np.nan if v is None else v for v in y], ms=5,
                    label=display_name(name), **style(i))
        top = max(r["log2_space"] for r in reports.values())
        ax.axhline(top, color="k", ls="--", lw=0.8, label="log2 |R|")
        if est == "sampled":  # the most k = 0 of m references can show
            cap = math.log2(max(r["n_samples"] for r in reports.values()) + 1)
            ax.axhline(cap, color="k", ls=":", lw=0.8, label="log2 (m + 1)")
        ax.set_xscale("symlog", linthresh=1)
        ticks = sorted({int(r) for rep in reports.values() for r in rep["by_repeats"]})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.margins(x=0.08)
        ax.set_xlabel("insertions of the canary")
        ax.set_title(est)
        ax.grid(True, alpha=0.2)
    axes[0][0].set_ylabel("mean exposure (bits)")
    handles = {}
    for ax in axes[0]:  # every line once, whichever panel drew it
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = sorted(handles, key=lambda lab: lab.startswith("log2"))  # the bounds last
    axes[0][-1].legend([handles[lab] for lab in order], order, fontsize=8, loc="center left",
                       bbox_to_anchor=(1.03, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    save(fig, path)
