"""Figures and tables: ROC curves on log-log axes, member vs non-member score histograms.

Example:
    >>> plot_roc({"loss": (fpr, tpr, auc)}, "roc.png")
    >>> plot_histograms({"loss": scores}, labels, "hist.png")
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path

import numpy as np

from jaxmem import runs
from jaxmem.blind import split_check
from jaxmem.overfit import gap_lines
from jaxmem.seeds import has_seeds, mean_sd_text, over_seeds


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend: every figure of jaxmem draws with it.

    Example:
        >>> plt = pyplot(); fig, ax = plt.subplots()
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi: int = 110) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def plot_roc(curves: dict[str, tuple], path: str | Path, title: str = "") -> None:
    """ROC curves on log-log axes (where low-FPR behaviour is visible), chance as a diagonal.

    Args:
      curves: {label: (fpr, tpr, auc)}.
    """
    plt = pyplot()
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
    _save(fig, path, dpi=120)


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
    _save(fig, path)


def markdown_table(rows: list[dict], floatfmt: str = ".4g") -> str:
    """A list of dicts as a GitHub Markdown table."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    fmt = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the study report

# The paper's Table 2 (LLaMA2-7B, 5 epochs, LOSS AUC), for side-by-side reading where the
# setting matches.
PAPER_TABLE2 = {
    "webnlg": {"head": .905, "lora": .852, "prefix": .621, "prompt": .582, "ptuning": .626},
    "wikitext": {"head": .889, "lora": .787, "prefix": .484, "prompt": .478, "ptuning": .487},
    "xsum": {"head": .823, "lora": .716, "prefix": .522, "prompt": .528, "ptuning": .532},
}

