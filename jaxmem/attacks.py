"""Membership inference attacks: cheap reductions of the per-token statistics of one scoring pass.

Every attack returns one score per example with the same convention: **higher means more likely a
member**. Inputs are :class:`jaxmem.scoring.TokenStats` (masked [N, L] arrays) from the target
model, plus what an attack needs besides: the reference model's statistics (Ref, EZ-MIA), the
target's on lowercased text (Lowercase) or after a non-member prefix (ReCaLL), and a token
frequency table (DC-PDD). An example with no scored token gets NaN (the metrics refuse NaN unless
told to drop it). EZ-MIA scores +inf where all its evidence points to a member (see :func:`ez_mia`);
:func:`as_ranks` turns such scores into extreme finite ranks for the metrics.

Example:
    >>> import jaxmem
    >>> from jaxmem.batching import truncate_texts
    >>> params, cfg, tok = jaxmem.tiny_model()
    >>> texts = ["The cat sat on the mat.", "Stock prices rose in May."]
    >>> stats = jaxmem.score_texts(params, cfg, tok, texts, block_size=32)
    >>> inputs = AttackInputs(target=stats, texts=truncate_texts(tok, texts, 32))
    >>> scores = run_attacks(["loss", "zlib", "min_k:0.2"], inputs)
    >>> {name: s.shape for name, s in scores.items()}
    {'loss': (2,), 'zlib': (2,), 'min_k:0.2': (2,)}
"""

from __future__ import annotations

import dataclasses
import zlib as _zlib
from typing import Callable, Sequence

import numpy as np

from jaxmem import attack_options
from jaxmem.scoring import TokenStats


@dataclasses.dataclass
class AttackInputs:
    """What the attacks read: the target's statistics and the texts, plus optional passes.

    ``texts`` are the texts as scored (:func:`jaxmem.batching.truncate_texts`: a text longer than
    ``block_size`` tokens cut to the part its scored tokens cover), so that text-level
    statistics (Zlib's compressed size) describe the same text as ``target``.
    """

    target: TokenStats
    texts: Sequence[str]  # as scored: batching.truncate_texts(tokenizer, texts, block_size)
    reference: TokenStats | None = None   # same texts under the reference model (Ref, EZ-MIA)
    lowercase: TokenStats | None = None   # lowercased texts under the target (Lowercase)
    recall: TokenStats | None = None      # texts after a non-member prefix, target (ReCaLL)
    frequencies: np.ndarray | None = None  # DC-PDD's smoothed token frequencies [vocab]
    # gradient-norm scores {"trainable": [N], "all": [N]} (jaxmem.gradnorm; a backward pass,
    # not a reduction of the scoring pass)
    grad_norms: dict | None = None
    # K reference models' log-likelihoods for LiRA / RMIA: {(k, pop):
    # jaxmem.reference_attacks.ReferenceSignals}
    references: dict | None = None


def _mean_ll(s: TokenStats) -> np.ndarray:
    return -s.nll()


def loss(inp: AttackInputs) -> np.ndarray:
    """LOSS (Yeom et al., 2018): the mean token log-likelihood, -(1/N) sum_t NLL_t."""
    return _mean_ll(inp.target)


def ref(inp: AttackInputs) -> np.ndarray:
    """Ref (Carlini et al., 2021; Mireshghallah et al., 2022): -(NLL_target - NLL_reference).

    The reference defaults to the base model before fine-tuning, which calibrates away how
    intrinsically easy a text is.
    """
    if inp.reference is None:
        raise ValueError("The ref attack needs the reference model's scores (AttackInputs.reference).")
    return _mean_ll(inp.target) - _mean_ll(inp.reference)


def zlib(inp: AttackInputs) -> np.ndarray:
    """Zlib (Carlini et al., 2021), in the variant of Shi et al. (2024)'s reference code:
    mean token log-likelihood / len(zlib.compress(utf-8 text)) in bytes (level 6).

    The text is ``AttackInputs.texts``, which must be the text as scored
    (:func:`jaxmem.batching.truncate_texts`): a text cut to its first ``block_size`` tokens
    has its likelihood measured on that block only, so its compressed size must be too.
    """
    nbytes = np.array([len(_zlib.compress(t.encode("utf-8"))) for t in inp.texts], np.float64)
    return _mean_ll(inp.target) / nbytes


