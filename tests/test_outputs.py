"""Where jaxmem writes: one writer per folder (jaxmem.locks), no file of the user's touched,
outputs checked before work, disk full named, and `jaxmem extract --run-dir` as the README
runs it. Single bad inputs refused before a model loads are rows of tests/test_cli_errors.py.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_tokenizer, tiny_hf_model
from jaxmem import locks, runs
from jaxmem.cli import _message, main

README = Path(__file__).resolve().parents[1] / "README.md"
CANARY_WORDS = ("my", "account", "number", "is", *"0123456789")
TINY = "--epochs 1 --batch-size 4 --block-size 16"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model, a small text corpus, and a run at runs/lora trained on the embedded
    corpus with canaries, in a folder where a killed train left its lock file."""
    d = tmp_path_factory.mktemp("outputs")
    model = d / "model"
    tiny_hf_model("gpt2").save_pretrained(model)
    save_tiny_tokenizer(model, words=CANARY_WORDS)
    corpus = d / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(f"w{(i * 7 + j) % 80}" for j in range(12))
                                  for i in range(40)))
    run = d / "runs" / "lora"
    run.mkdir(parents=True)
    stale = {"pid": 999999, "host": "gone", "since": "2026-12-07 10:00:00",
             "command": "jaxmem train (killed)"}
    (run / locks.LOCK).write_text(json.dumps(stale))  # flock released by the kernel at kill
    assert main(f"train --model {model} --run-dir {run} --method lora --corpus default "
                f"--n-train 8 --n-validation 4 --n-members 4 --n-nonmembers 4 --canaries 2:0,1 "
                f"{TINY}".split()) == 0
    return d, model, corpus, run


