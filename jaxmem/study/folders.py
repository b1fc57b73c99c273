"""A study folder's parts: where each cell's run and attack live, which cells are done, and how
long each session worked (the layout: :mod:`jaxmem.runs`).

A (cell, epoch) is done once its ``metrics.json`` carries the validation loss
(:func:`mark_cell_done`), written last; a resumed study skips every done one.

Example:
    >>> study_attack_dir("results/demo", "smollm2-135m", "default", "lora", 2).as_posix()
    'results/demo/attacks/smollm2-135m/default/lora/epoch_2'
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jaxmem import runs
from jaxmem import sharding as sh
from jaxmem.io import atomic_write, read_json
from jaxmem.runs import slug

__all__ = ["cell_done", "check_study_json", "mark_cell_done", "read_cell", "record_session",
           "study_attack_dir", "study_run_dir", "study_sessions"]


def _seed_part(seed: int | None) -> tuple[str, ...]:
    # a study with one implicit training seed keeps the layout it had before seeds existed
    return () if seed is None else (f"seed_{int(seed)}",)


def study_run_dir(out: str | os.PathLike, model: str, dataset: str, method: str,
                  seed: int | None = None) -> Path:
    """The run folder of a study's cell, trained with training seed ``seed`` (None: a study
    without ``seeds``, one run per cell)."""
    return Path(out, "runs", slug(model), slug(dataset), slug(method), *_seed_part(seed))


def study_attack_dir(out: str | os.PathLike, model: str, dataset: str, method: str,
                     epoch: int, seed: int | None = None) -> Path:
    """The attack folder of a study's (cell, seed, epoch); the base model is method "base",
    epoch 0, no seed."""
    return Path(out, "attacks", slug(model), slug(dataset), slug(method), *_seed_part(seed),
                f"epoch_{epoch}")


def cell_done(where: Path) -> bool:
    """Whether a study's (cell, epoch) is finished: its metrics carry the validation loss."""
    f = Path(where) / runs.METRICS
    return f.exists() and "val_loss" in read_json(f)["info"]


def mark_cell_done(where: Path, val_loss: float) -> None:
    """Records a (cell, epoch)'s validation loss next to its attack metrics, which marks it
    done (:func:`cell_done`). Every process calls it; process 0 writes."""
    if sh.is_main_process():
        m = read_json(Path(where) / runs.METRICS)
        m["info"]["val_loss"] = val_loss
        atomic_write(Path(where) / runs.METRICS, json.dumps(m, indent=1))
    sh.sync("jaxmem-study-val")


def read_cell(where: Path) -> tuple[dict, float]:
    """A done (cell, epoch)'s ``({attack: metrics}, validation loss)``."""
    m = read_json(Path(where) / runs.METRICS)
    return m["metrics"], m["info"]["val_loss"]


def record_session(out: str | os.PathLike, session: str, seconds: float,
                   timings: list[dict] | None = None) -> None:
    """Records how long this session (an id, e.g. its start time) has worked on a study, so
    the report's run time covers every session of a resumed study, and where that time went
    (``timings``: :meth:`jaxmem.profiling.Profile.table` rows) (process 0 only)."""
    if not sh.is_main_process():
        return
    sessions = study_sessions(out)
    sessions[session] = round(float(seconds), 1)
    atomic_write(Path(out) / runs.SESSIONS, json.dumps(sessions, indent=1))
    if timings is not None:
        f = Path(out) / runs.TIMINGS
        every = read_json(f) if f.exists() else {}
        every[session] = timings
        atomic_write(f, json.dumps(every, indent=1))


def study_sessions(out: str | os.PathLike) -> dict[str, float]:
    """Seconds per session of a study (:func:`record_session`); empty if none recorded."""
    f = Path(out) / runs.SESSIONS
    return read_json(f) if f.exists() else {}


def check_study_json(out: str | os.PathLike) -> None:
    """Refuses, before any work, a ``study.json`` that an older jaxmem wrote in a form this
    one does not read: flat options (``epochs``, ``block_size``, ...; now under ``train:`` and
    ``audit:``), or no ``split`` (its corpus was drawn by whole articles, before the fair
    member / non-member split). Options added since a study started are not refused: they
    take their defaults (:func:`jaxmem.runs.claim_study`).

    Raises:
      ValueError: naming what changed and how to go on.
    """
    path = Path(out) / runs.STUDY_SPEC
    old = read_json(path) if path.exists() else None
    if not isinstance(old, dict):
        return
    if "train" not in old:
        what = ("its study options are flat (epochs, block_size, ...), which jaxmem 0.1 "
                "nests under train: and audit:")
    elif "split" not in old:
        what = ("it predates the member / non-member split (split:, data_seed:): its corpus "
                "was drawn by whole articles with train.seed")
    else:
        return
    raise ValueError(f"{path} was written by an older jaxmem and is not converted: {what}. "
                     "Its results cannot be resumed by this version: start the study in "
                     "another --out-dir, or pass --overwrite to replace it.")
