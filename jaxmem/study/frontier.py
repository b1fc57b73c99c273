"""The privacy-utility frontier: every method fine-tuned without DP and with DP-SGD at several
epsilons, and what each costs in utility and buys in privacy.

A frontier config is a study config (:class:`jaxmem.study.config.StudyConfig`) plus a ``frontier:``
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
    >>> from pathlib import Path
    >>> _ = Path("frontier.yaml").write_text("{name: dp, methods: [lora, head], "
    ...                                      "frontier: {epsilons: [inf, 8], delta: 1.0e-5}}")
    >>> scfg, fcfg = load_frontier("frontier.yaml", ["train.epochs=2"])
    >>> fcfg.epsilons, scfg.train.epochs
    ((inf, 8.0), 2)
    >>> at8 = study_at(scfg, fcfg, 8.0)         # the study in results/frontier/epsilon-8/
    >>> at8.name, at8.train.dp.epsilon, at8.train.dp.clip
    ('dp-epsilon-8', 8.0, 1.0)

    ``run_frontier(scfg, fcfg, "results/frontier")`` then trains and attacks every study
    (resuming where one stopped), as ``jaxmem frontier frontier.yaml`` does.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from jaxmem import locks, runs
from jaxmem.config import check, is_number, replace_nested
from jaxmem.dp import DPConfig, empirical_epsilon_cap
from jaxmem.figures import plot_frontier
from jaxmem.io import atomic_write, markdown_table, write_table
from jaxmem.metrics import strongest_attack
from jaxmem.sharding import is_main_process
from jaxmem.study.config import StudyConfig, read_options
from jaxmem.study.grid import run_study
from jaxmem.study.tables import largest_empirical_epsilon
from jaxmem.study.utility import final_rows
from jaxmem.tuning.names import display_name

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

    def dp_config(self, epsilon: float) -> DPConfig | None:
        """``train.dp`` of the study at ``epsilon`` (None: no DP)."""
        if math.isinf(epsilon):
            return None
        return DPConfig(epsilon=epsilon, delta=self.delta, clip=self.clip)


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
    return replace_nested(scfg, {"name": f"{scfg.name}-epsilon-{label(epsilon)}",
                                 "train.dp": fcfg.dp_config(epsilon)})


@locks.locked("out_dir", "frontier")  # one writer per frontier folder
def run_frontier(scfg: StudyConfig, fcfg: FrontierConfig, out_dir, *, overwrite: bool = False,
                 progress: bool = True, **study_kw) -> list[dict]:
    """Runs (or resumes) the study of every epsilon, then writes the frontier's table, report
    and figure.

    Args:
      scfg, fcfg: what :func:`load_frontier` returns.
      out_dir: the frontier folder; each epsilon's study is its ``epsilon-<label>/``.
      overwrite: replace a folder holding another frontier (and its studies).
      study_kw: passed to :func:`jaxmem.study.grid.run_study` (``mesh``, ``attention_impl``).

    Returns:
      The frontier rows (:func:`frontier_rows`).
    """
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
                  f"({fcfg.dp_config(eps) or 'no DP'}) -> {out / f'epsilon-{label(eps)}'}")
        studies[eps] = run_study(cfg, out / f"epsilon-{label(eps)}", overwrite=overwrite,
                                 progress=progress, **study_kw)
    rows = frontier_rows(studies)
    if is_main_process():
        write_frontier(out, scfg, fcfg, rows)
    return rows


def frontier_rows(studies: dict[float, list[dict]]) -> list[dict]:
    """One row per (model, dataset, method, epsilon) at the last attacked epoch, plus each
    (model, dataset)'s base model once.

    Args:
      studies: ``{epsilon: that study's result rows}`` (:func:`jaxmem.study.grid.run_study`).

    Returns:
      Rows with ``model, dataset, method, epsilon`` (the target; inf = no DP, None for the
      base model), ``epoch, val_ppl, dp_epsilon`` (the accountant's, None without DP),
      ``strongest_attack, strongest_tpr, strongest_fpr`` (:func:`jaxmem.metrics.strongest_attack`)
      and ``empirical_epsilon`` (the largest any attack proves) with its attack.
    """
    out, seen_base = [], set()
    for eps, rows in studies.items():
        cells: dict[tuple, dict] = {}
        for r in final_rows(rows):
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


def frontier_table(rows: list[dict]) -> list[dict]:
    """:func:`frontier_rows` of one (model, dataset) for reading: a line per (method, epsilon)."""
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
    out = Path(out)
    write_table(rows, out / "frontier.csv")
    # JSON has no infinity: the target epsilon of a run without DP is written "inf"
    atomic_write(out / "frontier.results.json", json.dumps(
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
    return atomic_write(out / "frontier.md", "\n".join(lines))


__all__ = ["FrontierConfig", "frontier_rows", "frontier_table", "label", "load_frontier",
           "run_frontier", "study_at", "write_frontier"]
