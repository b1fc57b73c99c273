"""Training sanity and config types (issue 21): degenerate training stops like a NaN, canary
exposure survives a failed skew-normal fit, DP's delta is checked against n, stray epoch
markers are refused, YAML reads 1e-3 as a number, and a study's run time counts the session
that writes its report."""

import json
import math
import shutil
import time

import numpy as np
import pytest

from conftest import CharTok, random_texts, save_tiny_tokenizer, tiny_hf_model, to_jaxmem
from jaxmem import dp as dpsgd
from jaxmem import runs
from jaxmem.checkpointing import CheckpointError
from jaxmem.optim import OptimConfig
from jaxmem.study.folders import study_sessions
from jaxmem.trainer import TrainConfig, degenerate, load_checkpoint, train


@pytest.fixture(scope="module")
def tiny():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


@pytest.fixture(scope="module")
def learned(tiny, tmp_path_factory):
    """The tiny model after two epochs on texts of 9 characters: far below ln V (V = 97)."""
    params, cfg = tiny
    res = train(params, cfg, CharTok(), "full", random_texts(16), random_texts(4, 1),
                tmp_path_factory.mktemp("learn"),
                TrainConfig(epochs=2, batch_size=8, block_size=48,
                            optim=OptimConfig(lr=3e-2, schedule="constant")), progress=False)
    assert res.history[-1]["val_loss"] < math.log(cfg.vocab_size) - 1
    return res.params, cfg


def _tcfg(lr, epochs=2):
    return TrainConfig(epochs=epochs, batch_size=8, block_size=48, optim=OptimConfig(lr=lr))


# ----------------------------------------------------------------------------- degenerate lr

def test_huge_lr_collapsing_to_uniform_is_an_error(learned, tmp_path):
    """lr 1e30 saturates LoRA at the uniform distribution: the loss is ln V, never NaN."""
    params, cfg = learned
    with pytest.raises(FloatingPointError, match=r"ln 97, a uniform guess.*learning rate 1e\+30"
                                                 r".*no epoch had finished.*Lower the learning"):
        train(params, cfg, CharTok(), "lora", random_texts(16), random_texts(4, 1),
              tmp_path, _tcfg(1e30), progress=False)
    assert runs.finished_epochs(tmp_path) == []


def test_random_model_collapsing_exactly_to_uniform_is_an_error(tiny, tmp_path):
    """The issue's case: a random tiny model starts just below ln V (0.03), and lr 1e30 puts
    LoRA exactly on it (to float32 rounding)."""
    params, cfg = tiny
    with pytest.raises(FloatingPointError, match=r"ln 97, a uniform guess.*learning rate 1e\+30"):
        train(params, cfg, CharTok(), "lora", random_texts(16), random_texts(4, 1),
              tmp_path, _tcfg(1e30), progress=False)


def test_exploding_validation_loss_is_an_error(learned, tmp_path):
    params, cfg = learned
    with pytest.raises(FloatingPointError, match=r"exploded.*learning rate 1000"):
        train(params, cfg, CharTok(), "full", random_texts(16), random_texts(4, 1),
              tmp_path, _tcfg(1e3), progress=False)
    assert runs.finished_epochs(tmp_path) == []


def test_degenerate_epoch_keeps_the_last_good_checkpoint(learned, tmp_path, monkeypatch):
    """Epoch 1 trains well; epoch 2's validation reads ln V exactly: stop, keep epoch 1."""
    import jaxmem.trainer as T

    params, cfg = learned
    real, calls = T.validation_loss, []

    def validation(*a, **kw):  # the base model, epoch 1, then the collapse
        calls.append(1)
        return math.log(cfg.vocab_size) if len(calls) == 3 else real(*a, **kw)

    monkeypatch.setattr(T, "validation_loss", validation)
    with pytest.raises(FloatingPointError, match=r"epoch 2.*last good checkpoint is epoch 1"):
        train(params, cfg, CharTok(), "lora", random_texts(16), random_texts(4, 1), tmp_path,
              _tcfg(1e-3), progress=False)
    assert runs.finished_epochs(tmp_path) == [1]


def test_a_model_that_starts_at_uniform_is_not_degenerate():
    """Tiny random models start at about ln V: staying there is no collapse."""
    v = 97
    assert degenerate(math.log(v) - 2e-4, math.log(v) - 0.03, v) is None  # a random model
    assert degenerate(math.log(v), math.log(v) - 1e-4, v) is None  # started uniform (0 head)
    assert degenerate(math.log(v) - 1e-7, math.log(v) - 0.03, v) is not None  # collapsed
    assert degenerate(math.log(v), 2.0, v) is not None  # it had learned, then collapsed
    assert degenerate(3.5, 2.0, v) is None  # overfitting: worse, but not exploded
    assert degenerate(2.0 + math.log(2000), 2.0, v) is not None
    assert degenerate(float("nan"), 2.0, v) is not None


