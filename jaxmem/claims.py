"""The paper's claims, checked on a study's numbers with a paired bootstrap.

Claim 1 (parameter-based tuning memorizes more than prompt-based) and claim 2
(parameter-based memorization grows with epochs) are each a difference of AUCs measured on the
same resamples of the same texts (:mod:`jaxmem.paired`), read from the study's per-example
``scores.parquet`` files. A claim reads reproduced / contradicted / inconclusive with the
difference and its 95% interval; :func:`claim_lines` gives the report's lines.

Example:
    >>> lines = claim_lines(rows, "smollm2-135m", "default", "loss",
    ...                     score_reader("results/demo", "smollm2-135m", "default"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmem import runs
from jaxmem.report import (_family, _select, base_val_ppl, display_name, not_comparable,
                           utility_note)

__all__ = ["claim_lines", "score_reader"]


def score_reader(out: Path, model: str, dataset: str):
    """``(method, epoch) -> {column: list}`` of that attack folder's ``scores.parquet`` (None
    if missing), each file read once."""
    import functools

    import pyarrow.parquet as pq

    @functools.lru_cache(maxsize=None)
    def read(method, epoch):
        f = runs.study_attack_dir(out, model, dataset, method, epoch) / runs.SCORES
        return pq.read_table(f).to_pydict() if f.exists() else None

    return read


def _paired_aucs(tables: dict, attack: str, n_boot: int, seed: int):
    """Every key's AUC under ``attack`` on the same resamples (:func:`jaxmem.paired.paired_bootstrap`).

    Args:
      tables: ``{(method, epoch): scores table}`` as written by the audit (``member``, one
        column per attack, ``text``).

    Raises:
      ValueError: the tables do not hold the same texts in the same order, so their scores
        cannot be paired.
    """
    from jaxmem.paired import paired_bootstrap

    (key0, t0), *rest = tables.items()
    for key, t in rest:
        if t["member"] != t0["member"] or t.get("text") != t0.get("text"):
            raise ValueError(f"{display_name(key[0])} (epoch {key[1]}) was not attacked on the "
                             f"same texts in the same order as {display_name(key0[0])} "
                             f"(epoch {key0[1]})")
    labels = np.asarray(t0["member"], bool)
    scores = {k: np.asarray(t[attack], np.float64) for k, t in tables.items()}
    # "drop": an example without a score under one key leaves every key (audit's nan_policy).
    return paired_bootstrap(scores, labels, n_boot=n_boot, seed=seed, nan_policy="drop")


def _mean_difference(plus: list, minus: list) -> dict:
    """Weights of ``mean(AUC over plus) - mean(AUC over minus)`` for ``PairedAUCs.contrast``."""
    weights = {k: 1.0 / len(plus) for k in plus}
    for k in minus:
        weights[k] = weights.get(k, 0.0) - 1.0 / len(minus)
    return weights


def _judged(boot, weights: dict) -> str:
    """``reproduced: +0.080 [95% CI +0.020, +0.140]`` for a contrast claimed to be positive."""
    from jaxmem.paired import verdict

    est = boot.contrast(weights)
    return f"{verdict(est)}: {est}"


def claim_lines(rows, model, dataset, attack, scores=None, n_boot: int = 1000,
            seed: int = 0) -> list[str]:
    """The paper's claims 1 and 2, checked on this study's numbers with a paired bootstrap.

    Claim 1 compares the mean last-epoch AUC of the parameter-based methods with that of the
    prompt-based ones; claim 2 the mean over parameter-based methods of AUC(last epoch) -
    AUC(first epoch). Methods not at comparable utility (last-epoch validation perplexity more
    than 1.25x the base model's, :func:`jaxmem.report.not_comparable`) are left out of both
    and named in a line of their own. Each claim is a difference measured on the same
    resamples of the same texts (:mod:`jaxmem.paired`), so its interval is the interval of
    the difference: reproduced when
    it lies entirely above 0, contradicted when entirely below, inconclusive otherwise. Every
    pair behind a mean is listed too.

    Args:
      scores: ``(method, epoch) -> scores table or None`` (see :func:`score_reader`); without
        per-example scores no claim can be decided.
      n_boot, seed: the bootstrap's resamples and seed (the study's ``audit`` settings, so each
        method's own interval is the one in its ``metrics.json``).
    """
    sub = [r for r in rows if r["model"] == model and r["dataset"] == dataset
           and r["attack"] == attack and r["method"] != "base"]
    if not sub:
        return []
    last, first = max(r["epoch"] for r in sub), min(r["epoch"] for r in sub)
    # the claims compare methods at similar utility: leave out those that fit much worse
    flagged = not_comparable(rows, model, dataset)
    fin = [r["method"] for r in sub if r["epoch"] == last and r["method"] not in flagged]
    par = [m for m in fin if _family(m) == "parameter"]
    pro = [m for m in fin if _family(m) == "prompt"]
    grows = [m for m in par if _select(sub, method=m, epoch=first)] if last > first else []
    keys = [(m, last) for m in fin] + [(m, first) for m in grows]
    tables = {k: (scores or (lambda *_: None))(*k) for k in keys}
    missing = [f"{display_name(m)} (epoch {e})" for (m, e), t in tables.items() if t is None]
    boots, why_not = {}, None
    if missing:
        why_not = f"per-example scores missing for {', '.join(missing)}"
    else:
        try:
            for a in dict.fromkeys(r["attack"] for r in rows):
                if all(a in t for t in tables.values()):
                    boots[a] = _paired_aucs(tables, a, n_boot, seed)
        except ValueError as e:
            why_not = str(e)

    out = ["**The paper's claims on these numbers** (paired bootstrap: members and non-members "
           "are resampled once and every method's AUC is recomputed on the same resample; a "
           "claim is reproduced when the 95% interval of its difference lies entirely on the "
           "claimed side of 0, contradicted when entirely on the other side, inconclusive "
           "otherwise)", ""]
    names = lambda ms: ", ".join(display_name(m) for m in ms)  # noqa: E731
    if flagged:
        left = [f for f, ms in (("parameter", par), ("prompt", pro)) if not ms]
        out.append(f"- Left out of both claims: {names(flagged)}. "
                   + utility_note(flagged, base_val_ppl(rows, model, dataset))
                   + (f" That leaves no {' or '.join(left)}-based method to compare."
                      if left else ""))
    if par and pro:
        head = f"- Claim 1 (parameter-based tuning memorizes more), {attack} attack: "
        if why_not:
            out.append(head + f"inconclusive ({why_not}).")
        else:
            boot = boots[attack]
            pairs = "; ".join(
                f"{display_name(p)} − {display_name(q)} {boot.difference((p, last), (q, last))}"
                for p in par for q in pro)
            out.append(head + _judged(boot, _mean_difference([(m, last) for m in par],
                                                             [(m, last) for m in pro]))
                       + f", the mean AUC of the parameter-based methods ({names(par)}) minus "
                       f"that of the prompt-based ones ({names(pro)}) at epoch {last}. By pair: "
                       f"{pairs}. Compare their validation perplexities in the table: the claim "
                       "is about similar utility.")
            out.append("- Claim 1 under each attack (mean parameter-based minus mean "
                       "prompt-based AUC): " + "; ".join(
                           f"{a}: " + _judged(b, _mean_difference([(m, last) for m in par],
                                                                  [(m, last) for m in pro]))
                           for a, b in boots.items()) + ".")
    if grows:
        head = "- Claim 2 (parameter-based memorization grows with epochs): "
        if why_not:
            out.append(head + f"inconclusive ({why_not}).")
        else:
            boot = boots[attack]
            each = "; ".join(f"{display_name(m)} {boot.difference((m, last), (m, first))}"
                             for m in grows)
            out.append(head + _judged(boot, _mean_difference([(m, last) for m in grows],
                                                             [(m, first) for m in grows]))
                       + f", the mean over {names(grows)} of AUC(epoch {last}) − AUC(epoch "
                       f"{first}), {attack} attack. By method: {each}.")
    return out + [""]
