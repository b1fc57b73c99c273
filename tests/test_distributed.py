"""The library on a mesh and across processes gives what it gives on one device.

``tests/sharded_worker.py`` runs ``train`` / ``load_checkpoint`` / ``score_texts`` in
subprocesses: once with 8 CPU devices in one process (4 x 2 and 2 x 4 meshes), and once as two
processes with 2 CPU devices each joined by ``jax.distributed`` (gloo), training into one shared
run directory. This process computes the single-device references with the same code and data.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import sharded_worker as W
from jaxmem.scoring import score_texts
from jaxmem.trainer import train

HERE = Path(__file__).parent


def _env(n_devices: int) -> dict:
    flags = os.environ.get("XLA_FLAGS", "") + (f" --xla_force_host_platform_device_count="
                                               f"{n_devices} --xla_backend_optimization_level=0")
    return {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu",
            "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}


def _check(proc, what, timeout=300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{what} failed:\n{out[-2000:]}\n{err[-6000:]}"
    return out


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """Runs both worker modes, the 8-device one first, then the two processes together (less
    contention on 2 cores than all three at once); returns the folder of their results."""
    d = tmp_path_factory.mktemp("distributed")
    worker = str(HERE / "sharded_worker.py")
    run = lambda args, n: subprocess.Popen(  # noqa: E731
        [sys.executable, worker, *args], env=_env(n), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    _check(run(["mesh", str(d)], 8), "mesh")
    # The pair (jax.distributed over gloo) hung now and then on the 2-core VM (2026-12-07: a
    # deadlock, ~1 run in 5, cause not found; a pass takes ~30 s). A hang, and only a hang, is
    # retried once on a fresh port; a failure or a wrong result fails at once.
    for attempt in (1, 2):
        with socket.socket() as s:  # a free port for the coordinator
            s.bind(("localhost", 0))
            port = str(s.getsockname()[1])
        procs = [(f"process {i}", run(["multihost", str(d), str(i), "2", port], 2))
                 for i in (0, 1)]
        try:
            for what, p in procs:
                _check(p, what, timeout=150)
            break
        except subprocess.TimeoutExpired:
            for _, p in procs:
                p.kill()
                p.communicate()
            if attempt == 2:
                raise
            warnings.warn("the two-process pair hung; retrying it once")
            shutil.rmtree(d / "lora_multihost", ignore_errors=True)
    return d


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Single-device runs of the same trainings and scoring, in this process."""
    d = tmp_path_factory.mktemp("single")
    base = W.base_params()
    ref = {}
    for method in ("lora", "full"):
        r = train(base, W.CFG, W.CharTok(), method, W.TRAIN, W.VAL, d / method, W.TCFG,
                  progress=False)
        ref[method] = (W.trainable_arrays(r.params, r.labels), r.history)
    ref["score"] = score_texts(base, W.CFG, W.CharTok(), W.SCORE, batch_size=3, block_size=48)
    return ref


def _load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _assert_params_close(got: dict, want: dict, rtol=1e-4, atol=1e-6):
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=k)


def _assert_history_close(got: list, want: list):
    assert [h["epoch"] for h in got] == [h["epoch"] for h in want]
    for g, w in zip(got, want):
        for k in ("train_loss", "val_loss"):
            assert abs(g[k] - w[k]) < 1e-5 * abs(w[k]), (k, g, w)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_train_on_4x2_mesh_equals_one_device(out_dir, reference, method):
    want, history = reference[method]
    moved = max(np.abs(v - W.trainable_arrays(*_base_with_labels(method))[k]).max()
                for k, v in want.items())
    assert moved > 1e-3  # training did change the weights
    _assert_params_close(_load(out_dir / f"{method}_4x2_params.npz"), want)
    _assert_history_close(json.loads((out_dir / f"{method}_4x2_history.json").read_text()),
                          history)


def _base_with_labels(method):
    from jaxmem.tuning import init_method

    key = jax.random.fold_in(jax.random.PRNGKey(W.TCFG.seed), 1)
    return init_method(method, W.base_params(), W.CFG, key, W.CharTok())


def test_weights_are_sharded_and_adapters_replicated(out_dir):
    info = json.loads((out_dir / "info_mesh.json").read_text())
    assert info["devices"] == 8
    for method in ("lora", "full"):
        assert "P()" in info[f"{method}_specs"]
        assert any("fsdp" in s for s in info[f"{method}_specs"])


def test_run_stopped_on_4x2_resumes_on_2x4(out_dir, reference):
    want, history = reference["lora"]
    _assert_params_close(_load(out_dir / "lora_resumed_params.npz"), want)
    _assert_history_close(json.loads((out_dir / "lora_resumed_history.json").read_text()),
                          history)
    # the resumed run's log holds epoch 1 from the first leg and epoch 2 from the second
    log = [json.loads(x) for x in (out_dir / "lora_resumed" / "log.jsonl").read_text().split("\n")
           if x]
    assert [r["epoch"] for r in log if "val_loss" in r and "step" not in r] == [0, 1, 2]


@pytest.mark.parametrize("target", ["2x4", "single"])
def test_checkpoint_from_4x2_loads_onto_other_layouts(out_dir, target):
    want = _load(out_dir / "full_4x2_params.npz")
    got = _load(out_dir / f"full_loaded_{target}_params.npz")
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("name", ["score_4x2", "score_multihost", "score_multihost_mixed"])
def test_sharded_scoring_equals_one_device(out_dir, reference, name):
    want, got = reference["score"], _load(out_dir / f"{name}_stats.npz")
    np.testing.assert_array_equal(got["mask"], want.mask)
    for k in ("logp", "mu", "sigma"):
        np.testing.assert_allclose(got[k][want.mask], getattr(want, k)[want.mask], rtol=1e-5,
                                   atol=1e-5, err_msg=k)


