"""jaxmem plan (jaxmem.capacity) and the compile-only memory pass (jaxmem.step_memory)."""

import sys
from pathlib import Path

import pytest

from jaxmem.capacity import (DEVICES, forward_flops, model_config_for, plan_rows,
                             train_flops)
from jaxmem.cli import main
from jaxmem.models import ModelConfig
from jaxmem.step_memory import mesh_devices, sliced_memory, step_memory
from jaxmem.study import StudyConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(arch="llama", vocab_size=128, d_model=32, n_layers=8, n_heads=4,
                   n_kv_heads=2, d_ff=64, max_positions=64)


def test_flops_are_the_benchmarks():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import bench_common
        import bench_training
    finally:
        sys.path.pop(0)
    cfg = model_config_for("llama-2-7b")
    assert forward_flops(cfg, 4096, 512) == bench_common.forward_flops(cfg, 4096, 512)
    for method in ("full", "lora", "prefix"):
        assert train_flops(cfg, method, 8, 512, 4_194_304) == pytest.approx(
            bench_training.train_flops(cfg, method, 8, 512, 4_194_304))


def test_known_configs_and_meshes():
    assert model_config_for("llama-2-7b").n_layers == 32
    assert model_config_for("gpt2-xl").d_model == 1600
    assert DEVICES["h200"].memory_gib == 141
    assert [mesh_devices(m) for m in ("1", "x8", "4x2")] == [1, 8, 8]
    with pytest.raises(ValueError, match="sizes"):
        mesh_devices("auto")


def test_slice_extrapolation_matches_a_full_compile():
    kw = dict(batch=2, seq_len=16, remat="full")
    full, sliced = step_memory(TINY, "lora", **kw), sliced_memory(TINY, "lora", **kw)
    for k in ("params", "optimizer", "gradients", "trainable"):
        assert sliced[k] == full[k]
    assert sliced["total"] == pytest.approx(full["total"], rel=0.05)


def test_plan_rows_without_memory():
    scfg = StudyConfig.from_yaml(ROOT / "experiments/paper/table2.yaml")
    rows = plan_rows(scfg, "h100", "x8", memory="none")
    assert len(rows) == 3 * 5 and all(r["hours"] > 0 for r in rows)
    assert {r["fits"] for r in rows} == {"not measured"}


def test_plan_command_on_a_paper_config(capsys):
    rc = main(["plan", str(ROOT / "experiments/paper/table4.yaml"), "--device", "tpu-v5p",
               "--mesh", "x8", "--set", "methods=[lora]", "--remat", "full"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "40% of the bf16 peak" in out and "| llama-2-7b | webnlg | lora |" in out


def test_plan_refuses_what_does_not_fit(capsys):
    rc = main(["plan", str(ROOT / "experiments/paper/table4.yaml"), "--device", "tpu-v5e",
               "--set", "methods=[full]", "--set", "datasets=[webnlg]", "--remat", "none"])
    out = capsys.readouterr().out
    assert rc == 2 and "do not fit" in out
