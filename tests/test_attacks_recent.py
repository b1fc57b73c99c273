"""EZ-MIA, DC-PDD and ReCaLL against plain float64 Python loops, their inputs (the top-1 flag of
the scoring pass, the frequency table, the prefixed pass) and their refusals.

The references recompute every per-token value from the FULL logits of each sequence scored alone
(``jaxmem.models.logits``), log-softmaxed in float64 numpy, and then the paper's / the authors'
reference code's formula as explicit loops; the attacks under test read the masked, padded,
float32 ``TokenStats`` of batched scoring passes.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import CharTok, save_tiny_tokenizer, tiny_hf_model, to_jaxmem
from test_attacks import _model
from jaxmem import streaming as S
from jaxmem.attacks import (AttackInputs, needs, parse_attack, run_attacks, smoothed,
                            token_frequencies)
from jaxmem.attack_inputs import dcpdd_frequencies, recall_prefix
from jaxmem.audit import AuditConfig, run_attacks_on
from jaxmem.models import logits
from jaxmem.scoring import TokenStats, score_after_prefix, score_sequences, score_texts

LENGTHS = [5, 17, 2, 32, 9, 26, 3, 12]
RTOL = 1e-5
_logits = jax.jit(logits, static_argnames=("cfg", "dtype"))


@pytest.fixture(scope="module")
def target():
    return _model(seed=0)  # test_attacks' tiny Llama with peaked next-token distributions


@pytest.fixture(scope="module")
def reference_model():
    return _model(seed=1)


def _full_logp(params, cfg, seq):
    """float64 log-softmax [len(seq), V] of the sequence alone."""
    z = np.asarray(_logits(params, cfg, jnp.asarray([seq], jnp.int32)), np.float64)[0]
    out = np.empty_like(z)
    for t in range(len(seq)):
        m = z[t].max()
        out[t] = z[t] - (m + math.log(np.exp(z[t] - m).sum()))
    return out


@pytest.fixture(scope="module")
def seqs(target):
    """Random sequences, two of them continued greedily (so that some tokens are the target's
    top-1 prediction and the error zone is not every token)."""
    p, c = target
    rng = np.random.default_rng(0)
    out = [[int(x) for x in rng.integers(0, c.vocab_size, n)] for n in LENGTHS]
    for i in (1, 3):
        out[i] = out[i][:8]
        while len(out[i]) < LENGTHS[i]:
            out[i].append(int(np.argmax(_full_logp(p, c, out[i])[-1])))
            if len(out[i]) % 3 == 0:  # and a few random (probably wrong) tokens in between
                out[i].append(int(rng.integers(0, c.vocab_size)))
        out[i] = out[i][:LENGTHS[i]]
    return out


@pytest.fixture(scope="module")
def scored(target, reference_model, seqs):
    (p, c), (rp, rc) = target, reference_model
    return (score_sequences(p, c, seqs, batch_size=3),
            score_sequences(rp, rc, seqs, batch_size=3))


# ----------------------------------------------------------------------------- top-1 flag

def test_top1_flag_is_the_argmax_of_the_full_logits(target, seqs, scored):
    p, c = target
    stats = scored[0]
    assert stats.top1.dtype == bool and stats.top1.shape == stats.logp.shape
    n_top1 = 0
    for i, seq in enumerate(seqs):
        lp = _full_logp(p, c, seq)
        for t in range(len(seq) - 1):  # column t: token t+1 predicted from tokens 0..t
            want = int(np.argmax(lp[t])) == seq[t + 1]
            assert bool(stats.top1[i, t]) == want, (i, t)
            n_top1 += want
        assert not stats.top1[i, len(seq) - 1:].any()  # padding is never flagged
    assert 5 <= n_top1 < sum(n - 1 for n in LENGTHS)  # both kinds occur


def test_top1_comes_out_of_the_jitted_pass(target):
    from jaxmem.scoring import token_stats

    p, c = target
    ids = jnp.asarray([[3, 5, 7, 9]], jnp.int32)
    out = token_stats(p, c, ids, jnp.ones_like(ids))
    assert out.top1.dtype == jnp.bool_ and out.top1.shape == (1, 3)


# ----------------------------------------------------------------------------- EZ-MIA

def _ez_ref(t_lp, r_lp, seq):
    """The authors' ``error_zone_pos_neg_sum_ratio`` (ignore_bos=True, min_tokens=2) as a loop,
    plus this project's NaN for a text with no scored token and +inf (theirs: 0.0) where no
    error-zone delta is negative and some is positive."""
    n = len(seq) - 1
    if n == 0:
        return math.nan
    pos = neg = 0.0
    n_err = 0
    for t in range(1, n):  # the first scored token is left out (ignore_bos)
        if int(np.argmax(t_lp[t])) == seq[t + 1]:
            continue
        n_err += 1
        d = t_lp[t][seq[t + 1]] - r_lp[t][seq[t + 1]]
        if d > 0:
            pos += d
        elif d < 0:
            neg += -d
    if n_err < 2:
        return 0.0
    if neg == 0:
        return math.inf if pos > 0 else 0.0
    return pos / neg


def test_ez_mia_matches_float64_loop(target, reference_model, seqs, scored):
    (p, c), (rp, rc) = target, reference_model
    got = run_attacks(["ez_mia"], AttackInputs(target=scored[0], texts=[""] * len(seqs),
                                               reference=scored[1]))["ez_mia"]
    want = [_ez_ref(_full_logp(p, c, s), _full_logp(rp, rc, s), s) for s in seqs]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-7)
    assert (np.array(want) > 0).sum() >= 4  # not only the fallbacks
    assert got[LENGTHS.index(2)] == 0.0 and got[LENGTHS.index(3)] == 0.0  # < 2 error tokens


# ----------------------------------------------------------------------------- DC-PDD

def _dcpdd_ref(lp, seq, f, a):
    """The authors' ``cal_met`` DC-PDD as a loop, oriented higher = member."""
    ids, probs = seq[1:], [math.exp(lp[t][seq[t + 1]]) for t in range(len(seq) - 1)]
    if not ids:
        return math.nan
    seen, alphas = [], []
    for i, v in enumerate(ids):
        if v in seen:
            continue
        seen.append(v)
        alphas.append(min(probs[i] * math.log(1.0 / f[v]), a))
    return sum(alphas) / len(alphas)


