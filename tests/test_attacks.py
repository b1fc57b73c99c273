"""Membership-inference attacks against an independent float64 reference, plus conventions and
bad input.

The reference recomputes every attack per example with a plain Python loop from the FULL logits
of each sequence scored alone (``jaxmem.models.logits``), log-softmaxed in float64 numpy; the
attacks under test read the masked, padded, float32 ``TokenStats`` of ``score_sequences``.
"""

import math
import zlib
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_hf_model, to_jaxmem
from jaxmem.attacks import (ATTACKS, DEFAULT_ATTACKS, AttackInputs, needs, parse_attack,
                            run_attacks)
from jaxmem.models import logits
from jaxmem.scoring import TokenStats, score_sequences

# Varied lengths (2 -> a single scored token), scored in padded batches of 3 over 2 buckets.
# (Few distinct lengths and buckets keep the number of XLA compilations, hence the time, low.)
# Sorted into batches of 3 they give [2, 3, 5] (bucket 16), [9, 12, 17], [26, 32, filler] (32).
LENGTHS = [5, 17, 2, 32, 9, 26, 3, 12]
# A different sequence set of the same count for the lowercase pass (other lengths per example).
LOWER_LENGTHS = [26, 2, 32, 12, 9, 5, 17, 3]
TEXTS = [
    "The cat sat on the mat.",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "x",
    "Grüße aus Köln, 世界 — naïve café",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "Q",
]
KS = [0.01, 0.05, 0.1, 0.2, 0.5, 0.7, 1.0]
RTOL = 1e-5


# ----------------------------------------------------------------------------- fixtures

def _model(seed):
    """A tiny random Llama with grouped-query attention (4 query heads, 2 KV heads) whose output
    head is scaled up so next-token distributions are peaked like a real LM's (logit spread ~3,
    sigma ~1.5) rather than near uniform; Min-K%++ divides by sigma, so this matters."""
    import torch

    model = tiny_hf_model("llama", seed=seed, num_key_value_heads=2)
    with torch.no_grad():
        model.lm_head.weight.mul_(25.0)
    return to_jaxmem(model)


@pytest.fixture(scope="module")
def target():
    return _model(seed=0)


@pytest.fixture(scope="module")
def reference_model():
    return _model(seed=1)


def _seqs(vocab, lengths, seed):
    rng = np.random.default_rng(seed)
    return [[int(x) for x in rng.integers(0, vocab, n)] for n in lengths]


@pytest.fixture(scope="module")
def data(target, reference_model):
    """Scored passes (batched) and the float64 per-token reference (each sequence alone)."""
    (p, c), (rp, rc) = target, reference_model
    seqs = _seqs(c.vocab_size, LENGTHS, seed=0)
    lower = _seqs(c.vocab_size, LOWER_LENGTHS, seed=1)
    inputs = AttackInputs(
        target=score_sequences(p, c, seqs, batch_size=3),
        texts=TEXTS,
        reference=score_sequences(rp, rc, seqs, batch_size=3),
        lowercase=score_sequences(p, c, lower, batch_size=3),
    )
    ref = {
        "target": [_token_ref(p, c, s) for s in seqs],
        "reference": [_token_ref(rp, rc, s) for s in seqs],
        "lowercase": [_token_ref(p, c, s) for s in lower],
    }
    return inputs, ref


# ----------------------------------------------------------------------------- the reference

_logits = jax.jit(logits, static_argnames=("cfg", "dtype"))


def _token_ref(params, cfg, seq):
    """Per scored token (tokens 1..n-1): float64 lists (logp, mu, sigma) from the full float32
    logits of the sequence alone (batch of one, no padding, no mask)."""
    z = np.asarray(_logits(params, cfg, jnp.asarray([seq], jnp.int32)), np.float64)[0]
    assert z.shape == (len(seq), cfg.vocab_size)
    logp, mu, sigma = [], [], []
    for t in range(len(seq) - 1):  # position t predicts token t+1
        row = z[t]
        m = row.max()
        logq = row - (m + math.log(np.exp(row - m).sum()))
        q = np.exp(logq)
        mu_t = float((q * logq).sum())
        sigma_t = math.sqrt(float((q * (logq - mu_t) ** 2).sum()))
        logp.append(float(logq[seq[t + 1]]))
        mu.append(mu_t)
        sigma.append(sigma_t)
    return logp, mu, sigma


def _mean(xs):
    return sum(xs) / len(xs) if xs else math.nan


