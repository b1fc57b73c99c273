"""A study's report: ``report.md`` and ``figures/*.png``, written from its result rows and the
per-example scores in its folder.

Per (model, dataset): the split check, the last epoch's table (:mod:`jaxmem.study.tables`),
the ROC of every method at its last epoch, verbatim extraction, DP privacy and canary exposure
when the study measured them, the train-validation gap (:mod:`jaxmem.overfit`) and the paper's
claims (:mod:`jaxmem.study.claims`, :mod:`jaxmem.study.claim4`, :mod:`jaxmem.study.claim5`),
each judged once into data that the report renders and ``claims.json`` records
(:mod:`jaxmem.study.verdicts`); then the figures across the study (:mod:`jaxmem.study.figures`).

Example:
    The rows of two done cells (the base model and LoRA at epoch 2), written by hand here as in
    :mod:`jaxmem.study.rows`:

    >>> from jaxmem.runs import write_attack_metrics
    >>> from jaxmem.study import StudyConfig
    >>> from jaxmem.study.folders import mark_cell_done, study_attack_dir
    >>> from jaxmem.study.rows import cell_rows
    >>> rows = []
    >>> for method, epoch, auc, val_loss in (("base", 0, 0.50, 3.3), ("lora", 2, 0.62, 3.1)):
    ...     where = study_attack_dir("results/demo", "smollm2-135m", "default", method, epoch)
    ...     where.mkdir(parents=True)
    ...     m = {"auc": auc, "auc_ci": [auc - 0.07, auc + 0.07], "tpr@10%fpr": 0.2,
    ...          "tpr@1%fpr": 0.03, "n_members": 128, "n_nonmembers": 128}
    ...     write_attack_metrics(where, {"loss": m}, info={})
    ...     mark_cell_done(where, val_loss)
    ...     rows += cell_rows("smollm2-135m", 134515008, "default", method, epoch, where,
    ...                       base_ppl=27.1)
    >>> cfg = StudyConfig.from_dict({"methods": ["lora"], "audit": {"attacks": ["loss"]}})
    >>> path = write_study_report("results/demo", cfg, rows)
    >>> path.read_text().splitlines()[0]
    '# jaxmem study: study'
    >>> sorted(p.name for p in (path.parent / "figures").iterdir())
    ['auc_vs_epoch.png', 'ppl_vs_epoch.png', 'privacy_utility.png', 'tpr_low_fpr.png']
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from jaxmem import runs
from jaxmem.attacks import as_ranks
from jaxmem.blind import split_check
from jaxmem.figures import plot_exposure
from jaxmem.io import atomic_write, markdown_table, read_json
from jaxmem.metrics import TPR_KEYS, roc_curve, supported_fprs
from jaxmem.overfit import gap_lines
from jaxmem.seeds import has_seeds, over_seeds
from jaxmem.study.claim4 import judge_claim4
from jaxmem.study.claim5 import judge_claim5
from jaxmem.study.claim_text import section_lines
from jaxmem.study.claims import judge_claims, score_reader
from jaxmem.study.figures import (auc_vs_epoch, auc_vs_size, lora_placement, loss_distributions,
                                  privacy_utility, study_roc, tpr_low_fpr)
from jaxmem.study.folders import study_attack_dir, study_sessions
from jaxmem.study.tables import (PAPER_TABLE2, extraction_table, last_epoch_table,
                                 privacy_lines, strongest_attacks, tpr_ci, tpr_note)
from jaxmem.study.utility import base_val_ppl, final_rows, not_comparable, select, utility_note
from jaxmem.study.verdicts import write_claims
from jaxmem.tuning.names import display_name

__all__ = ["study_blind", "write_study_report"]


def _exposure_table(out: Path, final: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """Canary exposure at each method's last attacked epoch, the base model first (the control:
    the same canaries, never trained on): one row per method, mean exposure (sampled
    estimator, bits) per repetition count, and the ``exposure.json`` reports behind it by
    method, for :func:`jaxmem.figures.plot_exposure`. Empty without ``train.canaries``."""
    table, reports = [], {}
    for r in final:
        if r["method"] in reports or not any(k.startswith("exposure_") for k in r):
            continue
        where = study_attack_dir(out, r["model"], r["dataset"], r["method"], r["epoch"],
                                 r.get("seed"))
        reports[r["method"]] = rep = read_json(where / runs.EXPOSURE)
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
        where = study_attack_dir(out, model, dataset, r["method"], r["epoch"], r.get("seed"))
        if where in seen or not (where / runs.METRICS).exists():
            continue
        seen.add(where)
        blind = read_json(where / runs.METRICS)["info"].get("blind")
        if blind:
            return blind
    return None


def _last_scores(final: list[dict], scores, column: str):
    """``[(method row, scores table)]`` of each method's last epoch (its first seed's files)
    that holds ``column``; the base model first when it has one."""
    out, seen = [], set()
    for r in final:
        if r["method"] in seen:
            continue
        seen.add(r["method"])
        seed = r.get("seed")
        t = scores(r["method"], r["epoch"]) if seed is None else scores(r["method"], r["epoch"],
                                                                           seed=seed)
        if t is not None and column in t:
            out.append((r, t))
    return out


def _roc_panel(final: list[dict], scores, attack: str, model: str, dataset: str):
    """The ROC panel of one (model, dataset) (:func:`jaxmem.study.figures.study_roc`): every
    method's curve under ``attack`` at its last epoch, from its ``scores.parquet``; None
    without any."""
    curves, n = {}, None
    for r, t in _last_scores([r for r in final if r["attack"] == attack], scores, attack):
        s = as_ranks(np.asarray(t[attack], np.float64))  # an infinite score is an extreme rank
        labels = np.asarray(t["member"], bool)
        ok = np.isfinite(s)
        fpr, tpr, _ = roc_curve(s[ok], labels[ok])
        curves[f"{display_name(r['method'])}, epoch {r['epoch']}"] = (fpr, tpr, r["auc"])
        n = (int(labels[ok].sum()), int((~labels[ok]).sum()))
    if not curves:
        return None
    title = (f"{Path(model).name} / {Path(dataset).name}: {attack} attack, each method's last "
             f"epoch ({n[0]} members, {n[1]} non-members)")
    return title, curves, n[0], n[1]


def _tpr_panels(final: list[dict]) -> list[tuple]:
    """The bars of :func:`jaxmem.study.figures.tpr_low_fpr`: per (model, dataset), each method's
    strongest attack (:func:`jaxmem.study.tables.strongest_attacks`) at every supported FPR,
    with its Clopper-Pearson interval (:func:`jaxmem.study.tables.tpr_ci`)."""
    panels = []
    for model, dataset in dict.fromkeys((r["model"], r["dataset"]) for r in final):
        best = strongest_attacks(select(final, model=model, dataset=dataset))
        if not best:
            continue
        fprs = supported_fprs(list(best.values()))
        keys = [next(k for k, f in TPR_KEYS.items() if f == fpr) for fpr in fprs]
        # long names ("prefix (reparam.; init=activations)") wrapped so neighbours don't overlap
        bars = [(f"{textwrap.fill(display_name(m), 16)}\n[{r['attack']}]",
                 [(r[k], tpr_ci(r, k)) for k in keys]) for m, r in best.items()]
        panels.append((f"{Path(model).name} / {Path(dataset).name}: strongest attack per "
                       "method, last epoch", fprs, bars))
    return panels


def _exposure_lines(out: Path, scfg, rows, sub, model, dataset, fig_dir: Path) -> list[str]:
    """The canary exposure section of one (model, dataset), with its figure; [] without."""
    exposure, reports = _exposure_table(out, sub)
    if not exposure:
        return []
    rep = next(iter(reports.values()))  # the base model's: |R| and m are the study's
    several = len({(r["model"], r["dataset"]) for r in rows}) > 1
    fig = (f"exposure_{runs.slug(model)}_{runs.slug(dataset)}.png" if several
           else "exposure.png")
    plot_exposure(reports, fig_dir / fig, title=f"{Path(model).name} / "
                          f"{Path(dataset).name}: canary exposure, last attacked epoch")
    return [f"### Canary exposure (train.canaries = {scfg.train.canaries})", "",
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
            "", markdown_table(exposure), "", f"![canary exposure](figures/{fig})", ""]


def _extraction_lines(scfg, sub: list[dict]) -> list[str]:
    """The verbatim extraction table of one (model, dataset); [] without extraction."""
    ext = extraction_table(sub)
    if not ext:
        return []
    ecfg = scfg.extraction_config()
    scheme = ("plain sampling" if ecfg is None or ecfg.plain_sampling else
              f"sampling at temperature {ecfg.temperature:g}, top-k {ecfg.top_k or 'off'}"
              f", top-p {ecfg.top_p:g}")
    return ["Verbatim extraction (greedy decoding from each text's first tokens; "
            "k-extractable: the next tokens reproduced exactly; (n, p)-discoverable: "
            f"at least one of n samples ({scheme}) reproduces them with probability "
            ">= p; non-members are the control):", "", markdown_table(ext), ""]


def _settings_lines(out: Path, scfg, seconds: float | None) -> list[str]:
    """The report's title, run time over every session, and settings."""
    lines = [f"# jaxmem study: {scfg.name}", ""]
    if seconds is not None:
        sessions = study_sessions(out)
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
    return lines