@pytest.mark.parametrize("a", [0.01, 0.05, 1e9])
def test_dc_pdd_matches_float64_loop(target, seqs, scored, a):
    p, c = target
    counts = np.random.default_rng(1).integers(0, 50, c.vocab_size)
    f = smoothed(counts)
    spec = f"dc_pdd:{a}"
    got = run_attacks([spec], AttackInputs(target=scored[0], texts=[""] * len(seqs),
                                           frequencies=f))[parse_attack(spec)[0]]
    want = [_dcpdd_ref(_full_logp(p, c, s), s, f, a) for s in seqs]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-9)
    assert any(len(set(s[1:])) < len(s) - 1 for s in seqs)  # repeated tokens are exercised


def test_smoothing_and_counts_match_loops():
    counts = np.array([0, 3, 1, 0, 7])
    total = sum(counts.tolist()) + len(counts)
    assert smoothed(counts).tolist() == pytest.approx([(c + 1) / total for c in counts.tolist()])
    tok = CharTok()
    texts = ["abcab", "hello world", "", "zzz"]
    want = [0] * 97
    for t in texts:
        for i in tok(t)["input_ids"][:4]:  # max_tokens=4 cuts each text
            want[i] += 1
    assert token_frequencies(tok, texts, 97, max_tokens=4).tolist() == want
    with pytest.raises(ValueError, match="vocab_size"):
        token_frequencies(tok, texts, 20)


