"""What jaxmem keeps on disk, and the only place that builds those paths.

Three kinds of folder: a run (one fine-tuning, :func:`jaxmem.trainer.train`), an attack result
(:func:`jaxmem.audit.run_attacks_on`) and a study (:func:`jaxmem.study.grid.run_study`), which holds
runs and attack results for every (model, dataset, method, epoch)::

    <study>/
    ├── study.json                 the study's config; a folder holding another one is refused
    ├── results.json, results.csv  one row per (model, dataset, method, seed, epoch, attack)
    ├── results_by_cell.csv        with several seeds: mean and sd over seeds per cell
    ├── report.md, figures/*.png   jaxmem.study.report, at the end
    ├── runs/<model>/<dataset>/<method>/[seed_S/]   a run folder (below); names are slug()s;
    │                                               seed_S with the study's seeds: [...]
    ├── attacks/<model>/<dataset>/<method>/[seed_S/]epoch_N/ an attack folder (below); base:
    │                                               base/epoch_0
    └── references/<model>/<dataset>/<method>/k4-pop256-<digest>/
                                   LiRA / RMIA reference models (jaxmem.reference_attacks):
                                   references.json, checkpoints/epoch_NNN, loglik/*.npy

    <run>/
    ├── run.json                   model, data (CorpusRecord), method and training configs:
    │                              the run's identity (another run is refused)
    ├── log.jsonl                  every metric: one line per step and one per epoch
    ├── canaries.json              with train.canaries: the secrets inserted and how often
    ├── references/k4-pop256-<digest>/  LiRA / RMIA reference models (jaxmem attack --run-dir)
    └── checkpoints/
        ├── epoch_003/             orbax: trainable parameters and their optimizer state
        └── epoch_003.json         written after the orbax save: marks the epoch finished

    <attack>/
    ├── scores.parquet             per-example scores of every attack
    ├── metrics.json               {"metrics": {attack: ...}, "info": {...}}; in a study,
    │                              info.val_loss is written last and marks the cell done
    ├── roc.png, histograms.png
    ├── extraction.json, exposure.json   in a study that asks for them (before metrics' val_loss)
    ├── scores.parquet.parts/, scores.parquet.progress.json
    │                              a streamed attack's scores so far (jaxmem.streaming),
    │                              removed once metrics.json is written
    └── .jaxmem-writing            while an attack writes its files (WRITING): the folder is
                                   jaxmem's, so a rerun may write over them

Each of these folders holds ``.jaxmem.lock`` while a process works in it (:mod:`jaxmem.locks`:
one writer at a time, a second refused at once; a killed process's lock is taken over).

Every file is written whole or not at all (:func:`jaxmem.io.atomic_write`); with several
processes process 0 writes and the others read (a shared filesystem). A run resumes after its
last marked epoch, a study skips every done (cell, epoch), and results are never silently
replaced: a folder holding another run or study is refused unless the caller asks to overwrite
it, and then only jaxmem's own files go (:func:`remove_outputs`; the user's are kept and named).
A folder that is not jaxmem's is never written into unless empty, even where its files are named
like jaxmem's, and output files are checked before any work
(:func:`jaxmem.io.check_output_file`).

Example:
    >>> import numpy as np
    >>> from pathlib import Path
    >>> run_dir = Path("runs/lora")
    >>> spec = {"model": "tiny", "method": "lora", "train": {"epochs": 2}}
    >>> claim_run(run_dir, spec, overwrite=False)
    >>> for epoch in (1, 2):
    ...     save_epoch(run_dir, epoch, {"params": {"w": np.zeros(3)}}, {"val_loss": 1.0})
    >>> finished_epochs(run_dir)
    [1, 2]
    >>> claim_run(run_dir, {**spec, "method": "full"}, overwrite=False)
    Traceback (most recent call last):
    jaxmem.checkpointing.CheckpointError: runs/lora holds a different run (differs in: method). ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from jaxmem import locks
from jaxmem import overwrite as overwrite_
from jaxmem import sharding as sh
from jaxmem.checkpointing import CheckpointError, restore_checkpoint, save_checkpoint, tree_digest
from jaxmem.io import atomic_write, read_json
from jaxmem.overwrite import is_lock_name

# run folder
RUN_SPEC = "run.json"
CORPUS_RECORD = "corpus.json"  # runs from before the data record moved into run.json
LOG = "log.jsonl"
CHECKPOINTS = "checkpoints"
CANARIES = "canaries.json"  # the canaries inserted into the fine-tuning set (train.canaries)
REFERENCES = "references"  # LiRA / RMIA reference models (jaxmem.reference_attacks)
# attack folder
SCORES = "scores.parquet"
METRICS = "metrics.json"
ROC = "roc.png"
HISTOGRAMS = "histograms.png"
# study folder
STUDY_SPEC = "study.json"
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
RESULTS_BY_CELL = "results_by_cell.csv"  # several training seeds: mean and spread per cell
REPORT = "report.md"
CLAIMS = "claims.json"  # the paper's claims as judged for the report (jaxmem.study.verdicts)
FIGURES = "figures"
SESSIONS = "sessions.json"  # wall time of every session that worked on the study
TIMINGS = "timings.json"  # where each session's time went (jaxmem.profiling)
# What jaxmem writes into each kind of folder: --overwrite removes these and nothing else.
RUN_OUTPUTS = (RUN_SPEC, CORPUS_RECORD, LOG, CHECKPOINTS, CANARIES, REFERENCES)
# a streamed attack's work in progress (jaxmem.streaming.ChunkedTable), until metrics.json
SCORES_WORK = (SCORES + ".parts", SCORES + ".progress.json")
EXTRACTION = "extraction.json"  # a study cell's verbatim extraction (jaxmem.extraction), if asked
EXPOSURE = "exposure.json"  # a study cell's canary exposure (jaxmem.canaries), with train.canaries
WRITING = ".jaxmem-writing"  # while an in-memory attack writes its files (audit.write_results)
ATTACK_OUTPUTS = (SCORES, METRICS, ROC, HISTOGRAMS, EXTRACTION, EXPOSURE, *SCORES_WORK, WRITING)
STUDY_OUTPUTS = (STUDY_SPEC, RESULTS_JSON, RESULTS_CSV, RESULTS_BY_CELL, REPORT, CLAIMS, FIGURES,
                 SESSIONS, TIMINGS, "runs", "attacks", REFERENCES)


def slug(s: str) -> str:
    """A name that is safe as one folder name: ``lora:r=16`` -> ``lora_r=16``."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in s)


