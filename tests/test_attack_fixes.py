"""Two score fixes, each checked against a plain Python/numpy loop.

* Zlib compresses the text AS SCORED (cut to its first ``block_size`` tokens,
  ``scoring.truncate_texts``), not the whole text whose tail the model never saw.
* EZ-MIA scores +inf (the authors' code: 0.0) where every error-zone delta is positive, and the
  metrics rank that +inf above every finite score (``attacks.as_ranks``).
"""

import json
import math
import types
import warnings
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import CharTok, save_tiny_tokenizer, tiny_hf_model, to_jaxmem
from jaxmem import streaming as S
from jaxmem.attacks import AttackInputs, as_ranks, ez_mia, run_attacks
from jaxmem.audit import AuditConfig, run_attacks_on
from jaxmem.batching import encode_texts, truncate_texts
from jaxmem.metrics import roc_auc
from jaxmem.models import logits
from jaxmem.scoring import TokenStats

BLOCK = 12
_logits = jax.jit(logits, static_argnames=("cfg", "dtype"))


@pytest.fixture(scope="module")
def word_tok(tmp_path_factory):
    """The suite's word-level tokenizer ('w0'..'w95', fast: character offsets), no BOS."""
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tok")
    save_tiny_tokenizer(d)
    return AutoTokenizer.from_pretrained(str(d))


def _bos_tok():
    """A word-level tokenizer that prepends BOS, as Llama's do."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(90)} | {"<unk>": 95, "<s>": 96}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                      special_tokens=[("<s>", 96)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>")


class _NoOffsets:
    """A tokenizer with neither character offsets nor decode (the prefix-search path)."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, texts, **kw):
        if kw:
            raise TypeError("no options")
        return {"input_ids": self.tok(texts)["input_ids"]}


def _word_texts(n, seed, lo=4, hi=30):
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{i}" for i in rng.integers(0, 90, rng.integers(lo, hi)))
            for _ in range(n)]


# ----------------------------------------------------------------------------- truncate_texts

@pytest.mark.parametrize("kind", ["word", "bos", "no_offsets", "char"])
def test_truncate_texts_returns_what_is_scored(kind, word_tok):
    tok = {"word": word_tok, "bos": _bos_tok(), "no_offsets": _NoOffsets(word_tok),
           "char": CharTok()}[kind]
    texts = _word_texts(12, 0) + ["w7 w8", "w1  w2\tw3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 "
                                   "w15 trailing"]
    if kind == "char":
        texts += ["héllo wörld, ünïcode " * 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # encode_texts counts the truncated texts
        seqs, truncated = encode_texts(tok, texts, BLOCK)
    assert 0 < truncated.sum() < len(texts)
    out = truncate_texts(tok, texts, BLOCK)
    assert len(out) == len(texts)
    for text, cut, kept, was_cut in zip(texts, out, seqs, truncated):
        if not was_cut:
            assert cut is text  # unchanged: the very same string
            continue
        assert text.startswith(cut) and len(cut) < len(text)  # a prefix: no BOS, no decode
        assert list(tok([cut])["input_ids"][0]) == kept  # exactly the scored token ids
        if kind != "char":  # ends where its last kept word ends
            assert not cut.endswith((" ", "\t"))
    assert truncate_texts(tok, [], BLOCK) == []


# ----------------------------------------------------------------------------- Zlib


def _mean_ll(params, cfg, ids):
    """Mean log p(x_t | x_<t) over t >= 1, float64 log-softmax of the full logits of ids alone."""
    z = np.asarray(_logits(params, cfg, jnp.asarray([ids], jnp.int32)), np.float64)[0]
    total = 0.0
    for t in range(1, len(ids)):
        row = z[t - 1]
        m = row.max()
        total += row[ids[t]] - (m + math.log(np.exp(row - m).sum()))
    return total / (len(ids) - 1)


def test_zlib_compresses_the_scored_text(word_tok, tmp_path):
    """In the audit and in streaming: zlib == mean LL of the block / zlib bytes of the text
    decoded from that block's tokens (a loop), not of the whole text."""
    params, cfg = to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))
    members, nonmembers = _word_texts(10, 1), _word_texts(10, 2)
    texts = members + nonmembers
    acfg = AuditConfig(attacks=("loss", "zlib", "lowercase"), block_size=BLOCK, batch_size=8,
                       n_boot=0)
    with pytest.warns(UserWarning, match="texts are longer than"):
        res = run_attacks_on(params, cfg, word_tok, members, nonmembers, acfg,
                             out_dir=tmp_path / "memory")
    ids = [list(x)[:BLOCK] for x in word_tok(texts)["input_ids"]]
    long = [len(x) > BLOCK for x in word_tok(texts)["input_ids"]]
    assert 3 <= sum(long) <= len(texts) - 3
    want, whole = [], []
    for text, block in zip(texts, ids):
        ll = _mean_ll(params, cfg, block)
        scored = word_tok.decode(block)  # the text of the scored tokens
        want.append(ll / len(zlib.compress(scored.encode("utf-8"))))
        whole.append(ll / len(zlib.compress(text.encode("utf-8"))))
    got = res["scores"]["zlib"]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # the truncated texts are where the fix shows: the whole text's size is a different score
    assert all(abs(g - w) > 1e-3 * abs(w) for g, w, c in zip(got, whole, long) if c)
    # the scores table still names each text by its original text
    table = pq.read_table(tmp_path / "memory" / "scores.parquet").to_pydict()
    assert table["text"] == [t[:200] for t in texts]
    # streaming builds the same inputs: the same zlib and lowercase scores
    (tmp_path / "m.txt").write_text("\n".join(members) + "\n")
    (tmp_path / "n.txt").write_text("\n".join(nonmembers) + "\n")
    m_in, n_in = S.scan_input(tmp_path / "m.txt"), S.scan_input(tmp_path / "n.txt")
    with pytest.warns(UserWarning, match="texts are longer than"):
        streamed = S.attack_files(params, cfg, word_tok, m_in, n_in, acfg,
                                  out_dir=tmp_path / "streamed", chunk_size=7,
                                  settings=S.attack_settings(m_in, n_in, acfg, chunk_size=7))
    for name in ("zlib", "lowercase"):
        np.testing.assert_allclose(streamed["scores"][name], res["scores"][name], rtol=1e-5,
                                   err_msg=name)


