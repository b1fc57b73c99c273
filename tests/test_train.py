"""Partitions, training, checkpoints and resume."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CharTok, random_texts, tiny_hf_model, to_jaxmem
from jaxmem.optim import OptimConfig, make_optimizer
from jaxmem.train_step import make_train_step
from jaxmem.trainer import CheckpointError, TrainConfig, load_checkpoint, train
from jaxmem.tuning import init_method, method_config
from jaxmem.tuning.partition import FROZEN, TRAINABLE

METHODS = ["full", "head", "lora", "prefix", "prompt", "ptuning", "ia3"]


@pytest.fixture(scope="module")
def tiny():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


def _texts(n, seed=0):
    return random_texts(n, seed)


def _batch(cfg, b=4, t=16, a=1):
    ids = np.random.default_rng(0).integers(1, cfg.vocab_size, (a, b, t)).astype(np.int32)
    return jnp.asarray(ids), jnp.ones_like(jnp.asarray(ids))


@pytest.mark.parametrize("method", METHODS)
def test_step_changes_no_frozen_leaf_and_keeps_no_state_for_it(tiny, method):
    params, cfg = tiny
    params, labels = init_method(method, params, cfg, jax.random.PRNGKey(0))
    params = jax.tree.map(jnp.asarray, params)
    tx = make_optimizer(OptimConfig(lr=1e-2), labels, 10)
    opt_state = tx.init(params)
    before = jax.tree.map(np.asarray, params)
    step = make_train_step(cfg, tx, labels)
    new, opt_state, loss = step(params, opt_state, *_batch(cfg), jax.random.PRNGKey(1))
    changed = {TRAINABLE: 0, FROZEN: 0}
    for b, a, lab in zip(jax.tree.leaves(before), jax.tree.leaves(new), jax.tree.leaves(labels)):
        if lab == FROZEN:
            np.testing.assert_array_equal(a, b)
        changed[lab] += int(not np.array_equal(a, b))
    assert changed[TRAINABLE] > 0
    # optimizer state: Adam moments only for trainable leaves (+ scalar counts)
    n_trainable = sum(p.size for p, l in zip(jax.tree.leaves(before), jax.tree.leaves(labels))
                      if l == TRAINABLE)
    state_size = sum(x.size for x in jax.tree.leaves(opt_state) if x.ndim > 0)
    assert state_size == 2 * n_trainable


def test_grad_accumulation_equals_one_big_batch(tiny):
    params, cfg = tiny
    params, labels = init_method("lora", params, cfg, jax.random.PRNGKey(0))
    params = jax.tree.map(jnp.asarray, params)
    tx = make_optimizer(OptimConfig(lr=1e-2), labels, 10)
    ids, mask = _batch(cfg, b=4, t=16)
    mask = mask.at[0, 1, 9:].set(0)  # unequal token counts across micro-batches
    one = make_train_step(cfg, tx, labels)(jax.tree.map(jnp.copy, params), tx.init(params),
                                           ids, mask, jax.random.PRNGKey(0))
    two = make_train_step(cfg, tx, labels)(jax.tree.map(jnp.copy, params), tx.init(params),
                                           ids.reshape(2, 2, 16), mask.reshape(2, 2, 16),
                                           jax.random.PRNGKey(0))
    assert abs(float(one[2]) - float(two[2])) < 1e-6
    for a, b in zip(jax.tree.leaves(one[0]), jax.tree.leaves(two[0])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_resume_is_identical_to_uninterrupted(tiny, tmp_path):
    params, cfg = tiny
    texts, val = _texts(24), _texts(6, seed=1)
    tcfg = TrainConfig(epochs=3, batch_size=4, block_size=48, optim=OptimConfig(lr=1e-2))
    full = train(params, cfg, CharTok(), "lora:dropout=0.1", texts, val, tmp_path / "a", tcfg,
                 progress=False)
    train(params, cfg, CharTok(), "lora:dropout=0.1", texts, val, tmp_path / "b", tcfg,
          progress=False, stop_after_epoch=1)
    resumed = train(params, cfg, CharTok(), "lora:dropout=0.1", texts, val, tmp_path / "b",
                    tcfg, progress=False)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    loaded, _ = load_checkpoint(tmp_path / "b", params, cfg)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    log = [json.loads(l) for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert {"loss", "step"} <= set(log[1]) and any("val_ppl" in r for r in log)


def test_truncated_checkpoint_is_refused(tiny, tmp_path):
    params, cfg = tiny
    tcfg = TrainConfig(epochs=2, batch_size=4, block_size=48)
    train(params, cfg, CharTok(), "prompt", _texts(8), _texts(4, 1), tmp_path, tcfg,
          progress=False, stop_after_epoch=1)
    ckpt = tmp_path / "checkpoints" / "epoch_001"
    for f in sorted(p for p in ckpt.rglob("*") if p.is_file())[: 3]:
        f.write_bytes(b"")  # truncate files
    shutil.rmtree(next(p for p in ckpt.iterdir() if p.is_dir()))
    with pytest.raises(CheckpointError, match="truncated or was written for another"):
        train(params, cfg, CharTok(), "prompt", _texts(8), _texts(4, 1), tmp_path, tcfg,
              progress=False)


def test_other_run_in_directory_is_refused(tiny, tmp_path):
    params, cfg = tiny
    tcfg = TrainConfig(epochs=1, batch_size=4, block_size=48)
    train(params, cfg, CharTok(), "prompt", _texts(8), _texts(4, 1), tmp_path, tcfg,
          progress=False)
    with pytest.raises(CheckpointError, match="holds a different run.*method"):
        train(params, cfg, CharTok(), "lora", _texts(8), _texts(4, 1), tmp_path, tcfg,
              progress=False)
    r = train(params, cfg, CharTok(), "lora", _texts(8), _texts(4, 1), tmp_path, tcfg,
              progress=False, overwrite=True)
    assert len(r.history) == 1


def test_run_started_before_new_options_resumes_with_their_defaults(tiny, tmp_path):
    """A run.json written before options existed (here: train.dp, the prefix's init and
    init_text, a model field) resumes when they keep their defaults, and is refused when not."""
    params, cfg = tiny
    tcfg = TrainConfig(epochs=2, batch_size=4, block_size=48)
    args = (params, cfg, CharTok(), "prefix", _texts(8), _texts(4, 1), tmp_path)
    train(*args, tcfg, progress=False, stop_after_epoch=1)
    spec = json.loads((tmp_path / "run.json").read_text())
    del spec["train"]["dp"], spec["method"]["init"], spec["method"]["init_text"]
    from jaxmem.runs import field_defaults
    added = next(k for k in field_defaults(type(cfg)) if k in spec["model_config"])
    del spec["model_config"][added]
    (tmp_path / "run.json").write_text(json.dumps(spec))
    stamp = (tmp_path / "checkpoints" / "epoch_001").stat().st_mtime_ns
    r = train(*args, tcfg, progress=False)
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert (tmp_path / "checkpoints" / "epoch_001").stat().st_mtime_ns == stamp  # kept
    assert "init" in json.loads((tmp_path / "run.json").read_text())["method"]
    (tmp_path / "run.json").write_text(json.dumps(spec))  # old again; now asked with DP on
    with pytest.raises(CheckpointError, match="holds a different run.*train"):
        train(*args, TrainConfig(epochs=2, batch_size=4, block_size=48, dp="epsilon=8"),
              progress=False)


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny, tmp_path):
    """Epoch 1 on good weights, then the run resumes on poisoned base weights: NaN at once."""
    params, cfg = tiny
    tcfg = TrainConfig(epochs=3, batch_size=4, block_size=48)
    train(params, cfg, CharTok(), "prompt", _texts(8), _texts(4, 1), tmp_path, tcfg,
          progress=False, stop_after_epoch=1)
    bad = jax.tree.map(lambda x: x, params)
    bad["final_norm"]["scale"] = np.full_like(params["final_norm"]["scale"], np.nan)
    with pytest.raises(FloatingPointError, match="last good checkpoint is epoch 1"):
        train(bad, cfg, CharTok(), "prompt", _texts(8), _texts(4, 1), tmp_path, tcfg,
              progress=False)
    assert (tmp_path / "checkpoints" / "epoch_001.json").exists()
    assert not (tmp_path / "checkpoints" / "epoch_002.json").exists()


def test_bad_input(tiny, tmp_path):
    params, cfg = tiny
    with pytest.raises(ValueError, match="Unknown fine-tuning method 'dora'"):
        method_config("dora")
    with pytest.raises(ValueError, match="matches no layer"):
        init_method(method_config("lora", target=("nonexistent_proj",)), params, cfg)
    with pytest.raises(ValueError, match=r"LoraConfig.r \(lora:r=\) must be a positive integer"):
        method_config("lora", r=0)
    with pytest.raises(ValueError, match="leave no room"):
        init_method(method_config("prefix", num_virtual_tokens=cfg.max_positions), params, cfg)
    with pytest.raises(ValueError, match="empty"):
        train(params, cfg, CharTok(), "lora", [], ["x"], tmp_path, progress=False)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        train(params, cfg, CharTok(), "lora", ["ab"], ["x"], tmp_path,
              TrainConfig(block_size=cfg.max_positions + 1), progress=False)


def test_device_arrays_passed_in_survive_training(tiny, tmp_path):
    """The step donates its buffers; a caller's device-resident base must stay usable."""
    params, cfg = tiny
    on_device = jax.device_put(params)
    tcfg = TrainConfig(epochs=1, batch_size=4, block_size=32)
    for run in ("a", "b"):  # the second run would meet deleted arrays without the copy
        train(on_device, cfg, CharTok(), "full", _texts(8), _texts(4, 1), tmp_path / run, tcfg,
              progress=False)
    np.testing.assert_array_equal(np.asarray(on_device["wte"]), params["wte"])