# ----------------------------------------------------------------------------- claiming

def field_defaults(cls) -> dict:
    """A config dataclass's fields that have defaults, as JSON would hold them (nested configs
    included): what an option added later reads in a spec written before it existed."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            v = f.default
        elif f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
        else:
            continue
        out[f.name] = (json.loads(json.dumps(dataclasses.asdict(v)))
                       if dataclasses.is_dataclass(v) else json.loads(json.dumps(v)))
    return out


def fill_missing(old: dict, defaults: dict, like: dict) -> dict:
    """``old`` with every key it lacks that ``like`` has (at any depth) taken from
    ``defaults``."""
    out = dict(old)
    for k, v in defaults.items():
        if k not in like:
            continue
        if k not in out:
            out[k] = v
        elif isinstance(out[k], dict) and isinstance(v, dict) and isinstance(like[k], dict):
            out[k] = fill_missing(out[k], v, like[k])
    return out


def claim_dir(folder: Path, name: str, spec: dict, *, overwrite: bool, what: str,
              outputs: Sequence[str], error: type[Exception] = CheckpointError,
              ignore: Sequence[str] = (), defaults: dict | None = None) -> None:
    """Makes ``folder`` this job's, recorded in its ``name`` file (``run.json``, ``study.json``).

    A folder whose file holds the same spec resumes. One holding another spec is refused (naming
    the keys that differ) unless ``overwrite``, which removes jaxmem's own ``outputs`` from it
    and nothing else. A folder that is not jaxmem's (no such file) must be empty or new: jaxmem
    never writes over files it did not write. Every process reads before process 0 changes
    anything.

    Args:
      folder: the folder to claim; made if missing.
      name: the spec file inside it.
      spec: what the job is (JSON-able).
      overwrite: replace a folder holding another spec instead of refusing it.
      what: the job's kind, for the message ("run", "study").
      outputs: the names jaxmem writes in such a folder (``RUN_OUTPUTS``, ``STUDY_OUTPUTS``).
      error: the exception raised on refusal.
      ignore: keys that say how a job runs, not what it is; never a difference.
      defaults: what options added since the folder's spec was written read when it lacks them
        (their defaults, which do what was done before they existed), so it still resumes.

    Raises:
      error: ``folder`` holds a different spec and ``overwrite`` is False.
      FileExistsError: ``folder`` holds files and is not a jaxmem folder.
    """
    spec = json.loads(json.dumps(spec))
    folder = Path(folder)
    path = folder / name
    old = read_json(path) if path.exists() else None
    sh.sync(f"jaxmem-claim-read-{name}")
    refuse_foreign(folder, name, what)
    if old is not None and defaults:
        old = fill_missing(old, defaults, spec)
    diff = sorted(k for k in set(spec) | set(old or {})
                  if k not in ignore and (old or {}).get(k) != spec.get(k))
    if old is not None and diff:
        if not overwrite:
            raise error(
                f"{folder} holds a different {what} (differs in: {', '.join(diff)}). Use another "
                "directory, or overwrite=True (--overwrite) to replace it.")
        if sh.is_main_process():
            kept = remove_outputs(folder, outputs)
            if kept:
                warnings.warn(
                    f"--overwrite: kept {len(kept)} file(s) in {folder} that jaxmem did not "
                    f"write: {', '.join(str(p.relative_to(folder)) for p in kept[:5])}"
                    f"{', ...' if len(kept) > 5 else ''}", stacklevel=3)
    if sh.is_main_process():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(spec, indent=1))
    sh.sync(f"jaxmem-claimed-{name}")


def refuse_foreign(folder: str | os.PathLike, name: str, what: str) -> None:
    """Refuses a folder that holds files but not jaxmem's ``name`` (``run.json``, ...): jaxmem
    never writes over files it did not write. Cheap, so callers run it before any work.

    Raises:
      FileExistsError: naming the folder and a few of its files.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file; a {what} needs a folder.")
    if not folder.is_dir() or (folder / name).exists():
        return
    foreign = sorted(p.name for p in folder.iterdir() if not is_lock_name(p.name))
    if foreign:
        raise FileExistsError(
            f"{folder} is not empty ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}"
            f") and is not a jaxmem {what} folder (no {name}); jaxmem does not write over files "
            "it did not write. Choose a new or empty folder.")