def _n_lowest(k, n):
    """ceil(k * n) in exact arithmetic (k as written in decimal), at least 1."""
    return max(1, math.ceil(Fraction(str(k)) * n))


def _min_k_ref(values, k):
    if not values:
        return math.nan
    return _mean(sorted(values)[:_n_lowest(k, len(values))])


def _attack_ref(name, ref, i, text):
    lp, mu, sigma = ref["target"][i]
    if name == "loss":
        return _mean(lp)
    if name == "ref":
        return _mean(lp) - _mean(ref["reference"][i][0])
    if name == "zlib":
        return _mean(lp) / len(zlib.compress(text.encode()))
    if name == "lowercase":
        return (-_mean(ref["lowercase"][i][0])) / (-_mean(lp))
    attack, k = name.split(":")
    if attack == "min_k":
        return _min_k_ref(lp, float(k))
    assert attack == "min_k_pp"
    return _min_k_ref([(a - m) / s for a, m, s in zip(lp, mu, sigma)], float(k))


SPECS = (["loss", "ref", "zlib", "lowercase"] + [f"min_k:{k}" for k in KS]
         + [f"min_k_pp:{k}" for k in KS])


# ----------------------------------------------------------------------------- 1. vs reference

def test_fixture_is_what_the_attacks_should_see(data):
    inputs, ref = data
    # every sequence fully scored, no padding column counted, lengths differ across examples
    assert inputs.target.n_tokens.tolist() == [n - 1 for n in LENGTHS]
    assert inputs.lowercase.n_tokens.tolist() == [n - 1 for n in LOWER_LENGTHS]
    for i, n in enumerate(LENGTHS):
        np.testing.assert_allclose(inputs.target.logp[i, :n - 1], ref["target"][i][0],
                                   rtol=1e-5, atol=1e-5)
    # the Min-K%++ normalization is not degenerate (sigma well away from 0)
    assert min(min(r[2]) for r in ref["target"]) > 0.5
    # k = 0.01 keeps exactly one token for every example here, k = 1.0 keeps all
    assert all(_n_lowest(0.01, n - 1) == 1 for n in LENGTHS)


@pytest.mark.parametrize("spec", SPECS)
def test_attack_matches_float64_reference(data, spec):
    inputs, ref = data
    name, fn = parse_attack(spec)
    got = fn(inputs)
    assert got.shape == (len(LENGTHS),)
    want = np.array([_attack_ref(name, ref, i, TEXTS[i]) for i in range(len(LENGTHS))])
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


def test_run_attacks_matches_reference_and_k_matters(data):
    inputs, ref = data
    out = run_attacks(SPECS, inputs)
    assert set(out) == {parse_attack(s)[0] for s in SPECS}
    for name, got in out.items():
        want = [_attack_ref(name, ref, i, TEXTS[i]) for i in range(len(LENGTHS))]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=0, err_msg=name)
    # k = 1.0 is the mean of all tokens (= LOSS); k = 0.01 is the single lowest token
    np.testing.assert_allclose(out["min_k:1"], out["loss"], rtol=1e-6)
    for i, n in enumerate(LENGTHS):
        lp = inputs.target.logp[i, :n - 1]
        np.testing.assert_allclose(out["min_k:0.01"][i], lp.min(), rtol=1e-6)
    # different k give different scores wherever more than one token is scored
    multi = np.array(LENGTHS) > 3
    assert (out["min_k:0.01"][multi] < out["min_k:0.5"][multi]).all()
    assert (out["min_k:0.5"][multi] < out["min_k:1"][multi]).all()
    assert not np.allclose(out["min_k_pp:0.2"], out["min_k:0.2"])


# ----------------------------------------------------------------------------- 2. padding

