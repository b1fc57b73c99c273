"""The on-disk layout: atomic writes, claiming folders, done markers, tables, the corpus record."""

import csv
import json

import numpy as np
import pytest

from jaxmem import runs
from jaxmem.io import atomic_write, write_table
from jaxmem.study.folders import (cell_done, mark_cell_done, read_cell, record_session,
                                  study_attack_dir, study_run_dir, study_sessions)
from jaxmem.study.rows import write_study_results


def test_atomic_write_text_bytes_json_and_function(tmp_path):
    assert atomic_write(tmp_path / "a.txt", "hé") == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_text() == "hé"
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "c.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    atomic_write(tmp_path / "d.txt", lambda p: p.write_text("by a function"))
    assert (tmp_path / "d.txt").read_text() == "by a function"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json", "d.txt"]


def test_atomic_write_that_fails_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def half_then_fail(p):
        p.write_text("half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "new.json", {"not": object()})
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_claim_dir_resumes_the_same_spec_and_refuses_another(tmp_path):
    run = tmp_path / "run"
    runs.claim_run(run, {"a": 1, "b": 2}, overwrite=False)
    (run / "log.jsonl").write_text("kept\n")
    runs.claim_run(run, {"a": 1, "b": 2}, overwrite=False)  # the same run: resumes
    assert (run / "log.jsonl").exists()
    with pytest.raises(runs.CheckpointError, match="different run.*differs in: b"):
        runs.claim_run(run, {"a": 1, "b": 3}, overwrite=False)
    assert json.loads((run / "run.json").read_text()) == {"a": 1, "b": 2}
    (run / "notes.txt").write_text("mine")  # the user's own file in a jaxmem folder
    runs.claim_run(run, {"a": 1, "b": 3}, overwrite=True)  # jaxmem's outputs removed, claimed
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "run.json"]
    assert json.loads((run / "run.json").read_text()) == {"a": 1, "b": 3}


def test_claim_study_ignores_how_it_runs(tmp_path):
    runs.claim_study(tmp_path, {"epochs": 2, "mesh": None}, overwrite=False, ignore=("mesh",))
    runs.claim_study(tmp_path, {"epochs": 2, "mesh": "4x2"}, overwrite=False, ignore=("mesh",))
    with pytest.raises(FileExistsError, match="different study.*epochs"):
        runs.claim_study(tmp_path, {"epochs": 3, "mesh": None}, overwrite=False,
                         ignore=("mesh",))


