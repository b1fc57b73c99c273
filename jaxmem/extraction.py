"""Verbatim extraction: does the model reproduce a text's continuation from its beginning?

Each text is cut into its first P tokens (the prompt, as the tokenizer encodes the text, BOS
included) and the next S tokens (the suffix, x_1..x_S); texts shorter than P + S tokens are
skipped and counted. Two measures, each per text and as a rate over texts:

* **k-extractable** (Carlini et al., 2023, "Quantifying Memorization Across Neural Language
  Models", with k = P; they use P = S = 50): the text is extracted when greedy decoding from
  the prompt reproduces the suffix exactly, g_i = x_i for i = 1..S. We also report the
  fraction of suffix positions reproduced, (1/S) sum_i 1[g_i = x_i] (Biderman et al., 2023,
  "Emergent and Predictable Memorization in Large Language Models": the memorization score,
  at their P = S = 32, our defaults).
* **(n, p)-discoverable extraction** (Hayes et al., 2024, "Measuring memorization in language
  models via probabilistic extraction"): with p_x = prod_i p(x_i | prompt, x_<i) the
  probability that one sample reproduces the suffix, the chance that at least one of n
  independent samples does is 1 - (1 - p_x)^n; the text is (n, p)-discoverable when that is
  >= p. p_x is the probability under the sampling scheme an attacker would use: by default
  plain sampling (temperature 1, no truncation), from the one teacher-forced scoring pass
  (:func:`jaxmem.scoring.score_sequences`); with ``temperature``, ``top_k`` or ``top_p`` set,
  each step's distribution is the one :func:`jaxmem.generate.filter_logits` samples from
  (logits / T, cut to the top-k / nucleus set, renormalized), as in Hayes et al.'s top-k
  experiments, and a suffix token outside the kept set makes p_x = 0.

Members against non-members is the control: a suffix a model reproduces for texts it never
saw is predictable text, not memorization.

Example:
    >>> from jaxmem import tiny_model
    >>> params, cfg, tok = tiny_model()  # one token per character
    >>> members = ["The cat sat on the mat all day.", "A dog ran far across the field."]
    >>> nonmembers = ["Birds fly south every winter.", "Fish swim in the cold sea."]
    >>> ecfg = ExtractionConfig(prefix_len=8, suffix_len=8, n_samples=(1, 100))
    >>> out = extraction_metrics(params, cfg, tok, members, nonmembers, ecfg)
    >>> out["members"]["k_extractable_rate"], out["nonmembers"]["k_extractable_rate"]
    (0.0, 0.0)
    >>> out["members"]["discoverable"]  # share of texts (n, p)-discoverable
    {'n=1,p=0.5': 0.0, 'n=100,p=0.5': 0.0}
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.batching import encode_texts
from jaxmem.config import check, check_positive_ints, dtype_name, field, is_number, jnp_dtype
from jaxmem.generate import GenerateConfig, check_sampling, filter_logits, generate
from jaxmem.models.config import ModelConfig
from jaxmem.models.transformer import cast_params, head_weight, hidden_states, project
from jaxmem.scoring import score_sequences


@dataclasses.dataclass(frozen=True)
class ExtractionConfig:
    """How extraction is measured (see the module docstring for the definitions)."""

    prefix_len: int = field(32, help="prompt tokens P taken from the start of each text")
    suffix_len: int = field(32, help="suffix tokens S the model must reproduce")
    n_samples: tuple = field((1, 10, 100, 1000),
                             help="(n, p)-discoverable extraction: numbers of samples n")
    p: float = field(0.5, help="(n, p)-discoverable extraction: the probability p required")
    temperature: float = field(1.0, help="(n, p)-discoverable extraction: the sampling "
                                         "scheme's temperature")
    top_k: int = field(0, help="(n, p)-discoverable extraction: samples from the top k tokens "
                               "(0: all)")
    top_p: float = field(1.0, help="(n, p)-discoverable extraction: samples from the nucleus "
                                   "of probability top_p (1: all)")
    batch_size: int = field(8, help="prompts per batch (generation and scoring)")
    dtype: str = field("float32", help="compute dtype (float32 or bfloat16)")

    def __post_init__(self):
        check_positive_ints(self, "prefix_len", "suffix_len", "batch_size")
        try:  # the command line gives strings
            n = tuple(int(x) for x in self.n_samples)
        except (TypeError, ValueError):
            n = ()
        object.__setattr__(self, "n_samples", n)
        check(self, "n_samples", lambda v: v and min(v) >= 1, "positive integers, e.g. 1,10,100")
        check(self, "p", lambda v: is_number(v) and 0 < v <= 1, "in (0, 1]")
        check_sampling(self)
        object.__setattr__(self, "dtype", dtype_name(self.dtype))

    @property
    def plain_sampling(self) -> bool:
        """Temperature 1 and no truncation: p_x is the model's own probability."""
        return self.temperature == 1 and self.top_k == 0 and self.top_p == 1