# ----------------------------------------------------------------------------- DP delta

def test_dp_delta_at_least_one_over_n_is_refused(tiny, tmp_path):
    params, cfg = tiny
    with pytest.raises(ValueError, match=r"delta=0.5 is at least 1/n = 1/16.*delta << 1/n.*"
                                         r"1/\(10 n\) = 0.00625 or 1e-5"):
        train(params, cfg, CharTok(), "lora", random_texts(16), random_texts(4, 1),
              tmp_path / "run", TrainConfig(epochs=1, batch_size=8, block_size=48,
                                            dp="epsilon=8,delta=0.5"), progress=False)
    assert not (tmp_path / "run").exists()  # refused before the folder was claimed
    dpsgd.check_delta(1e-5, 16)  # the usual choice passes
    with pytest.raises(ValueError, match="1/n"):
        dpsgd.check_delta(1 / 16, 16)


def test_study_refuses_dp_delta_before_any_work(tiny_setup, tmp_path):
    from jaxmem.study import StudyConfig, run_study

    model, corpus = tiny_setup
    cfg = StudyConfig.from_dict({"models": [model], "datasets": [corpus], "methods": ["lora"],
                                 "n_train": 16, "n_validation": 8, "n_members": 8,
                                 "n_nonmembers": 8, "train.block_size": 32,
                                 "audit.block_size": 32, "train.dp": "epsilon=8,delta=0.5"})
    with pytest.raises(ValueError, match="delta=0.5 is at least 1/n = 1/16"):
        run_study(cfg, tmp_path / "s", progress=False)
    assert not (tmp_path / "s" / "attacks").exists()


# ----------------------------------------------------------------------------- markers

def _two_epochs(tiny, run_dir, epochs=2, stop=None):
    params, cfg = tiny
    return train(params, cfg, CharTok(), "prompt", random_texts(8), random_texts(4, 1), run_dir,
                 TrainConfig(epochs=epochs, batch_size=4, block_size=48), progress=False,
                 stop_after_epoch=stop)


