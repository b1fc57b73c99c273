"""Scoring invariants and the float64 reference for the per-token statistics."""

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_hf_model, to_jaxmem
from jaxmem.batching import encode_texts, length_buckets, make_batches
from jaxmem.models import logits
from jaxmem.scoring import score_sequences, token_stats


@pytest.fixture(scope="module")
def llama():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


def _seqs(vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(0, vocab, n)) for n in lengths]


def _reference(params, cfg, seq):
    """float64 numpy statistics from full logits of the sequence alone."""
    z = np.asarray(logits(params, cfg, jnp.asarray([seq])), np.float64)[0, :-1]
    logq = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(
        -1, keepdims=True)
    q = np.exp(logq)
    mu = (q * logq).sum(-1)
    sigma = np.sqrt((q * (logq - mu[:, None]) ** 2).sum(-1))
    logp = logq[np.arange(len(seq) - 1), seq[1:]]
    return logp, mu, sigma


def test_stats_match_float64_reference(llama):
    params, cfg = llama
    seqs = _seqs(cfg.vocab_size, [5, 17, 2, 33, 9])
    stats = score_sequences(params, cfg, seqs, batch_size=2)
    for i, s in enumerate(seqs):
        n = len(s) - 1
        assert stats.mask[i].sum() == n and not stats.mask[i, n:].any()
        for got, ref in zip((stats.logp, stats.mu, stats.sigma), _reference(params, cfg, s)):
            np.testing.assert_allclose(got[i, :n], ref, rtol=1e-5, atol=1e-5)


def test_padded_equals_alone_and_batch_equals_singles(llama):
    params, cfg = llama
    seqs = _seqs(cfg.vocab_size, [30, 7, 19, 12, 3, 25], seed=3)
    batched = score_sequences(params, cfg, seqs, batch_size=4)
    for i, s in enumerate(seqs):
        single = score_sequences(params, cfg, [s], batch_size=1)
        n = len(s) - 1
        for k in ("logp", "mu", "sigma"):
            np.testing.assert_allclose(getattr(batched, k)[i, :n], getattr(single, k)[0, :n],
                                       rtol=2e-6, atol=2e-6)
    # within one compiled shape, padding must not change a row at all
    ids = np.zeros((2, 32), np.int32)
    mask = np.zeros((2, 32), np.int32)
    ids[0, :10], mask[0, :10] = seqs[1][:7] + [1, 2, 3], 1
    ids[1, :10], mask[1, :10] = ids[0, :10], 1
    ids[1, 10:], mask[1, 10:] = 5, 0  # garbage in the padding
    out = token_stats(params, cfg, jnp.asarray(ids), jnp.asarray(mask))
    for k in ("logp", "mu", "sigma"):
        np.testing.assert_array_equal(getattr(out, k)[0, :9], getattr(out, k)[1, :9])


def test_chunking_does_not_change_results(llama):
    params, cfg = llama
    ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 50)))
    mask = jnp.ones_like(ids)
    a = token_stats(params, cfg, ids, mask, chunk=7)
    b = token_stats(params, cfg, ids, mask, chunk=128)
    for k in ("logp", "mu", "sigma"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-6, atol=1e-6)


def test_bfloat16_scoring_is_close(llama):
    params, cfg = llama
    seqs = _seqs(cfg.vocab_size, [20, 11])
    a = score_sequences(params, cfg, seqs)
    b = score_sequences(params, cfg, seqs, dtype="bfloat16")
    np.testing.assert_allclose(b.nll(), a.nll(), rtol=3e-2)


def test_gpt2_scores_from_second_token():
    params, cfg = to_jaxmem(tiny_hf_model("gpt2"))
    stats = score_sequences(params, cfg, [[3, 4, 5, 6]])
    assert stats.n_tokens.tolist() == [3]
    assert stats.token_ids[0, :3].tolist() == [4, 5, 6]