# ----------------------------------------------------------------------------- EZ-MIA

def _ez_loop(t_lp, r_lp, top1, mask):
    """The documented EZ-MIA formula, one text at a time: over the error zone (scored, not
    top-1, not the first scored token), P = sum of positive d_t, N = sum of |negative d_t|;
    NaN without a scored token, 0.0 with fewer than 2 error tokens, P / N where N > 0, +inf
    where N == 0 < P, 0.0 where N == P == 0."""
    out = []
    for lp, rp, hit, m in zip(t_lp, r_lp, top1, mask):
        cols = [j for j in range(len(m)) if m[j]]
        if not cols:
            out.append(math.nan)
            continue
        pos = neg = 0.0
        n_err = 0
        for j in cols[1:]:
            if hit[j]:
                continue
            n_err += 1
            d = float(lp[j]) - float(rp[j])
            if d > 0:
                pos += d
            elif d < 0:
                neg -= d
        if n_err < 2:
            out.append(0.0)
        elif neg > 0:
            out.append(pos / neg)
        else:
            out.append(math.inf if pos > 0 else 0.0)
    return np.array(out)


def _stats(logp, mask, top1=None):
    logp = np.asarray(logp, np.float32)
    return TokenStats(logp=logp, mu=np.zeros_like(logp), sigma=np.ones_like(logp),
                      mask=np.asarray(mask, bool), token_ids=np.zeros(logp.shape, np.int32),
                      truncated=np.zeros(len(logp), bool),
                      top1=None if top1 is None else np.asarray(top1, bool))