def test_alone_equals_within_padded_batch(target, reference_model):
    (p, c), (rp, rc) = target, reference_model
    short, longs = _seqs(c.vocab_size, [6], seed=7)[0], _seqs(c.vocab_size, [32, 29], seed=8)
    low_short, low_longs = _seqs(c.vocab_size, [6], seed=9)[0], _seqs(c.vocab_size, [31, 20],
                                                                       seed=10)
    texts = ["short one", "a much longer text " * 5, "yet another text"]
    batch, lower = [short] + longs, [low_short] + low_longs
    together = AttackInputs(target=score_sequences(p, c, batch, batch_size=3),
                            texts=texts,
                            reference=score_sequences(rp, rc, batch, batch_size=3),
                            lowercase=score_sequences(p, c, lower, batch_size=3))
    alone = AttackInputs(target=score_sequences(p, c, [short], batch_size=1),
                         texts=texts[:1],
                         reference=score_sequences(rp, rc, [short], batch_size=1),
                         lowercase=score_sequences(p, c, [low_short], batch_size=1))
    # alone: no padding at all; together: padded to the longest in a [3, 32] batch
    assert alone.target.logp.shape == (1, 5) and together.target.logp.shape == (3, 31)
    a, b = run_attacks(SPECS, alone), run_attacks(SPECS, together)
    assert set(a) == set(b)
    for name in a:
        assert a[name].shape == (1,) and b[name].shape == (3,)
        np.testing.assert_allclose(b[name][0], a[name][0], rtol=1e-6, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- 3. convention

def _stats(logp, mu=None, sigma=None, lengths=None):
    logp = np.asarray(logp, np.float32)
    n, L = logp.shape
    lengths = [L] * n if lengths is None else lengths
    mask = np.arange(L)[None, :] < np.asarray(lengths)[:, None]
    garbage = np.float32(123.0)  # padding values must never be read
    return TokenStats(
        logp=np.where(mask, logp, garbage).astype(np.float32),
        mu=np.where(mask, np.full_like(logp, -2.5) if mu is None else mu, garbage).astype(
            np.float32),
        sigma=np.where(mask, np.ones_like(logp) if sigma is None else sigma, garbage).astype(
            np.float32),
        mask=mask,
        token_ids=np.zeros((n, L), np.int32),
        truncated=np.zeros(n, bool),
    )


def test_members_score_higher_on_every_attack():
    rng = np.random.default_rng(0)
    n_mem, n_non, L = 20, 20, 30
    lengths = rng.integers(5, L + 1, n_mem + n_non)
    member = np.r_[np.ones(n_mem, bool), np.zeros(n_non, bool)]
    # members: the target finds their tokens likely; non-members: as unlikely as the reference
    lp = np.where(member[:, None], -1.0, -3.0) + 0.2 * rng.standard_normal((n_mem + n_non, L))
    ref_lp = -3.0 + 0.2 * rng.standard_normal((n_mem + n_non, L))
    # lowercased: everybody is equally hard, so members lose more likelihood relative to theirs
    low_lp = -4.0 + 0.2 * rng.standard_normal((n_mem + n_non, L))
    texts = [f"example text number {i:03d}" for i in range(n_mem + n_non)]
    inputs = AttackInputs(target=_stats(lp, lengths=lengths), texts=texts,
                          reference=_stats(ref_lp, lengths=lengths),
                          lowercase=_stats(low_lp, lengths=rng.integers(5, L + 1, len(texts))))
    out = run_attacks(list(DEFAULT_ATTACKS) + ["min_k:0.05", "min_k_pp:1.0"], inputs)
    assert set(out) >= {"loss", "ref", "zlib", "min_k:0.2", "min_k_pp:0.2", "lowercase"}
    for name, s in out.items():
        assert np.isfinite(s).all(), name
        assert s[member].min() > s[~member].max(), name


def test_min_k_takes_exact_ceil_despite_float_rounding():
    # 0.55 * 100 == 55.00000000000001 in floating point; the intended count is 55, not 56
    assert 0.55 * 100 > 55
    values = np.arange(100, dtype=np.float32)[None, :] * -1.0  # 0, -1, ..., -99
    inputs = AttackInputs(target=_stats(values), texts=["t"])
    got = run_attacks(["min_k:0.55"], inputs)["min_k:0.55"][0]
    want = _mean(sorted(values[0].tolist())[:55])
    assert got == pytest.approx(want, rel=1e-12)
    # a count one less than exact rounds up: ceil(0.2 * 7) = 2; ceil(0.01 * 7) = 1 (at least 1)
    v7 = np.array([[-5.0, 0.0, -1.0, -7.0, -2.0, -3.0, -4.0]])
    s7 = AttackInputs(target=_stats(v7), texts=["t"])
    assert run_attacks(["min_k:0.2"], s7)["min_k:0.2"][0] == pytest.approx(-6.0)
    assert run_attacks(["min_k:0.01"], s7)["min_k:0.01"][0] == pytest.approx(-7.0)
    assert run_attacks(["min_k:1"], s7)["min_k:1"][0] == pytest.approx(v7.mean())
    # however small k is, at least one token is kept (never an empty mean)
    out = run_attacks(["min_k:1e-12", "min_k_pp:1e-12"], s7)
    assert out["min_k:1e-12"][0] == pytest.approx(-7.0)
    assert out["min_k_pp:1e-12"][0] == pytest.approx((-7.0 + 2.5) / 1.0)


# ----------------------------------------------------------------------------- 4. edges, bad input

def test_example_with_no_scored_token_is_nan(target, reference_model):
    (p, c), (rp, rc) = target, reference_model
    seqs = _seqs(c.vocab_size, [8, 1, 5], seed=3)  # the middle one has nothing to score
    kw = dict(batch_size=3, block_size=16)  # a [3, 16] batch, as compiled for the fixture
    inputs = AttackInputs(target=score_sequences(p, c, seqs, **kw),
                          texts=["abc", "d", "efgh"],
                          reference=score_sequences(rp, rc, seqs, **kw),
                          lowercase=score_sequences(p, c, seqs, **kw))
    assert inputs.target.n_tokens.tolist() == [7, 0, 4]
    with np.errstate(all="raise"):  # no floating-point warnings leak out of the attacks
        out = run_attacks(SPECS, inputs)
    for name, s in out.items():
        assert np.isnan(s[1]), name
        assert np.isfinite(s[[0, 2]]).all(), name


def test_unknown_attack_lists_the_choices():
    with pytest.raises(ValueError, match="Unknown attack 'perplexity'") as e:
        parse_attack("perplexity")
    for name in ATTACKS:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="Unknown attack"):
        run_attacks(["loss", "min-k"], AttackInputs(target=_stats([[-1.0]]), texts=["t"]))


