"""What a user sees: a study's plan before any model loads, what a rerun skips, scoring and
training progress, one-line warnings, and Ctrl-C ending the command at once with the hint."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import jaxmem.cli
import jaxmem.study.grid as grid
from jaxmem.progress import count_params, gguf_param_count
from jaxmem.study import StudyConfig, run_study
from jaxmem.study.folders import study_attack_dir
from jaxmem.study.grid import claim_study_folder
from jaxmem.study.plan import StudyPlan

INTERRUPTED = "resumes where it stopped"


def _cfg(model, corpus, **kw):
    d = {"name": "tiny", "models": [model], "datasets": [corpus], "methods": ["lora", "prompt"],
         "n_train": 24, "n_validation": 8, "n_members": 16, "n_nonmembers": 16,
         "train.epochs": 2, "train.batch_size": 8, "train.block_size": 32,
         "audit.block_size": 32, "audit.n_boot": 20, "audit.attacks": ["loss", "ref"]}
    d.update(kw)
    return StudyConfig.from_dict(d)


class Loaded(Exception):
    pass


def _no_model(*a, **k):
    raise Loaded  # the plan must be out before this


def test_plan_comes_before_any_model_loads(tiny_setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(grid, "load_model", _no_model)
    with pytest.raises(Loaded):
        run_study(_cfg(*tiny_setup, seeds=[0, 1]), tmp_path / "s", progress=True)
    err = capsys.readouterr().err
    # the base model + 2 methods x 2 seeds x 2 epochs
    assert "1 model x 1 dataset x 2 methods x 2 seeds, 2 epochs each: 9 cells" in err
    assert "24 train, 8 validation, 16 members + 16 non-members" in err
    assert "attacks: loss, ref" in err and "estimated time:" in err and "an estimate" in err
    assert "skipping" not in err


def test_a_resumed_study_says_what_it_skips(tiny_setup, tmp_path, capsys, monkeypatch):
    cfg, out = _cfg(*tiny_setup), tmp_path / "s"
    claim_study_folder(out, cfg, overwrite=False)
    for method, epoch in (("base", 0), ("lora", 1), ("lora", 2)):  # finished cells, as marked
        where = study_attack_dir(out, cfg.models[0], cfg.datasets[0], method, epoch)
        where.mkdir(parents=True)
        (where / "metrics.json").write_text(json.dumps({"info": {"val_loss": 1.0}}))
    monkeypatch.setattr(grid, "load_model", _no_model)
    with pytest.raises(Loaded):
        run_study(cfg, out, progress=True)
    assert "skipping 3 finished cells of 5" in capsys.readouterr().err
    plan = StudyPlan(cfg, out, flops=1e10)
    assert plan.n_done == 3 and 0 < plan.done_work < plan.total


def test_plan_work_weighs_training_and_counts_params(tiny_setup, tmp_path):
    import jax

    from jaxmem.models import load_model
    params = load_model(tiny_setup[0])[0]
    assert count_params(tiny_setup[0]) == sum(np.size(x) for x in jax.tree.leaves(params))
    plan = StudyPlan(_cfg(*tiny_setup, **{"train.epochs": 3, "attack_epochs": [1]}),
                     tmp_path / "s", flops=1e10)
    lora = [u for u in plan.units if u.method == "lora"]
    assert [(u.epoch, u.trains) for u in lora] == [(1, 3)]  # all 3 epochs lead to the last
    base = plan.units[0]
    assert lora[0].work > base.work > 0
    change = plan.refine(plan.units[0].model, plan.units[0].dataset, sizes={
        "n_train": 48, "n_validation": 8, "n_members": 16, "n_nonmembers": 16})
    assert change > 0  # twice the training texts: more work


def test_gguf_param_count_reads_the_header(tmp_path):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_block_count(1)
    w.add_token_list(["a", "b", "c"])
    w.add_tensor("token_embd.weight", np.zeros((3, 4), np.float32))
    w.add_tensor("output_norm.weight", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert gguf_param_count(tmp_path / "m.gguf") == 16


def test_a_resumed_run_says_what_it_skips(tmp_path, capsys):
    from jaxmem import tiny_model
    from jaxmem.trainer import TrainConfig, train

    params, cfg, tok = tiny_model()
    texts = [f"text number {i} of the tiny set" for i in range(8)]
    tcfg = TrainConfig(epochs=2, batch_size=4, block_size=48)
    train(params, cfg, tok, "lora", texts, texts[:2], tmp_path / "r", tcfg, progress=False,
          stop_after_epoch=1)
    train(params, cfg, tok, "lora", texts, texts[:2], tmp_path / "r", tcfg, progress=True)
    err = capsys.readouterr().err
    assert f"resuming {tmp_path / 'r'} after epoch 1 of 2" in err
    assert "lora epoch 2: train loss" in err


def test_the_command_shows_a_warning_as_one_line(monkeypatch, capsys):
    def warns(args):
        warnings.warn("3 of 8 texts are longer than 32 tokens;\n they are truncated.")
        warnings.warn("3 of 8 texts are longer than 32 tokens;\n they are truncated.")
        return 0

    monkeypatch.setattr(jaxmem.cli, "command", lambda name: warns)
    before = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert jaxmem.cli.main(["info", "smollm2-135m"]) == 0
    err = capsys.readouterr().err
    assert err == "warning: 3 of 8 texts are longer than 32 tokens; they are truncated.\n"
    assert warnings.showwarning is before  # library users keep Python's own format


def _interrupt(cmd, ready: str, timeout=240, **kw):
    """Starts ``cmd``, sends SIGINT once ``ready`` shows on stderr: (seconds to exit, rc, stderr)."""
    # a shell's background job (`cmd &`, as CI may run the suite) ignores SIGINT, and a child
    # inherits that; Python then never raises KeyboardInterrupt. The child gets the default back.
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)
    err, t0 = "", time.monotonic()
    for line in p.stderr:
        err += line
        if ready in line or time.monotonic() - t0 > timeout:
            break
    assert ready in err, err[-2000:]
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    err += p.stderr.read()
    rc = p.wait(timeout=60)
    return time.monotonic() - t, rc, err


def test_ctrl_c_ends_training_at_once_with_the_hint(tiny_setup, tmp_path):
    model, corpus = tiny_setup
    cmd = [sys.executable, "-m", "jaxmem.cli", "train", "--model", model, "--corpus", corpus,
           "--run-dir", str(tmp_path / "run"), "--method", "lora", "--epochs", "500",
           "--n-train", "40", "--n-validation", "8", "--block-size", "32", "--batch-size", "4"]
    seconds, rc, err = _interrupt(cmd, "lora epoch 1: train loss")
    assert rc == 130 and INTERRUPTED in err, err[-2000:]
    assert seconds < 10  # measured 0.1-0.5 s; generous for a loaded machine
    assert "Traceback" not in err


def test_ctrl_c_exits_even_when_python_cannot_answer(tmp_path):
    # the main thread stuck where Python's own handler never raises (a long XLA call): the
    # watcher prints the hint and exits after the grace
    script = tmp_path / "stuck.py"
    script.write_text(
        "import signal, sys, time\n"
        "from jaxmem.cli import _watch_interrupts\n"
        "_watch_interrupts({'hinted': False})\n"
        "signal.signal(signal.SIGINT, lambda *a: None)\n"
        "print('ready', file=sys.stderr, flush=True)\n"
        "time.sleep(60)\n")
    seconds, rc, err = _interrupt([sys.executable, str(script)], "ready")
    assert rc == 130 and INTERRUPTED in err
    assert seconds < 10  # the grace is jaxmem.cli.INTERRUPT_GRACE_S (1 s)


def test_a_tiny_study_shows_its_progress(tiny_setup, tmp_path, capsys):
    rows = run_study(_cfg(*tiny_setup, methods=["lora"], **{"train.epochs": 1}),
                     tmp_path / "s", progress=True)
    err = capsys.readouterr().err
    assert err.index("study 'tiny'") < err.index("scoring base model")
    assert "cell 1/2 base epoch 0: val ppl" in err and "loss AUC" in err
    assert "cell 2/2 lora epoch 1: val ppl" in err and "scoring target" in err
    assert "study: 100%" in err.replace("\r", "\n")
    assert {r["method"] for r in rows} == {"base", "lora"}
