"""Figures and tables: ROC curves on log-log axes, member vs non-member score histograms.

Example:
    >>> plot_roc({"loss": (fpr, tpr, auc)}, "roc.png")
    >>> plot_histograms({"loss": scores}, labels, "hist.png")
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jaxmem import runs


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi: int = 110) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)


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
    _save(fig, path, dpi=120)


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


def _family(method: str) -> str:
    from jaxmem.tuning import PARAMETER_BASED

    return "parameter" if method.partition(":")[0] in PARAMETER_BASED else "prompt"


def _select(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def _auc_vs_epoch(rows, attack, path, key="auc", ylabel="AUC", title=""):
    plt = _plt()
    groups = sorted({(r["model"], r["dataset"]) for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, (model, dataset) in zip(axes.flat, groups):
        sub = _select(rows, model=model, dataset=dataset, attack=attack)
        base = _select(sub, method="base")
        for method in dict.fromkeys(r["method"] for r in sub if r["method"] != "base"):
            pts = sorted(base + _select(sub, method=method), key=lambda r: r["epoch"])
            ls = "-" if _family(method) == "parameter" else "--"
            x = [r["epoch"] for r in pts]
            ax.plot(x, [r[key] for r in pts], ls, marker="o", ms=3, label=method)
            if key == "auc":
                ax.fill_between(x, [r["auc_lo"] for r in pts], [r["auc_hi"] for r in pts],
                                alpha=0.12)
        if key == "auc":
            ax.axhline(0.5, color="k", lw=0.7, ls=":")
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

    plt = _plt()
    model, dataset = rows[0]["model"], rows[0]["dataset"]
    panels = []
    for method in ("base", "lora", "prefix", "full", "prompt"):
        sub = _select(rows, model=model, dataset=dataset, method=method)
        if sub and len(panels) < 3:
            e = max(r["epoch"] for r in sub)
            f = runs.study_attack_dir(out, model, dataset, method, e) / runs.SCORES
            if f.exists():
                panels.append((f"{method} (epoch {e})", pq.read_table(f).to_pydict()))
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


def _privacy_utility(final, attack, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    for r in final:
        if r["attack"] != attack:
            continue
        color = {"parameter": "tab:red", "prompt": "tab:blue"}.get(_family(r["method"]), "k")
        if r["method"] == "base":
            color = "k"
        ax.errorbar(r["val_ppl"], r["auc"], yerr=[[r["auc"] - r["auc_lo"]],
                                                   [r["auc_hi"] - r["auc"]]],
                    fmt="o", color=color, capsize=3)
        ax.annotate(r["method"], (r["val_ppl"], r["auc"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.axhline(0.5, color="k", lw=0.7, ls=":")
    ax.set_xlabel("validation perplexity (lower = more useful)")
    ax.set_ylabel(f"{attack} AUC (higher = more memorization)")
    ax.set_title("Privacy vs utility (red: parameter-based, blue: prompt-based)", fontsize=9)
    _save(fig, path)


def _auc_vs_size(final, attack, path) -> bool:
    """Last-epoch AUC against model size, one line per method (the paper's Table 3)."""
    models = {r["model"]: r.get("model_params", 0) for r in final}
    if len(models) < 2:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    for method in dict.fromkeys(r["method"] for r in final if r["method"] != "base"):
        pts = sorted((r["model_params"], r["auc"]) for r in final
                     if r["method"] == method and r["attack"] == attack)
        ax.plot(*zip(*pts), "-o" if _family(method) == "parameter" else "--o", label=method)
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
    plt = _plt()
    groups = sorted({(r["model"], r["dataset"]) for r in final})
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(groups) * len(placements) / 2, 4))
    width = 0.8 / len(placements)
    for i, method in enumerate(placements):
        vals = [next((r["auc"] for r in final if r["method"] == method and r["attack"] == attack
                      and (r["model"], r["dataset"]) == g), np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, vals, width, label=method)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{m}\n{d}" for m, d in groups], fontsize=8)
    ax.axhline(0.5, color="k", lw=0.7, ls=":")
    ax.set_ylabel(f"{attack} AUC")
    ax.set_title("LoRA placement (paper Table 4)", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def write_study_report(out, scfg, rows: list[dict], seconds: float | None = None) -> Path:
    """Writes ``report.md`` and ``figures/*.png`` for a study's result rows."""
    out = Path(out)
    fig_dir = out / runs.FIGURES
    fig_dir.mkdir(exist_ok=True)
    attack = scfg.audit.attacks[0] if scfg.audit.attacks else "loss"
    attack = next((r["attack"] for r in rows if r["attack"].startswith(attack)), attack)
    _auc_vs_epoch(rows, attack, fig_dir / "auc_vs_epoch.png",
                  title=f"{attack} AUC by epoch (paper Fig. 1)")
    _auc_vs_epoch(rows, attack, fig_dir / "ppl_vs_epoch.png", key="val_ppl",
                  ylabel="validation perplexity", title="Validation perplexity (paper Fig. 3)")
    has_dist = _loss_distributions(out, rows, fig_dir / "loss_distributions.png")
    last = {}
    for r in rows:
        k = (r["model"], r["dataset"], r["method"])
        last[k] = max(last.get(k, -1), r["epoch"])
    final = [r for r in rows if r["epoch"] == last[(r["model"], r["dataset"], r["method"])]]
    _privacy_utility(final, attack, fig_dir / "privacy_utility.png")
    extra_figs = [f"![{name}](figures/{f})" for name, f, made in (
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
              f"{t.grad_accum}, seed {t.seed}, learning rates {dict(scfg.lr) or {}} "
              f"(default {t.optim.lr}), {t.dtype}. Members are drawn from the "
              "fine-tuning set, non-members from held-out data; the reference model is the base "
              "model.", "",
              "![privacy vs utility](figures/privacy_utility.png)", ""]
    for model, dataset in dict.fromkeys((r["model"], r["dataset"]) for r in rows):
        sub = [r for r in final if r["model"] == model and r["dataset"] == dataset]
        attacks = list(dict.fromkeys(r["attack"] for r in sub))
        table = []
        for method in dict.fromkeys(r["method"] for r in sub):
            rs = {r["attack"]: r for r in sub if r["method"] == method}
            row = {"method": method, "epoch": next(iter(rs.values()))["epoch"],
                   "val ppl": round(next(iter(rs.values()))["val_ppl"], 3)}
            for a in attacks:
                row[f"{a} AUC"] = (f"{rs[a]['auc']:.3f} [{rs[a]['auc_lo']:.2f}, "
                                   f"{rs[a]['auc_hi']:.2f}]" if a == attack
                                   else round(rs[a]["auc"], 3))
            row[f"{attack} TPR@1%FPR"] = round(rs[attack]["tpr@1%fpr"], 3)
            row[f"{attack} TPR@0.1%FPR"] = round(rs[attack]["tpr@0.1%fpr"], 3)
            paper = PAPER_TABLE2.get(dataset, {}).get(method.partition(":")[0])
            if model == "llama-2-7b" and paper is not None:
                row["paper LOSS AUC"] = paper
            table.append(row)
        lines += [f"## {model} / {dataset}: last epoch", "", markdown_table(table), ""]
        lines += _claims(rows, model, dataset, attack)
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
    return runs.atomic_write(out / runs.REPORT, "\n".join(lines))


def _verdict(in_order: bool, intervals_apart: bool) -> str:
    """What a comparison of AUCs supports: never more than its confidence intervals allow."""
    if in_order and intervals_apart:
        return "reproduced"
    if in_order:
        return ("not established (the point estimates are in the claimed order, but the "
                "confidence intervals overlap)")
    return "not reproduced"


def _claims(rows, model, dataset, attack) -> list[str]:
    """The paper's claims 1 and 2, checked on this study's numbers (stated either way)."""
    sub = [r for r in rows if r["model"] == model and r["dataset"] == dataset
           and r["attack"] == attack and r["method"] != "base"]
    if not sub:
        return []
    last = max(r["epoch"] for r in sub)
    fin = {r["method"]: r for r in sub if r["epoch"] == last}
    par = [r["auc"] for m, r in fin.items() if _family(m) == "parameter"]
    pro = [r["auc"] for m, r in fin.items() if _family(m) == "prompt"]
    par_lo = [r.get("auc_lo", np.nan) for m, r in fin.items() if _family(m) == "parameter"]
    pro_hi = [r.get("auc_hi", np.nan) for m, r in fin.items() if _family(m) == "prompt"]
    out = ["**The paper's claims on these numbers** (\"reproduced\" needs the 95% bootstrap "
           "intervals apart, not only the point estimates in order)", ""]
    if par and pro:
        verdict = _verdict(min(par) > max(pro), min(par_lo) > max(pro_hi))
        out.append(f"- Claim 1 (parameter-based tuning memorizes more), {attack} attack: "
                   f"{verdict}: at epoch {last}, "
                   f"parameter-based AUC {', '.join(f'{a:.3f}' for a in par)} vs "
                   f"prompt-based {', '.join(f'{a:.3f}' for a in pro)}. Compare their validation "
                   "perplexities in the table: the claim is about similar utility.")
        holds = []
        for a in dict.fromkeys(r["attack"] for r in rows):
            fa = {r["method"]: r["auc"] for r in rows if r["model"] == model and r["dataset"]
                  == dataset and r["attack"] == a and r["epoch"] == last and r["method"] != "base"}
            p_ = [v for m, v in fa.items() if _family(m) == "parameter"]
            q_ = [v for m, v in fa.items() if _family(m) == "prompt"]
            if p_ and q_:
                holds.append(f"{a}: {'yes' if min(p_) > max(q_) else 'no'} (min parameter-based "
                             f"{min(p_):.3f} vs max prompt-based {max(q_):.3f})")
        out.append("- Claim 1 under each attack (every parameter-based method above every "
                   "prompt-based one?): " + "; ".join(holds) + ".")
    first = min(r["epoch"] for r in sub)
    rising = []
    for m in fin:
        if _family(m) == "parameter":
            a0 = next(r["auc"] for r in sub if r["method"] == m and r["epoch"] == first)
            rising.append((m, a0, fin[m]["auc"]))
    if rising and last > first:
        ok = all(b > a for _, a, b in rising)
        apart = all(fin[m].get("auc_lo", np.nan) > next(
            r.get("auc_hi", np.nan) for r in sub if r["method"] == m and r["epoch"] == first)
            for m, _, _ in rising)
        out.append(f"- Claim 2 (parameter-based memorization grows with epochs): "
                   f"{_verdict(ok, apart)}: " + ", ".join(
                       f"{m} {a:.3f} (epoch {first}) -> {b:.3f} (epoch {last})"
                       for m, a, b in rising) + ".")
    return out + [""]
