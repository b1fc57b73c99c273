"""Which rows to read, and whether a method is at comparable utility: the paper compares
memorization across methods at similar utility, so every table, figure and claim reads a
method's perplexity against the base model's before its AUC.

Example:
    >>> comparable_utility(30.0, base_ppl=28.0), comparable_utility(80.0, base_ppl=28.0)
    (True, False)
"""

from __future__ import annotations

import numpy as np

from jaxmem.tuning.names import display_name

__all__ = ["COMPARABLE_PPL_RATIO", "MIN_COMPARABLE_PPL_RATIO", "base_val_ppl",
           "comparable_utility", "final_rows", "not_comparable", "select", "utility_note"]


def select(rows: list[dict], **kw) -> list[dict]:
    """The rows whose columns hold the given values: ``select(rows, method="lora", epoch=2)``."""
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def final_rows(rows: list[dict]) -> list[dict]:
    """Each (model, dataset, method)'s rows at its last attacked epoch."""
    last = {}
    for r in rows:
        k = (r["model"], r["dataset"], r["method"])
        last[k] = max(last.get(k, -1), r["epoch"])
    return [r for r in rows if r["epoch"] == last[(r["model"], r["dataset"], r["method"])]]


# A fine-tuned model is "at comparable utility" when its validation perplexity lies within
# [MIN_COMPARABLE_PPL_RATIO, COMPARABLE_PPL_RATIO] x the base model's: the paper compares
# memorization across methods at similar utility. Above the band, a method fits the data much
# worse than the model it started from (e.g. a diverged prefix) and says little about how much
# that method memorizes. Below it, a method has fit the distribution far beyond what the base
# model could (templated records such as the ``infobox`` corpus reach 0.12-0.40x): its AUC
# then mixes memorization with a different, much better fit, and is not comparable either.
# Both ends are fixed in advance, not tuned to a study.
COMPARABLE_PPL_RATIO = 1.25
MIN_COMPARABLE_PPL_RATIO = 0.5


def comparable_utility(val_ppl: float, base_ppl: float) -> bool:
    """``0.5 x base_ppl <= val_ppl <= 1.25 x base_ppl`` (:data:`MIN_COMPARABLE_PPL_RATIO`,
    :data:`COMPARABLE_PPL_RATIO`); a NaN perplexity is not comparable."""
    return bool(MIN_COMPARABLE_PPL_RATIO * base_ppl <= val_ppl <= COMPARABLE_PPL_RATIO * base_ppl)


def base_val_ppl(rows: list[dict], model: str, dataset: str) -> float | None:
    """The base model's validation perplexity (its epoch-0 row), None if it has no row."""
    base = select(rows, model=model, dataset=dataset, method="base")
    return base[0]["val_ppl"] if base else None


def not_comparable(rows: list[dict], model: str, dataset: str) -> dict[str, float]:
    """``{method: last-epoch val ppl / base val ppl}`` of one (model, dataset)'s methods that
    are not at comparable utility (:func:`comparable_utility`); empty without a base row. A
    method trained with several seeds (rows with a ``seed``) is judged on the mean of its
    seeds' perplexities."""
    base = base_val_ppl(rows, model, dataset)
    if base is None:
        return {}
    final = final_rows(select(rows, model=model, dataset=dataset))
    by_seed: dict[str, dict] = {}
    for r in final:
        if r["method"] != "base":
            by_seed.setdefault(r["method"], {})[r.get("seed")] = r["val_ppl"]
    ppl = {m: float(np.mean(list(v.values()))) for m, v in by_seed.items()}
    return {m: v / base for m, v in ppl.items() if not comparable_utility(v, base)}


def utility_note(flagged: dict[str, float], base_ppl: float) -> str:
    """The sentence naming the methods :func:`not_comparable` flags (empty if none), each
    with the side of the band it fell out of."""
    if not flagged:
        return ""
    each = ", ".join(
        f"{display_name(m)} ({r:.2f}x, "
        + ("below" if r < MIN_COMPARABLE_PPL_RATIO else "above") + ")"
        for m, r in flagged.items())
    return (f"Not at comparable utility: {each}: their last-epoch validation perplexity is "
            f"outside {MIN_COMPARABLE_PPL_RATIO}x-{COMPARABLE_PPL_RATIO}x the base model's "
            f"({base_ppl:.2f}). Above: more than {COMPARABLE_PPL_RATIO}x, a much worse fit "
            f"than the base model; below: less than {MIN_COMPARABLE_PPL_RATIO}x, a fit far "
            "beyond it (e.g. templated records). Either way their memorization is not "
            "measured at similar utility.")