def test_stray_epoch_markers_are_refused_naming_the_file(tiny, tmp_path):
    params, cfg = tiny
    _two_epochs(tiny, tmp_path)
    ckpt = runs.checkpoint_dir(tmp_path)
    shutil.copy(ckpt / "epoch_002.json", ckpt / "epoch_009.json")  # beyond the 2 epochs
    shutil.copytree(ckpt / "epoch_002", ckpt / "epoch_009")
    with pytest.raises(CheckpointError, match=r"epoch_009.json.*trains 2 epochs.*Remove it"):
        load_checkpoint(tmp_path, params, cfg, CharTok())
    with pytest.raises(CheckpointError, match="epoch_009.json"):
        _two_epochs(tiny, tmp_path)  # resume
    (ckpt / "epoch_009.json").unlink()
    (ckpt / "epoch_final.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"epoch_final.json.*epoch_NNN.json"):
        runs.finished_epochs(tmp_path)
    (ckpt / "epoch_final.json").unlink()
    assert runs.finished_epochs(tmp_path) == [1, 2]


def test_a_copied_marker_within_the_epochs_is_refused(tiny, tmp_path):
    """A 3-epoch run killed after epoch 1, with epoch 1's marker and folder copied as epoch 2."""
    _two_epochs(tiny, tmp_path, epochs=3, stop=1)
    ckpt = runs.checkpoint_dir(tmp_path)
    shutil.copy(ckpt / "epoch_001.json", ckpt / "epoch_002.json")
    shutil.copytree(ckpt / "epoch_001", ckpt / "epoch_002")
    with pytest.raises(CheckpointError, match=r"epoch_002.json is not epoch 2's marker.*epoch 1"):
        _two_epochs(tiny, tmp_path, epochs=3)


# ----------------------------------------------------------------------------- YAML numbers

def test_yaml_reads_1e_minus_3_as_a_number(tmp_path):
    from jaxmem.study.frontier import load_frontier
    from jaxmem.study import StudyConfig

    f = tmp_path / "s.yaml"
    f.write_text("methods: [lora]\nlr: {lora: 1e-3}\ntrain: {optim: {weight_decay: 1E-2}}\n")
    cfg = StudyConfig.from_yaml(f, ["train.optim.lr=1e-4"])
    assert cfg.lr == {"lora": 1e-3} and cfg.lr_for("lora") == 1e-3
    assert cfg.train.optim.lr == 1e-4 and cfg.train.optim.weight_decay == 0.01
    with pytest.raises(ValueError, match="eps.*> 0.*-2e-08"):  # a number, refused as such
        StudyConfig.from_yaml(f, ["train.optim.eps=-2e-8"])
    f.write_text("methods: [lora]\nfrontier: {epsilons: [inf, 8], delta: 1e-5}\n")
    assert load_frontier(f)[1].delta == 1e-5
    with pytest.raises(ValueError, match="must be an integer"):  # 1e23 is a float, not a seed
        StudyConfig.from_yaml(None, ["train.seed=1e23"])
    # quoted, it stays text
    f.write_text("methods: [lora]\nlr: {lora: '1e-3'}\n")
    with pytest.raises(ValueError, match="learning rate"):
        StudyConfig.from_yaml(f)


def test_cli_set_reads_1e_minus_3_as_a_number(tmp_path, capsys):
    """--set train.optim.lr=1e-3 is accepted: the study goes on to the next check (here a
    folder of the user's, refused)."""
    from jaxmem.cli import main

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("my notes")
    assert main(["study", "--set", "train.optim.lr=1e-3", "--out-dir",
                 str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "OptimConfig.lr" not in err, err


# ----------------------------------------------------------------------------- canaries

def _canary_run(tmp_path):
    """A tiny GPT-2 whose word-level tokenizer knows none of the default template's words:
    every secret scores the same, which scipy's skew-normal cannot fit (the issue's case)."""
    from jaxmem.canaries import CanaryConfig, insert_canaries

    tiny_hf_model("gpt2").save_pretrained(tmp_path / "m")
    save_tiny_tokenizer(tmp_path / "m")
    _, can = insert_canaries([], CanaryConfig.from_spec("2:0,1,4", n_samples=50), seed=0)
    can.save(tmp_path / "c.json")
    return can


def test_canaries_fall_back_when_the_fit_fails(tmp_path, capsys):
    """The CLI on the issue's case: exit 0, the sampled exposure written, the note printed."""
    from jaxmem.cli import main

    _canary_run(tmp_path)
    out = tmp_path / "rep.json"
    assert main(["canaries", "--model", str(tmp_path / "m"), "--canaries-json",
                 str(tmp_path / "c.json"), "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["estimators"] == ["sampled"] and rep["skewnorm"] is None
    assert "falls back to the sampled estimate" in rep["note"]
    assert all(v["sampled"] is not None and "skewnorm" not in v
               for v in rep["by_repeats"].values())
    assert "skew-normal fit" in capsys.readouterr().err


@pytest.mark.parametrize("fit", ["raise", "nan"])
def test_exposure_report_falls_back_on_a_failed_or_non_finite_fit(tiny, monkeypatch, capsys,
                                                                   fit):
    import jaxmem.canaries as C

    def broken(px_ref):
        if fit == "raise":
            raise RuntimeError("Optimization converged outside the allowed range")
        return (np.nan, 0.0, 1.0)

    monkeypatch.setattr(C, "fit_skewnorm", broken)
    params, cfg = tiny
    _, can = C.insert_canaries([], C.CanaryConfig.from_spec(
        "2:0,1", template="pin {}{}{}.", exact_max=0, n_samples=40, batch_size=64), seed=0)
    rep = C.exposure_report(params, cfg, CharTok(), can)
    assert rep["estimators"] == ["sampled"] and rep["skewnorm"] is None
    assert ("RuntimeError" in rep["note"]) == (fit == "raise")
    assert all(r["exposure_sampled"] is not None for r in rep["canaries"])
    assert "warning: the skew-normal fit" in capsys.readouterr().err


# ----------------------------------------------------------------------------- run time

def test_report_run_time_counts_the_session_that_writes_it(tiny_setup, tmp_path):
    """A finished study resumed: the second session only writes the report, and counts."""
    from jaxmem.study import StudyConfig, run_study

    model, corpus = tiny_setup
    cfg = StudyConfig.from_dict({
        "name": "tiny", "models": [model], "datasets": [corpus], "methods": ["lora"],
        "n_train": 16, "n_validation": 8, "n_members": 8, "n_nonmembers": 8,
        "train.epochs": 1, "train.batch_size": 8, "train.block_size": 32,
        "audit.block_size": 32, "audit.n_boot": 0, "audit.attacks": ["loss"],
        "audit.blind": False})
    out = tmp_path / "s"
    run_study(cfg, out, progress=False)
    first = study_sessions(out)
    assert len(first) == 1
    time.sleep(1.1)  # sessions are named by the second they start
    run_study(cfg, out, progress=False)
    report = (out / "report.md").read_text()
    assert "over 2 sessions" in report
    total = float(report.split("Run time: ")[1].split(" min")[0])
    assert total >= round(sum(first.values()) / 60, 1)