# What --overwrite may remove inside each of jaxmem's output folders, by name (a name test per
# folder name; a folder not listed inherits its parent's). Folders holding a spec file inside
# them are jaxmem folders of their own, emptied by their own outputs (_SPECS).
_FIGURES = ("auc_vs_epoch.png", "ppl_vs_epoch.png", "loss_distributions.png",
            "privacy_utility.png", "tpr_low_fpr.png", "auc_vs_size.png", "lora_placement.png")
_FIGURE_FILES = re.compile(r"(exposure|roc)(_.+)?\.png")  # one per (model, dataset)
_OURS: dict[str, Callable[[Path], bool]] = {
    CHECKPOINTS: lambda p: re.fullmatch(r"epoch_\d{3,}(\.json|\.orbax-checkpoint-tmp.*)?",
                                        p.name) is not None,
    "attacks": lambda p: p.name in ATTACK_OUTPUTS and not p.is_dir(),
    SCORES + ".parts": lambda p: re.fullmatch(r"part-\d{6}\.parquet", p.name) is not None,
    "loglik": lambda p: re.fullmatch(r"epoch_\d{3}-[0-9a-f]+\.npy", p.name) is not None,
    FIGURES: lambda p: p.name in _FIGURES or _FIGURE_FILES.fullmatch(p.name) is not None,
}
_SPECS = ((RUN_SPEC, RUN_OUTPUTS), (STUDY_SPEC, STUDY_OUTPUTS),
          ("references.json", ("references.json", CHECKPOINTS, "loglik")))