def test_a_folder_that_is_not_jaxmems_is_refused_and_left_alone(tmp_path):
    """jaxmem never writes over files it did not write: a non-empty folder without a spec file
    is refused, whatever --overwrite says, and nothing in it changes."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "roc.png").write_text("my figure")
    for claim in (lambda o: runs.claim_run(tmp_path, {"a": 1}, overwrite=o),
                  lambda o: runs.claim_study(tmp_path, {"a": 1}, overwrite=o)):
        for overwrite in (False, True):
            with pytest.raises(FileExistsError, match="not a jaxmem .* folder"):
                claim(overwrite)
    with pytest.raises(FileExistsError, match="holds no attack results"):
        runs.claim_attack_dir(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "roc.png"]
    assert (tmp_path / "roc.png").read_text() == "my figure"
    runs.claim_attack_dir(tmp_path / "new", overwrite=False)  # new or empty: fine
    with pytest.raises(FileNotFoundError, match="not a jaxmem run directory"):
        runs.read_run_spec(tmp_path / "elsewhere")


def test_attack_results_are_refused_unless_overwrite(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds results"):
        runs.claim_attack_dir(tmp_path, overwrite=False)
    runs.claim_attack_dir(tmp_path, overwrite=True)


def test_a_corrupt_json_file_is_named(tmp_path):
    (tmp_path / "run.json").write_text('{"model": "m", "trunc')
    with pytest.raises(ValueError, match="run.json is corrupt"):
        runs.read_run_spec(tmp_path)


def test_epoch_markers_and_the_log(tmp_path):
    assert runs.finished_epochs(tmp_path) == []
    runs.checkpoint_dir(tmp_path).mkdir()
    (runs.checkpoint_dir(tmp_path) / "epoch_002").mkdir()  # a save cut short: no marker
    assert runs.finished_epochs(tmp_path) == []
    runs.save_epoch(tmp_path, 1, {"w": np.arange(3.0)}, {"metrics": {"epoch": 1}})
    assert runs.finished_epochs(tmp_path) == [1]
    assert runs.epoch_record(tmp_path, 1)["metrics"] == {"epoch": 1}
    got = runs.restore_epoch(tmp_path, 1, {"w": np.zeros(3)})
    np.testing.assert_array_equal(got["w"], np.arange(3.0))
    with pytest.raises(runs.CheckpointError, match="cannot be restored"):
        runs.restore_epoch(tmp_path, 2, {"w": np.zeros(3)})
    runs.append_log(tmp_path, {"epoch": 1, "loss": 0.5})
    line = json.loads((tmp_path / "log.jsonl").read_text())
    assert line["loss"] == 0.5 and "time" in line


def test_study_cell_is_done_once_its_validation_loss_is_recorded(tmp_path):
    where = study_attack_dir(tmp_path, "org/model", "data.txt", "lora:r=4", 3)
    assert where == tmp_path / "attacks" / "org_model" / "data.txt" / "lora_r=4" / "epoch_3"
    assert study_run_dir(tmp_path, "org/model", "d", "lora:r=4") == (
        tmp_path / "runs" / "org_model" / "d" / "lora_r=4")
    assert not cell_done(where)
    where.mkdir(parents=True)
    assert not runs.has_attack_results(where)
    runs.write_attack_metrics(where, {"loss": {"auc": 0.7}}, {"n_members": 4})
    assert runs.has_attack_results(where) and not cell_done(where)
    mark_cell_done(where, 2.5)
    assert cell_done(where)
    assert read_cell(where) == ({"loss": {"auc": 0.7}}, 2.5)
    m = json.loads((where / "metrics.json").read_text())  # the format existing studies have
    assert m == {"metrics": {"loss": {"auc": 0.7}}, "info": {"n_members": 4, "val_loss": 2.5}}


def test_tables_by_suffix(tmp_path):
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y, z"}]
    for suffix in ("csv", "json", "jsonl", "md", "parquet"):
        write_table(rows, tmp_path / "sub" / f"t.{suffix}")
    with open(tmp_path / "sub" / "t.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y, z"}]
    assert json.loads((tmp_path / "sub" / "t.json").read_text()) == rows
    assert [json.loads(x) for x in (tmp_path / "sub" / "t.jsonl").read_text().splitlines()] == rows
    assert "| a" in (tmp_path / "sub" / "t.md").read_text()
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "sub" / "t.parquet").to_pylist() == rows
    with pytest.raises(ValueError, match="unknown output format"):
        write_table(rows, tmp_path / "t.xlsx")
    write_study_results(tmp_path, [])  # nothing yet: nothing written
    write_study_results(tmp_path, rows)
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    assert (tmp_path / "results.csv").read_text().startswith("a,b")


def test_corpus_record_is_part_of_the_run_identity(tmp_path):
    """The data record lives in run.json (so a rerun on other data is refused); runs from
    before that kept it in corpus.json, which is still read."""
    import dataclasses

    (tmp_path / "run.json").write_text(json.dumps({"model": "m"}))
    assert runs.read_corpus_record(tmp_path) is None
    # an older run: one seed for data and training, and the split of that time
    (tmp_path / "corpus.json").write_text(json.dumps(
        {"corpus": "wikitext", "seed": 3, "n_members": 50, "text_column": "text"}))
    rec = runs.CorpusRecord(corpus="wikitext", data_seed=3, split="legacy-by-group",
                            n_members=50)
    assert runs.read_corpus_record(tmp_path) == rec
    new = dataclasses.replace(rec, data_seed=4, split="auto")
    (tmp_path / "run.json").write_text(json.dumps({"model": "m", "data": dataclasses.asdict(new)}))
    assert runs.read_corpus_record(tmp_path) == new  # run.json wins


def test_slug():
    assert runs.slug("lora:r=16,target=mlp") == "lora_r=16_target=mlp"
    assert runs.slug("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB_SmolLM2-135M"


def test_a_corrupt_checkpoint_is_named(tmp_path):
    """Parameters changed on disk after the save fail their checksum at load, named as a
    corrupt checkpoint with what to do (not found later as NaN scores)."""
    state = {"params": {"w": np.arange(4.0, dtype=np.float32)}}
    runs.save_epoch(tmp_path, 1, state, {"metrics": {}})
    assert np.array_equal(runs.restore_epoch(tmp_path, 1, state)["params"]["w"], np.arange(4.0))
    marker = runs.checkpoint_dir(tmp_path) / "epoch_001.json"
    rec = json.loads(marker.read_text())
    rec["params_digest"] = "0" * 32  # as if the arrays had changed since the save
    marker.write_text(json.dumps(rec))
    with pytest.raises(runs.CheckpointError, match="is corrupt.*delete"):
        runs.restore_epoch(tmp_path, 1, state)


def test_flipped_bytes_in_a_checkpoint_are_caught(tmp_path):
    """Garbage written into the checkpoint's data files: a CheckpointError naming the
    checkpoint, whether orbax notices (cannot be restored) or the checksum does (corrupt)."""
    state = {"params": {"w": np.linspace(0, 1, 4096, dtype=np.float32)}}
    runs.save_epoch(tmp_path, 1, state, {"metrics": {}})
    files = [p for p in (runs.checkpoint_dir(tmp_path) / "epoch_001").rglob("*")
             if p.is_file() and "json" not in p.name and p.stat().st_size > 1024]
    assert files, "no data file found to corrupt"
    for f in files:
        data = bytearray(f.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 256] = bytes(256)
        f.write_bytes(bytes(data))
    with pytest.raises(runs.CheckpointError, match="epoch_001"):
        runs.restore_epoch(tmp_path, 1, state)


def test_study_time_adds_up_over_sessions(tmp_path):
    """A resumed study's report counts every session's time, not only the last one's."""
    record_session(tmp_path, "s1", 600.0)
    record_session(tmp_path, "s1", 900.0)  # the same session, later: replaced
    record_session(tmp_path, "s2", 300.0)
    assert study_sessions(tmp_path) == {"s1": 900.0, "s2": 300.0}
    assert "sessions.json" in runs.STUDY_OUTPUTS  # --overwrite removes it with the rest