def _holder(folder: Path, what: str = "run") -> subprocess.Popen:
    """Another process holding ``folder``'s lock until its stdin closes."""
    code = ("import sys; from jaxmem import locks; locks.acquire(sys.argv[1], sys.argv[2]); "
            "print('held', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder), what], text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.stdout.readline().strip() == "held"
    return p


# ----------------------------------------------------------------------------- locks

def test_a_second_writer_is_refused_at_once(tiny, tmp_path, capsys):
    """A train on a run folder another process holds fails at once, naming the folder and the
    holder, and writes nothing; so does a Python caller of train / run_attacks_on."""
    from jaxmem.audit import run_attacks_on
    from jaxmem.trainer import train

    _, model, corpus, _ = tiny
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        t0 = time.monotonic()
        assert main(f"train --model {model} --run-dir {run} --corpus {corpus} --n-train 8 "
                    f"--n-validation 4 {TINY}".split()) == 2
        err = capsys.readouterr().err
        assert time.monotonic() - t0 < 30  # before the corpus and the model are loaded
        assert str(run) in err and f"pid {holder.pid}" in err and "in use" in err, err
        assert sorted(p.name for p in run.iterdir()) == [locks.LOCK]  # the holder's only
        with pytest.raises(locks.FolderLocked, match=f"pid {holder.pid}"):
            train(None, None, None, "prompt", ["a"], ["b"], run)
        with pytest.raises(locks.FolderLocked, match="in use"):
            run_attacks_on(None, None, None, ["a"], ["b"], out_dir=run)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    locks.acquire(run, "run")  # the holder is gone (its lock file left, stale): free again
    locks.release(run)
    assert list(run.iterdir()) == []


def test_a_stale_lock_is_taken_over(tiny):
    """The lock file of a killed process (no flock on it) is taken over; a finished run
    leaves no lock behind."""
    _, _, _, run = tiny
    assert runs.finished_epochs(run) == [1] and not (run / locks.LOCK).exists()
    (run / locks.LOCK).write_text('{"pid": 999999}')
    path = locks.acquire(run, "run")
    assert json.loads(path.read_text())["pid"] == os.getpid()
    locks.release(run)
    assert not path.exists()


def test_locks_nest_and_reenter(tmp_path):
    """A study's lock and a run folder's inside it are two locks; the same process may take a
    lock it holds; everything the locks made is gone afterwards."""
    study = tmp_path / "s"
    run = study / "runs" / "m" / "d" / "lora"
    with locks.hold(study, "study"), locks.hold(run, "run"), locks.hold(study, "study"):
        assert (study / locks.LOCK).exists() and (run / locks.LOCK).exists()
        locks.check(study)
    assert not study.exists()
    out = tmp_path / "scores.csv"
    with locks.hold(out, "output", file=True):
        assert locks.lock_path(out, file=True).exists() and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_removed_under_the_work_stops_it(tmp_path):
    """A run folder deleted while training: the next checkpoint stops the run instead of
    making the folder again."""
    run = tmp_path / "run"
    locks.acquire(run, "run")
    try:
        shutil.rmtree(run)
        with pytest.raises(locks.FolderLocked, match="removed or replaced"):
            runs.save_epoch(run, 1, {"w": np.zeros(2)}, {"metrics": {}})
        assert not run.exists()
    finally:
        locks.release(run)


def test_sigterm_is_an_interrupt(tmp_path, monkeypatch, capsys):
    """SIGTERM stops a command as Ctrl-C does: exit 130, its lock released, so a rerun
    resumes; the signal's handler is put back afterwards."""
    from jaxmem.cli import grid

    out = tmp_path / "study"
    seen = {}

    def killed_study(args):
        seen["locked"] = (out / locks.LOCK).exists()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        return 0

    monkeypatch.setattr(grid, "cmd_study", killed_study)
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    assert main(["study", "--out-dir", str(out)]) == 130
    assert time.monotonic() - t0 < 8 and seen["locked"]
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists() and signal.getsignal(signal.SIGTERM) == before


# ----------------------------------------------------------------------------- user files

def test_study_overwrite_removes_only_jaxmems_files(tmp_path):
    """--overwrite on a study folder holding another study removes what jaxmem wrote (its
    runs, attack files, reference sets, report figures) and keeps every file of the user's,
    saying so."""
    out = tmp_path / "study"
    runs.claim_study(out, {"a": 1}, overwrite=False)
    ours = {
        "report.md": "r", "claims.json": "{}", "results.csv": "x",
        "runs/m/d/lora/run.json": "{}", "runs/m/d/lora/log.jsonl": "",
        "runs/m/d/lora/checkpoints/epoch_001/d/0": "orbax", "runs/m/d/lora/checkpoints/"
        "epoch_001.json": "{}", "attacks/m/d/lora/epoch_1/metrics.json": "{}",
        "attacks/m/d/lora/epoch_1/roc.png": "png", "attacks/m/d/lora/epoch_1/scores.parquet.parts/"
        "part-000000.parquet": "p", "references/m/d/lora/k4-pop8-abc/references.json": "{}",
        "references/m/d/lora/k4-pop8-abc/loglik/epoch_001-0123456789abcdef0123.npy": "n",
        "figures/auc_vs_epoch.png": "png", "figures/exposure.png": "png",
        "runs/m/d/lora/.jaxmem.lock": "{}"}
    mine = {"notes.ipynb": "mine", "runs/README.txt": "mine", "runs/m/d/lora/notes.md": "mine",
            "runs/m/d/lora/checkpoints/mine.txt": "mine", "attacks/m/d/lora/epoch_1/my.csv": "m",
            "references/mine.txt": "mine", "figures/my_plot.png": "mine"}
    for rel, text in {**ours, **mine}.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    with pytest.warns(UserWarning, match=r"kept 6 file\(s\) in .* jaxmem did not write"):
        runs.claim_study(out, {"a": 2}, overwrite=True)
    left = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert left == set(mine) | {"study.json"}
    assert all((out / rel).read_text() == text for rel, text in mine.items())


def test_an_attack_folder_cut_short_is_jaxmems(tmp_path):
    """An in-memory attack killed while writing its files leaves its marker, so the rerun may
    write over them; a user's folder with the same names is refused."""
    out = tmp_path / "a"
    out.mkdir()
    (out / runs.SCORES).write_text("half")
    (out / runs.ROC).write_text("png")
    with pytest.raises(FileExistsError, match="did not write"):
        runs.claim_attack_dir(out, overwrite=True)
    (out / runs.WRITING).touch()
    runs.claim_attack_dir(out, overwrite=False)


def test_score_never_truncates_a_users_partial(tmp_path):
    """A `<out>.partial` or `<out>.parts/` that no progress marker vouches for is refused,
    even when starting over; jaxmem's own marker is written before its first row."""
    from jaxmem.chunked import ChunkedTable, progress_path

    out = tmp_path / "s.csv"
    partial = tmp_path / "s.csv.partial"
    partial.write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="did not write"):
            ChunkedTable(out, {"a": 1}, overwrite=overwrite)
    assert partial.read_text() == "mine"
    partial.unlink()
    table = ChunkedTable(out, {"a": 1})
    assert progress_path(out).exists() and partial.exists()
    table.append([{"x": 1}], 1)
    table.finish()
    assert out.read_text() == "x\n1\n" and not progress_path(out).exists()


