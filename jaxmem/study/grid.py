"""Running a study: models x datasets x methods x epochs x attacks, resumable, into one folder.

For every cell (model, dataset, method) it fine-tunes with a checkpoint per epoch, attacks each
chosen epoch's checkpoint (reference = the base model), and records validation perplexity next
to every attack's AUC and TPR at low FPR with bootstrap CIs, all in one folder (``study.json``,
``results.csv``/``.json``, ``report.md``, ``runs/``, ``attacks/``; layout: :mod:`jaxmem.runs`).

With ``progress`` it first prints its plan (:class:`jaxmem.study.plan.StudyPlan`: cells, texts,
attacks, an estimated time, the finished cells a rerun skips) before any model loads, then one
line per finished (cell, epoch) under a study-level bar with an ETA.

A finished (cell, epoch) is never recomputed (:func:`jaxmem.study.folders.cell_done`); an
interrupted training continues from its last checkpoint. A ``study.json`` that an older jaxmem
wrote in another form is refused with what changed (:func:`jaxmem.study.folders.check_study_json`).

Example:
    >>> from pathlib import Path
    >>> _ = Path("study.yaml").write_text("{methods: [head, lora], train: {epochs: 3}}")
    >>> cfg = StudyConfig.from_yaml("study.yaml", ["train.epochs=2"])
    >>> cfg.models, cfg.methods, cfg.train.epochs
    (('smollm2-135m',), ('head', 'lora'), 2)

    ``run_study(cfg, "results/demo")`` then runs the grid (minutes on a CPU: it fine-tunes the
    135M-parameter model once per method); run again, it skips every finished (cell, epoch).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxmem import locks, runs
from jaxmem.attacks import needs
from jaxmem.audit import run_attacks_on
from jaxmem.batching import encode_texts
from jaxmem.canaries import Canaries, exposure_report
from jaxmem.data import load_corpus
from jaxmem.dp import check_delta
from jaxmem.extraction import extraction_metrics
from jaxmem.identity import run_identity
from jaxmem.io import atomic_write
from jaxmem.models import load_model
from jaxmem.profiling import Profile, phase
from jaxmem.progress import WorkBar, say
from jaxmem.provenance import KEY as PROVENANCE
from jaxmem.provenance import provenance
from jaxmem.reference_attacks import study_references
from jaxmem.scoring import score_texts
from jaxmem.sharding import is_main_process, parse_mesh
from jaxmem.study.config import EXECUTION_FIELDS, StudyConfig
from jaxmem.study.folders import (cell_done, check_study_json, mark_cell_done, read_cell,
                                  record_session, study_attack_dir, study_run_dir)
from jaxmem.study.plan import StudyPlan
from jaxmem.study.report import write_study_report
from jaxmem.study.rows import cell_rows, write_study_results
from jaxmem.trainer import load_checkpoint, train, validation_loss, with_canaries

__all__ = ["claim_study_folder", "run_study"]


def claim_study_folder(out: Path, scfg: StudyConfig, overwrite: bool) -> None:
    """Makes ``out`` this study's (:func:`jaxmem.runs.claim_study`): a new or empty folder, or
    one holding the same study, which resumes; options added to :class:`StudyConfig` since the
    study started read their defaults there. A ``study.json`` of an older form is refused
    (:func:`jaxmem.study.folders.check_study_json`)."""
    check_study_json(out)
    # provenance (versions, commit, host, command line of the last start): how it ran, ignored
    runs.claim_study(out, {**scfg.to_dict(), PROVENANCE: provenance()}, overwrite=overwrite,
                     ignore=(*EXECUTION_FIELDS, PROVENANCE), defaults=StudyConfig().to_dict())


@locks.locked("out_dir", "study")  # one writer per study folder (jaxmem.locks)
def run_study(scfg: StudyConfig, out_dir, *, overwrite: bool = False, progress: bool = True,
              stop_after: int | None = None, mesh=None,
              attention_impl: str = "einsum", remat: str = "none") -> list[dict]:
    """Runs (or resumes) every cell and writes results and the report.

    Args:
      progress: print the plan, a line per finished (cell, epoch), a study-level bar with an
        ETA, and the training and scoring bars (on stderr).
      stop_after: stop after this many newly attacked (cell, epoch) pairs, as if killed; for
        tests of resumption.
      mesh: train and score sharded over this mesh (see :func:`jaxmem.trainer.train`); results
        do not depend on it beyond float32 rounding. Default: the config's ``mesh``, else all
        devices on "data" when several processes run, else one device. With several
        processes, all run the same study into one shared ``out_dir`` and process 0 writes the
        files.
      attention_impl: the attention kernel (see :class:`jaxmem.models.ModelConfig`); an
        execution choice that leaves results unchanged up to rounding.
      remat: rematerialization in training ("none", "dots", "full"; ``ModelConfig.remat``):
        less activation memory for more compute; an execution choice too
        (``jaxmem plan`` says which cells need it).

    Returns:
      The result rows (also in ``results.csv`` / ``results.json``).

    Example:
        Usage (minutes on a CPU, so not run here)::

            cfg = jaxmem.StudyConfig.from_yaml("experiments/demo.yaml", ["train.epochs=2"])
            rows = jaxmem.run_study(cfg, "results/demo")  # resumes if stopped
    """
    with Profile() as prof:  # where the time goes: timings.json and the report's last table
        return _run_study(scfg, out_dir, overwrite, progress, stop_after, mesh,
                          (attention_impl, remat), prof)


def _start(scfg: StudyConfig, out: Path, progress: bool):
    """The plan printed (before any model loads) and the study's bar; (None, None) without
    ``progress``."""
    if not progress:
        return None, None
    plan = StudyPlan(scfg, out)
    for line in plan.lines():
        say(line)
    return plan, WorkBar(plan.total, plan.done_work, plan.rate, "study")


def _run_study(scfg, out_dir, overwrite, progress, stop_after, mesh, execution, prof):
    out = Path(out_dir)
    if mesh is None and (scfg.mesh or jax.process_count() > 1):
        mesh = parse_mesh(scfg.mesh or "auto")
    if mesh is not None and any(x.startswith("gradients:") for x in needs(scfg.audit.attacks)):
        raise ValueError("The gradient-norm attacks (grad_norm, grad_norm_all) run on one "
                         "device; drop them from audit.attacks or run without a mesh.")
    if mesh is not None and scfg.extraction is not None:
        raise ValueError("Verbatim extraction runs on one device; drop extraction: or run "
                         "without a mesh.")
    if mesh is not None and scfg.train.canaries is not None:
        raise ValueError("Canary exposure runs on one device; drop train.canaries or run "
                         "without a mesh.")
    claim_study_folder(out, scfg, overwrite)
    plan, study_bar = _start(scfg, out, progress and is_main_process())
    try:
        return _grid(scfg, out, overwrite, progress, stop_after, mesh, execution, prof,
                     plan, study_bar)
    finally:
        if study_bar:
            study_bar.close()


def _grid(scfg, out, overwrite, progress, stop_after, mesh, execution, prof, plan,
          study_bar):
    progress = progress and is_main_process()
    rows: list[dict] = []
    done_new = 0
    t_start = time.perf_counter()
    session = time.strftime("%Y-%m-%dT%H:%M:%S")  # this session's id in sessions.json
    acfg, ecfg = scfg.audit, scfg.extraction_config()
    dp = scfg.train.dp
    delta = dp.delta if dp is not None else 0.0  # of every row's empirical epsilon
    exposure_opts = scfg.exposure_options()  # None without train.canaries

    def save_session():
        record_session(out, session, time.perf_counter() - t_start, prof.table())

    def finished(where: Path, model: str, dataset: str, method: str, seed, epoch: int,
                 val_loss: float) -> None:
        """The study's bar moved on by the unit's work, and its line."""
        if not plan:
            return
        unit = plan.find(model, dataset, method, seed, epoch)
        unit.done = True
        study_bar.update(unit.work)
        first, m = next(iter(read_cell(where)[0].items()))
        where_from = (f"{model} / {dataset} / "
                      if len(scfg.models) * len(scfg.datasets) > 1 else "")
        say(f"[{time.perf_counter() - t_start:5.0f}s] cell {plan.n_done}/{len(plan.units)} "
            f"{where_from}{unit.label} epoch {epoch}: val ppl {np.exp(val_loss):.3f}, "
            f"{first} AUC {m['auc']:.3f}")

    for model_name in scfg.models:
        with phase("load model"):
            base, cfg, tok = load_model(model_name)
        cfg = dataclasses.replace(cfg, attention_impl=execution[0], remat=execution[1])
        n_params = int(sum(np.size(x) for x in jax.tree.leaves(base)))
        if plan:
            study_bar.grow(plan.refine(model_name, None, n_params=n_params))
        for dataset in scfg.datasets:
            with phase("corpus"):
                corpus = load_corpus(dataset, seed=scfg.data_seed, split=scfg.split,
                                     n_train=scfg.n_train, n_validation=scfg.n_validation,
                                     n_members=scfg.n_members, n_nonmembers=scfg.n_nonmembers)
            empty = [k for k in ("train", "validation", "members", "nonmembers")
                     if not getattr(corpus, k)]
            if empty:
                raise ValueError(
                    f"Dataset {dataset!r} gives an empty {' and '.join(empty)} set "
                    f"({len(corpus.train)} train, {len(corpus.validation)} validation, "
                    f"{len(corpus.members)} members, {len(corpus.nonmembers)} non-members); "
                    "give it more texts or set the study's n_* sizes explicitly.")
            if plan:  # the sizes the corpus gave (a default, or fewer texts than asked)
                study_bar.grow(plan.refine(model_name, dataset, sizes={
                    "n_train": len(corpus.train), "n_validation": len(corpus.validation),
                    "n_members": len(corpus.members), "n_nonmembers": len(corpus.nonmembers)}))
            if dp is not None:  # delta >= 1/n voids DP: refused before this dataset's work
                check_delta(dp.delta, len(with_canaries(corpus.train, scfg.train)[0]))
            texts = corpus.members + corpus.nonmembers
            base_stats = None  # the reference pass, shared by every method of this dataset
            # lira / rmia: (method, tcfg, epoch) -> that target's reference models (None: unused)
            references_for = study_references(out, model_name, dataset, corpus, base, cfg, tok,
                                              scfg, mesh=mesh, progress=progress)

            base_canaries = None  # the base model is measured on the runs' own canaries
            if exposure_opts is not None:
                base_canaries = with_canaries(corpus.train, scfg.train)[1]

            def attack(params, where: Path, title: str, is_base: bool = False, labels=None,
                       canaries=None, references=None):
                nonlocal base_stats
                locks.check(out)  # the study folder removed under us: stop, never remake it
                if base_stats is None:
                    with phase("scoring"):
                        base_stats = score_texts(base, cfg, tok, texts, mesh=mesh,
                                                 batch_size=acfg.batch_size,
                                                 block_size=acfg.block_size, dtype=acfg.dtype,
                                                 progress=progress and "scoring base model")
                res = run_attacks_on(params, cfg, tok, corpus.members, corpus.nonmembers, acfg,
                                     reference_params=base, out_dir=where, overwrite=True,
                                     title=title, reference_stats=base_stats,
                                     target_stats=base_stats if is_base else None, mesh=mesh,
                                     prefix_texts=corpus.validation, param_labels=labels,
                                     references=references, progress=progress)
                if ecfg is not None and is_main_process():  # before the cell is marked done
                    with phase("extraction"):
                        ext = extraction_metrics(params, cfg, tok, corpus.members,
                                                 corpus.nonmembers, ecfg, progress=progress)
                    atomic_write(where / runs.EXTRACTION, json.dumps(ext))
                if canaries is not None and is_main_process():  # before the cell is marked done
                    canaries = dataclasses.replace(canaries, config=dataclasses.replace(
                        canaries.config, **exposure_opts))
                    with phase("exposure"):
                        rep = exposure_report(params, cfg, tok, canaries, seed=acfg.seed,
                                              block_size=acfg.block_size)
                    atomic_write(where / runs.EXPOSURE, rep)
                return res

            # epoch 0: the base model itself, the floor every method starts from
            where = study_attack_dir(out, model_name, dataset, "base", 0)
            if not cell_done(where):
                attack(base, where, f"{model_name} base", is_base=True, canaries=base_canaries,
                       references=references_for(None, scfg.train, 0))
                with phase("validation"):
                    val_seqs, _ = encode_texts(tok, corpus.validation, scfg.train.block_size)
                    val = validation_loss(base, cfg, val_seqs, scfg.train,
                                          tok.pad_token_id or 0, mesh)
                mark_cell_done(where, val)
                save_session()
                finished(where, model_name, dataset, "base", None, 0, val)
            rows += cell_rows(model_name, n_params, dataset, "base", 0, where, delta=delta)
            base_ppl = rows[-1]["val_ppl"]

            def train_and_attack(method: str, seed: int | None) -> bool:
                """Trains one (method, seed) run and attacks its epochs; True when
                ``stop_after`` stops the study."""
                nonlocal done_new, rows
                run_dir = study_run_dir(out, model_name, dataset, method, seed)
                tcfg = scfg.train_config(method, seed)
                epochs = scfg.attack_epochs or tuple(range(1, tcfg.epochs + 1))
                todo = [e for e in epochs if not cell_done(
                    study_attack_dir(out, model_name, dataset, method, e, seed))]
                history = {}
                label = method if seed is None else f"{method} seed {seed}"
                if todo:
                    with phase("train setup"):  # what train() does not mark itself
                        # a resumed run whose base weights or corpus changed is refused
                        ident = run_identity(model_name, corpus=dataset, drawn=corpus)
                        res = train(base, cfg, tok, method, corpus.train, corpus.validation,
                                    run_dir, tcfg, model_name=model_name, progress=progress,
                                    mesh=mesh, identity=ident)
                    history = {h["epoch"]: h["val_loss"] for h in res.history}
                for e in epochs:
                    where = study_attack_dir(out, model_name, dataset, method, e, seed)
                    if e in todo:
                        if stop_after is not None and done_new >= stop_after:
                            return True
                        params, labels = load_checkpoint(run_dir, base, cfg, tok, epoch=e,
                                                         mesh=mesh)
                        # the canaries the run trained on, as its own record holds them
                        can = (Canaries.load(run_dir / runs.CANARIES) if base_canaries
                               else None)
                        attack(params, where, f"{model_name} {label} epoch {e}",
                               labels=labels, canaries=can,
                               references=references_for(method, tcfg, e))
                        mark_cell_done(where, history[e])
                        save_session()
                        done_new += 1
                        finished(where, model_name, dataset, method, seed, e, history[e])
                    rows += cell_rows(model_name, n_params, dataset, method, e, where, base_ppl,
                                  run_dir, delta, seed=seed)
                return False

            for method in scfg.methods:
                for seed in scfg.run_seeds():
                    stopped = train_and_attack(method, seed)
                    if stopped:
                        write_study_results(out, rows)
                        return rows
            write_study_results(out, rows)
    write_study_results(out, rows)
    if is_main_process():
        save_session()  # the report's run time counts this session too, resumed or not
        with phase("report + figures"):
            write_study_report(out, scfg, rows, seconds=time.perf_counter() - t_start,
                               timings=prof.table())
        save_session()
    return rows