def remove_outputs(folder: Path, outputs: Sequence[str]) -> list[Path]:
    """Removes jaxmem's own ``outputs`` from ``folder``, and nothing else
    (:func:`jaxmem.overwrite.remove_outputs` under jaxmem's rules).

    A file named in ``outputs`` goes. In a folder named there (a study's ``runs/``,
    ``attacks/``, ``references/``, ``figures/``; a run's ``checkpoints/``; ...) only what jaxmem
    writes goes: each run, study or reference-model folder found inside (by its spec file)
    loses its own outputs, an attack folder the files of ``ATTACK_OUTPUTS``, ``figures/`` the
    report's figures, ``checkpoints/`` its epochs; anything else stays, with the folders
    that hold it.

    Returns:
      The paths kept (files jaxmem did not write).
    """
    return overwrite_.remove_outputs(folder, outputs, rules=_OURS, specs=_SPECS)


def claim_attack_dir(out: Path, *, overwrite: bool) -> None:
    """Checks an attack's output folder before any work (read-only): new, empty, or jaxmem's
    (its ``metrics.json``, or the marker of an attack being written: ``WRITING`` or a streamed
    attack's progress file). Earlier results are refused unless ``overwrite`` (then only
    jaxmem's own files are replaced); a folder that is not jaxmem's is refused whatever
    ``overwrite`` says, even if its files are named like jaxmem's (a user's ``roc.png``).

    Raises:
      FileExistsError: results exist and ``overwrite`` is False, or ``out`` holds files that
        jaxmem did not write.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; an attack's results need a folder.")
    if has_attack_results(out):
        if not overwrite:
            raise FileExistsError(f"{out} already holds results ({METRICS}); use another "
                                  "directory or overwrite=True (--overwrite).")
        return
    if not out.is_dir() or (out / WRITING).exists() or (out / SCORES_WORK[1]).exists():
        return  # new, or an attack cut short: it resumes or starts over
    foreign = sorted(p.name for p in out.iterdir() if not is_lock_name(p.name))
    if foreign:
        raise FileExistsError(
            f"{out} is not empty ({', '.join(foreign[:5])}) and holds no attack results; "
            "jaxmem does not write over files it did not write. Choose a new or empty "
            "folder.")


def claim_run(run_dir: Path, spec: dict, *, overwrite: bool, defaults: dict | None = None,
              ignore: Sequence[str] = ()) -> None:
    """:func:`claim_dir` for a run folder (``run.json``); refusal raises ``CheckpointError``."""
    claim_dir(run_dir, RUN_SPEC, spec, overwrite=overwrite, what="run", outputs=RUN_OUTPUTS,
              defaults=defaults, ignore=ignore)


def claim_study(out: Path, spec: dict, *, overwrite: bool, ignore: Sequence[str] = (),
                defaults: dict | None = None) -> None:
    """:func:`claim_dir` for a study folder (``study.json``); refusal raises ``FileExistsError``."""
    claim_dir(out, STUDY_SPEC, spec, overwrite=overwrite, what="study", error=FileExistsError,
              outputs=STUDY_OUTPUTS, ignore=ignore, defaults=defaults)


# ----------------------------------------------------------------------------- run folders

def read_run_spec(run_dir: str | os.PathLike) -> dict:
    """The ``run.json`` of a run folder.

    Raises:
      FileNotFoundError: ``run_dir`` is not a jaxmem run folder.
    """
    f = Path(run_dir) / RUN_SPEC
    if not f.exists():
        raise FileNotFoundError(f"{run_dir} is not a jaxmem run directory (no {RUN_SPEC}).")
    return read_json(f)


def append_log(run_dir: Path, record: dict) -> None:
    """Appends one JSON line to the run's ``log.jsonl`` (process 0 only)."""
    if not sh.is_main_process():
        return
    with open(Path(run_dir) / LOG, "a") as f:
        f.write(json.dumps({"time": time.time(), **record}) + "\n")


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    """The folder of a run's per-epoch checkpoints."""
    return Path(run_dir) / CHECKPOINTS


