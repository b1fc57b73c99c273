"""The privacy-utility frontier: every method fine-tuned without DP and with DP-SGD at several
epsilons, and what each costs in utility and buys in privacy.

A frontier config is a study config (:class:`jaxmem.study.StudyConfig`) plus a ``frontier:``
mapping (:class:`FrontierConfig`). Each epsilon is one ordinary, resumable study in its own
folder (``epsilon-inf/``, ``epsilon-8/``, ...) whose ``train.dp`` is
``epsilon=E,delta=D,clip=C`` (:mod:`jaxmem.dp`; ``inf``: no DP). The frontier folder is claimed
by ``frontier.json`` (the study and delta/clip; epsilons can be added later) and holds
``frontier.csv`` / ``frontier.results.json`` (one row per model, dataset, method and epsilon: the last
attacked epoch's validation perplexity, the strongest attack's TPR at the lowest FPR the
non-members support, the accountant's epsilon and the largest empirical epsilon),
``frontier.md`` and ``frontier.png``: validation perplexity against that TPR, one curve per
method through its epsilons.

Example:
    >>> scfg, fcfg = load_frontier("experiments/cpu/frontier.yaml")
    >>> rows = run_frontier(scfg, fcfg, "results/frontier")  # resumes if stopped
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from jaxmem import locks, runs
from jaxmem.config import check, is_number
from jaxmem.study import StudyConfig, read_options

SPEC = "frontier.json"
OUTPUTS = (SPEC, "frontier.csv", "frontier.md", "frontier.png", "frontier.results.json")


@dataclasses.dataclass(frozen=True)
class FrontierConfig:
    """The privacy levels of a frontier: one study per entry of ``epsilons`` (``inf``: no DP),
    all at ``delta`` with per-example clip norm ``clip``."""

    epsilons: tuple = (math.inf, 8.0, 1.0)
    delta: float = 1e-5
    clip: float = 1.0

    def __post_init__(self):
        eps = self.epsilons
        eps = (eps,) if isinstance(eps, (int, float, str)) else tuple(eps)
        try:
            eps = tuple(float(e) for e in eps)  # YAML reads "inf" as a string
        except (TypeError, ValueError):
            raise ValueError(f"frontier.epsilons: {self.epsilons!r} is not a list of numbers "
                             "(inf for no DP), e.g. [inf, 8, 1].") from None
        object.__setattr__(self, "epsilons", eps)
        check(self, "epsilons", lambda v: v and all(e > 0 for e in v)
              and len({label(e) for e in v}) == len(v),
              "distinct numbers > 0 (inf: no DP), distinct at 6 significant digits (each names "
              "a folder)", "frontier.epsilons:")
        check(self, "delta", lambda v: is_number(v) and 0 < v < 1, "in (0, 1)", "frontier.delta:")
        check(self, "clip", lambda v: is_number(v) and v > 0, "a number > 0", "frontier.clip:")

    def dp_spec(self, epsilon: float) -> str | None:
        """``train.dp`` of the study at ``epsilon`` (None: no DP)."""
        if math.isinf(epsilon):
            return None
        return f"epsilon={epsilon:g},delta={self.delta:g},clip={self.clip:g}"


def label(epsilon: float) -> str:
    """``inf`` / ``8`` / ``0.5``: how an epsilon names its study and folder."""
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


def load_frontier(path, overrides: list[str] = ()) -> tuple[StudyConfig, FrontierConfig]:
    """A frontier config: the study options and the ``frontier:`` mapping (overrides as
    ``frontier.epsilons=[inf,4]`` or any study option, ``train.epochs=3``).

    Raises:
      ValueError: an unknown frontier option, or a study option :class:`StudyConfig` rejects.
    """
    d = read_options(path, overrides)
    f = {k.partition(".")[2]: d.pop(k) for k in list(d) if k.startswith("frontier.")}
    given = d.pop("frontier", None)
    if given is not None and not isinstance(given, dict):
        raise ValueError(f"frontier: must be a mapping, e.g. {{epsilons: [inf, 8, 1], delta: "
                         f"1.0e-5, clip: 1.0}}; got {given!r}.")
    f.update(given or {})
    names = {x.name for x in dataclasses.fields(FrontierConfig)}
    if set(f) - names:
        raise ValueError(f"Unknown frontier options {sorted(set(f) - names)}; known: "
                         f"{sorted(names)}.")
    if d.get("train.dp") or (d.get("train") or {}).get("dp"):
        raise ValueError("A frontier sets train.dp itself, one study per epsilon; give the "
                         "privacy levels as frontier: {epsilons: [inf, 8, 1], delta, clip}.")
    return StudyConfig.from_dict(d), FrontierConfig(**f)


def study_at(scfg: StudyConfig, fcfg: FrontierConfig, epsilon: float) -> StudyConfig:
    """The study of one privacy level: ``scfg`` named ``<name>-epsilon-<label>`` with its
    ``train.dp``."""
    from jaxmem.config import replace_nested

    return replace_nested(scfg, {"name": f"{scfg.name}-epsilon-{label(epsilon)}",
                                 "train.dp": fcfg.dp_spec(epsilon)})


@locks.locked("out_dir", "frontier")  # one writer per frontier folder
def run_frontier(scfg: StudyConfig, fcfg: FrontierConfig, out_dir, *, overwrite: bool = False,
                 progress: bool = True, **study_kw) -> list[dict]:
    """Runs (or resumes) the study of every epsilon, then writes the frontier's table, report
    and figure.

    Args:
      scfg, fcfg: what :func:`load_frontier` returns.
      out_dir: the frontier folder; each epsilon's study is its ``epsilon-<label>/``.
      overwrite: replace a folder holding another frontier (and its studies).
      study_kw: passed to :func:`jaxmem.study.run_study` (``mesh``, ``attention_impl``).

    Returns:
      The frontier rows (:func:`frontier_rows`).
    """
    from jaxmem.study import run_study

    out = Path(out_dir)
    configs = {eps: study_at(scfg, fcfg, eps) for eps in fcfg.epsilons}  # bad values fail now
    # The epsilons are not part of the identity: each study checks its own, so a frontier can
    # gain a privacy level later. Options added to StudyConfig since read their defaults.
    spec = {"study": scfg.identity(), "delta": fcfg.delta, "clip": fcfg.clip}
    runs.claim_dir(out, SPEC, spec, overwrite=overwrite, what="frontier",
                   outputs=OUTPUTS + tuple(f"epsilon-{label(e)}" for e in fcfg.epsilons),
                   error=FileExistsError, defaults={"study": StudyConfig().identity()})
    studies = {}
    for eps, cfg in configs.items():
        if progress:
            print(f"=== privacy level epsilon = {label(eps)} "
                  f"({fcfg.dp_spec(eps) or 'no DP'}) -> {out / f'epsilon-{label(eps)}'}")
        studies[eps] = run_study(cfg, out / f"epsilon-{label(eps)}", overwrite=overwrite,
                                 progress=progress, **study_kw)
    rows = frontier_rows(studies)
    from jaxmem.sharding import is_main_process

    if is_main_process():
        write_frontier(out, scfg, fcfg, rows)
    return rows


def frontier_rows(studies: dict[float, list[dict]]) -> list[dict]:
    """One row per (model, dataset, method, epsilon) at the last attacked epoch, plus each
    (model, dataset)'s base model once.

    Args:
      studies: ``{epsilon: that study's result rows}`` (:func:`jaxmem.study.run_study`).

    Returns:
      Rows with ``model, dataset, method, epsilon`` (the target; inf = no DP, None for the
      base model), ``epoch, val_ppl, dp_epsilon`` (the accountant's, None without DP),
      ``strongest_attack, strongest_tpr, strongest_fpr`` (:func:`jaxmem.report.strongest_attack`)
      and ``empirical_epsilon`` (the largest any attack proves) with its attack.
    """
    from jaxmem.report import _final_rows, largest_empirical_epsilon, strongest_attack

    out, seen_base = [], set()
    for eps, rows in studies.items():
        cells: dict[tuple, dict] = {}
        for r in _final_rows(rows):
            cells.setdefault((r["model"], r["dataset"], r["method"]), {})[r["attack"]] = r
        for (model, dataset, method), by_attack in cells.items():
            if method == "base":
                if (model, dataset) in seen_base:
                    continue
                seen_base.add((model, dataset))
            r0 = next(iter(by_attack.values()))
            best = strongest_attack(by_attack) or {}
            emp, top = largest_empirical_epsilon(by_attack)
            out.append({"model": model, "dataset": dataset, "method": method,
                        "epsilon": None if method == "base" else eps, "epoch": r0["epoch"],
                        "val_ppl": r0["val_ppl"], "dp_epsilon": r0.get("dp_epsilon"),
                        "strongest_attack": best.get("attack"),
                        "strongest_tpr": best.get("tpr"), "strongest_fpr": best.get("fpr"),
                        "strongest_auc": by_attack[best["attack"]]["auc"] if best else None,
                        "empirical_epsilon": emp, "empirical_epsilon_attack": top,
                        "n_members": r0["n_members"], "n_nonmembers": r0["n_nonmembers"]})
    return out


def plot_frontier(rows: list[dict], path) -> None:
    """Validation perplexity (log scale) against the strongest attack's TPR, one curve per
    method through its epsilons (each point labelled), the base model as a black star and
    chance (TPR = FPR) dotted; one panel per (model, dataset). Written atomically as PNG."""
    from jaxmem.report import _MARKERS, _family, _plain_log_ticks, _save, display_name, pyplot

    plt = pyplot()
    groups = list(dict.fromkeys((r["model"], r["dataset"]) for r in rows))
    fig, axes = plt.subplots(1, len(groups), figsize=(7.6 * len(groups), 4.8), squeeze=False)
    shades = {"parameter": iter(plt.cm.Reds(np.linspace(0.55, 0.95, 6))),
              "prompt": iter(plt.cm.Blues(np.linspace(0.55, 0.95, 6)))}
    colors = {}
    for ax, (model, dataset) in zip(axes.flat, groups):
        sub = [r for r in rows if (r["model"], r["dataset"]) == (model, dataset)
               and r["strongest_tpr"] is not None]
        fprs = {r["strongest_fpr"] for r in sub}
        for i, method in enumerate(dict.fromkeys(r["method"] for r in sub)):
            pts = sorted((r for r in sub if r["method"] == method),
                         key=lambda r: -(r["epsilon"] if r["epsilon"] is not None else math.inf))
            if method == "base":
                ax.plot(pts[0]["val_ppl"], pts[0]["strongest_tpr"], "*", color="k", ms=12,
                        label="base model (no fine-tuning)")
                continue
            c = colors.setdefault(method, next(shades[_family(method)], "gray"))
            ax.plot([p["val_ppl"] for p in pts], [p["strongest_tpr"] for p in pts],
                    _MARKERS[i % len(_MARKERS)] + "-", color=c, ms=6, lw=1.2,
                    label=display_name(method))
            for p in pts:
                ax.annotate(f"ε={label(p['epsilon'])}", (p["val_ppl"], p["strongest_tpr"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=6, color=c)
        for fpr in sorted(fprs):
            ax.axhline(fpr, color="k", lw=0.8, ls=":", label=f"chance (TPR = {fpr:g})")
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
        ax.set_xlabel("validation perplexity, log scale (lower = more useful)")
        what = " / ".join(f"{f * 100:g}%" for f in sorted(fprs)) or "low"
        ax.set_ylabel(f"strongest attack's TPR at {what} FPR")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{_short(model)} / {_short(dataset)}: privacy vs utility under DP-SGD\n"
                     "(red: parameter-based, blue: prompt-based)", fontsize=9)
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    _save(fig, path)


def _short(name: str) -> str:
    """A model or dataset as a title shows it: a local path by its last part."""
    return Path(name).name if "/" in name else name


def frontier_table(rows: list[dict]) -> list[dict]:
    """:func:`frontier_rows` of one (model, dataset) for reading: a line per (method, epsilon)."""
    from jaxmem.report import display_name

    def fmt(v, nd=3):
        return "n/a" if v is None else round(v, nd)

    return [{"method": display_name(r["method"]),
             "target epsilon": "-" if r["epsilon"] is None else label(r["epsilon"]),
             "accountant epsilon": ("-" if r["method"] == "base" else "inf (no DP)"
                                    if r["dp_epsilon"] is None else round(r["dp_epsilon"], 2)),
             "epoch": r["epoch"], "val ppl": fmt(r["val_ppl"], 2),
             "strongest attack": r["strongest_attack"] or "n/a",
             "TPR": fmt(r["strongest_tpr"]),
             "at FPR": "n/a" if r["strongest_fpr"] is None else f"{r['strongest_fpr'] * 100:g}%",
             "its AUC": fmt(r["strongest_auc"]),
             "empirical epsilon": ("n/a" if r["empirical_epsilon"] is None else
                                   f"{r['empirical_epsilon']:.2f}"
                                   + (f" ({r['empirical_epsilon_attack']})"
                                      if r["empirical_epsilon"] > 0 else ""))}
            for r in rows]


def write_frontier(out, scfg: StudyConfig, fcfg: FrontierConfig, rows: list[dict]) -> Path:
    """Writes ``frontier.csv``, ``frontier.results.json``, ``frontier.png`` and ``frontier.md``."""
    from jaxmem.dp import empirical_epsilon_cap
    from jaxmem.report import markdown_table

    out = Path(out)
    runs.write_table(rows, out / "frontier.csv")
    # JSON has no infinity: the target epsilon of a run without DP is written "inf"
    runs.atomic_write(out / "frontier.results.json", json.dumps(
        [{k: label(v) if isinstance(v, float) and math.isinf(v) else v for k, v in r.items()}
         for r in rows], indent=1))
    plot_frontier(rows, out / "frontier.png")
    t = scfg.train
    n_m, n_n = rows[0]["n_members"], rows[0]["n_nonmembers"]
    lines = [f"# jaxmem privacy-utility frontier: {scfg.name}", "",
             f"Every method at epsilon in {[label(e) for e in fcfg.epsilons]} (DP-SGD, delta "
             f"{fcfg.delta:g}, per-example clip {fcfg.clip:g}; inf = ordinary fine-tuning), "
             f"{t.epochs} epochs, batch {t.batch_size}, block {t.block_size}, learning rates "
             f"{dict(scfg.lr) or t.optim.lr}; {n_m} members and {n_n} non-members. Each "
             "privacy level is a study of its own (`epsilon-*/report.md`).", "",
             "![frontier](frontier.png)", "",
             "The strongest attack is, per method and epsilon, the one with the highest TPR at "
             "the lowest FPR the non-members support. Empirical epsilon: the largest of the "
             "attacks' lower bounds on epsilon, each at 95% confidence (Clopper-Pearson; their "
             "maximum is not corrected for multiple testing), at the study's delta (0 without "
             "DP); with these sample sizes none can exceed "
             f"{empirical_epsilon_cap(n_m, n_n):.2f}.", ""]
    for model, dataset in dict.fromkeys((r["model"], r["dataset"]) for r in rows):
        sub = [r for r in rows if (r["model"], r["dataset"]) == (model, dataset)]
        lines += [f"## {model} / {dataset}", "", markdown_table(frontier_table(sub)), ""]
    return runs.atomic_write(out / "frontier.md", "\n".join(lines))


__all__ = ["FrontierConfig", "frontier_rows", "frontier_table", "label", "load_frontier",
           "plot_frontier", "run_frontier", "study_at", "write_frontier"]
