"""Canaries wired into training and the study: inserted and recorded by the trainer, resumed
exactly, measured on the base model and every attacked cell, in the rows and the report."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from conftest import CharTok, random_texts, save_tiny_tokenizer, tiny_hf_model, to_jaxmem
from jaxmem import runs
from jaxmem.canaries import Canaries, CanaryConfig, exposure_report
from jaxmem.io import read_json
from jaxmem.optim import OptimConfig
from jaxmem.study import StudyConfig, run_study
from jaxmem.study.folders import study_attack_dir, study_run_dir
from jaxmem.trainer import TrainConfig, train, with_canaries

SPEC = "2:0,1,3"  # 2 controls, 2 canaries once, 2 three times: 8 copies


@pytest.fixture(scope="module")
def model():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


def _tcfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "block_size": 48, "seed": 3,
                          "optim": OptimConfig(lr=1e-2), "canaries": SPEC, **kw})


def test_training_inserts_records_and_resumes_exactly(model, tmp_path, monkeypatch):
    """train() trains on the texts plus N * sum(repeats) canary copies, writes canaries.json
    and records the spec in run.json; a run stopped after epoch 1 and resumed ends
    bit-identical to an uninterrupted one."""
    import jaxmem.trainer as T

    params, cfg = model
    given, val = random_texts(16), random_texts(4, seed=1)
    seen = []
    encode = T.encode_texts
    monkeypatch.setattr(T, "encode_texts", lambda tok, texts, n: seen.append(list(texts))
                        or encode(tok, texts, n))
    full = train(params, cfg, CharTok(), "lora", given, val, tmp_path / "full", _tcfg(),
                 progress=False)
    trained = seen[0]  # the first encode_texts call: the fine-tuning set
    can = Canaries.load(tmp_path / "full" / runs.CANARIES)
    assert len(trained) == 16 + 2 * (0 + 1 + 3)
    assert [t for t in trained if t in given] == given  # the originals, in order
    for text, r in zip(can.texts, can.repeats):
        assert trained.count(text) == r
    assert sorted(can.repeats) == [0, 0, 1, 1, 3, 3] and can.seed == 3
    assert can.to_dict() == with_canaries(given, _tcfg())[1].to_dict()  # the study's base record
    spec = runs.read_run_spec(tmp_path / "full")
    assert spec["train"]["canaries"] == SPEC and spec["n_train"] == 16
    assert spec["canaries"] == {"record": "canaries.json", "copies": 8}

    train(params, cfg, CharTok(), "lora", given, val, tmp_path / "cut", _tcfg(),
          progress=False, stop_after_epoch=1)
    resumed = train(params, cfg, CharTok(), "lora", given, val, tmp_path / "cut", _tcfg(),
                    progress=False)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (tmp_path / "cut" / runs.CANARIES).read_text() == \
        (tmp_path / "full" / runs.CANARIES).read_text()


def test_run_written_before_the_field_resumes(model, tmp_path):
    """A run.json without train.canaries / train.dp (older jaxmem) is completed with their
    defaults and resumed; another canary spec is still another run."""
    from jaxmem.checkpointing import CheckpointError

    params, cfg = model
    tcfg = _tcfg(epochs=1, canaries=None)
    args = (params, cfg, CharTok(), "lora", random_texts(8), random_texts(4, seed=1),
            tmp_path / "r")
    train(*args, tcfg, progress=False)
    path = tmp_path / "r" / runs.RUN_SPEC
    old = json.loads(path.read_text())
    for k in ("canaries", "dp"):
        del old["train"][k]
    path.write_text(json.dumps(old))
    train(*args, tcfg, progress=False)  # resumes: nothing left to train
    assert json.loads(path.read_text())["train"]["canaries"] is None
    with pytest.raises(CheckpointError, match="differs in: canaries, train"):
        train(*args, dataclasses.replace(tcfg, canaries="1:1"), progress=False)


def test_bad_spec_fails_at_config_time(tmp_path, capsys):
    with pytest.raises(ValueError, match="not N:REPEATS; write e.g. 8:0,1,4,16"):
        TrainConfig(canaries="8")
    with pytest.raises(ValueError, match="repeats"):
        TrainConfig(canaries="8:-1,4")
    with pytest.raises(ValueError, match="quote it"):  # YAML's base-60 reading of 8:16
        StudyConfig.from_yaml(None, ["train.canaries=8:16"])
    assert str(StudyConfig.from_yaml(None, ["train.canaries=8:0,1,4,16"]).train.canaries) \
        == "8:0,1,4,16"
    with pytest.raises(ValueError, match="canary_exposure.*train.canaries is not"):
        StudyConfig(canary_exposure={"n_samples": 10})
    with pytest.raises(ValueError, match=r"Unknown canary_exposure options \['template'\]"):
        StudyConfig(train=TrainConfig(canaries="2:1"), canary_exposure={"template": "x {}"})
    with pytest.raises(ValueError, match="n_samples"):
        StudyConfig(train=TrainConfig(canaries="2:1"), canary_exposure={"n_samples": 0})
    with pytest.raises(ValueError, match="Canary exposure runs on one device"):
        run_study(StudyConfig(train=TrainConfig(canaries="2:1")), tmp_path / "s", mesh="2x1")
    assert not (tmp_path / "s").exists()
    from jaxmem.cli import main

    # refused before any model loads (the model named here does not exist)
    assert main(["train", "--model", str(tmp_path / "none"), "--run-dir", str(tmp_path / "r"),
                 "--canaries", "8:x"]) == 2
    assert "N:REPEATS" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["canaries", "--canaries-json", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "writes RUN_DIR/canaries.json" in err


def test_study_json_without_the_fields_resumes(tmp_path):
    from jaxmem.study.grid import claim_study_folder

    cfg = StudyConfig(methods=("lora",))
    old = cfg.to_dict()
    del old["train"]["canaries"], old["canary_exposure"]
    (tmp_path / "study.json").write_text(json.dumps(old))
    claim_study_folder(tmp_path, cfg, overwrite=False)
    spec = json.loads((tmp_path / "study.json").read_text())
    assert spec.pop("provenance") and spec == cfg.to_dict()


TEMPLATE_WORDS = ("my", "account", "number", "is", *"0123456789")


def test_study_measures_exposure_of_base_and_every_cell(tmp_path, capsys):
    """train.canaries gives the base model and every attacked cell an exposure.json (the
    base's equal to exposure_report on the same canaries, the run's equal to `jaxmem canaries
    --run-dir`), exposure columns in the rows, and a report section with its figure; the
    canaries never become members or non-members."""
    from jaxmem.cli import main
    from jaxmem.data import load_corpus
    from jaxmem.models import load_model

    m = tiny_hf_model("llama", num_key_value_heads=2)
    m.save_pretrained(tmp_path / "model")
    save_tiny_tokenizer(tmp_path / "model", words=TEMPLATE_WORDS)  # the template is in-vocabulary
    rng = np.random.default_rng(0)
    (tmp_path / "corpus.txt").write_text("\n\n".join(
        " ".join(f"w{i}" for i in rng.integers(0, 80, rng.integers(8, 20))) for _ in range(80)))
    model, corpus = str(tmp_path / "model"), str(tmp_path / "corpus.txt")
    cfg = StudyConfig.from_dict({
        "models": [model], "datasets": [corpus], "methods": ["lora"], "lr": {"lora": 1e-2},
        "n_train": 16, "n_validation": 8, "n_members": 8, "n_nonmembers": 8,
        "train.epochs": 2, "attack_epochs": [1, 2], "train.batch_size": 8,
        "train.block_size": 32, "train.canaries": "2:0,1,4", "audit.block_size": 32,
        "audit.n_boot": 10, "audit.attacks": ["loss"], "canary_exposure": {"n_samples": 64}})
    out = tmp_path / "s"
    rows = run_study(cfg, out, progress=False)

    data = load_corpus(corpus, seed=0, n_train=16, n_validation=8, n_members=8, n_nonmembers=8)
    run_dir = study_run_dir(out, model, corpus, "lora")
    can = Canaries.load(run_dir / runs.CANARIES)
    assert can.to_dict() == with_canaries(data.train, cfg.train)[1].to_dict()
    assert not set(can.texts) & set(data.members + data.nonmembers)
    params, mcfg, tok = load_model(model)
    measured = dataclasses.replace(can, config=CanaryConfig.from_spec("2:0,1,4", n_samples=64))
    base = study_attack_dir(out, model, corpus, "base", 0)
    want = exposure_report(params, mcfg, tok, measured, seed=0, block_size=32)
    assert read_json(base / runs.EXPOSURE) == json.loads(json.dumps(want))
    for e in (1, 2):
        rep = read_json(study_attack_dir(out, model, corpus, "lora", e) / runs.EXPOSURE)
        assert rep["n_samples"] == 64 and set(rep["by_repeats"]) == {"0", "1", "4"}
    for r in rows:
        rep = read_json(study_attack_dir(out, model, corpus, r["method"], r["epoch"])
                             / runs.EXPOSURE)
        for n, v in rep["by_repeats"].items():
            assert (r[f"exposure_{n}x"], r[f"exposure_skewnorm_{n}x"]) == \
                (v["sampled"], v["skewnorm"])
    report = (out / "report.md").read_text()
    assert "### Canary exposure (train.canaries = 2:0,1,4)" in report
    assert "log2 |R| = 19.93 bits" in report and "log2(m + 1) = 6.02" in report
    assert "![canary exposure](figures/exposure.png)" in report
    assert (out / "figures" / "exposure.png").read_bytes()[:4] == b"\x89PNG"
    # the run measured again from its folder alone (--run-dir reads its canaries.json)
    assert main(["canaries", "--run-dir", str(run_dir), "--n-samples", "64",
                 "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    last = read_json(study_attack_dir(out, model, corpus, "lora", 2) / runs.EXPOSURE)
    for a, b in zip(again["canaries"], last["canaries"]):
        assert a["log_perplexity"] == pytest.approx(b["log_perplexity"], rel=1e-4)