def _epoch_path(run_dir, epoch: int) -> Path:
    return (checkpoint_dir(run_dir) / f"epoch_{epoch:03d}").absolute()


def finished_epochs(run_dir: str | os.PathLike) -> list[int]:
    """The epochs whose checkpoint is complete (marked), ascending; [] for a new run.

    Raises:
      CheckpointError: a marker that :func:`save_epoch` cannot have written (a name other
        than ``epoch_NNN.json``, or an epoch outside 1..``train.epochs`` of ``run.json``):
        a copied or stray file, named, to be removed.
    """
    spec = Path(run_dir) / RUN_SPEC
    epochs = (read_json(spec).get("train") or {}).get("epochs") if spec.exists() else None
    found = []
    for p in checkpoint_dir(run_dir).glob("epoch_*.json"):
        m = re.fullmatch(r"epoch_(\d{3,})\.json", p.name)
        epoch = int(m[1]) if m else None
        if epoch is None or epoch < 1 or (isinstance(epochs, int) and epoch > epochs):
            why = (f"the run trains {epochs} epochs" if epoch is not None and epochs
                   else "jaxmem names its epoch markers epoch_NNN.json, from epoch_001")
            raise CheckpointError(f"{p} is not one of this run's epoch markers ({why}); it was "
                                  "copied or left there. Remove it to resume or load the run.")
        found.append(epoch)
    return sorted(found)


def epoch_record(run_dir: str | os.PathLike, epoch: int) -> dict:
    """What :func:`save_epoch` recorded with a finished epoch (``{"metrics": ..., "run": ...}``).

    Raises:
      CheckpointError: the marker records another epoch than its name's (a copied marker).
    """
    path = checkpoint_dir(run_dir) / f"epoch_{epoch:03d}.json"
    record = read_json(path)
    inner = record.get("metrics", record) if isinstance(record, dict) else None
    said = inner.get("epoch") if isinstance(inner, dict) else None
    if not isinstance(record, dict) or (said is not None and said != epoch):
        raise CheckpointError(f"{path} is not epoch {epoch}'s marker (it records epoch "
                              f"{said}); it was copied or edited. Remove it (and its folder "
                              f"{path.with_suffix('')}) to resume from the epoch before.")
    return record


def save_epoch(run_dir: Path, epoch: int, state, record: dict) -> None:
    """Checkpoints one epoch, then marks it finished with ``record``. Every process calls it.

    A checkpoint folder without its marker (a save cut short) is removed first. A run folder
    removed while it trained (its lock gone, :func:`jaxmem.locks.check`) stops the run.
    """
    locks.check(run_dir)
    path = _epoch_path(run_dir, epoch)
    if path.exists() and sh.is_main_process():
        shutil.rmtree(path)
    sh.sync(f"jaxmem-save-{epoch}")
    save_checkpoint(path, state)
    record = dict(record, params_digest=tree_digest(state.get("params", state)))
    if sh.is_main_process():
        atomic_write(path.with_name(path.name + ".json"), json.dumps(record, indent=1))
    sh.sync(f"jaxmem-saved-{epoch}")  # the marker is visible to every process from here on