def test_dcpdd_table_leaves_out_audited_texts_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMEM_CACHE", str(tmp_path / "cache"))
    save_tiny_tokenizer(tmp_path / "tok")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    corpus = ["w1 w2 w3 w1", "w4 w5", "w6 w6 w6 w7", "w8"]
    (tmp_path / "corpus.txt").write_text("\n\n".join(corpus) + "\n")
    f = dcpdd_frequencies(tok, 97, str(tmp_path / "corpus.txt"),
                          exclude=["W4  w5", "not in the corpus"])  # matched once normalized
    want = smoothed(token_frequencies(tok, [corpus[0], corpus[2], corpus[3]], 97))
    np.testing.assert_array_equal(f, want)
    assert len(list((tmp_path / "cache" / "dcpdd").glob("*.npy"))) == 1
    again = dcpdd_frequencies(tok, 97, str(tmp_path / "corpus.txt"), exclude=["w4 w5"])
    np.testing.assert_array_equal(again, want)
    with pytest.raises(ValueError, match="Every text of the DC-PDD corpus"):
        dcpdd_frequencies(tok, 97, str(tmp_path / "corpus.txt"), exclude=corpus)


# ----------------------------------------------------------------------------- ReCaLL

def _mean_ll(lp, seq, start):
    """Mean log p of seq[start+1:], each from the tokens before it."""
    vals = [lp[t][seq[t + 1]] for t in range(start, len(seq) - 1)]
    return sum(vals) / len(vals) if vals else math.nan


def test_recall_matches_float64_loop(target):
    p, c = target
    tok = CharTok()
    texts = ["the cat sat on the mat", "x", "a member, perhaps", "zz top " * 6]
    prefix = "Held-out words of some other text."
    kw = dict(batch_size=3, block_size=48)
    inputs = AttackInputs(target=score_texts(p, c, tok, texts, **kw), texts=texts,
                          recall=score_after_prefix(p, c, tok, prefix, texts, **kw))
    assert inputs.recall.logp.shape == inputs.target.logp.shape
    np.testing.assert_array_equal(inputs.recall.mask, inputs.target.mask)
    np.testing.assert_array_equal(inputs.recall.token_ids, inputs.target.token_ids)
    got = run_attacks(["recall"], inputs)["recall"]
    pids = tok(prefix)["input_ids"]
    want = []
    for t in texts:
        x = tok(t)["input_ids"][:48]
        ll = _mean_ll(_full_logp(p, c, x), x, 0)
        # x's tokens 1.. after P: positions len(P) + 1.., predicted from len(P) + 0..
        ll_p = _mean_ll(_full_logp(p, c, pids + x), pids + x, len(pids))
        want.append(ll_p / ll)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    assert np.isnan(got[1]) and np.isfinite(got[[0, 2, 3]]).all()
    assert not np.allclose(got[[0, 2, 3]], 1.0)  # the prefix changes the likelihoods


def test_recall_prefix_is_cut_from_the_left_to_fit(target):
    p, c = target  # 128 positions
    tok = CharTok()
    prefix = "".join(chr(97 + i % 26) for i in range(100))
    texts = ["some text here", "more"]
    with pytest.warns(UserWarning, match="only 64 fit"):
        got = score_after_prefix(p, c, tok, prefix, texts, batch_size=2, block_size=64)
    want = score_after_prefix(p, c, tok, prefix[-64:], texts, batch_size=2, block_size=64)
    np.testing.assert_allclose(got.logp, want.logp, rtol=1e-6)
    with pytest.raises(ValueError, match="No room for a prefix"):
        score_after_prefix(p, c, tok, prefix, texts, block_size=128)
    with pytest.raises(ValueError, match="prefix is empty"):
        score_after_prefix(p, c, tok, "", texts, block_size=64)