def test_batch_that_does_not_split_over_the_mesh_is_refused(out_dir):
    msg = json.loads((out_dir / "info_mesh.json").read_text())["bad_batch_error"]
    assert "batch_size 6" in msg and "multiple of 8" in msg


def test_two_processes_train_as_one_device(out_dir, reference):
    want, history = reference["lora"]
    _assert_params_close(_load(out_dir / "lora_multihost_params.npz"), want)
    _assert_history_close(json.loads((out_dir / "lora_multihost_history.json").read_text()),
                          history)


def test_two_processes_write_once_and_both_see_all_results(out_dir):
    info = [json.loads((out_dir / f).read_text())
            for f in ("info_multihost.json", "info_multihost_1.json")]
    assert info[0]["processes"] == 2 and info[0]["devices"] == 4 and info[0]["local_devices"] == 2
    assert info[0]["mixed_mesh_processes"] == [0, 1, 0, 1]
    assert info[0]["nll_sum_process_0"] == pytest.approx(info[1]["nll_sum_process_1"], rel=1e-6)
    run = out_dir / "lora_multihost"
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().split("\n") if x]
    steps = [r["step"] for r in log if "step" in r]
    assert steps == sorted(set(steps)) and len(steps) == 2 * 3  # each step logged once
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch_*.json")) == [
        "epoch_001.json", "epoch_002.json"]
    assert json.loads((run / "run.json").read_text())["n_train"] == len(W.TRAIN)


def test_cli_study_on_a_mesh_equals_one_device(tmp_path):
    """``jaxmem study --mesh 4x2`` (8 devices) gives the single-device study's numbers."""
    import yaml

    from conftest import save_tiny_tokenizer, tiny_hf_model
    from jaxmem.study import StudyConfig, run_study

    model_dir = tmp_path / "model"
    tiny_hf_model("llama", num_key_value_heads=2).save_pretrained(model_dir)
    save_tiny_tokenizer(model_dir)
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(f"w{i}" for i in rng.integers(0, 90, rng.integers(8, 20)))
                                  for _ in range(80)))
    spec = dict(name="mesh", models=[str(model_dir)], datasets=[str(corpus)], methods=["lora"],
                lr={"lora": 1e-2}, n_train=24, n_validation=8, n_members=16, n_nonmembers=16,
                train=dict(epochs=1, batch_size=8, block_size=32),
                audit=dict(batch_size=8, block_size=32, n_boot=20, attacks=["loss", "ref"]))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "jaxmem.cli", "study", str(tmp_path / "study.yaml"),
                           "--out-dir", str(tmp_path / "sharded"), "--mesh", "4x2"],
                          env=_env(8), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "mesh: {'data': 4, 'fsdp': 2} over 8 devices" in proc.stderr
    want = run_study(StudyConfig.from_dict(spec), tmp_path / "single", progress=False)
    got = json.loads((tmp_path / "sharded" / "results.json").read_text())
    assert len(got) == len(want) == 2 * 2  # (base, lora epoch 1) x (loss, ref)
    key = lambda r: (r["method"], r["epoch"], r["attack"])  # noqa: E731
    for g, w in zip(sorted(got, key=key), sorted(want, key=key)):
        assert key(g) == key(w)
        assert g["val_loss"] == pytest.approx(w["val_loss"], rel=1e-5)
        assert g["auc"] == pytest.approx(w["auc"], abs=1e-9)  # ranks survive float32 noise
    assert (tmp_path / "sharded" / "report.md").exists()


def test_cli_two_processes_from_environment(tmp_path):
    """``jaxmem score --distributed`` in two processes joined through JAX_* variables writes
    the single-process scores, once."""
    from conftest import save_tiny_tokenizer, tiny_hf_model

    model_dir = tmp_path / "model"
    tiny_hf_model("gpt2").save_pretrained(model_dir)
    save_tiny_tokenizer(model_dir)
    rng = np.random.default_rng(1)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n\n".join(" ".join(f"w{i}" for i in rng.integers(0, 90, rng.integers(5, 30)))
                                 for _ in range(9)))
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    cmd = lambda out: [sys.executable, "-m", "jaxmem.cli", "score", str(texts), "--model",  # noqa: E731
                       str(model_dir), "--batch-size", "4", "--out", str(out)]
    procs = [subprocess.Popen(cmd(tmp_path / "two.csv") + ["--distributed"], env={
        **_env(1), "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in (1, 0)]
    outs = [_check(p, "jaxmem score --distributed") for p in procs]
    single = subprocess.run(cmd(tmp_path / "one.csv"), env=_env(1), capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "corpus perplexity" in outs[1] and "corpus perplexity" not in outs[0]  # one writer
    import csv

    rows = [list(csv.DictReader(open(tmp_path / f))) for f in ("two.csv", "one.csv")]
    assert len(rows[0]) == len(rows[1]) == 9
    for a, b in zip(*rows):
        assert a["n_tokens"] == b["n_tokens"]
        assert float(a["nll"]) == pytest.approx(float(b["nll"]), rel=1e-5)