# ----------------------------------------------------------------------------- disk full

def test_disk_full_is_named_whatever_wraps_it():
    plain = OSError(errno.ENOSPC, "No space left on device", "/r/checkpoints/epoch_002")
    assert _message(plain).startswith("disk full while writing /r/checkpoints/epoch_002")

    class OrbaxError(Exception):  # not one of the types the CLI names itself
        pass

    try:
        try:
            raise plain
        except OSError as e:
            raise OrbaxError("commit failed") from e
    except OrbaxError as e:
        wrapped = e
    text_only = ValueError("tensorstore: Error writing local file: [OS error 28: No space left "
                           "on device]")
    for e in (plain, wrapped, text_only):
        msg = _message(e)
        assert "disk full" in msg and "free space and rerun" in msg and "kept" in msg, msg
        assert "unexpected" not in msg


def test_disk_full_during_a_checkpoint(tiny, tmp_path, monkeypatch, capsys):
    """Disk full at epoch 2's checkpoint (as orbax raises it): one line naming it, no
    traceback, epoch 1 kept and marked."""
    _, model, corpus, _ = tiny
    real, calls = runs.save_checkpoint, []

    def full_at_second(path, tree, **kw):
        calls.append(path)
        if len(calls) == 2:
            try:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            except OSError as e:
                raise ValueError(f"orbax: failed to commit {path}") from e
        return real(path, tree, **kw)

    monkeypatch.setattr(runs, "save_checkpoint", full_at_second)
    run = tmp_path / "run"
    assert main(f"train --model {model} --run-dir {run} --method prompt --corpus {corpus} "
                f"--n-train 8 --n-validation 4 {TINY.replace('--epochs 1', '--epochs 2')}"
                .split()) == 2
    err = capsys.readouterr().err
    assert "disk full while writing" in err and "epoch_002" in err, err
    assert "Traceback" not in err and "unexpected" not in err
    assert runs.finished_epochs(run) == [1] and not (run / locks.LOCK).exists()


# ----------------------------------------------------------------------------- extract, canaries

def test_the_readmes_extract_command_runs(tiny, monkeypatch, capsys):
    """README.md's `jaxmem extract --run-dir runs/lora ... --out extraction.json`, verbatim, on
    a tiny run: the block size (and model and data) follow the run; a rerun does not replace
    the output without --overwrite; a new folder for --out is made."""
    d, _, _, _ = tiny
    line = next(ln for ln in README.read_text().splitlines()
                if ln.startswith(".venv/bin/jaxmem extract") and "--out" in ln)
    argv = line.split()[1:]
    monkeypatch.chdir(d)
    assert main(argv) == 0, capsys.readouterr().err
    res = json.loads((d / "extraction.json").read_text())
    assert res["members"]["n_evaluated"] + res["members"]["n_skipped"] == 4
    before = (d / "extraction.json").read_bytes()
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert (d / "extraction.json").read_bytes() == before
    assert main(["extract", "--run-dir", "runs/lora", "--n-samples", "1", "--out",
                 "new/sub/e.json"]) == 0
    assert json.loads((d / "new/sub/e.json").read_text())["members"]


def test_canaries_run_dir_outputs(tiny, tmp_path, capsys):
    """`jaxmem canaries --run-dir` on a run trained with canaries writes its report and
    figure, and replaces neither without --overwrite."""
    _, _, _, run = tiny
    out, fig = tmp_path / "exp" / "exposure.json", tmp_path / "exp" / "exposure.png"
    cmd = f"canaries --run-dir {run} --n-samples 50 --out {out} --figure {fig}"
    assert main(cmd.split()) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["by_repeats"] and fig.stat().st_size > 0
    fig.write_bytes(b"my figure")
    assert main(cmd.split()) == 2
    assert str(out) in capsys.readouterr().err and fig.read_bytes() == b"my figure"
    assert main((cmd + " --overwrite").split()) == 0
    assert fig.read_bytes() != b"my figure"