def test_recall_prefix_sources(tmp_path):
    acfg = AuditConfig(recall_shots=2)
    assert recall_prefix(acfg, ["a", "b", "c"]) == "a\n\nb"
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                              for t in ["one", "two", "three"]))
    from_file = AuditConfig(recall_prefix=str(tmp_path / "p.jsonl"), recall_shots=2)
    assert recall_prefix(from_file, ["ignored"]) == "one\n\ntwo"
    with pytest.raises(ValueError, match="needs non-member texts for its prefix"):
        recall_prefix(acfg, None)
    with pytest.raises(ValueError, match="also one of the audited texts"):
        recall_prefix(acfg, ["a", "b"], audited=["x", "B"])
    with pytest.raises(ValueError, match="recall-prefix"):
        AuditConfig(recall_prefix=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="recall-shots"):
        AuditConfig(recall_shots=0)


# ----------------------------------------------------------------------------- conventions

def _stats(logp, top1=None, ids=None):
    logp = np.asarray(logp, np.float32)
    n, L = logp.shape
    return TokenStats(logp=logp, mu=np.zeros_like(logp), sigma=np.ones_like(logp),
                      mask=np.ones((n, L), bool),
                      token_ids=np.zeros((n, L), np.int32) if ids is None else ids,
                      truncated=np.zeros(n, bool),
                      top1=np.zeros((n, L), bool) if top1 is None else top1)


def test_members_score_higher():
    rng = np.random.default_rng(0)
    n, L = 20, 24
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    ref_lp = -3.0 + 0.2 * rng.standard_normal((2 * n, L))
    # members: the fine-tuned target raises even the tokens it still gets wrong (on balance:
    # a text with no lowered token at all would take the reference code's 0.0 fallback)
    lp = ref_lp + np.where(member[:, None], 0.5, 0.0) + 0.5 * rng.standard_normal((2 * n, L))
    ids = rng.integers(0, 50, (2 * n, L)).astype(np.int32)
    # conditioned on a non-member prefix, members lose more likelihood
    after = lp - np.where(member[:, None], 1.0, 0.1)
    inputs = AttackInputs(target=_stats(lp, ids=ids), texts=["t"] * (2 * n),
                          reference=_stats(ref_lp), recall=_stats(after),
                          frequencies=smoothed(np.ones(50)))
    out = run_attacks(["ez_mia", "dc_pdd:1", "recall"], inputs)
    for name, s in out.items():
        assert np.isfinite(s).all(), name
        assert s[member].min() > s[~member].max(), name


def test_missing_inputs_are_refused():
    inp = AttackInputs(target=_stats([[-1.0, -2.0, -1.0]]), texts=["t"])
    with pytest.raises(ValueError, match="reference model"):
        run_attacks(["ez_mia"], inp)
    no_top1 = _stats([[-1.0, -2.0, -1.0]])
    no_top1.top1 = None
    with pytest.raises(ValueError, match="top-1"):
        run_attacks(["ez_mia"], AttackInputs(target=no_top1, texts=["t"], reference=no_top1))
    with pytest.raises(ValueError, match="frequency table"):
        run_attacks(["dc_pdd"], inp)
    with pytest.raises(ValueError, match="outside the frequency table"):
        run_attacks(["dc_pdd"], AttackInputs(target=_stats([[-1.0]], ids=np.array([[9]])),
                                             texts=["t"], frequencies=smoothed(np.ones(5))))
    with pytest.raises(ValueError, match="recall_prefix"):
        run_attacks(["recall"], inp)
    with pytest.raises(ValueError):  # a recall pass of other texts
        run_attacks(["recall"], AttackInputs(target=_stats([[-1.0]] * 2), texts=["a", "b"],
                                             recall=_stats([[-1.0]])))