def discoverable_prob(log_px: np.ndarray, n: int) -> np.ndarray:
    """1 - (1 - p_x)^n from log p_x, in float64 without cancellation: -expm1(n log1p(-p_x))."""
    px = np.exp(np.asarray(log_px, np.float64))
    with np.errstate(divide="ignore"):  # p_x = 1: log1p(-1) = -inf, and the result is 1
        return -np.expm1(n * np.log1p(-px))


@functools.partial(jax.jit, static_argnames=("cfg", "prefix_len", "temperature", "top_k",
                                             "top_p", "dtype"))
def suffix_logq(params: dict, cfg: ModelConfig, tokens: jax.Array, prefix_len: int,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                dtype: str = "float32") -> jax.Array:
    """log q(x_i | prompt, x_<i) [B, S] of each suffix token under a sampling scheme.

    q is the distribution :func:`jaxmem.generate.generate` samples from with the same
    temperature, top_k and top_p: softmax of :func:`~jaxmem.generate.filter_logits` applied to
    logits / temperature; -inf for a token the truncation drops.

    Args:
      params, cfg: the model (any tuning method's leaves included).
      tokens: int32 [B, P + S], every position a real token (prompt, then suffix).
      prefix_len: P.
    """
    dt = jnp_dtype(dtype)
    params = cast_params(params, dt)
    h = hidden_states(params, cfg, tokens, jnp.ones_like(tokens), dtype=dt)
    w, layout = head_weight(params)
    z = project(h[:, prefix_len - 1:-1], w, layout).astype(jnp.float32)  # predicts x_1..x_S
    b, s, v = z.shape
    z = filter_logits(z.reshape(b * s, v) / temperature, top_k, top_p)
    logq = jax.nn.log_softmax(z, axis=-1)
    return jnp.take_along_axis(logq, tokens[:, prefix_len:].reshape(b * s, 1), -1).reshape(b, s)


def sampling_log_px(params: dict, cfg: ModelConfig, tokens: np.ndarray, ecfg: "ExtractionConfig",
                    *, progress: bool = False) -> np.ndarray:
    """log p_x (float64 [M]) of each row's suffix under ``ecfg``'s sampling scheme
    (:func:`suffix_logq`), ``ecfg.batch_size`` rows at a time (the last batch filled with
    copies of its first row, so one compiled shape serves every batch)."""
    bs = min(ecfg.batch_size, len(tokens))
    out = np.zeros(len(tokens), np.float64)
    starts = range(0, len(tokens), bs)
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm
        starts = tqdm(starts, total=math.ceil(len(tokens) / bs), desc="p_x under sampling",
                      unit="batch")
    for start in starts:
        chunk = tokens[start:start + bs]
        full = np.concatenate([chunk, np.repeat(chunk[:1], bs - len(chunk), 0)])
        logq = suffix_logq(params, cfg, jnp.asarray(full), ecfg.prefix_len, ecfg.temperature,
                           ecfg.top_k, ecfg.top_p, ecfg.dtype)
        out[start:start + len(chunk)] = np.asarray(logq, np.float64)[:len(chunk)].sum(-1)
    return out