def restore_epoch(run_dir: Path, epoch: int, like: dict, *, partial: bool = False) -> dict:
    """Reads an epoch's checkpoint laid out as ``like``'s arrays are (see
    :func:`jaxmem.checkpointing.restore_checkpoint`).

    Raises:
      CheckpointError: the checkpoint is truncated or holds another tree.
    """
    path = _epoch_path(run_dir, epoch)
    fix = (f"delete {path} and {path}.json to resume from the epoch before, or use a fresh run "
           "directory")
    try:
        state = restore_checkpoint(path, like, partial=partial)
    except Exception as e:
        raise CheckpointError(
            f"Checkpoint {path} cannot be restored ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300]}). It is truncated or was written for another "
            f"method/model; {fix}.") from e
    want = epoch_record(run_dir, epoch).get("params_digest")
    got = tree_digest(state.get("params", state)) if want else None
    if want and got and got != want:
        raise CheckpointError(f"Checkpoint {path} is corrupt: its parameters do not match the "
                              f"checksum recorded when it was saved; {fix}.")
    return state


@dataclasses.dataclass(frozen=True)
class CorpusRecord:
    """Which data a run was trained on (``run.json``'s ``data``), so an attack draws the same split.

    ``None`` counts mean the corpus's defaults.
    """

    corpus: str = "default"
    data_seed: int = 0
    split: str = "auto"
    n_train: int | None = None
    n_validation: int | None = None
    n_members: int | None = None
    n_nonmembers: int | None = None
    text_column: str = "text"


def read_corpus_record(run_dir: str | os.PathLike) -> CorpusRecord | None:
    """Which data a run was trained on: the ``data`` of its ``run.json`` (part of its identity),
    else the ``corpus.json`` of runs from before that; None for a run trained through the
    library without a record."""
    spec = read_run_spec(run_dir)
    if "data" in spec:
        found = spec["data"]
    elif (Path(run_dir) / CORPUS_RECORD).exists():
        found = read_json(Path(run_dir) / CORPUS_RECORD)
    else:
        return None
    found = dict(found)
    if "data_seed" not in found:  # a run from before data and training seeds were apart
        found["data_seed"] = found.pop("seed", 0)
    found.setdefault("split", "legacy-by-group")  # ... and before the split was fair
    names = {x.name for x in dataclasses.fields(CorpusRecord)}
    return CorpusRecord(**{k: v for k, v in found.items() if k in names})


# ----------------------------------------------------------------------------- attack folders

def has_attack_results(out: str | os.PathLike) -> bool:
    """Whether ``out`` already holds an attack's results (its ``metrics.json``)."""
    return (Path(out) / METRICS).exists()


def write_attack_metrics(out: Path, metrics: dict, info: dict) -> None:
    """Writes an attack folder's ``metrics.json`` (last, after its other files)."""
    atomic_write(Path(out) / METRICS, json.dumps({"metrics": metrics, "info": info}, indent=1))


# ----------------------------------------------------------------------------- study folders

def study_reference_dir(out: str | os.PathLike, model: str, dataset: str, method: str) -> Path:
    """Where a study keeps the LiRA / RMIA reference models of a (model, dataset, method), one
    subfolder per reference set (:mod:`jaxmem.reference_attacks`)."""
    return Path(out, REFERENCES, slug(model), slug(dataset), slug(method))


def run_reference_dir(run_dir: str | os.PathLike) -> Path:
    """Where ``jaxmem attack --run-dir`` keeps the run's LiRA / RMIA reference models."""
    return Path(run_dir, REFERENCES)


__all__ = ["CHECKPOINTS", "CLAIMS", "CORPUS_RECORD", "CheckpointError", "CorpusRecord", "FIGURES",
           "HISTOGRAMS", "LOG", "METRICS", "REPORT", "RESULTS_BY_CELL", "RESULTS_CSV",
           "RESULTS_JSON", "ROC", "RUN_SPEC", "SCORES", "STUDY_SPEC", "WRITING", "append_log",
           "checkpoint_dir", "claim_attack_dir", "claim_dir", "claim_run", "claim_study",
           "epoch_record", "field_defaults", "fill_missing", "finished_epochs",
           "has_attack_results", "read_corpus_record", "read_run_spec", "refuse_foreign",
           "remove_outputs", "restore_epoch", "run_reference_dir", "save_epoch", "slug",
           "study_reference_dir", "write_attack_metrics"]