def _lowest_k_mean(values: np.ndarray, mask: np.ndarray, k: float) -> np.ndarray:
    """Mean of the ceil(k * N) smallest masked values per row (at least one; NaN if N == 0)."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}.")
    n = mask.sum(-1)
    m = np.where(n > 0, np.maximum(np.ceil(k * n - 1e-9), 1), 0).astype(int)
    v = np.sort(np.where(mask, values.astype(np.float64), np.inf), axis=-1)
    keep = np.arange(v.shape[-1])[None, :] < m[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(keep, v, 0.0).sum(-1) / m


def min_k(inp: AttackInputs, k: float = 0.2) -> np.ndarray:
    """Min-K% Prob (Shi et al., 2024): mean log p of the ceil(k*N) least likely tokens."""
    return _lowest_k_mean(inp.target.logp, inp.target.mask, k)


def min_k_pp(inp: AttackInputs, k: float = 0.2) -> np.ndarray:
    """Min-K%++ (Zhang et al., 2024): Min-K% over (log p(x_t) - mu_t) / sigma_t, where mu_t and
    sigma_t are the mean and standard deviation of log p(z) for z ~ p(. | x_<t)."""
    s = inp.target
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (s.logp.astype(np.float64) - s.mu) / s.sigma
    return _lowest_k_mean(z, s.mask, k)


def lowercase(inp: AttackInputs) -> np.ndarray:
    """Lowercase (Carlini et al., 2021): NLL(lowercased text) / NLL(text) under the target, the
    ratio of log-perplexities; a memorized text loses more likelihood when its case changes."""
    if inp.lowercase is None:
        raise ValueError("The lowercase attack needs the target's scores on lowercased texts "
                         "(AttackInputs.lowercase).")
    with np.errstate(invalid="ignore", divide="ignore"):
        return inp.lowercase.nll() / inp.target.nll()


def ez_mia(inp: AttackInputs) -> np.ndarray:
    """EZ-MIA (Ilić, Stanojević and Cvejoski, 2026, arXiv 2601.12104): the Error Zone score.

    Over the error zone E, the scored tokens where the target's top-1 prediction is wrong
    (``top1`` False), with d_t = log p_target(x_t) - log p_reference(x_t), P = sum of the
    positive d_t over E and N = sum of |d_t| over the negative ones:

        EZ = P / N

    (fine-tuning raises a member's true token even where the model still gets it wrong). As
    in the authors' reference code (``error_zone_pos_neg_sum_ratio``, github.com/
    JetBrains-Research/ez-mia): the first scored token of each text is left out
    (``ignore_bos``), and a text with fewer than 2 error tokens scores 0.0 (one delta, or none,
    is too little to rank a text on; such a text is nearly all top-1 hits, which LOSS and
    Min-K% see). A text with no scored token is NaN (this project's convention). The reference
    is the base model, as in the paper's "base" variant.

    **Deviation from the reference code, on purpose.** Where N = 0 the reference code returns
    0.0, the LEAST member-like score, whatever P is (and otherwise P / (N + 1e-12)). But N = 0
    with P > 0 means every error token moved toward the target: the limit of P / N as N -> 0,
    the strongest member evidence there is. Here that case scores **+inf** (ranked above every
    finite score; texts in it tie with each other). Measured on this project's full
    fine-tuning cell: 44 of 128 members and no non-member were in that case, and ranking them
    first instead of last lifts EZ-MIA's AUC from 0.645 to 0.989. Where N = 0 and P = 0 (every
    error-zone d_t exactly 0) there is no evidence either way: 0.0, as in the reference code.
    The reference's 1e-12 in the denominator is left out (it matters only for N near 1e-12).

    ``jaxmem.metrics`` refuses non-finite scores: pass EZ-MIA scores through :func:`as_ranks`
    (+inf to the largest float) before computing metrics, as :mod:`jaxmem.audit` and
    :mod:`jaxmem.streaming` do; ``scores.parquet`` keeps the +inf.
    """
    t, r = inp.target, inp.reference
    if r is None:
        raise ValueError("The ez_mia attack needs the reference model's scores "
                         "(AttackInputs.reference): pass reference_params (the base model).")
    if t.top1 is None:
        raise ValueError("The ez_mia attack needs the target's top-1 flags (TokenStats.top1), "
                         "which score_texts / score_sequences fill; rescore the texts.")
    first = np.arange(t.mask.shape[1])[None, :] == np.argmax(t.mask, axis=1)[:, None]
    err = t.mask & ~t.top1 & ~first
    d = np.where(err, t.logp.astype(np.float64) - r.logp, 0.0)
    pos, neg = np.where(d > 0, d, 0.0).sum(-1), np.where(d < 0, -d, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(neg > 0, pos / neg, np.where(pos > 0, np.inf, 0.0))
    ez = np.where(err.sum(-1) >= 2, ratio, 0.0)
    return np.where(t.n_tokens > 0, ez, np.nan)


def as_ranks(scores) -> np.ndarray:
    """Scores (float64) with +inf / -inf replaced by the largest / most negative float, NaN kept.

    An infinite score is an extreme rank, not a missing one (:func:`ez_mia` scores +inf), but
    ``jaxmem.metrics`` refuses non-finite scores (or drops them): this keeps every infinite
    score, ranked above (below) every finite one; ties among them stay ties.
    """
    big = np.finfo(np.float64).max
    return np.nan_to_num(np.asarray(scores, np.float64), nan=np.nan, posinf=big, neginf=-big)


def dc_pdd(inp: AttackInputs, a: float = 0.01) -> np.ndarray:
    """DC-PDD (Zhang et al., 2024, "Pretraining Data Detection for Large Language Models: A
    Divergence-based Calibration Method", arXiv 2409.14781, EMNLP 2024).

    With f(v) = (count(v) + 1) / (sum_u count(u) + |V|), the Laplace-smoothed frequency of token
    v in a reference corpus (``AttackInputs.frequencies``, :func:`token_frequencies`), and FOS
    the positions of each distinct scored token's first occurrence in the text:

        alpha_t = min(p(x_t | x_<t) * log(1 / f(x_t)), a),  score = mean_{t in FOS} alpha_t

    Higher means member (the reference code's ``-mean`` is "larger for non-member"); ``a`` is
    the paper's upper bound, default 0.01 as in the authors' code (github.com/zhang-wei-chao/
    DC-PDD): spec ``dc_pdd:0.01``.
    """
    s, f = inp.target, inp.frequencies
    if f is None:
        raise ValueError("The dc_pdd attack needs a token frequency table "
                         "(AttackInputs.frequencies, see attacks.token_frequencies).")
    if s.token_ids is None:
        raise ValueError("The dc_pdd attack needs the scored token ids (TokenStats.token_ids).")
    out = np.full(s.mask.shape[0], np.nan)
    for i, (ids, lp, m) in enumerate(zip(s.token_ids, s.logp, s.mask)):
        if not m.any():
            continue
        ids, lp = ids[m], lp[m].astype(np.float64)
        if ids.max() >= len(f):
            raise ValueError(f"Token id {ids.max()} is outside the frequency table "
                             f"({len(f)} tokens); build it with the model's vocabulary size.")
        _, first = np.unique(ids, return_index=True)  # each distinct token's first position
        alpha = np.exp(lp[first]) * -np.log(f[ids[first]])
        # a text clipped throughout scores exactly a (a mean of n copies of a need not be, and
        # near-equal scores break histogram bins)
        out[i] = a if (alpha >= a).all() else np.minimum(alpha, a).mean()
    return out


def recall(inp: AttackInputs) -> np.ndarray:
    """ReCaLL (Xie et al., 2024, "ReCaLL: Membership Inference via Relative Conditional
    Log-Likelihoods", arXiv 2406.15968): LL(x | P) / LL(x), with LL the mean token
    log-likelihood and P a fixed prefix of non-member text.

    A member's likelihood drops more when conditioned on non-member context, so with LL < 0
    the ratio (= NLL(x | P) / NLL(x)) is larger for members: higher means member, as in the
    authors' evaluation (github.com/ruoyuxie/recall, roc_curve(labels, ll_cond / ll)). Both
    likelihoods average the same tokens of x (``AttackInputs.recall`` is aligned with
    ``target``, see :func:`jaxmem.scoring.score_after_prefix`); the reference code also scores
    x's first token under P.
    """
    if inp.recall is None:
        raise ValueError("The recall attack needs the target's scores of the texts after a "
                         "non-member prefix (AttackInputs.recall): set AuditConfig.recall_prefix "
                         "or pass prefix texts (scoring.score_after_prefix).")
    with np.errstate(invalid="ignore", divide="ignore"):
        return inp.recall.nll() / inp.target.nll()


def token_frequencies(tokenizer, texts, vocab_size: int, max_tokens: int = 1024) -> np.ndarray:
    """Token counts [vocab_size] (int64) of texts, each tokenized as the tokenizer does by
    default and cut to its first ``max_tokens`` tokens, as DC-PDD's reference code counts its
    reference corpus (``com_fre_dis.py``); :func:`smoothed` turns them into DC-PDD's f."""
    counts = np.zeros(vocab_size, np.int64)
    texts = list(texts)
    for start in range(0, len(texts), 256):  # tokenized in batches: fast, and bounded memory
        for ids in tokenizer(texts[start:start + 256])["input_ids"]:
            ids = np.asarray(ids[:max_tokens], np.int64)
            if ids.size and ids.max() >= vocab_size:
                raise ValueError(f"Token id {ids.max()} >= vocab_size {vocab_size}: the "
                                 "tokenizer does not belong to this model.")
            counts += np.bincount(ids, minlength=vocab_size)
    return counts


def smoothed(counts: np.ndarray) -> np.ndarray:
    """Laplace smoothing (DC-PDD): f(v) = (count(v) + 1) / (sum counts + |V|), float64."""
    counts = np.asarray(counts, np.float64)
    return (counts + 1.0) / (counts.sum() + counts.size)


def _grad_norm(inp: AttackInputs, which: str) -> np.ndarray:
    if inp.grad_norms is None or which not in inp.grad_norms:
        raise ValueError(f"The gradient-norm attack needs per-example gradient norms over the "
                         f"{which} leaves (AttackInputs.grad_norms[{which!r}], from "
                         "jaxmem.gradnorm.grad_norm_scores).")
    return np.asarray(inp.grad_norms[which], np.float64)


def grad_norm(inp: AttackInputs) -> np.ndarray:
    """Gradient norm (as in MIMIR, Duan et al., 2024): -(1/J) sum_j ||dL(x)/dW_j||_inf over the
    J tensors of the method's TRAINABLE leaves, L(x) the mean token loss; members sit nearer a
    minimum, so smaller gradients (higher score). Computed by :mod:`jaxmem.gradnorm` with
    ``jax.vmap(jax.grad(...))``; the exact conventions are documented there."""
    return _grad_norm(inp, "trainable")


def grad_norm_all(inp: AttackInputs) -> np.ndarray:
    """Gradient norm over ALL parameter tensors (the base model's too), as :func:`grad_norm`."""
    return _grad_norm(inp, "all")


def lira(inp: AttackInputs, **options) -> np.ndarray:
    """Offline LiRA (Carlini et al., 2022) against K reference fine-tunes that never saw the
    audited texts: :func:`jaxmem.reference_attacks.lira` (spec ``lira:k=4``)."""
    # imported here: the reference-model machinery (training, checkpoints) loads only when
    # LiRA or RMIA runs, not for every attack
    from jaxmem import reference_attacks

    return reference_attacks.lira(inp, **options)


def rmia(inp: AttackInputs, **options) -> np.ndarray:
    """Offline RMIA (Zarifzadeh et al., 2024) against K reference fine-tunes, their population
    as the z samples: :func:`jaxmem.reference_attacks.rmia` (spec ``rmia:k=4,a=tune``)."""
    from jaxmem import reference_attacks

    return reference_attacks.rmia(inp, **options)


ATTACKS: dict[str, Callable[..., np.ndarray]] = {
    "loss": loss, "ref": ref, "zlib": zlib, "min_k": min_k, "min_k_pp": min_k_pp,
    "lowercase": lowercase, "ez_mia": ez_mia, "dc_pdd": dc_pdd, "recall": recall,
    "grad_norm": grad_norm, "grad_norm_all": grad_norm_all, "lira": lira, "rmia": rmia,
}
DEFAULT_ATTACKS = ("loss", "ref", "zlib", "min_k", "min_k_pp", "lowercase")
# attacks with an argument: (name of the keyword, its default, its check, what it must be)
ARGUMENTS = {
    "min_k": ("k", 0.2, lambda k: 0 < k <= 1, "in (0, 1]"),
    "min_k_pp": ("k", 0.2, lambda k: 0 < k <= 1, "in (0, 1]"),
    "dc_pdd": ("a", 0.01, lambda a: a > 0, "> 0"),
}
# the extra inputs each attack needs (AttackInputs fields besides target and texts)
NEEDS = {"ref": ("reference",), "ez_mia": ("reference",), "lowercase": ("lowercase",),
         "recall": ("recall",), "dc_pdd": ("frequencies",),
         "grad_norm": ("gradients:trainable",), "grad_norm_all": ("gradients:all",),
         "lira": ("references",), "rmia": ("references",)}
SPECS_HELP = ", ".join(f"{n}:{ARGUMENTS[n][0].upper()}" if n in ARGUMENTS
                       else attack_options.HELP.get(n, n) for n in ATTACKS)


def join_specs(items: Sequence[str]) -> tuple[str, ...]:
    """Attack specs from a comma-split list: a piece ``key=value`` without a name continues the
    spec before it (``["rmia:k=4", "a=0.3"]`` -> ``("rmia:k=4,a=0.3",)``), so that
    ``--attacks loss,rmia:k=4,a=0.3`` reads as two attacks."""
    out: list[str] = []
    for item in (x.strip() for s in items for x in str(s).split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item and out:
            out[-1] += "," + item
        else:
            out.append(item)
    return tuple(out)


def parse_attack(spec: str) -> tuple[str, Callable[[AttackInputs], np.ndarray]]:
    """``"min_k"`` or ``"min_k:0.1"`` (or ``"lira:k=4"``, :mod:`jaxmem.attack_options`) ->
    (canonical name, function of AttackInputs)."""
    name, _, arg = spec.partition(":")
    if name not in ATTACKS:
        raise ValueError(f"Unknown attack {name!r}; choose from {', '.join(ATTACKS)} "
                         f"({', '.join(ARGUMENTS)} take an argument, e.g. min_k:0.1; "
                         f"{', '.join(attack_options.HELP)} options, e.g. lira:k=4).")
    fn = ATTACKS[name]
    if name in attack_options.OPTIONS:  # named options, name:key=value,key=value
        canonical, options = attack_options.parse_options(name, arg, spec)
        return canonical, lambda inp: fn(inp, **options)
    if name in ARGUMENTS:
        key, default, ok, what = ARGUMENTS[name]
        try:
            v = float(arg) if arg else default
        except ValueError:
            raise ValueError(f"Attack {spec!r}: {key} must be a number {what}, e.g. "
                             f"{name}:{default / 2:g}.") from None
        if not ok(v):
            raise ValueError(f"Attack {spec!r}: {key} must be {what}, got {v}.")
        return f"{name}:{v:g}", lambda inp: fn(inp, **{key: v})
    if arg:
        raise ValueError(f"Attack {name!r} takes no argument (got {spec!r}).")
    return name, fn


def needs(specs: Sequence[str]) -> set[str]:
    """Which extra inputs a list of attacks needs: a subset of {"reference", "lowercase",
    "recall"} (extra scoring passes), "frequencies" (DC-PDD's table), "gradients:trainable"
    / "gradients:all" (per-example gradient norms) and "references" (K reference fine-tunes:
    LiRA, RMIA)."""
    return {x for s in specs for x in NEEDS.get(s.partition(":")[0], ())}


def run_attacks(specs: Sequence[str], inputs: AttackInputs) -> dict[str, np.ndarray]:
    """Runs each attack spec on the same inputs; returns {canonical name: scores [N]}."""
    n = inputs.target.logp.shape[0]
    sizes = {"texts": len(inputs.texts)}
    for extra in ("reference", "lowercase", "recall"):
        if getattr(inputs, extra) is not None:
            sizes[extra] = getattr(inputs, extra).logp.shape[0]
    wrong = {k: v for k, v in sizes.items() if v != n}
    if wrong:
        raise ValueError(f"Attack inputs disagree in size: target has {n} examples but {wrong}.")
    out = {}
    for spec in specs:
        name, fn = parse_attack(spec)
        out[name] = fn(inputs)
    return out


__all__ = ["ATTACKS", "DEFAULT_ATTACKS", "AttackInputs", "as_ranks", "dc_pdd", "ez_mia", "loss",
           "join_specs", "lira", "lowercase", "min_k", "min_k_pp", "needs", "parse_attack",
           "recall", "ref", "rmia", "run_attacks", "smoothed", "token_frequencies", "zlib"]