def test_specs_and_needs():
    assert parse_attack("dc_pdd")[0] == "dc_pdd:0.01"
    assert parse_attack("dc_pdd:0.050")[0] == "dc_pdd:0.05"
    for bad in ("dc_pdd:0", "dc_pdd:-1", "dc_pdd:x"):
        with pytest.raises(ValueError, match="a must be"):
            parse_attack(bad)
    for bad in ("ez_mia:2", "recall:3"):
        with pytest.raises(ValueError, match="takes no argument"):
            parse_attack(bad)
    assert needs(["ez_mia"]) == {"reference"}
    assert needs(["dc_pdd:0.1", "recall", "loss"]) == {"frequencies", "recall"}
    assert "dc_pdd:A" in AuditConfig.__dataclass_fields__["attacks"].metadata["help"]


# ----------------------------------------------------------------------------- audit + streaming

def test_audit_and_streaming_agree_on_the_new_attacks(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMEM_CACHE", str(tmp_path / "cache"))
    params, cfg = to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))
    ref, _ = to_jaxmem(tiny_hf_model("llama", seed=1, num_key_value_heads=2))
    tok = CharTok()
    rng = np.random.default_rng(5)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    text = lambda: " ".join(rng.choice(words, rng.integers(2, 9)))  # noqa: E731
    members, nonmembers = [text() for _ in range(12)], [text() for _ in range(10)]
    nonmembers = [t for t in nonmembers if t not in members]
    corpus = [text() for _ in range(30)] + members[:3]  # audited texts in it are left out
    (tmp_path / "corpus.txt").write_text("\n\n".join(corpus) + "\n")
    (tmp_path / "m.txt").write_text("\n".join(members) + "\n")
    (tmp_path / "n.txt").write_text("\n".join(nonmembers) + "\n")
    # dc_pdd:1: with a tiny random model every alpha_t exceeds 0.01, so a = 0.01 would score
    # every text the same (and its histogram would have no range)
    acfg = AuditConfig(attacks=("loss", "ez_mia", "dc_pdd:1", "recall"), block_size=32,
                       batch_size=8, n_boot=20, dcpdd_corpus=str(tmp_path / "corpus.txt"),
                       recall_shots=2)
    held_out = ["an unrelated held-out text", "and another one", "unused third"]
    mem = run_attacks_on(params, cfg, tok, members, nonmembers, acfg, reference_params=ref,
                         out_dir=tmp_path / "memory", prefix_texts=held_out)
    assert set(mem["scores"]) == {"loss", "ez_mia", "dc_pdd:1", "recall"}
    for name, s in mem["scores"].items():
        assert np.isfinite(s).all(), name
    m_in, n_in = S.scan_input(tmp_path / "m.txt"), S.scan_input(tmp_path / "n.txt")
    settings = S.attack_settings(m_in, n_in, acfg, chunk_size=1000)
    assert settings["dcpdd_corpus"] == acfg.dcpdd_corpus and settings["recall_shots"] == 2
    S.attack_files(params, cfg, tok, m_in, n_in, acfg, out_dir=tmp_path / "one",
                   settings=settings, reference_params=ref, chunk_size=1000,
                   prefix_texts=held_out)
    assert pq.read_table(tmp_path / "one" / "scores.parquet").equals(
        pq.read_table(tmp_path / "memory" / "scores.parquet"))
    # several chunks: the same scores to float rounding
    small = S.attack_files(params, cfg, tok, m_in, n_in, acfg, out_dir=tmp_path / "small",
                           settings=S.attack_settings(m_in, n_in, acfg, chunk_size=5),
                           reference_params=ref, chunk_size=5, prefix_texts=held_out)
    for name, s in mem["scores"].items():
        np.testing.assert_allclose(small["scores"][name], s, rtol=1e-5, atol=1e-7, err_msg=name)
    # without a reference model, EZ-MIA is skipped like Ref
    with pytest.warns(UserWarning, match="ez_mia skipped"):
        res = run_attacks_on(params, cfg, tok, members, nonmembers,
                             AuditConfig(attacks=("loss", "ez_mia"), block_size=32, n_boot=0))
    assert set(res["scores"]) == {"loss"}