@pytest.mark.parametrize("spec", ["min_k:0", "min_k:1.5", "min_k_pp:0", "min_k_pp:1.5",
                                  "min_k:-0.1", "min_k:nan"])
def test_k_out_of_range_is_refused(spec):
    inputs = AttackInputs(target=_stats([[-1.0, -2.0]]), texts=["t"])
    with pytest.raises(ValueError, match=r"k must be in \(0, 1\]"):
        run_attacks([spec], inputs)


@pytest.mark.parametrize("spec", ["min_k:0", "min_k:1.5"])
def test_k_out_of_range_is_refused_when_parsed(spec):
    with pytest.raises(ValueError):
        parse_attack(spec)


@pytest.mark.parametrize("spec,field", [("zlib", "texts"), ("ref", "reference"),
                                        ("lowercase", "lowercase")])
def test_mismatched_sizes_are_refused(spec, field):
    three = _stats([[-1.0, -2.0], [-3.0, -1.0], [-2.0, -2.0]])
    one = _stats([[-1.5, -2.0]])
    kw = dict(target=three, texts=["a", "b", "c"], reference=three, lowercase=three)
    kw[field] = ["a"] if field == "texts" else one
    with pytest.raises(ValueError):
        run_attacks([spec], AttackInputs(**kw))


@pytest.mark.parametrize("spec", ["loss:3", "ref:x", "zlib:1", "lowercase:0.2"])
def test_argument_to_argless_attack_is_refused(spec):
    with pytest.raises(ValueError, match="takes no argument"):
        parse_attack(spec)


def test_missing_extra_pass_is_refused():
    inputs = AttackInputs(target=_stats([[-1.0, -2.0]]), texts=["t"])
    with pytest.raises(ValueError, match="reference"):
        run_attacks(["ref"], inputs)
    with pytest.raises(ValueError, match="lowercase"):
        run_attacks(["lowercase"], inputs)
    # the attacks that need nothing extra run on the same inputs
    assert set(run_attacks(["loss", "zlib", "min_k", "min_k_pp"], inputs)) == {
        "loss", "zlib", "min_k:0.2", "min_k_pp:0.2"}


def test_needs_names_the_extra_passes():
    assert needs([]) == set()
    assert needs(["loss", "zlib", "min_k:0.1", "min_k_pp"]) == set()
    assert needs(["ref"]) == {"reference"}
    assert needs(["lowercase", "min_k"]) == {"lowercase"}
    assert needs(["lowercase", "loss", "ref"]) == {"reference", "lowercase"}
    assert needs(DEFAULT_ATTACKS) == {"reference", "lowercase"}


def test_canonical_names():
    assert parse_attack("min_k")[0] == "min_k:0.2"
    assert parse_attack("min_k_pp")[0] == "min_k_pp:0.2"
    assert parse_attack("min_k:0.10")[0] == "min_k:0.1"
    assert parse_attack("min_k:1.0")[0] == "min_k:1"
    assert parse_attack("loss")[0] == "loss"
    assert list(run_attacks(["min_k", "min_k:0.2"], AttackInputs(
        target=_stats([[-1.0, -2.0]]), texts=["t"]))) == ["min_k:0.2"]
