"""Flags made from config dataclasses, the one dtype spelling, the public top level."""

import argparse

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem.audit import AuditConfig
from jaxmem.config import (add_dataclass_args, dataclass_from_args, dtype_name, iter_fields,
                           jnp_dtype)
from jaxmem.trainer import TrainConfig


def _parser(cls, **kw):
    p = argparse.ArgumentParser()
    names = add_dataclass_args(p, cls, **kw)
    return p, names


@pytest.mark.parametrize("cls,meta", [(TrainConfig, None), (AuditConfig, None)])
def test_a_flag_with_help_for_every_field(cls, meta):
    p, names = _parser(cls, meta=meta)
    assert names == [n for n, _, _ in iter_fields(cls)]
    by_dest = {a.dest: a for a in p._actions if a.help != argparse.SUPPRESS}
    for name in names:
        action = by_dest[name]
        assert action.option_strings[0].startswith("--"), name
        assert action.help and "(default: " in action.help, name
    # nothing given: the dataclass's own defaults
    assert dataclass_from_args(cls, p.parse_args([])) == cls()


def test_a_dataclass_without_help_is_refused():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Bare:
        lr: float = 1e-4

    with pytest.raises(ValueError, match="lr has no help text"):
        _parser(Bare)


def test_flags_parse_to_the_field_types():
    p, _ = _parser(TrainConfig)
    tcfg = dataclass_from_args(TrainConfig, p.parse_args(
        ["--epochs", "2", "--lr", "1e-3", "--block-size", "64", "--dtype", "bfloat16",
         "--schedule", "cosine", "--grad-clip", "0", "--warmup-steps", "5"]))
    assert (tcfg.epochs, tcfg.block_size, tcfg.dtype) == (2, 64, "bfloat16")
    assert tcfg.optim.lr == 1e-3 and tcfg.optim.schedule == "cosine"
    assert tcfg.optim.grad_clip is None and tcfg.optim.warmup_steps == 5  # 0 disables clipping
    assert dataclass_from_args(TrainConfig, p.parse_args(["--grad-clip", "0.5"])).optim.grad_clip == 0.5
    with pytest.raises(SystemExit):
        p.parse_args(["--schedule", "exponential"])  # choices are checked
    with pytest.raises(SystemExit):
        p.parse_args(["--epochs", "two"])
    a, _ = _parser(AuditConfig)
    acfg = dataclass_from_args(AuditConfig, a.parse_args(["--attacks", "loss, ref,min_k:0.1",
                                                          "--nan-policy", "drop"]))
    assert acfg.attacks == ("loss", "ref", "min_k:0.1") and acfg.nan_policy == "drop"


def test_one_spelling_per_flag(capsys):
    """No deprecated spellings: --max-length and Adam's --eps are gone (--block-size,
    --adam-eps, which no longer reads like --dp epsilon=)."""
    p, _ = _parser(TrainConfig)
    tcfg = dataclass_from_args(TrainConfig, p.parse_args(["--block-size", "96", "--adam-eps",
                                                          "1e-6"]))
    assert tcfg.block_size == 96 and tcfg.optim.eps == 1e-6
    for old in (["--max-length", "96"], ["--eps", "1e-6"]):
        with pytest.raises(SystemExit):
            p.parse_args(old)
    assert "unrecognized arguments" in capsys.readouterr().err


def test_command_defaults_and_subsets():
    p, names = _parser(AuditConfig, only=("block_size", "batch_size", "dtype"),
                       defaults={"block_size": None, "batch_size": 8})
    assert names == ["block_size", "batch_size", "dtype"]
    args = p.parse_args([])
    assert (args.block_size, args.batch_size, args.dtype) == (None, 8, "float32")
    assert "(default: 8)" in p.format_help()


def test_cli_flags_of_the_readme():
    from jaxmem.cli.parser import build_parser

    p = build_parser()
    t = p.parse_args("train --method lora:r=16,alpha=32,target=all --corpus default --n-train 500 "
                     "--epochs 3 --lr 1e-3 --block-size 128 --run-dir runs/lora".split())
    assert dataclass_from_args(TrainConfig, t) == TrainConfig(
        epochs=3, block_size=128, optim=TrainConfig().optim.__class__(lr=1e-3))
    a = p.parse_args("attack --corpus default --n-members 200 --n-nonmembers 200 "
                     "--out-dir results/base-attack --seed 1".split())
    assert dataclass_from_args(AuditConfig, a) == AuditConfig(seed=1) and a.n_members == 200
    s = p.parse_args("score my_texts.txt --distributed --batch-size 4 --block-size 64".split())
    assert (s.batch_size, s.block_size, s.distributed) == (4, 64, True)
    st = p.parse_args("study experiments/demo.yaml --out-dir r --mesh auto "
                      "--set train.batch_size=16".split())
    assert st.set == ["train.batch_size=16"] and st.mesh == "auto"


def test_one_dtype_spelling():
    for x in ("bfloat16", jnp.bfloat16, np.dtype(jnp.bfloat16), jnp.dtype("bfloat16")):
        assert dtype_name(x) == "bfloat16"
    assert dtype_name(np.float32) == dtype_name(None) == "float32"
    assert jnp_dtype("float32") == jnp.float32 and jnp_dtype(jnp.bfloat16) == jnp.bfloat16
    with pytest.raises(ValueError, match="Unknown compute dtype"):
        dtype_name("float8")
    assert TrainConfig(dtype=jnp.bfloat16).dtype == "bfloat16"  # stored by name (JSON-able)
    assert AuditConfig(dtype=jnp.float32) == AuditConfig()


def test_public_top_level():
    import jaxmem
    from jaxmem import audit, data, scoring, study, trainer

    assert jaxmem.score_texts is scoring.score_texts and jaxmem.train is trainer.train
    assert "Example:" in jaxmem.train.__doc__ and trainer.TrainConfig is jaxmem.TrainConfig
    assert jaxmem.run_attacks is audit.run_attacks_on and jaxmem.run_study is study.run_study
    assert jaxmem.load_corpus is data.load_corpus and jaxmem.TokenStats is scoring.TokenStats
    for name in jaxmem.__all__:
        assert "Example:" in getattr(jaxmem, name).__doc__ or name.endswith(
            ("Config", "Stats", "corpus", "checkpoint")), name
    with pytest.raises(AttributeError):
        jaxmem.no_such_thing  # noqa: B018


def test_jit_pass_and_score_texts_return_the_same_type():
    import jax

    from jaxmem.models import ModelConfig, init_params
    from jaxmem.scoring import TokenStats, score_sequences, token_stats

    cfg = ModelConfig(arch="llama", vocab_size=64, d_model=32, n_layers=1, n_heads=2,
                      n_kv_heads=2, d_ff=64, max_positions=32)
    params = init_params(cfg, jax.random.PRNGKey(0))
    ids = np.arange(1, 9, dtype=np.int32)[None]
    raw = token_stats(params, cfg, ids, np.ones_like(ids), dtype=jnp.float32)
    done = score_sequences(params, cfg, [list(ids[0])], dtype="float32")
    assert isinstance(raw, TokenStats) and isinstance(done, TokenStats)
    np.testing.assert_allclose(np.asarray(raw.logp), done.logp, rtol=1e-6)
    assert float(raw.nll()[0]) == pytest.approx(float(done.nll()[0]), rel=1e-6)
