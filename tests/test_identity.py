"""Content identity (issue 21): a run is what it trained on, not where its files were.

A run records digests of its base weights, tokenizer, corpus files and the texts drawn, with
absolute paths; resuming it and following it (attack / extract / canaries --run-dir) refuse a
file that changed, naming it, and use the recorded paths, never the current folder's.
"""

import hashlib
import json
from pathlib import Path

import pytest

from conftest import save_tiny_tokenizer, tiny_hf_model
from jaxmem import identity
from jaxmem.checkpointing import CheckpointError
from jaxmem.cli import main

SIZES = "--n-train 8 --n-validation 4 --n-members 6 --n-nonmembers 6"
TRAIN = "--method prompt --epochs 1 --batch-size 4 --block-size 16"


def _model(path, seed=0):
    tiny_hf_model("gpt2", seed=seed).save_pretrained(path)
    save_tiny_tokenizer(path)
    return path


def _corpus(path, shift=0):
    path.write_text("\n\n".join(" ".join(f"w{(i * 7 + j + shift) % 90}" for j in range(12))
                                for i in range(40)))
    return path


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() else "/"
            for p in sorted(d.rglob("*"))}


def _train(model, corpus, run, extra=""):
    return main(f"train --model {model} --corpus {corpus} --run-dir {run} {TRAIN} {SIZES} "
                f"{extra}".split())


def _attack(run, out, extra=""):
    return main(f"attack --run-dir {run} --out-dir {out} --n-boot 10 {extra}".split())


@pytest.fixture
def trained(tmp_path):
    """A tiny run on a local model folder and corpus file: (model, corpus, run)."""
    model, corpus, run = _model(tmp_path / "model"), _corpus(tmp_path / "corpus.txt"), \
        tmp_path / "run"
    assert _train(model, corpus, run) == 0
    return model, corpus, run


# ----------------------------------------------------------------------------- digests

