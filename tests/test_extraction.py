"""Verbatim extraction measures against plain float64 numpy loops over the full forward pass."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CharTok, tiny_hf_model, to_jaxmem
from jaxmem.extraction import (ExtractionConfig, discoverable_prob, extraction_metrics,
                               extraction_stats, sampling_log_px)
from jaxmem.generate import GenerateConfig, generate
from jaxmem.models import logits

P, S = 6, 5


@pytest.fixture(scope="module")
def model():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


def _reference(params, cfg, seqs, n_samples, p):
    """Greedy decoding and p_x by the full forward pass (no cache, no scoring module), float64."""
    rows = []
    for s in seqs:
        if len(s) < P + S:
            continue
        ids, mask = np.zeros((1, P + S), np.int32), np.zeros((1, P + S), np.int32)
        ids[0, :P], mask[0, :P] = s[:P], 1
        for t in range(P, P + S):  # greedy, one full pass per token (right padding: causal)
            z = np.asarray(logits(params, cfg, jnp.asarray(ids), jnp.asarray(mask)))
            ids[0, t], mask[0, t] = z[0, t - 1].argmax(), 1
        z = np.asarray(logits(params, cfg, jnp.asarray([list(s[:P + S])])), np.float64)[0]
        log_px = 0.0
        for t in range(P, P + S):  # log p(x_t | x_<t), from the logits at position t - 1
            row = z[t - 1]
            log_px += row[s[t]] - (row.max() + math.log(np.exp(row - row.max()).sum()))
        gen, true = ids[0, P:].tolist(), list(s[P:P + S])
        rows.append((gen == true, sum(a == b for a, b in zip(gen, true)) / S, log_px))
    extracted, match, log_px = map(np.array, zip(*rows))
    disc = {n: np.mean([1 - (1 - math.exp(lp)) ** n >= p for lp in log_px]) for n in n_samples}
    return extracted, match, log_px, disc


def test_measures_match_a_numpy_loop(model):
    params, cfg = model
    rng = np.random.default_rng(0)
    prompts = [[int(t) for t in rng.integers(1, cfg.vocab_size, P)] for _ in range(5)]
    greedy = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=S))
    seqs = [p + g.tolist() for p, g in zip(prompts, greedy)]  # extracted by construction
    seqs[1][-1] = (seqs[1][-1] + 1) % cfg.vocab_size  # one suffix token off: not extracted
    seqs[2][P] = (seqs[2][P] + 1) % cfg.vocab_size
    seqs += [[int(t) for t in rng.integers(1, cfg.vocab_size, n)] for n in (P + S, 20, 4)]
    # A random tiny model spreads its probability (p_x ~ 1e-10): put the n grid between the
    # texts' p_x, at n = ln 2 / (geometric mean of neighbours), so each n splits the texts.
    _, _, log_px, _ = _reference(params, cfg, seqs, (), 0.5)
    mid = np.exp(-(np.sort(log_px)[1:] + np.sort(log_px)[:-1]) / 2) * math.log(2)
    ecfg = ExtractionConfig(prefix_len=P, suffix_len=S, n_samples=(1, int(mid[1]), int(mid[4])),
                            p=0.5, batch_size=3)
    got = extraction_stats(params, cfg, seqs, ecfg)
    extracted, match, log_px, disc = _reference(params, cfg, seqs, ecfg.n_samples, ecfg.p)
    assert got["n_texts"] == 8 and got["n_skipped"] == 1 and got["n_evaluated"] == 7
    assert got["per_text"]["index"] == [0, 1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(got["per_text"]["extracted"], extracted)
    assert extracted[[0, 3, 4]].all() and not extracted[[1, 2]].any()
    np.testing.assert_allclose(got["per_text"]["token_match"], match)
    np.testing.assert_allclose(got["per_text"]["log_px"], log_px, rtol=1e-5)
    assert got["k_extractable_rate"] == pytest.approx(extracted.mean())
    assert got["token_match"] == pytest.approx(match.mean())
    for n in ecfg.n_samples:
        assert got["discoverable"][f"n={n},p=0.5"] == pytest.approx(disc[n])
    assert len(set(got["discoverable"].values())) == 3, got  # the grid is not vacuous here


def _log_q(row, temperature, top_k, top_p):
    """log of the sampling distribution from float64 logits [V]: transformers' warper order
    (temperature, top-k with ties kept, then top-p on the renormalized rest), by sorting."""
    z = row / temperature
    if top_k:
        z = np.where(z < np.sort(z)[::-1][top_k - 1], -np.inf, z)
    if top_p < 1:
        q = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        order = np.argsort(-z, kind="stable")
        before = 0.0
        for i in order:  # keep tokens until the ones before reach top_p
            if before >= top_p:
                z[i] = -np.inf
            before += q[i]
    finite = np.isfinite(z)
    out = np.full_like(z, -np.inf)
    out[finite] = z[finite] - (z[finite].max() + math.log(np.exp(z[finite] - z[finite].max())
                                                            .sum()))
    return out


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0),
                                                     (1.0, 40, 1.0), (1.3, 0, 0.6),
                                                     (0.8, 40, 0.9)])
def test_p_x_under_a_sampling_scheme_matches_a_numpy_loop(model, temperature, top_k, top_p):
    """p_x under temperature / top-k / top-p is the product of the renormalized truncated
    distribution's probabilities (0 when a suffix token is cut), computed by the full forward
    pass in float64; (n, p)-discoverable follows it, and plain settings give the scoring pass's
    p_x."""
    params, cfg = model
    rng = np.random.default_rng(1)
    prompts = [[int(t) for t in rng.integers(1, cfg.vocab_size, P)] for _ in range(4)]
    greedy = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=S))
    seqs = [p + g.tolist() for p, g in zip(prompts, greedy)]  # top-1 suffixes: never cut
    seqs += [[int(t) for t in rng.integers(1, cfg.vocab_size, P + S)] for _ in range(3)]
    want = []
    for s in seqs:
        z = np.asarray(logits(params, cfg, jnp.asarray([s])), np.float64)[0]
        want.append(sum(_log_q(z[t - 1], temperature, top_k, top_p)[s[t]]
                        for t in range(P, P + S)))
    ecfg = ExtractionConfig(prefix_len=P, suffix_len=S, n_samples=(1, 10**6), batch_size=3,
                            temperature=temperature, top_k=top_k, top_p=top_p)
    got = extraction_stats(params, cfg, seqs, ecfg)
    lp = np.array([-np.inf if v is None else v for v in got["per_text"]["log_px"]])
    np.testing.assert_array_equal(np.isneginf(lp), np.isneginf(want))
    np.testing.assert_allclose(lp, want, rtol=1e-5)
    assert got["n_px_zero"] == int(np.isneginf(want).sum())
    for n in ecfg.n_samples:
        assert got["discoverable"][f"n={n},p=0.5"] == pytest.approx(
            np.mean(discoverable_prob(np.array(want), n) >= 0.5))
    if ecfg.plain_sampling:  # the scoring pass gives it; the sampling path must agree
        fast = sampling_log_px(params, cfg, np.array(seqs, np.int32), ecfg)
        np.testing.assert_allclose(fast, want, rtol=1e-5)
    elif top_k or top_p < 1:
        assert np.isneginf(want).any() and np.isfinite(want).any()  # the cut is exercised


def test_discoverable_prob_is_exact_in_the_tails():
    lp = np.log(np.array([1.0, 0.5, 1e-12, 0.0 + 1e-300]))
    n = 1000
    ref = [1.0, 1 - 0.5 ** n, 1e-9 * (1 - 999 * 1e-12 / 2), 1e-297]
    np.testing.assert_allclose(discoverable_prob(lp, n), ref, rtol=1e-9)


def test_extraction_metrics_members_and_control(model):
    params, cfg = model
    ecfg = ExtractionConfig(prefix_len=4, suffix_len=3, n_samples=("1", "100"), batch_size=4)
    assert ecfg.n_samples == (1, 100)
    out = extraction_metrics(params, cfg, CharTok(), ["abcdefghij", "abc", "hello world"],
                             ["zyxwvutsrq"], ecfg)
    assert out["config"]["prefix_len"] == 4
    assert out["members"]["n_skipped"] == 1 and out["members"]["n_evaluated"] == 2
    assert out["nonmembers"]["n_evaluated"] == 1
    assert set(out["members"]["discoverable"]) == {"n=1,p=0.5", "n=100,p=0.5"}
    empty = extraction_metrics(params, cfg, CharTok(), ["ab"], ["cd"], ecfg)
    assert math.isnan(empty["members"]["k_extractable_rate"])


def test_bad_config_is_refused(model):
    params, cfg = model
    with pytest.raises(ValueError, match="prefix_len"):
        ExtractionConfig(prefix_len=0)
    with pytest.raises(ValueError, match="n_samples"):
        ExtractionConfig(n_samples=("ten",))
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        ExtractionConfig(p=1.5)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        extraction_stats(params, cfg, [[1] * 200], ExtractionConfig(prefix_len=100,
                                                                    suffix_len=100))


def test_cli_extract(tmp_path, capsys):
    """``jaxmem extract`` on a saved tiny model: a member file whose suffixes the model
    continues greedily is extracted, random non-members are not."""
    import json

    from conftest import save_tiny_tokenizer
    from jaxmem.cli import main

    model = tiny_hf_model("llama", num_key_value_heads=2)
    model.save_pretrained(tmp_path / "m")
    save_tiny_tokenizer(tmp_path / "m")
    params, cfg = to_jaxmem(model)
    rng = np.random.default_rng(0)
    prompts = [[int(t) for t in rng.integers(0, 96, 4)] for _ in range(3)]
    greedy = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=3))
    words = lambda ids: " ".join(f"w{i}" for i in ids)  # noqa: E731
    (tmp_path / "m.txt").write_text("\n".join(words(p + g.tolist())
                                              for p, g in zip(prompts, greedy)))
    (tmp_path / "n.txt").write_text("\n".join(words(rng.integers(0, 96, 7)) for _ in range(3)))
    out = tmp_path / "x.json"
    assert main(["extract", "--model", str(tmp_path / "m"), "--members", str(tmp_path / "m.txt"),
                 "--nonmembers", str(tmp_path / "n.txt"), "--prefix-len", "4",
                 "--suffix-len", "3", "--n-samples", "1,1000", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["members"]["k_extractable_rate"] == 1.0
    assert res["nonmembers"]["k_extractable_rate"] < 1.0
    assert "k_extractable_rate" in capsys.readouterr().out
    assert main(["extract", "--prefix-len", "0", "--members", "a", "--nonmembers", "b"]) == 2
