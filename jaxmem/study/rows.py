"""A study's result rows, re-read from each done cell's files: one row per (model, dataset,
method, seed, epoch, attack), written to ``results.json`` / ``results.csv``.

Each row joins what the cell's folder holds: the attack's ``metrics.json`` (AUC, TPRs, the
validation loss, the blind baseline), the training run's DP accounting, the empirical epsilon
of its ``scores.parquet``, ``extraction.json`` and ``exposure.json`` when the study asked for
them, and the train-validation gap (:mod:`jaxmem.overfit`). Reading the files (not what the
session computed) makes a resumed study's rows the same as a fresh one's.

Example:
    A done cell, written by hand here (a study writes it with
    :func:`jaxmem.audit.run_attacks_on`, then marks it done with its validation loss):

    >>> import os
    >>> from jaxmem.runs import write_attack_metrics
    >>> from jaxmem.study.folders import mark_cell_done, study_attack_dir
    >>> where = study_attack_dir("results/demo", "smollm2-135m", "default", "lora", 2)
    >>> m = {"auc": 0.62, "auc_ci": [0.55, 0.69], "tpr@10%fpr": 0.2, "tpr@1%fpr": 0.03,
    ...      "n_members": 128, "n_nonmembers": 128}
    >>> where.mkdir(parents=True)
    >>> write_attack_metrics(where, {"loss": m, "zlib": {**m, "auc": 0.58}}, info={})
    >>> mark_cell_done(where, val_loss=3.2)
    >>> rows = cell_rows("smollm2-135m", 134515008, "default", "lora", 2, where, base_ppl=28.0)
    >>> [(r["attack"], r["auc"], round(r["val_ppl"], 1), r["comparable_utility"]) for r in rows]
    [('loss', 0.62, 24.5, True), ('zlib', 0.58, 24.5, True)]
    >>> write_study_results("results/demo", rows)
    >>> sorted(os.listdir("results/demo"))
    ['attacks', 'results.csv', 'results.json']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmem import runs
from jaxmem.attacks import as_ranks
from jaxmem.dp import empirical_epsilon
from jaxmem.io import read_json, write_table
from jaxmem.metrics import TPR_KEYS, strongest_attack, tpr_unsupported_reason
from jaxmem.overfit import member_loss
from jaxmem.seeds import has_seeds, over_seeds
from jaxmem.sharding import is_main_process
from jaxmem.study.folders import read_cell
from jaxmem.study.utility import comparable_utility

__all__ = ["cell_rows", "privacy_columns", "write_study_results"]


def _tpr(m: dict, key: str) -> float | None:
    """A row's TPR at one FPR, None (an empty cell in ``results.csv``) where the non-members
    cannot support that FPR (:func:`jaxmem.metrics.tpr_unsupported_reason`). The rule is
    applied here too so that ``metrics.json`` files written before it read the same way."""
    if tpr_unsupported_reason(TPR_KEYS[key], m["n_nonmembers"]):
        return None
    return m.get(key)


def privacy_columns(where: Path, run_dir: Path | None, epoch: int, attacks, delta: float
             ) -> tuple[dict, dict]:
    """A done cell's privacy columns: the DP-SGD accounting of its training run up to ``epoch``
    (``dp_epsilon`` spent by then, from the epoch's record; ``dp_delta``,
    ``dp_noise_multiplier`` from ``run.json``; empty without DP) and, per attack, the
    empirical epsilon its scores imply (:func:`jaxmem.dp.empirical_epsilon`, 95%
    Clopper-Pearson) at ``delta``, the study's one delta (0 without DP), so that every row of a
    study, the base model's included, is a bound at the same delta."""
    dp = {}
    if run_dir is not None and (run_dir / runs.RUN_SPEC).exists():
        dp = dict(runs.read_run_spec(run_dir).get("dp") or {})
        if dp and epoch in runs.finished_epochs(run_dir):
            spent = runs.epoch_record(run_dir, epoch).get("metrics", {}).get("dp_epsilon")
            dp["epsilon"] = dp["epsilon"] if spent is None else spent
    cols = {"dp_epsilon": dp.get("epsilon"), "dp_delta": dp.get("delta"),
            "dp_noise_multiplier": dp.get("noise_multiplier")}
    emp = {}
    if (where / runs.SCORES).exists():
        import pyarrow.parquet as pq

        names = set(pq.read_schema(where / runs.SCORES).names)
        table = pq.read_table(where / runs.SCORES,
                              columns=["member", *(a for a in attacks if a in names)]).to_pydict()
        labels = np.asarray(table["member"], int)
        for attack in attacks:
            s = np.asarray(table.get(attack, []), np.float64)
            if len(s) != len(labels):
                continue
            s = as_ranks(s)  # an infinite score is an extreme rank, not missing
            ok = ~np.isnan(s)
            if len(set(labels[ok])) == 2:
                emp[attack] = empirical_epsilon(s[ok], labels[ok], delta=delta)
    return cols, emp