def test_file_digest_whole_and_sampled(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    data = bytearray(range(256)) * 400  # 102,400 bytes
    f.write_bytes(bytes(data))
    whole = identity.file_digest(f)
    data[len(data) // 2] ^= 1  # one byte in the middle
    f.write_bytes(bytes(data))
    assert identity.file_digest(f) != whole
    # above FULL_HASH only sampled blocks are read; the middle one is always among them
    monkeypatch.setattr(identity, "FULL_HASH", 1000)
    monkeypatch.setattr(identity, "BLOCK", 64)
    sampled = identity.file_digest(f)
    assert sampled.startswith("sampled:") and sampled != whole
    data[len(data) // 2] ^= 1
    f.write_bytes(bytes(data))
    assert identity.file_digest(f) != sampled
    g = tmp_path / "copy.bin"
    g.write_bytes(f.read_bytes())
    assert identity.file_digest(g) == identity.file_digest(f)  # content, not path or time
    g.write_bytes(f.read_bytes() + b"x")
    assert identity.file_digest(g) != identity.file_digest(f)  # the size counts


def test_texts_digest_is_order_and_boundary_sensitive():
    d = identity.texts_digest
    assert d(["ab", "c"]) == d(["ab", "c"])
    assert d(["ab", "c"]) != d(["c", "ab"]) and d(["ab", "c"]) != d(["a", "bc"])


def test_model_and_tokenizer_digests_name_the_changed_file(tmp_path):
    model = _model(tmp_path / "m")
    m = identity.locate_model(str(model))
    assert m["local"] and m["path"] == str(model)
    assert {"config.json", "model.safetensors"} <= set(m["files"])
    t = identity.locate_tokenizer(None, m)
    assert "tokenizer.json" in t["files"] and t["name"] is None
    w = model / "model.safetensors"
    b = bytearray(w.read_bytes())
    b[len(b) // 2] ^= 1  # one byte in the middle of the weights
    w.write_bytes(bytes(b))
    found = identity.difference({"model": m}, {"model": identity.locate_model(str(model))})
    assert found == f"the base weights file {w} changed since the run was trained"


def test_relative_names_are_recorded_absolute(tmp_path, monkeypatch):
    _model(tmp_path / "m")
    _corpus(tmp_path / "c.txt")
    monkeypatch.chdir(tmp_path)
    ident = identity.run_identity("m", corpus="c.txt")
    assert ident["model"]["path"] == str(tmp_path / "m")
    assert ident["corpus"]["name"] == str(tmp_path / "c.txt")
    assert identity.locate_corpus("default") is None  # a named corpus: the texts' digests


def test_library_train_refuses_other_texts_of_the_same_size(tmp_path):
    """train() without an identity still records the texts' digests: other texts of the same
    number are refused (they used to resume the old run)."""
    run = tmp_path / "run"
    run.mkdir()
    old = {"model": "m", "n_train": 2, "n_validation": 1,
           "identity": {"texts": {"train": identity.texts_digest(["a", "b"]),
                                  "validation": identity.texts_digest(["c"])}}}
    (run / "run.json").write_text(json.dumps(old))
    new = dict(old, identity={"texts": {"train": identity.texts_digest(["a", "x"]),
                                        "validation": identity.texts_digest(["c"])}})
    with pytest.raises(CheckpointError, match=r"texts drawn differ .*\(train\)"):
        identity.stale_run(run, new, overwrite=False)
    assert identity.stale_run(run, new, overwrite=True)
    assert not identity.stale_run(run, old, overwrite=False)
    # another size is claim_dir's plain difference, not this check's
    assert not identity.stale_run(run, dict(new, n_train=3), overwrite=False)


# ----------------------------------------------------------------------------- the CLI

def test_edited_corpus_is_refused_naming_the_file(trained, tmp_path, capsys):
    model, corpus, run = trained
    before = _snapshot(run)
    _corpus(corpus, shift=1)  # the user edits the corpus after training
    capsys.readouterr()
    assert _train(model, corpus, run) == 2
    err = capsys.readouterr().err
    assert f"the corpus file {corpus} changed" in err and "--overwrite" in err, err
    assert _attack(run, tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert f"the corpus file {corpus} changed" in err and "Traceback" not in err, err
    assert not (tmp_path / "a").exists() and _snapshot(run) == before
    # --overwrite retrains it on the corpus as it is now
    assert _train(model, corpus, run, "--overwrite") == 0
    assert _attack(run, tmp_path / "a") == 0


def test_relative_paths_follow_the_run_not_the_current_folder(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    _model(a / "tiny")
    _corpus(a / "corpus.txt")
    _model(b / "tiny", seed=1)  # another folder with its own ./tiny and ./corpus.txt
    _corpus(b / "corpus.txt", shift=5)
    run = tmp_path / "run"
    monkeypatch.chdir(a)
    assert _train("tiny", "corpus.txt", run) == 0
    spec = json.loads((run / "run.json").read_text())
    assert spec["identity"]["model"]["path"] == str(a / "tiny")
    assert spec["identity"]["corpus"]["name"] == str(a / "corpus.txt")
    monkeypatch.chdir(b)
    assert _attack(run, b / "out") == 0
    import pyarrow.parquet as pq

    from jaxmem.data import load_corpus

    scored = pq.read_table(b / "out" / "scores.parquet").to_pylist()
    members = [r["text"] for r in scored if r["member"]]
    drawn = load_corpus(str(a / "corpus.txt"), n_train=8, n_validation=4, n_members=6,
                        n_nonmembers=6)
    assert len(members) == 6 and set(members) <= {t[:200] for t in drawn.train}
    # A's files gone: refused naming their absolute paths, not B's ./corpus.txt or ./tiny
    (a / "corpus.txt").rename(a / "moved.txt")
    capsys.readouterr()
    assert _attack(run, b / "out2") == 2
    err = capsys.readouterr().err
    assert f"No such corpus file or folder: {a / 'corpus.txt'}" in err, err
    (a / "moved.txt").rename(a / "corpus.txt")
    (a / "tiny" / "model.safetensors").rename(a / "moved.safetensors")
    assert _attack(run, b / "out2") == 2
    err = capsys.readouterr().err
    assert str(a / "tiny" / "model.safetensors") in err and "missing" in err, err
    import shutil

    shutil.rmtree(a / "tiny")
    assert _attack(run, b / "out2") == 2
    err = capsys.readouterr().err
    assert str(a / "tiny") in err and "gone" in err, err


def test_the_tokenizer_given_at_training_is_followed_and_verified(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    b.mkdir()
    tiny_hf_model("gpt2").save_pretrained(a / "weights")  # no tokenizer files: --tokenizer
    save_tiny_tokenizer(a / "tok")
    _corpus(a / "corpus.txt")
    run = tmp_path / "run"
    monkeypatch.chdir(a)
    assert _train("weights", "corpus.txt", run, "--tokenizer tok") == 0
    monkeypatch.chdir(b)
    assert _attack(run, b / "out") == 0  # A's tokenizer, without --tokenizer
    save_tiny_tokenizer(a / "tok", words=("secret",))  # same size, other ids
    capsys.readouterr()
    assert _attack(run, b / "out2") == 2
    err = capsys.readouterr().err
    assert f"the tokenizer file {a / 'tok' / 'tokenizer.json'} changed" in err, err


def test_replaced_base_weights_are_refused_everywhere(tmp_path, capsys):
    model, corpus, run = _model(tmp_path / "model"), _corpus(tmp_path / "corpus.txt"), \
        tmp_path / "run"
    assert _train(model, corpus, run, "--canaries 2:1") == 0
    before = _snapshot(run)
    _model(model, seed=1)  # another tiny model saved at the same path
    weights = model / "model.safetensors"
    capsys.readouterr()
    for argv in (f"attack --run-dir {run} --out-dir {tmp_path / 'a'} --n-boot 10",
                 f"extract --run-dir {run} --n-samples 1",
                 f"canaries --run-dir {run} --n-samples 10",
                 f"attack --run-dir {run} --out-dir {tmp_path / 'a'} --members {corpus} "
                 f"--nonmembers {corpus}"):
        assert main(argv.split()) == 2, argv
        err = capsys.readouterr().err
        assert f"the base weights file {weights} changed" in err, (argv, err)
    assert _train(model, corpus, run, "--canaries 2:1") == 2
    assert f"{weights} changed" in capsys.readouterr().err
    assert _snapshot(run) == before and not (tmp_path / "a").exists()


def test_unchanged_run_resumes_and_attacks(trained, tmp_path, monkeypatch, capsys):
    model, corpus, run = trained
    log = (run / "log.jsonl").read_text()
    assert _train(model, corpus, run) == 0  # finished: nothing retrained
    assert (run / "log.jsonl").read_text() == log
    # an identical copy elsewhere, named relatively: the same content, so the same run
    import shutil

    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copytree(model, other / "model")
    shutil.copy(corpus, other / "corpus.txt")
    monkeypatch.chdir(other)
    assert _train(str(model), str(corpus), run) == 0
    assert _attack(run, tmp_path / "a") == 0
    assert "not verified" not in capsys.readouterr().err


def test_run_without_digests_still_resumes_and_attacks(trained, tmp_path, capsys):
    model, corpus, run = trained
    spec = json.loads((run / "run.json").read_text())
    del spec["identity"]  # a run.json from before content identity
    (run / "run.json").write_text(json.dumps(spec, indent=1))
    assert _attack(run, tmp_path / "a") == 0
    assert "records no content digests" in capsys.readouterr().err
    assert _train(model, corpus, run) == 0
    assert "identity" in json.loads((run / "run.json").read_text())  # recorded from now on


def test_study_refuses_to_resume_a_run_whose_corpus_changed(tmp_path):
    from jaxmem.study import StudyConfig, run_study

    model, corpus = _model(tmp_path / "model"), _corpus(tmp_path / "corpus.txt")
    cfg = StudyConfig.from_dict({
        "models": [str(model)], "datasets": [str(corpus)], "methods": ["prompt"],
        "n_train": 8, "n_validation": 4, "n_members": 6, "n_nonmembers": 6,
        "train.epochs": 2, "train.batch_size": 4, "train.block_size": 16,
        "audit.block_size": 16, "audit.n_boot": 10, "audit.attacks": ["loss"]})
    out = tmp_path / "study"
    run_study(cfg, out, progress=False, stop_after=1)  # killed after epoch 1's cell
    _corpus(corpus, shift=1)
    with pytest.raises(CheckpointError, match=f"the corpus file {corpus} changed"):
        run_study(cfg, out, progress=False)