def _ez_case(seed=0, n=60, L=10):
    """Random target / reference log-probs with the edge cases planted: all error deltas
    positive (+inf), all zero (0.0), one error token (0.0), no scored token (NaN)."""
    rng = np.random.default_rng(seed)
    r_lp = -3.0 + rng.standard_normal((n, L))
    t_lp = r_lp + rng.standard_normal((n, L))
    top1 = rng.random((n, L)) < 0.3
    lengths = rng.integers(1, L + 1, n)
    mask = np.arange(L)[None, :] < lengths[:, None]
    for i in range(0, n, 5):  # every error delta positive (the first scored one is ignored)
        mask[i], top1[i, 1:4] = True, False
        t_lp[i, 1:] = r_lp[i, 1:] + rng.uniform(0.01, 1.0, L - 1)
        t_lp[i, 0] = r_lp[i, 0] - 5.0
    t_lp[1] = r_lp[1]  # every delta exactly 0
    mask[1] = True
    mask[2], top1[2] = True, True
    top1[2, 3] = False  # one error token
    mask[3] = False  # no scored token
    t_lp, r_lp = t_lp.astype(np.float32), r_lp.astype(np.float32)
    return _stats(t_lp, mask, top1), _stats(r_lp, mask)


def test_ez_mia_ranks_all_positive_error_zones_first_and_matches_loop():
    t, r = _ez_case()
    got = ez_mia(AttackInputs(target=t, texts=[""] * len(t.logp), reference=r))
    want = _ez_loop(t.logp, r.logp, t.top1, t.mask)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)  # inf == inf, NaN == NaN
    inf = np.isposinf(got)
    assert inf.sum() >= 10 and inf[0] and inf[5]
    assert got[1] == 0.0 and got[2] == 0.0 and np.isnan(got[3])
    # +inf ranks above every text with some negative error-zone delta
    finite = np.isfinite(got)
    assert finite.sum() >= 20
    assert (got[inf][:, None] > got[finite][None, :]).all()


def test_ez_mia_inf_is_an_extreme_rank_in_the_metrics(tmp_path):
    """roc_auc on as_ranks(scores with +inf) equals sklearn's with +inf as a huge number, and
    the audit (nan_policy "raise") summarizes, writes and plots such scores."""
    from sklearn.metrics import roc_auc_score

    t, r = _ez_case(seed=1)
    keep = t.mask.any(1)  # the audit refuses NaN by default: texts with a scored token
    t, r = (_stats(s.logp[keep], s.mask[keep], None if s.top1 is None else s.top1[keep])
            for s in (t, r))
    n = len(t.logp)
    labels = np.arange(n) % 2 == 0
    scores = ez_mia(AttackInputs(target=t, texts=[""] * n, reference=r))
    assert np.isposinf(scores[labels]).any() and np.isposinf(scores[~labels]).any()
    assert np.isfinite(scores).sum() > n // 2
    want = roc_auc_score(labels, np.where(np.isposinf(scores), 1e300, scores))
    assert roc_auc(as_ranks(scores), labels) == pytest.approx(want, abs=1e-12)
    np.testing.assert_array_equal(as_ranks([np.nan, -np.inf, 1.0])[1:],
                                  [-np.finfo(np.float64).max, 1.0])
    assert np.isnan(as_ranks([np.nan])[0])

    # through the audit: precomputed stats, hand-built texts (one per row)
    texts = [f"text {i}" for i in range(n)]
    members = [x for x, m in zip(texts, labels) if m]
    nonmembers = [x for x, m in zip(texts, labels) if not m]
    order = np.r_[np.flatnonzero(labels), np.flatnonzero(~labels)]  # members first, as run
    t, r = (_stats(s.logp[order], s.mask[order], None if s.top1 is None else s.top1[order])
            for s in (t, r))
    cfg = types.SimpleNamespace(max_positions=64, vocab_size=97)
    res = run_attacks_on(None, cfg, CharTok(), members, nonmembers,
                         AuditConfig(attacks=("ez_mia",), block_size=32, n_boot=20,
                                     blind=False),  # blind: tested in test_blind
                         target_stats=t, reference_stats=r, out_dir=tmp_path)
    assert res["metrics"]["ez_mia"]["auc"] == pytest.approx(want, abs=1e-12)
    assert res["metrics"]["ez_mia"]["n_dropped_nan"] == 0
    strict = json.loads((tmp_path / "metrics.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert strict["metrics"]["ez_mia"]["auc"] == pytest.approx(want, abs=1e-12)
    col = pq.read_table(tmp_path / "scores.parquet").to_pydict()["ez_mia"]
    np.testing.assert_array_equal(col, scores[order])  # +inf stored as +inf