def split_sequences(seqs: Sequence[Sequence[int]], prefix_len: int, suffix_len: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 [M, P + S] of the texts long enough, their indices into ``seqs``)."""
    need = prefix_len + suffix_len
    keep = np.array([i for i, s in enumerate(seqs) if len(s) >= need], np.int64)
    tokens = np.array([list(seqs[i][:need]) for i in keep], np.int32).reshape(len(keep), need)
    return tokens, keep


def extraction_stats(params: dict, cfg: ModelConfig, seqs: Sequence[Sequence[int]],
                     ecfg: ExtractionConfig = ExtractionConfig(), *, pad_id: int = 0,
                     progress: bool = False) -> dict:
    """Both measures for tokenized texts (see the module docstring).

    Args:
      params, cfg: the model (any tuning method's leaves included).
      seqs: token id lists, one per text.
      ecfg: prompt and suffix lengths, (n, p), batching.
      pad_id: the tokenizer's padding id.
      progress: progress bars for generation and scoring.

    Returns:
      A dict: ``n_texts``, ``n_skipped`` (shorter than P + S), ``n_evaluated``;
      ``k_extractable_rate`` (fraction of evaluated texts whose suffix greedy decoding
      reproduces exactly), ``token_match`` (mean fraction of suffix tokens reproduced),
      ``discoverable`` ({"n=N,p=P": fraction of texts with 1 - (1 - p_x)^N >= P}),
      ``mean_log_px`` (over texts with p_x > 0; None if none), ``n_px_zero`` (texts whose
      suffix the sampling scheme cannot produce); and ``per_text`` lists over the evaluated
      texts: ``index`` (into ``seqs``), ``extracted``, ``token_match``, ``log_px`` (natural
      log; None for p_x = 0). Rates are NaN when no text is long enough.

    Raises:
      ValueError: P + S beyond the model's context.
    """
    p_len, s_len = ecfg.prefix_len, ecfg.suffix_len
    if p_len + s_len > cfg.max_positions:
        raise ValueError(f"prefix_len + suffix_len = {p_len + s_len} exceeds the model's "
                         f"context ({cfg.max_positions} positions); lower them.")
    tokens, index = split_sequences(seqs, p_len, s_len)
    m = len(index)
    out = {"n_texts": len(seqs), "n_skipped": len(seqs) - m, "n_evaluated": m}
    if m == 0:
        nan = float("nan")
        return {**out, "k_extractable_rate": nan, "token_match": nan, "mean_log_px": None,
                "n_px_zero": 0,
                "discoverable": {f"n={n},p={ecfg.p:g}": nan for n in ecfg.n_samples},
                "per_text": {"index": [], "extracted": [], "token_match": [], "log_px": []}}
    gcfg = GenerateConfig(max_new_tokens=s_len, batch_size=ecfg.batch_size, dtype=ecfg.dtype,
                          pad_id=pad_id)
    generated = generate(params, cfg, tokens[:, :p_len], gcfg, progress=progress)
    same = generated == tokens[:, p_len:]
    if ecfg.plain_sampling:
        # Teacher-forced: column t of logp is token t + 1 given tokens 0..t, so the suffix's
        # tokens P..P+S-1 are columns P-1..P+S-2.
        stats = score_sequences(params, cfg, tokens, batch_size=ecfg.batch_size,
                                dtype=ecfg.dtype, pad_id=pad_id, progress=progress)
        log_px = stats.logp[:, p_len - 1:p_len + s_len - 1].astype(np.float64).sum(-1)
    else:
        log_px = sampling_log_px(params, cfg, tokens, ecfg, progress=progress)
    # p_x = 0 (a suffix token a truncated scheme never samples) is written as null in JSON
    zero = np.isneginf(log_px)
    return {**out, "k_extractable_rate": float(same.all(-1).mean()),
            "token_match": float(same.mean()),
            "mean_log_px": float(log_px[~zero].mean()) if (~zero).any() else None,
            "n_px_zero": int(zero.sum()),
            "discoverable": {f"n={n},p={ecfg.p:g}": float((discoverable_prob(log_px, n)
                                                           >= ecfg.p).mean())
                             for n in ecfg.n_samples},
            "per_text": {"index": index.tolist(), "extracted": same.all(-1).tolist(),
                         "token_match": same.mean(-1).tolist(),
                         "log_px": [None if z else v for z, v in zip(zero, log_px.tolist())]}}


def extraction_metrics(params: dict, cfg: ModelConfig, tokenizer, members: Sequence[str],
                       nonmembers: Sequence[str], ecfg: ExtractionConfig = ExtractionConfig(),
                       *, progress: bool = False) -> dict:
    """:func:`extraction_stats` of member texts and of non-member texts (the control).

    Each text is tokenized as :func:`jaxmem.batching.encode_texts` does and cut to its first
    P + S tokens.

    Returns:
      ``{"config": the ExtractionConfig as a dict, "members": {...}, "nonmembers": {...}}``.

    Example:
        >>> from jaxmem import tiny_model
        >>> params, cfg, tok = tiny_model()
        >>> out = extraction_metrics(params, cfg, tok, ["The cat sat on the mat all day."],
        ...                          ["Too short."], ExtractionConfig(prefix_len=8, suffix_len=8))
        >>> out["members"]["n_evaluated"], out["nonmembers"]["n_skipped"]  # 10 < P + S tokens
        (1, 1)
        >>> out["members"]["per_text"]["extracted"]
        [False]
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = {"config": dataclasses.asdict(ecfg)}
    for name, texts in (("members", members), ("nonmembers", nonmembers)):
        with warnings.catch_warnings():  # cutting texts to P + S tokens is the point here
            warnings.simplefilter("ignore")
            seqs, _ = encode_texts(tokenizer, texts, ecfg.prefix_len + ecfg.suffix_len)
        out[name] = extraction_stats(params, cfg, seqs, ecfg, pad_id=pad_id, progress=progress)
    return out