def test_batching_helper():
    assert length_buckets(100) == (16, 32, 64, 100)
    seqs = [[1] * n for n in (3, 40, 17, 90)]
    batches = list(make_batches(seqs, 2, length_buckets(100)))
    assert [b[0].shape for b in batches] == [(2, 32), (2, 100)]
    seen = sorted(i for b in batches for i in b[2] if i >= 0)
    assert seen == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="exceeds the largest bucket"):
        list(make_batches([[1] * 200], 2, length_buckets(100)))


class _Tok:
    pad_token_id = 0

    def __call__(self, texts):
        return {"input_ids": [[1 + (ord(c) % 50) for c in t] for t in texts]}


def test_overflow_truncates_with_warning_or_refuses():
    with pytest.warns(UserWarning, match="1 of 2 texts are longer than 5 tokens"):
        seqs, trunc = encode_texts(_Tok(), ["abcdefgh", "abc"], 5)
    assert [len(s) for s in seqs] == [5, 3] and trunc.tolist() == [True, False]
    with pytest.raises(ValueError, match="longer than 5 tokens"):
        encode_texts(_Tok(), ["abcdefgh"], 5, on_overflow="error")


def test_empty_input_and_too_long_block(llama):
    params, cfg = llama
    with pytest.raises(ValueError, match="empty"):
        score_sequences(params, cfg, [])
    with pytest.raises(ValueError, match="exceeds the model's context"):
        score_sequences(params, cfg, [[1, 2]], block_size=cfg.max_positions + 1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_vocabulary_logits_never_materialized_whole(dtype, monkeypatch):
    """Above the logits budget, compiled scoring and training-loss passes hold far less than one
    float32 [B, T, V]."""
    import jax

    from jaxmem import scoring
    from jaxmem.models import ModelConfig, init_params
    from jaxmem.scoring import per_token, target_logp

    # 16 MiB chunks: [2, 32, 65536] float32, 1/16 of the whole (the default budget is 256 MiB)
    monkeypatch.setattr(scoring, "LOGITS_BYTES", 16 * 2**20)
    cfg = ModelConfig(arch="llama", vocab_size=65536, d_model=32, n_layers=1, n_heads=2,
                      n_kv_heads=2, d_ff=64, max_positions=512, tie_embeddings=True)
    params = init_params(cfg, jax.random.PRNGKey(0))
    b, t = 2, 512
    ids = jnp.ones((b, t), jnp.int32)
    whole = b * t * cfg.vocab_size * 4  # 256 MiB; nothing is run, only compiled
    fwd = jax.jit(lambda p: per_token(p, cfg, ids, ids, dtype=dtype)).lower(
        params).compile().memory_analysis()

    def loss(p):
        st = per_token(p, cfg, ids, ids, dtype=dtype)
        return -jnp.sum(st.logp)

    def train_loss(p):
        return -jnp.sum(target_logp(p, cfg, ids, ids, dtype=dtype)[0])

    bwd = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis()
    train = jax.jit(jax.grad(train_loss)).lower(params).compile().memory_analysis()
    # Unchunked, the logits alone would take the whole. Measured: about 1/6 (forward),
    # 1/4 (backward).
    assert fwd.temp_size_in_bytes < whole / 3, fwd.temp_size_in_bytes
    assert bwd.temp_size_in_bytes < whole / 3, bwd.temp_size_in_bytes
    assert train.temp_size_in_bytes < whole / 3, train.temp_size_in_bytes


def test_chunk_lengths_fit_the_budget_and_balance():
    from jaxmem.scoring import LOGITS_BYTES, _chunk_len

    assert _chunk_len(4, 127, 49152, None) == 127          # 100 MiB: one chunk
    c = _chunk_len(16, 127, 49152, None)                   # 400 MiB: two balanced chunks
    assert c == 64 and 16 * c * 49152 * 4 <= LOGITS_BYTES
    assert _chunk_len(2, 100, 10, 32) == 25                # given: 4 chunks of 25, no padding
    assert _chunk_len(1, 5, 2**40, None) == 1