# The TPR columns of a study's rows and their FPRs, lowest FPR last.
TPR_KEYS = {"tpr@10%fpr": 0.1, "tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.001}


def _family(method: str) -> str:
    from jaxmem.tuning import PARAMETER_BASED

    return "parameter" if method.partition(":")[0] in PARAMETER_BASED else "prompt"


def _select(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


# ----------------------------------------------------------------------------- display names

_METHOD_NAMES = {"full": "full", "head": "head", "lora": "LoRA", "ia3": "IA3",
                 "prefix": "prefix", "prompt": "prompt", "ptuning": "P-tuning"}
_LORA_PRESETS = {"peft": "q,v", "attention": "attn", "mlp": "MLP", "all": "all"}


def _lora_targets(target) -> str:
    """``"peft"`` -> ``"q,v"`` (PEFT's Llama default), ``("q_proj", "o_proj")`` -> ``"q,o"``."""
    if isinstance(target, str):
        return _LORA_PRESETS.get(target, target.removesuffix("_proj"))
    return ",".join(t.removesuffix("_proj") for t in target)


def _method_details(mcfg, changed: dict) -> list[str]:
    """The parts of a method's display name its family spells specially; each part it takes
    is removed from ``changed`` (the options that differ from the defaults)."""
    parts = []
    if mcfg.name == "lora":  # targets and rank always: they say which LoRA it is
        changed.pop("target", None), changed.pop("r", None)
        parts += [_lora_targets(mcfg.target), f"r={mcfg.r}"]
    if changed.pop("prefix_projection", False):
        parts.append("reparam.")
    if mcfg.name == "ptuning" and changed.get("encoder") == "lstm":
        parts.append(changed.pop("encoder").upper())
    if "num_virtual_tokens" in changed:
        parts.append(f"{changed.pop('num_virtual_tokens')} tokens")
    return parts


def display_name(method: str) -> str:
    """The name a reader sees for a method spec, in every table and figure of the report.

    ``"lora"`` -> ``"LoRA (q,v; r=8)"``, ``"prefix:prefix_projection=true"`` ->
    ``"prefix (reparam.)"``, ``"ptuning"`` -> ``"P-tuning"``, ``"base"`` -> ``"base model"``.
    Every option that differs from the method's default is shown, so two different specs never
    share a name. LoRA's ``peft`` targets read as Llama's (q,v); on GPT-2 they are the fused
    ``c_attn``.
    """
    if method == "base":
        return "base model"
    from jaxmem.tuning import method_config

    try:
        mcfg = method_config(method)
    except (ValueError, TypeError):
        return method  # not a spec this version knows: show it as written
    default = type(mcfg)()
    changed = {f.name: getattr(mcfg, f.name) for f in dataclasses.fields(mcfg)
               if f.name != "name" and getattr(mcfg, f.name) != getattr(default, f.name)}
    parts = _method_details(mcfg, changed)
    parts += [f"{k}={'+'.join(v) if isinstance(v, tuple) else v}" for k, v in changed.items()]
    name = _METHOD_NAMES.get(mcfg.name, mcfg.name)
    return f"{name} ({'; '.join(parts)})" if parts else name


# ----------------------------------------------------------------------------- figures

def _integer_epochs(ax) -> None:
    """Epochs are counts: ticks at whole numbers only."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _auc_vs_epoch(rows, attack, path, key="auc", ylabel="AUC", title=""):
    plt = pyplot()
    groups = sorted({(r["model"], r["dataset"]) for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, (model, dataset) in zip(axes.flat, groups):
        sub = _select(rows, model=model, dataset=dataset, attack=attack)
        base = _select(sub, method="base")
        for method in dict.fromkeys(r["method"] for r in sub if r["method"] != "base"):
            pts = sorted(base + _select(sub, method=method), key=lambda r: r["epoch"])
            ls = "-" if _family(method) == "parameter" else "--"
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
    _save(fig, path)


def _loss_distributions(out: Path, rows, path):
    """LOSS-score histograms, members vs non-members, for the base model, LoRA and prefix at
    their last attacked epoch (the paper's Figure 2)."""
    import pyarrow.parquet as pq

    plt = pyplot()
    model, dataset = rows[0]["model"], rows[0]["dataset"]
    panels = []
    for method in ("base", "lora", "prefix", "full", "prompt"):
        sub = _select(rows, model=model, dataset=dataset, method=method)
        if sub and len(panels) < 3:
            e = max(r["epoch"] for r in sub)
            seed = next(r.get("seed") for r in sub if r["epoch"] == e)  # the first seed's
            f = runs.study_attack_dir(out, model, dataset, method, e, seed) / runs.SCORES
            if f.exists():
                panels.append((f"{display_name(method)} (epoch {e})",
                               pq.read_table(f).to_pydict()))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.4), squeeze=False)
    for ax, (name, t) in zip(axes.flat, panels):
        s, m = np.asarray(t["loss"]), np.asarray(t["member"], bool)
        bins = np.histogram_bin_edges(s[np.isfinite(s)], 30)
        ax.hist(-s[~m], bins=-bins[::-1], alpha=0.55, density=True, label="non-members")
        ax.hist(-s[m], bins=-bins[::-1], alpha=0.55, density=True, label="members")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("mean token NLL")
    axes.flat[0].legend(fontsize=8)
    _save(fig, path)
    return True


_MARKERS = "osD^vP*Xph<>"


def _plain_log_ticks(axis) -> None:
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


def _privacy_utility(final, attack, path):
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
        color = "k" if r["method"] == "base" else next(shades[_family(r["method"])], "gray")
        label = display_name(r["method"])
        if several:  # the same method appears once per (model, dataset)
            label += f" ({r['model']} / {r['dataset']})"
        ax.errorbar(r["val_ppl"], r["auc"], yerr=[[r["auc"] - r["auc_lo"]],
                                                   [r["auc_hi"] - r["auc"]]],
                    fmt=_MARKERS[i % len(_MARKERS)], color=color, capsize=3, ms=6, label=label)
    ax.axhline(0.5, color="k", lw=0.7, ls=":")
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("validation perplexity, log scale (lower = more useful)")
    ax.set_ylabel(f"{attack} AUC (higher = more memorization)")
    ax.set_title("Privacy vs utility (red: parameter-based, blue: prompt-based)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    ax.grid(True, which="both", axis="x", alpha=0.2)
    _save(fig, path)


def _auc_vs_size(final, attack, path) -> bool:
    """Last-epoch AUC against model size, one line per method (the paper's Table 3)."""
    models = {r["model"]: r.get("model_params", 0) for r in final}
    if len(models) < 2:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    for method in dict.fromkeys(r["method"] for r in final if r["method"] != "base"):
        pts = sorted((r["model_params"], r["auc"]) for r in final
                     if r["method"] == method and r["attack"] == attack)
        ax.plot(*zip(*pts), "-o" if _family(method) == "parameter" else "--o",
                label=display_name(method))
    ax.set_xscale("log")
    ax.axhline(0.5, color="k", lw=0.7, ls=":")
    ax.set_xlabel("model parameters")
    ax.set_ylabel(f"{attack} AUC")
    ax.set_title("Memorization vs model size (paper Table 3)", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _lora_placement(final, attack, path) -> bool:
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
    _save(fig, path)
    return True


def _supported_fprs(rows) -> list[float]:
    """The FPRs of :data:`TPR_KEYS` that every row's non-members support, highest first."""
    from jaxmem.metrics import tpr_unsupported_reason

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
    fprs = _supported_fprs(list(metrics.values())) if metrics else []
    if not fprs:
        return None
    key = next(k for k, f in TPR_KEYS.items() if f == fprs[-1])
    name = max(metrics, key=lambda a: (metrics[a][key], metrics[a]["auc"]))
    return {"attack": name, "tpr": float(metrics[name][key]), "fpr": fprs[-1]}


def strongest_text(best: dict | None, n_nonmembers: int | None = None,
                   n_members: int | None = None) -> str:
    """:func:`strongest_attack`'s answer for a table: ``"min_k_pp: TPR 0.12 @ 1% FPR"``, with
    the TPR's Clopper-Pearson 95% interval (:func:`_tpr_ci`) when ``n_members`` is given."""
    if best is None:
        from jaxmem.metrics import tpr_unsupported_reason

        return (tpr_unsupported_reason(max(TPR_KEYS.values()), n_nonmembers)
                if n_nonmembers is not None else "n/a")
    ci = _tpr_ci({"tpr": best["tpr"], "n_members": n_members}, "tpr") if n_members else None
    return (f"{best['attack']}: TPR {best['tpr']:.3g}"
            + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + f" @ {best['fpr'] * 100:g}% FPR")


def strongest_attacks(final: list[dict]) -> dict[str, dict]:
    """Per method, the row of its :func:`strongest_attack`. ``final`` is one (model,
    dataset)'s last-epoch rows.

    Returns:
        ``{method: row}``; methods whose non-members support no FPR of :data:`TPR_KEYS` are
        left out.
    """
    by_method: dict[str, dict] = {}
    for r in final:
        by_method.setdefault(r["method"], {})[r["attack"]] = r
    best = {m: strongest_attack(rs) for m, rs in by_method.items()}
    return {m: by_method[m][b["attack"]] for m, b in best.items() if b is not None}


# ----------------------------------------------------------------------------- comparable utility

# A fine-tuned model is "at comparable utility" when its validation perplexity lies within
# [MIN_COMPARABLE_PPL_RATIO, COMPARABLE_PPL_RATIO] x the base model's: the paper compares
# memorization across methods at similar utility. Above the band, a method fits the data much
# worse than the model it started from (e.g. a diverged prefix) and says little about how much
# that method memorizes. Below it, a method has fit the distribution far beyond what the base
# model could (templated records such as the ``infobox`` corpus reach 0.12-0.40x): its AUC
# then mixes memorization with a different, much better fit, and is not comparable either.
# Both ends are fixed in advance, not tuned to a study.
COMPARABLE_PPL_RATIO = 1.25
MIN_COMPARABLE_PPL_RATIO = 0.5


def comparable_utility(val_ppl: float, base_ppl: float) -> bool:
    """``0.5 x base_ppl <= val_ppl <= 1.25 x base_ppl`` (:data:`MIN_COMPARABLE_PPL_RATIO`,
    :data:`COMPARABLE_PPL_RATIO`); a NaN perplexity is not comparable."""
    return bool(MIN_COMPARABLE_PPL_RATIO * base_ppl <= val_ppl <= COMPARABLE_PPL_RATIO * base_ppl)


def base_val_ppl(rows: list[dict], model: str, dataset: str) -> float | None:
    """The base model's validation perplexity (its epoch-0 row), None if it has no row."""
    base = _select(rows, model=model, dataset=dataset, method="base")
    return base[0]["val_ppl"] if base else None


def not_comparable(rows: list[dict], model: str, dataset: str) -> dict[str, float]:
    """``{method: last-epoch val ppl / base val ppl}`` of one (model, dataset)'s methods that
    are not at comparable utility (:func:`comparable_utility`); empty without a base row. A
    method trained with several seeds (rows with a ``seed``) is judged on the mean of its
    seeds' perplexities."""
    base = base_val_ppl(rows, model, dataset)
    if base is None:
        return {}
    final = _final_rows(_select(rows, model=model, dataset=dataset))
    by_seed: dict[str, dict] = {}
    for r in final:
        if r["method"] != "base":
            by_seed.setdefault(r["method"], {})[r.get("seed")] = r["val_ppl"]
    ppl = {m: float(np.mean(list(v.values()))) for m, v in by_seed.items()}
    return {m: v / base for m, v in ppl.items() if not comparable_utility(v, base)}


def utility_note(flagged: dict[str, float], base_ppl: float) -> str:
    """The sentence naming the methods :func:`not_comparable` flags (empty if none), each
    with the side of the band it fell out of."""
    if not flagged:
        return ""
    each = ", ".join(
        f"{display_name(m)} ({r:.2f}x, "
        + ("below" if r < MIN_COMPARABLE_PPL_RATIO else "above") + ")"
        for m, r in flagged.items())
    return (f"Not at comparable utility: {each}: their last-epoch validation perplexity is "
            f"outside {MIN_COMPARABLE_PPL_RATIO}x-{COMPARABLE_PPL_RATIO}x the base model's "
            f"({base_ppl:.2f}). Above: more than {COMPARABLE_PPL_RATIO}x, a much worse fit "
            f"than the base model; below: less than {MIN_COMPARABLE_PPL_RATIO}x, a fit far "
            "beyond it (e.g. templated records). Either way their memorization is not "
            "measured at similar utility.")


def _tpr_ci(r: dict, key: str) -> tuple[float, float] | None:
    """A row's TPR as its Clopper-Pearson 95% interval over the members (the TPR is k of
    ``n_members`` members above the threshold the non-members set; the threshold's own noise
    is not in it); None without a TPR or a member count."""
    if r.get(key) is None or not r.get("n_members"):
        return None
    from jaxmem.dp import clopper_pearson

    n = int(r["n_members"])
    low, high = clopper_pearson(int(round(r[key] * n)), n, 0.05)
    return float(low), float(high)


def tpr_note(sub: list[dict]) -> str:
    """The caveat under a table whose TPR at 1% FPR rests on fewer than 1,000 non-members:
    there it is the TPR at about ``n_nonmembers / 100`` false positives (empty otherwise)."""
    from jaxmem.metrics import tpr_unsupported_reason

    ns = [r["n_nonmembers"] for r in sub if r.get("n_nonmembers")]
    if not ns or tpr_unsupported_reason(0.01, min(ns)) or min(ns) >= 1000:
        return ""
    n = min(ns)
    k = n // 100
    return (f"TPR intervals are Clopper-Pearson 95% over the members (exact binomial), at the "
            "threshold the non-members set (with several training seeds: one run's interval at "
            f"the mean count, beside mean ± sd over the seeds). With {n} non-members, TPR at "
            "1% FPR is the TPR at "
            f"{'one false positive' if k == 1 else f'{k} false positives'} at most: that "
            "threshold's own noise is not in the interval, and a TPR at 1% FPR taken as a "
            "headline needs >= 1,000 non-members (10 false positives).")


def _tpr_low_fpr(final, path, out: Path | None = None) -> bool:
    """TPR at each supported low FPR per method, for each method's strongest attack
    (:func:`strongest_attacks`), as grouped bars with Clopper-Pearson 95% intervals
    (:func:`_tpr_ci`) and chance (TPR = FPR)."""
    groups = list(dict.fromkeys((r["model"], r["dataset"]) for r in final))
    panels = [(g, strongest_attacks(_select(final, model=g[0], dataset=g[1]))) for g in groups]
    panels = [(g, best) for g, best in panels if best]
    if not panels:
        return False
    plt = pyplot()
    width_in = max(5.5, 1.1 * max(len(best) for _, best in panels) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(width_in * len(panels), 4.4),
                             squeeze=False)
    for ax, ((model, dataset), best) in zip(axes.flat, panels):
        fprs = _supported_fprs(list(best.values()))
        x = np.arange(len(best))
        width = 0.8 / len(fprs)
        for j, fpr in enumerate(fprs):
            key = next(k for k, f in TPR_KEYS.items() if f == fpr)
            pos = x - 0.4 + (j + 0.5) * width
            vals = np.array([r[key] for r in best.values()], float)
            cis = [_tpr_ci(r, key) for r in best.values()]
            err = np.array([[v - c[0], c[1] - v] if c else [0, 0] for v, c in zip(vals, cis)]).T
            ax.bar(pos, vals, width, yerr=err, capsize=2, label=f"TPR at {fpr * 100:g}% FPR")
            ax.hlines([fpr] * len(x), pos - width / 2, pos + width / 2, colors="k",
                      linestyles=":", lw=1, label="chance (TPR = FPR)" if j == 0 else None)
        ax.set_xticks(x)
        # long names ("prefix (reparam.; init=activations)") wrapped so neighbours don't overlap
        ax.set_xticklabels([f"{textwrap.fill(display_name(m), 16)}\n[{r['attack']}]"
                            for m, r in best.items()],
                           fontsize=7)
        ax.set_ylabel("true positive rate")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{model} / {dataset}: strongest attack per method, last epoch", fontsize=9)
        ax.legend(fontsize=7)
    _save(fig, path)
    return True


# ----------------------------------------------------------------------------- tables

def _tpr_text(r: dict, key: str):
    """A TPR for a table: ``"0.250 [0.176, 0.337]"`` (its Clopper-Pearson 95% interval over the
    members, :func:`_tpr_ci`), or why the non-members cannot support it. A row summarized over
    several training seeds (:func:`jaxmem.seeds.over_seeds`) reads ``"0.250 ± 0.020 [0.176,
    0.337]"``: mean ± sd over the seeds, and the interval of one run at the mean count."""
    from jaxmem.metrics import tpr_unsupported_reason

    if "n_nonmembers" in r and tpr_unsupported_reason(TPR_KEYS[key], r["n_nonmembers"]):
        return tpr_unsupported_reason(TPR_KEYS[key], r["n_nonmembers"])
    if r.get(key) is None:
        return "n/a"
    ci = _tpr_ci(r, key)
    value = mean_sd_text(r, key) if r.get("n_seeds", 1) > 1 else f"{r[key]:.3f}"
    return value + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _last_epoch_table(sub: list[dict], attack: str, model: str, dataset: str) -> list[dict]:
    """One row per method: epoch, validation perplexity and whether it is at comparable utility
    (:func:`comparable_utility`), every attack's AUC (the main attack's with its interval), the
    main attack's TPR at each FPR, and the strongest attack (:func:`strongest_attack`)."""
    attacks = list(dict.fromkeys(r["attack"] for r in sub))
    base = base_val_ppl(sub, model, dataset)
    table = []
    for method in dict.fromkeys(r["method"] for r in sub):
        rs = {r["attack"]: r for r in sub if r["method"] == method}
        any_row = next(iter(rs.values()))
        row = {"method": display_name(method), "epoch": any_row["epoch"],
               "val ppl": (mean_sd_text(any_row, "val_ppl", ".2f") if any_row.get("n_seeds", 1) > 1
                           else round(any_row["val_ppl"], 3))}
        if base is not None:
            ppl = any_row["val_ppl"]
            verdict = "comparable" if comparable_utility(ppl, base) else "NOT comparable"
            row["utility"] = ("reference" if method == "base"
                              else f"{verdict} ({ppl / base:.2f}x base ppl)")
        if any_row.get("gap") is not None:
            row["train-val gap"] = mean_sd_text(any_row, "gap", ".2f")
        several = any_row.get("n_seeds", 1) > 1  # mean ± sd over training seeds
        for a in attacks:
            row[f"{a} AUC"] = (mean_sd_text(rs[a], "auc") if several
                               else f"{rs[a]['auc']:.3f} [{rs[a]['auc_lo']:.2f}, "
                               f"{rs[a]['auc_hi']:.2f}]" if a == attack
                               else round(rs[a]["auc"], 3))
        for key in TPR_KEYS:
            row[f"{attack} TPR@{key[4:-4]}%FPR"] = _tpr_text(rs[attack], key)
        row["strongest attack"] = strongest_text(strongest_attack(rs),
                                                 any_row.get("n_nonmembers"),
                                                 any_row.get("n_members"))
        paper = PAPER_TABLE2.get(dataset, {}).get(method.partition(":")[0])
        if model == "llama-2-7b" and paper is not None:
            row["paper LOSS AUC"] = paper
        table.append(row)
    return table


def _extraction_table(sub: list[dict]) -> list[dict]:
    """One row per (method, epoch) with verbatim extraction (the study's ``extraction:``):
    the k-extractable rate and the fraction of suffix tokens reproduced, members against
    non-members (the control)."""
    table, seen = [], set()
    for r in sub:
        key = (r["method"], r["epoch"])
        if "k_extractable_rate_members" not in r or key in seen:
            continue
        seen.add(key)
        row = {"method": display_name(r["method"]), "epoch": r["epoch"],
               "k-extractable, members": round(r["k_extractable_rate_members"], 3),
               "k-extractable, non-members": round(r["k_extractable_rate_nonmembers"], 3),
               "tokens reproduced, members": round(r["token_match_members"], 3),
               "tokens reproduced, non-members": round(r["token_match_nonmembers"], 3)}
        for col in r:  # one column per n: "(n, p)-discoverable, members / non-members"
            if col.startswith("discoverable_n") and col.endswith("_members"):
                n = col[len("discoverable_n"):-len("_members")]
                row[f"({n}, {r['discoverable_p']:g})-discoverable, members / non-members"] = (
                    f"{r[col]:.3f} / {r[f'discoverable_n{n}_nonmembers']:.3f}")
        table.append(row)
    return table


def _privacy_table(sub: list[dict]) -> list[dict]:
    """One row per method (last epoch): the DP-SGD accountant's epsilon (infinite without DP)
    and noise multiplier, and the empirical epsilon each attack's ROC proves
    (``empirical_epsilon`` of the rows, :func:`jaxmem.dp.empirical_epsilon`), the largest
    named."""
    attacks = list(dict.fromkeys(r["attack"] for r in sub))
    table = []
    for method in dict.fromkeys(r["method"] for r in sub):
        rs = {r["attack"]: r for r in sub if r["method"] == method}
        r0 = next(iter(rs.values()))
        eps = r0.get("dp_epsilon")
        row = {"method": display_name(method), "epoch": r0["epoch"],
               "DP-SGD epsilon": ("reference" if method == "base" else "inf (no DP)"
                                  if eps is None else f"{eps:.2f} (delta {r0['dp_delta']:g})"),
               "noise multiplier": "" if eps is None else round(r0["dp_noise_multiplier"], 3)}
        for a in attacks:
            v = rs[a].get("empirical_epsilon") if a in rs else None
            row[f"{a} emp. eps"] = "n/a" if v is None else round(v, 2)
        row["largest"] = largest_empirical_epsilon_text(rs)
        table.append(row)
    return table


def largest_empirical_epsilon(by_attack: dict[str, dict]) -> tuple[float | None, str | None]:
    """(the largest ``empirical_epsilon`` of one cell's rows ``{attack: row}``, its attack);
    (None, None) when no row has one."""
    known = {a: r["empirical_epsilon"] for a, r in by_attack.items()
             if r.get("empirical_epsilon") is not None}
    if not known:
        return None, None
    top = max(known, key=known.get)
    return known[top], top


def largest_empirical_epsilon_text(by_attack: dict[str, dict]) -> str:
    """:func:`largest_empirical_epsilon` for a table: ``"1.23 (ref)"``, ``"0"`` or ``"n/a"``."""
    v, attack = largest_empirical_epsilon(by_attack)
    return "n/a" if v is None else f"{v:.2f} ({attack})" if v > 0 else "0"


def _privacy_lines(sub: list[dict]) -> list[str]:
    """The report's DP section for one (model, dataset): :func:`_privacy_table` and what it
    means, with the most any attack could prove on this many examples."""
    from jaxmem.dp import empirical_epsilon_cap

    if not any(r.get("dp_epsilon") is not None for r in sub):
        return []  # no DP: nothing to set the empirical epsilons against (they are in results.csv)
    r0 = sub[0]
    delta = max((r.get("dp_delta") or 0) for r in sub)
    cap = empirical_epsilon_cap(r0["n_members"], r0["n_nonmembers"], delta=delta)
    return [f"Privacy (DP-SGD, delta {delta:g}): the accountant's epsilon (an upper bound, "
            "`jaxmem.dp`) against the empirical epsilon each attack's ROC proves (a lower bound "
            "at 95% confidence per attack, Clopper-Pearson over every threshold; Jagielski et "
            "al. 2020). Where the guarantee holds, every empirical epsilon should stay below "
            "the accountant's, up to chance (the largest of several attacks is not a 95% bound: "
            "no correction for multiple testing) and the accountant's Poisson-sampling "
            f"assumption. With {r0['n_members']} members and {r0['n_nonmembers']} non-members "
            f"no attack can prove more than {cap:.2f}. The base model never saw the members: a "
            "positive value there measures the split, not training.", "",
            markdown_table(_privacy_table(sub)), ""]


def _exposure_table(out: Path, final: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """Canary exposure at each method's last attacked epoch, the base model first (the control:
    the same canaries, never trained on): one row per method, mean exposure (sampled
    estimator, bits) per repetition count, and the ``exposure.json`` reports behind it by
    method, for :func:`jaxmem.canaries.plot_exposure`. Empty without ``train.canaries``."""
    table, reports = [], {}
    for r in final:
        if r["method"] in reports or not any(k.startswith("exposure_") for k in r):
            continue
        where = runs.study_attack_dir(out, r["model"], r["dataset"], r["method"], r["epoch"],
                                      r.get("seed"))
        reports[r["method"]] = rep = runs.read_json(where / runs.EXPOSURE)
        table.append({"method": display_name(r["method"]), "epoch": r["epoch"],
                      **{f"{n}x": round(v["sampled"], 2) for n, v in rep["by_repeats"].items()}})
    return table, reports


def study_blind(out, rows: list[dict], model: str, dataset: str) -> dict | None:
    """A study's blind baseline for (model, dataset) (:mod:`jaxmem.blind`, the audit's
    ``info["blind"]``): every cell audits the same texts, so the first attacked cell whose
    ``metrics.json`` holds one; None where none does (cells attacked before it existed, or
    ``audit.blind`` off)."""
    seen = set()
    for r in rows:
        if (r["model"], r["dataset"]) != (model, dataset):
            continue
        where = runs.study_attack_dir(out, model, dataset, r["method"], r["epoch"],
                                      r.get("seed"))
        if where in seen or not (where / runs.METRICS).exists():
            continue
        seen.add(where)
        blind = runs.read_json(where / runs.METRICS)["info"].get("blind")
        if blind:
            return blind
    return None


def _final_rows(rows: list[dict]) -> list[dict]:
    """Each (model, dataset, method)'s rows at its last attacked epoch."""
    last = {}
    for r in rows:
        k = (r["model"], r["dataset"], r["method"])
        last[k] = max(last.get(k, -1), r["epoch"])
    return [r for r in rows if r["epoch"] == last[(r["model"], r["dataset"], r["method"])]]


def write_study_report(out, scfg, rows: list[dict], seconds: float | None = None,
                       timings: list[dict] | None = None) -> Path:
    """Writes ``report.md`` and ``figures/*.png`` for a study's result rows; ``timings``
    (:meth:`jaxmem.profiling.Profile.table` rows of this session) become its last table."""
    from jaxmem.claims import (claim4_lines, claim5_lines, claim_lines,  # it imports this
                               score_reader)

    out = Path(out)
    fig_dir = out / runs.FIGURES
    fig_dir.mkdir(exist_ok=True)
    attack = scfg.audit.attacks[0] if scfg.audit.attacks else "loss"
    attack = next((r["attack"] for r in rows if r["attack"].startswith(attack)), attack)
    per_seed = rows  # the claims read every seed's scores; tables and figures the means
    rows = over_seeds(rows) if has_seeds(rows) else rows
    _auc_vs_epoch(rows, attack, fig_dir / "auc_vs_epoch.png",
                  title=f"{attack} AUC by epoch (paper Fig. 1)")
    _auc_vs_epoch(rows, attack, fig_dir / "ppl_vs_epoch.png", key="val_ppl",
                  ylabel="validation perplexity", title="Validation perplexity (paper Fig. 3)")
    has_dist = _loss_distributions(out, rows, fig_dir / "loss_distributions.png")
    final = _final_rows(rows)
    _privacy_utility(final, attack, fig_dir / "privacy_utility.png")
    extra_figs = [f"![{name}](figures/{f})" for name, f, made in (
        ("TPR at low FPR", "tpr_low_fpr.png", _tpr_low_fpr(final, fig_dir / "tpr_low_fpr.png",
                                                           out)),
        ("AUC vs model size", "auc_vs_size.png", _auc_vs_size(final, attack,
                                                              fig_dir / "auc_vs_size.png")),
        ("LoRA placement", "lora_placement.png", _lora_placement(final, attack,
                                                                 fig_dir / "lora_placement.png")))
        if made]

    lines = [f"# jaxmem study: {scfg.name}", ""]
    if seconds is not None:
        sessions = runs.study_sessions(out)
        total = sum(sessions.values()) if sessions else seconds
        lines.append(f"Run time: {total / 60:.1f} min"
                     + (f" over {len(sessions)} sessions (resumed). " if len(sessions) > 1
                        else ". "))
    t = scfg.train
    lines += [f"Settings: models {list(scfg.models)}, datasets {list(scfg.datasets)}, "
              f"{t.epochs} epochs, block size {t.block_size}, batch {t.batch_size} x "
              f"{t.grad_accum}, learning rates {dict(scfg.lr) or {}} "
              f"(default {t.optim.lr}), {t.dtype}; data seed {scfg.data_seed}, split "
              f"{scfg.split!r}, training seeds "
              f"{list(scfg.seeds) if scfg.seeds is not None else [t.seed]}"
              + (" (tables and figures: mean ± sd over the seeds; the claims' intervals "
                 "resample seeds and texts)" if scfg.seeds is not None and len(scfg.seeds) > 1
                 else "") + ". Members are drawn from the "
              "fine-tuning set, non-members from held-out data; the reference model is the base "
              "model. A TPR at an FPR below 1/(number of non-members) is not measurable and "
              "reads n/a.", "",
              "![privacy vs utility](figures/privacy_utility.png)", ""]
    for model, dataset in dict.fromkeys((r["model"], r["dataset"]) for r in rows):
        sub = _select(final, model=model, dataset=dataset)
        lines += [f"## {model} / {dataset}: last epoch", ""]
        check = split_check(study_blind(out, rows, model, dataset), markdown=True)
        lines += [check, ""] if check else []  # first: every AUC below reads against it
        lines += [markdown_table(_last_epoch_table(sub, attack, model, dataset)), ""]
        note = utility_note(not_comparable(rows, model, dataset),
                            base_val_ppl(rows, model, dataset))
        lines += [note, ""] if note else []
        lines += [tpr_note(sub), ""] if tpr_note(sub) else []
        ext = _extraction_table(_select(rows, model=model, dataset=dataset))
        if ext:
            ecfg = scfg.extraction_config()
            scheme = ("plain sampling" if ecfg is None or ecfg.plain_sampling else
                      f"sampling at temperature {ecfg.temperature:g}, top-k {ecfg.top_k or 'off'}"
                      f", top-p {ecfg.top_p:g}")
            lines += ["Verbatim extraction (greedy decoding from each text's first tokens; "
                      "k-extractable: the next tokens reproduced exactly; (n, p)-discoverable: "
                      f"at least one of n samples ({scheme}) reproduces them with probability "
                      ">= p; non-members are the control):", "", markdown_table(ext), ""]
        lines += _privacy_lines(sub)
        exposure, reports = _exposure_table(out, sub)
        if exposure:
            from jaxmem.canaries import plot_exposure

            rep = next(iter(reports.values()))  # the base model's: |R| and m are the study's
            several = len({(r["model"], r["dataset"]) for r in rows}) > 1
            fig = (f"exposure_{runs.slug(model)}_{runs.slug(dataset)}.png" if several
                   else "exposure.png")
            plot_exposure(reports, fig_dir / fig, title=f"{Path(model).name} / "
                          f"{Path(dataset).name}: canary exposure, last attacked epoch")
            lines += [f"### Canary exposure (train.canaries = {scfg.train.canaries})", "",
                      f"Mean exposure in bits (Carlini et al. 2019, log2 |R| - log2 rank, "
                      f"sampled estimator over {rep['n_samples']} random secrets) of the "
                      "canaries inserted R times, at each method's last attacked epoch; the "
                      "base model never saw them (R = 0: never inserted, the control). "
                      f"log2 |R| = {rep['log2_space']:.2f} bits is the most any rank can show, "
                      f"log2(m + 1) = {math.log2(rep['n_samples'] + 1):.2f} the most "
                      f"{rep['n_samples']} samples can; the skew-normal estimate, which goes "
                      "beyond it, is in results.csv (exposure_skewnorm_<R>x)."
                      + (" Under DP-SGD a canary inserted R times is protected only as a "
                         "group of R records (roughly R x epsilon)." if scfg.train.dp else ""),
                      "",
                      markdown_table(exposure), "", f"![canary exposure](figures/{fig})", ""]
        lines += gap_lines(_select(per_seed, model=model, dataset=dataset))
        lines += claim_lines(per_seed, model, dataset, attack, score_reader(out, model, dataset),
                             n_boot=scfg.audit.n_boot, seed=scfg.audit.seed)
        lines += claim5_lines(per_seed, model, dataset, attack, score_reader(out, model, dataset),
                              n_boot=scfg.audit.n_boot, seed=scfg.audit.seed)
    for model in dict.fromkeys(r["model"] for r in rows):  # claim 4 spans the datasets
        lines += claim4_lines(per_seed, model, attack, lambda d, m=model: score_reader(out, m, d),
                              n_boot=scfg.audit.n_boot, seed=scfg.audit.seed)
    lines += ["## Figures", "", "![AUC by epoch](figures/auc_vs_epoch.png)", "",
              "![validation perplexity](figures/ppl_vs_epoch.png)", ""]
    if has_dist:
        lines += ["![loss distributions](figures/loss_distributions.png)", ""]
    for f in extra_figs:
        lines += [f, ""]
    lines += ["For reference, the paper (LLaMA2-7B, 5 epochs, LOSS AUC, Table 2): " + "; ".join(
        f"{d}: " + ", ".join(f"{m} {v}" for m, v in t.items()) for d, t in PAPER_TABLE2.items()),
        "", "Per-example scores, ROC curves and histograms for every (method, epoch) are under "
        "`attacks/`; every number above is in `results.csv`.", ""]
    if timings:
        lines += ["## Where this session's time went", "",
                  "Wall time per phase (`timings.json`); compiling is split out of the phase "
                  "that triggered it, and a resumed session only shows its own work.", "",
                  markdown_table(timings, floatfmt=".1f"), ""]
    return runs.atomic_write(out / runs.REPORT, "\n".join(lines))