def write_study_report(out, scfg, rows: list[dict], seconds: float | None = None,
                       timings: list[dict] | None = None) -> Path:
    """Writes ``report.md``, ``claims.json`` and ``figures/*.png`` for a study's result rows;
    ``timings`` (:meth:`jaxmem.profiling.Profile.table` rows of this session) become its last
    table."""
    out = Path(out)
    fig_dir = out / runs.FIGURES
    fig_dir.mkdir(exist_ok=True)
    attack = scfg.audit.attacks[0] if scfg.audit.attacks else "loss"
    attack = next((r["attack"] for r in rows if r["attack"].startswith(attack)), attack)
    per_seed = rows  # the claims read every seed's scores; tables and figures the means
    rows = over_seeds(rows) if has_seeds(rows) else rows
    groups = list(dict.fromkeys((r["model"], r["dataset"]) for r in rows))
    readers = {g: score_reader(out, *g) for g in groups}  # each scores file read once
    auc_vs_epoch(rows, attack, fig_dir / "auc_vs_epoch.png",
                 title=f"{attack} AUC by epoch (paper Fig. 1)")
    auc_vs_epoch(rows, attack, fig_dir / "ppl_vs_epoch.png", key="val_ppl",
                 ylabel="validation perplexity", title="Validation perplexity (paper Fig. 3)")
    final = final_rows(rows)
    # the first (model, dataset): every method's LOSS scores at its last attacked epoch
    first = select(final, model=groups[0][0], dataset=groups[0][1])
    has_dist = loss_distributions(
        [(f"{display_name(r['method'])} (epoch {r['epoch']})", t["loss"], t["member"])
         for r, t in _last_scores(first, readers[groups[0]], "loss")],
        fig_dir / "loss_distributions.png")
    privacy_utility(final, attack, fig_dir / "privacy_utility.png")
    extra_figs = [f"![{name}](figures/{f})" for name, f, made in (
        ("TPR at low FPR", "tpr_low_fpr.png",
         tpr_low_fpr(_tpr_panels(final), fig_dir / "tpr_low_fpr.png")),
        ("AUC vs model size", "auc_vs_size.png",
         auc_vs_size(final, attack, fig_dir / "auc_vs_size.png")),
        ("LoRA placement", "lora_placement.png",
         lora_placement(final, attack, fig_dir / "lora_placement.png")))
        if made]

    lines = _settings_lines(out, scfg, seconds)
    boot = {"n_boot": scfg.audit.n_boot, "seed": scfg.audit.seed}
    claims = []  # every section of claims, in the report's order
    for model, dataset in groups:
        sub = select(final, model=model, dataset=dataset)
        lines += [f"## {model} / {dataset}: last epoch", ""]
        check = split_check(study_blind(out, rows, model, dataset), markdown=True)
        lines += [check, ""] if check else []  # first: every AUC below reads against it
        lines += [markdown_table(last_epoch_table(sub, attack, model, dataset)), ""]
        note = utility_note(not_comparable(rows, model, dataset),
                            base_val_ppl(rows, model, dataset))
        lines += [note, ""] if note else []
        lines += [tpr_note(sub), ""] if tpr_note(sub) else []
        roc = _roc_panel(sub, readers[model, dataset], attack, model, dataset)
        if roc is not None:
            fig = (f"roc_{runs.slug(model)}_{runs.slug(dataset)}.png" if len(groups) > 1
                   else "roc.png")
            study_roc([roc], fig_dir / fig)
            lines += [f"ROC of every method at its last epoch, {attack} attack, log-log (the "
                      f"false positive rate from 1/{roc[3]}, the smallest rate {roc[3]} "
                      "non-members can measure):", "", f"![ROC, last epoch](figures/{fig})", ""]
        lines += _extraction_lines(scfg, select(rows, model=model, dataset=dataset))
        lines += privacy_lines(sub)
        lines += _exposure_lines(out, scfg, rows, sub, model, dataset, fig_dir)
        lines += gap_lines(select(per_seed, model=model, dataset=dataset))
        # each claim judged once: the report renders it, claims.json records it
        for judge in (judge_claims, judge_claim5):
            claims.append(judge(per_seed, model, dataset, attack, readers[model, dataset], **boot))
            lines += section_lines(claims[-1])
    for model in dict.fromkeys(r["model"] for r in rows):  # claim 4 spans the datasets
        claims.append(judge_claim4(
            per_seed, model, attack,
            lambda d, m=model: readers.get((m, d)) or score_reader(out, m, d), **boot))
        lines += section_lines(claims[-1])
    write_claims(out / runs.CLAIMS, claims)
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
    return atomic_write(out / runs.REPORT, "\n".join(lines))
