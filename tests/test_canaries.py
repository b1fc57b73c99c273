"""Canary exposure (The Secret Sharer) against plain float64 numpy loops over the full forward
pass, scipy's own skew-normal, and a tiny model that learns a repeated canary."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CharTok, random_texts, tiny_hf_model, to_jaxmem
from jaxmem.canaries import (Canaries, CanaryConfig, exposure_exact, exposure_report,
                             exposure_sampled, exposure_skewnorm, fit_skewnorm,
                             insert_canaries, log_perplexities)
from jaxmem.figures import plot_exposure
from jaxmem.models import logits

# 3 digits: |R| = 1000, small enough to enumerate
TINY = dict(template="pin {}{}{}.", exact_max=1000, batch_size=200)


@pytest.fixture(scope="module")
def model():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


def _px_reference(params, cfg, texts, n_prefix):
    """Px in bits by the full forward pass (no scoring module): float64 log-softmax, summed
    over the tokens after the first ``n_prefix``, one text at a time."""
    tok, out = CharTok(), []
    for t in texts:
        ids = tok([t])["input_ids"][0]
        z = np.asarray(logits(params, cfg, jnp.asarray([ids])), np.float64)[0]
        total = 0.0
        for i in range(n_prefix, len(ids)):  # log p(x_i | x_<i), from the logits at i - 1
            row = z[i - 1]
            total += row[ids[i]] - (row.max() + math.log(np.exp(row - row.max()).sum()))
        out.append(-total / math.log(2))
    return np.array(out)


def test_config_and_bad_input():
    c = CanaryConfig.from_spec("8:1,4,16")
    assert (c.n, c.repeats, c.spec, c.slots, c.space_size) == (8, (1, 4, 16), "8:1,4,16", 6,
                                                               10**6)
    assert c.secret_of(0) == "000000" and c.secret_of(10**6 - 1) == "999999"
    assert CanaryConfig(**TINY).secret_of(42) == "042"
    assert (c.prefix, CanaryConfig(template="user u{}{}").prefix) == ("my account number is",
                                                                      "user")
    for spec in ("8", "x:1", "8:", "8:1,a"):
        with pytest.raises(ValueError, match="N:REPEATS"):
            CanaryConfig.from_spec(spec)
    with pytest.raises(ValueError, match="distinct non-negative"):
        CanaryConfig.from_spec("8:1,1")
    with pytest.raises(ValueError, match="no {} slot"):
        CanaryConfig(template="no slot")
    for template in ("{} {}", "pin{}"):
        with pytest.raises(ValueError, match="fixed words before"):
            CanaryConfig(template=template)
    with pytest.raises(ValueError, match="alphabet"):
        CanaryConfig(alphabet="1")
    with pytest.raises(ValueError, match="n_samples"):
        CanaryConfig(n_samples=0)


def test_insert_is_deterministic_keeps_order_and_counts(tmp_path):
    train = [f"text {i}" for i in range(20)]
    ccfg = CanaryConfig.from_spec("3:0,1,4", **TINY)
    texts, can = insert_canaries(train, ccfg, seed=5)
    again, can2 = insert_canaries(train, ccfg, seed=5)
    assert texts == again and can == can2
    assert insert_canaries(train, ccfg, seed=6)[1].secrets != can.secrets
    assert [t for t in texts if t in train] == train  # originals kept, in order
    assert len(texts) == len(train) + 3 * (0 + 1 + 4) and len(set(can.secrets)) == 9
    for text, r in zip(can.texts, can.repeats):
        assert texts.count(text) == r
    assert can.repeats == [0, 0, 0, 1, 1, 1, 4, 4, 4]
    path = can.save(tmp_path / "canaries.json")
    assert Canaries.load(path) == can
    assert json.loads(path.read_text())["canaries"][3]["repeats"] == 1
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a canary record"):
        Canaries.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="holds only 1000 secrets"):
        insert_canaries(train, CanaryConfig.from_spec("600:1,2", **TINY))


def test_exact_exposure_is_the_definition(model):
    """Px of every secret of a 1000-secret space equals the full forward pass's, and the exact
    exposure equals log2 |R| - log2 rank counted by a plain loop."""
    params, cfg = model
    ccfg = CanaryConfig.from_spec("2:0,1", **TINY)
    _, can = insert_canaries([], ccfg, seed=0)
    every = [ccfg.secret_of(i) for i in range(1000)]
    px = log_perplexities(params, cfg, CharTok(), ccfg, every)
    ref = _px_reference(params, cfg, [ccfg.fill(s) for s in every[::37]], n_prefix=3)
    np.testing.assert_allclose(px[::37], ref, rtol=1e-5)
    rep = exposure_report(params, cfg, CharTok(), can)
    assert rep["estimators"] == ["exact", "sampled", "skewnorm"] and rep["space_size"] == 1000
    for row in rep["canaries"]:
        mine = px[every.index(row["secret"])]
        rank = sum(1 for q in px if q <= mine)  # the definition, by a loop
        assert row["exposure_exact"] == pytest.approx(math.log2(1000) - math.log2(rank))
        assert row["log_perplexity"] == pytest.approx(mine, rel=1e-5)
    # the sampled estimator over R minus the canary is the exact one
    for i in (0, 17, 999):
        assert exposure_sampled(np.delete(px, i), px[i:i + 1]) == pytest.approx(
            exposure_exact(px, px[i:i + 1]))


def test_sampled_estimate_is_close_to_exact(model):
    params, cfg = model
    ccfg = CanaryConfig.from_spec("8:0", n_samples=4000, **TINY)
    _, can = insert_canaries([], ccfg, seed=1)
    rep = exposure_report(params, cfg, CharTok(), can, seed=3)
    pairs = [(r["exposure_exact"], r["exposure_sampled"]) for r in rep["canaries"]]
    # a rank fraction p >= 1/32 estimated from 4000 samples: sd <= 0.13 bits
    assert all(abs(s - e) < 0.4 for e, s in pairs if e < 5)
    assert sum(e < 5 for e, _ in pairs) >= 4


def test_skewnorm_recovers_the_true_cdf():
    from scipy import stats

    true = (4.0, 20.0, 3.0)
    ref = stats.skewnorm.rvs(*true, size=20_000, random_state=np.random.default_rng(0))
    a, loc, scale = fit_skewnorm(ref)
    assert a == pytest.approx(4.0, rel=0.15) and loc == pytest.approx(20.0, abs=0.1)
    x = stats.skewnorm.ppf([1e-4, 1e-3, 0.01, 0.1, 0.5], *true)
    want = -np.log2([1e-4, 1e-3, 0.01, 0.1, 0.5])
    np.testing.assert_allclose(exposure_skewnorm((a, loc, scale), x), want, rtol=0.1)


@pytest.mark.slow  # training compiles and checkpoints: 30-60 s on 2 shared cores
def test_repeated_canary_gains_exposure(model, tmp_path):
    """A canary seen 16 times in training stands out; a never-inserted one does not."""
    from jaxmem.optim import OptimConfig
    from jaxmem.trainer import TrainConfig, train

    params, cfg = model
    ccfg = CanaryConfig.from_spec("2:0,16", **TINY)
    texts, can = insert_canaries(random_texts(16), ccfg, seed=0)
    tcfg = TrainConfig(epochs=2, batch_size=8, block_size=48, optim=OptimConfig(lr=1e-2))
    res = train(params, cfg, CharTok(), "full", texts, random_texts(4, seed=1), tmp_path / "r",
                tcfg, progress=False)
    rep = exposure_report(res.params, cfg, CharTok(), can)
    by = rep["by_repeats"]
    assert by["16"]["exact"] > 7 and by["16"]["exact"] > by["0"]["exact"] + 4
    assert by["16"]["sampled"] > by["0"]["sampled"] + 4
    plot_exposure({"full": rep, "base": exposure_report(params, cfg, CharTok(), can)},
                  tmp_path / "exposure.png")
    assert (tmp_path / "exposure.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_canaries(tmp_path, capsys):
    """``jaxmem canaries`` on a saved tiny model with a word-level tokenizer (w0..w95)."""
    from conftest import save_tiny_tokenizer
    from jaxmem.cli import main

    model = tiny_hf_model("llama", num_key_value_heads=2)
    model.save_pretrained(tmp_path / "m")
    save_tiny_tokenizer(tmp_path / "m")
    ccfg = CanaryConfig.from_spec("2:0,1", template="w1 w2 w{} w{}", n_samples=50)
    _, can = insert_canaries([], ccfg, seed=0)
    can.save(tmp_path / "c.json")
    out = tmp_path / "rep.json"
    assert main(["canaries", "--model", str(tmp_path / "m"), "--canaries-json",
                 str(tmp_path / "c.json"), "--n-samples", "30", "--out", str(out),
                 "--figure", str(tmp_path / "e.png")]) == 0
    rep = json.loads(out.read_text())
    assert rep["n_samples"] == 30 and rep["space_size"] == 100
    assert set(rep["by_repeats"]) == {"0", "1"} and "exact" in rep["estimators"]
    assert "|R| = 100" in capsys.readouterr().out and (tmp_path / "e.png").exists()
    assert main(["canaries", "--canaries-json", str(tmp_path / "missing.json")]) == 2
