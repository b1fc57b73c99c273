"""The on-disk layout: atomic writes, claiming folders, done markers, tables, the corpus record."""

import csv
import json

import numpy as np
import pytest

from jaxmem import runs


def test_atomic_write_text_bytes_json_and_function(tmp_path):
    assert runs.atomic_write(tmp_path / "a.txt", "hé") == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_text() == "hé"
    runs.atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    runs.atomic_write(tmp_path / "c.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    runs.atomic_write(tmp_path / "d.txt", lambda p: p.write_text("by a function"))
    assert (tmp_path / "d.txt").read_text() == "by a function"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json", "d.txt"]


def test_atomic_write_that_fails_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def half_then_fail(p):
        p.write_text("half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        runs.atomic_write(target, half_then_fail)
    with pytest.raises(TypeError):
        runs.atomic_write(tmp_path / "new.json", {"not": object()})
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
    runs.claim_run(run, {"a": 1, "b": 3}, overwrite=True)  # emptied, then claimed
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]
    assert json.loads((run / "run.json").read_text()) == {"a": 1, "b": 3}


def test_claim_study_ignores_how_it_runs(tmp_path):
    runs.claim_study(tmp_path, {"epochs": 2, "mesh": None}, overwrite=False, ignore=("mesh",))
    runs.claim_study(tmp_path, {"epochs": 2, "mesh": "4x2"}, overwrite=False, ignore=("mesh",))
    with pytest.raises(FileExistsError, match="different study.*epochs"):
        runs.claim_study(tmp_path, {"epochs": 3, "mesh": None}, overwrite=False,
                         ignore=("mesh",))


def test_a_non_jaxmem_folder_with_files_is_claimed_as_it_is(tmp_path):
    """As before: no spec file means nothing to compare, so nothing is refused or removed."""
    (tmp_path / "notes.txt").write_text("mine")
    runs.claim_run(tmp_path, {"a": 1}, overwrite=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert runs.read_run_spec(tmp_path) == {"a": 1}
    with pytest.raises(FileNotFoundError, match="not a jaxmem run directory"):
        runs.read_run_spec(tmp_path / "elsewhere")


def test_epoch_markers_and_the_log(tmp_path):
    assert runs.finished_epochs(tmp_path) == []
    runs.checkpoint_dir(tmp_path).mkdir()
    (runs.checkpoint_dir(tmp_path) / "epoch_002").mkdir()  # a save cut short: no marker
    assert runs.finished_epochs(tmp_path) == []
    runs.save_epoch(tmp_path, 1, {"w": np.arange(3.0)}, {"metrics": {"epoch": 1}})
    assert runs.finished_epochs(tmp_path) == [1]
    assert runs.epoch_record(tmp_path, 1) == {"metrics": {"epoch": 1}}
    got = runs.restore_epoch(tmp_path, 1, {"w": np.zeros(3)})
    np.testing.assert_array_equal(got["w"], np.arange(3.0))
    with pytest.raises(runs.CheckpointError, match="cannot be restored"):
        runs.restore_epoch(tmp_path, 2, {"w": np.zeros(3)})
    runs.append_log(tmp_path, {"epoch": 1, "loss": 0.5})
    line = json.loads((tmp_path / "log.jsonl").read_text())
    assert line["loss"] == 0.5 and "time" in line


def test_study_cell_is_done_once_its_validation_loss_is_recorded(tmp_path):
    where = runs.study_attack_dir(tmp_path, "org/model", "data.txt", "lora:r=4", 3)
    assert where == tmp_path / "attacks" / "org_model" / "data.txt" / "lora_r=4" / "epoch_3"
    assert runs.study_run_dir(tmp_path, "org/model", "d", "lora:r=4") == (
        tmp_path / "runs" / "org_model" / "d" / "lora_r=4")
    assert not runs.cell_done(where)
    where.mkdir(parents=True)
    assert not runs.has_attack_results(where)
    runs.write_attack_metrics(where, {"loss": {"auc": 0.7}}, {"n_members": 4})
    assert runs.has_attack_results(where) and not runs.cell_done(where)
    runs.mark_cell_done(where, 2.5)
    assert runs.cell_done(where)
    assert runs.read_cell(where) == ({"loss": {"auc": 0.7}}, 2.5)
    m = json.loads((where / "metrics.json").read_text())  # the format existing studies have
    assert m == {"metrics": {"loss": {"auc": 0.7}}, "info": {"n_members": 4, "val_loss": 2.5}}


def test_tables_by_suffix(tmp_path):
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y, z"}]
    for suffix in ("csv", "json", "jsonl", "md", "parquet"):
        runs.write_table(rows, tmp_path / "sub" / f"t.{suffix}")
    with open(tmp_path / "sub" / "t.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y, z"}]
    assert json.loads((tmp_path / "sub" / "t.json").read_text()) == rows
    assert [json.loads(x) for x in (tmp_path / "sub" / "t.jsonl").read_text().splitlines()] == rows
    assert "| a" in (tmp_path / "sub" / "t.md").read_text()
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "sub" / "t.parquet").to_pylist() == rows
    with pytest.raises(ValueError, match="unknown output format"):
        runs.write_table(rows, tmp_path / "t.xlsx")
    runs.write_study_results(tmp_path, [])  # nothing yet: nothing written
    runs.write_study_results(tmp_path, rows)
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    assert (tmp_path / "results.csv").read_text().startswith("a,b")


def test_corpus_record_round_trip(tmp_path):
    assert runs.read_corpus_record(tmp_path) is None
    rec = runs.CorpusRecord(corpus="wikitext", seed=3, n_members=50)
    runs.write_corpus_record(tmp_path, rec)
    assert runs.read_corpus_record(tmp_path) == rec
    # the format jaxmem train has always written
    assert json.loads((tmp_path / "corpus.json").read_text()) == {
        "corpus": "wikitext", "seed": 3, "n_train": None, "n_validation": None,
        "n_members": 50, "n_nonmembers": None, "text_column": "text"}


def test_slug():
    assert runs.slug("lora:r=16,target=mlp") == "lora_r=16_target=mlp"
    assert runs.slug("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB_SmolLM2-135M"
