"""Membership inference attacks: cheap reductions of the per-token statistics of one scoring pass.

Every attack returns one score per example with the same convention: **higher means more likely a
member**. Inputs are :class:`jaxmem.scoring.TokenStats` (masked [N, L] arrays) from the target
model, plus the reference model's (Ref) or the target's on lowercased text (Lowercase) where an
attack needs them. An example with no scored token gets NaN (the metrics refuse NaN unless told to
drop it).

Example:
    >>> inputs = AttackInputs(target=score_texts(params, cfg, tok, texts), texts=texts)
    >>> scores = run_attacks(["loss", "zlib", "min_k:0.2"], inputs)
"""

from __future__ import annotations

import dataclasses
import zlib as _zlib
from typing import Callable, Sequence

import numpy as np

from jaxmem.scoring import TokenStats


@dataclasses.dataclass
class AttackInputs:
    """What the attacks read: the target's statistics and the raw texts, plus optional passes."""

    target: TokenStats
    texts: Sequence[str]
    reference: TokenStats | None = None   # same texts under the reference model (Ref)
    lowercase: TokenStats | None = None   # lowercased texts under the target (Lowercase)


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
    mean token log-likelihood / len(zlib.compress(utf-8 text)) in bytes (level 6)."""
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


ATTACKS: dict[str, Callable[..., np.ndarray]] = {
    "loss": loss, "ref": ref, "zlib": zlib, "min_k": min_k, "min_k_pp": min_k_pp,
    "lowercase": lowercase,
}
DEFAULT_ATTACKS = ("loss", "ref", "zlib", "min_k", "min_k_pp", "lowercase")


def parse_attack(spec: str) -> tuple[str, Callable[[AttackInputs], np.ndarray]]:
    """``"min_k"`` or ``"min_k:0.1"`` -> (canonical name, function of AttackInputs)."""
    name, _, arg = spec.partition(":")
    if name not in ATTACKS:
        raise ValueError(f"Unknown attack {name!r}; choose from {', '.join(ATTACKS)} "
                         "(min_k and min_k_pp take ':k', e.g. min_k:0.1).")
    fn = ATTACKS[name]
    if name in ("min_k", "min_k_pp"):
        try:
            k = float(arg) if arg else 0.2
        except ValueError:
            raise ValueError(f"Attack {spec!r}: k must be a number in (0, 1], e.g. min_k:0.1.") from None
        if not 0 < k <= 1:
            raise ValueError(f"Attack {spec!r}: k must be in (0, 1], got {k}.")
        return f"{name}:{k:g}", lambda inp: fn(inp, k=k)
    if arg:
        raise ValueError(f"Attack {name!r} takes no argument (got {spec!r}).")
    return name, fn


def needs(specs: Sequence[str]) -> set[str]:
    """Which extra scoring passes a list of attacks needs: a subset of {"reference", "lowercase"}."""
    names = {s.partition(":")[0] for s in specs}
    return {extra for attack, extra in (("ref", "reference"), ("lowercase", "lowercase"))
            if attack in names}


def run_attacks(specs: Sequence[str], inputs: AttackInputs) -> dict[str, np.ndarray]:
    """Runs each attack spec on the same inputs; returns {canonical name: scores [N]}."""
    n = inputs.target.logp.shape[0]
    sizes = {"texts": len(inputs.texts)}
    for extra in ("reference", "lowercase"):
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


__all__ = ["ATTACKS", "DEFAULT_ATTACKS", "AttackInputs", "loss", "lowercase", "min_k",
           "min_k_pp", "needs", "parse_attack", "ref", "run_attacks", "zlib"]