def cell_rows(model, n_params, dataset, method, epoch, where, base_ppl=None,
          run_dir=None, delta: float = 0.0, seed: int | None = None) -> list[dict]:
    """The result rows of a done (cell, epoch), one per attack.

    Every row of the cell also carries the cell's strongest attack
    (:func:`jaxmem.metrics.strongest_attack`: ``strongest_attack``, ``strongest_tpr`` at
    ``strongest_fpr``; empty where the non-members support no FPR); given the base model's
    validation perplexity ``base_ppl`` (None: the base model itself), ``ppl_vs_base`` and
    ``comparable_utility`` (:func:`jaxmem.study.utility.comparable_utility`); the privacy columns
    of :func:`privacy_columns` (the training run ``run_dir``'s DP epsilon, each attack's empirical
    epsilon); and with canary exposure (``exposure.json``), the mean exposure of the canaries
    inserted R times: ``exposure_<R>x`` (the sampled estimator) and ``exposure_skewnorm_<R>x``.
    The blind baseline of the cell's texts (``info["blind"]``, :mod:`jaxmem.blind`):
    ``blind_auc`` [``blind_auc_lo``, ``blind_auc_hi``] of the stronger feature set,
    ``blind_word_auc``, ``blind_char_auc`` (empty where the cell has none).
    """
    metrics, val = read_cell(where)
    ppl = float(np.exp(val))
    base_ppl = ppl if base_ppl is None else base_ppl
    rows = []
    for attack, m in metrics.items():
        ci = m.get("auc_ci") or (np.nan, np.nan)
        rows.append({"model": model, "model_params": n_params, "dataset": dataset,
                     "method": method, "seed": seed, "epoch": epoch,
                     "val_loss": val, "val_ppl": ppl, "attack": attack,
                     "auc": m["auc"], "auc_lo": ci[0], "auc_hi": ci[1],
                     **{k: _tpr(m, k) for k in TPR_KEYS}, "n_members": m["n_members"],
                     "n_nonmembers": m["n_nonmembers"]})
    # the split check (jaxmem.blind: members vs non-members by their texts alone, no model);
    # empty for a cell attacked before it existed or with audit.blind off
    blind = read_json(where / runs.METRICS)["info"].get("blind") or {}
    ci = blind.get("auc_ci") or (None, None)
    for r in rows:
        r.update(blind_auc=blind.get("auc"), blind_auc_lo=ci[0], blind_auc_hi=ci[1],
                 blind_word_auc=(blind.get("word") or {}).get("auc"),
                 blind_char_auc=(blind.get("char") or {}).get("auc"))
    ext = where / runs.EXTRACTION
    if ext.exists():  # verbatim extraction of this cell, when the study asked for it
        e = read_json(ext)
        cols = {f"{k}_{side}": e[side][k] for side in ("members", "nonmembers")
                for k in ("k_extractable_rate", "token_match")}
        for side in ("members", "nonmembers"):  # "n=100,p=0.5" -> discoverable_n100_members
            for key, v in e[side]["discoverable"].items():
                cols[f"discoverable_n{dict(kv.split('=') for kv in key.split(','))['n']}_"
                     f"{side}"] = v
        cols["discoverable_p"] = e["config"]["p"]
        for r in rows:
            r.update(cols)
    dp, emp = privacy_columns(where, run_dir, epoch, metrics, delta)
    for r in rows:
        r.update(dp, empirical_epsilon=emp.get(r["attack"]))
    exp = where / runs.EXPOSURE
    if exp.exists():  # canary exposure of this cell (train.canaries): mean per repetition count
        by = read_json(exp)["by_repeats"]
        for r in rows:
            r.update({f"exposure_{n}x": v["sampled"] for n, v in by.items()})
            # None where the skew-normal fit failed (the report's note; jaxmem.canaries)
            r.update({f"exposure_skewnorm_{n}x": v.get("skewnorm") for n, v in by.items()})
    train_loss = member_loss(where)  # memorization or overfitting: the gap beside the AUCs
    for r in rows:
        r.update(member_loss=train_loss,
                 gap=None if train_loss is None else val - train_loss)
    best = strongest_attack({r["attack"]: r for r in rows}) or {}
    for r in rows:
        r.update(strongest_attack=best.get("attack"), strongest_tpr=best.get("tpr"),
                 strongest_fpr=best.get("fpr"), ppl_vs_base=ppl / base_ppl,
                 comparable_utility=comparable_utility(ppl, base_ppl))
    return rows


def write_study_results(out: Path, rows: list[dict]) -> None:
    """Writes ``results.json`` and ``results.csv`` (process 0; nothing while there are no rows),
    and with several training seeds ``results_by_cell.csv`` (:func:`jaxmem.seeds.over_seeds`)."""
    if not rows or not is_main_process():
        return
    write_table(rows, Path(out) / runs.RESULTS_JSON)
    write_table(rows, Path(out) / runs.RESULTS_CSV)
    if has_seeds(rows):  # several training seeds: each cell's mean and spread too
        write_table(over_seeds(rows), Path(out) / runs.RESULTS_BY_CELL)
