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


# ----------------------------------------------------------------------------- claim 4
# Claim 4 compares two datasets, which hold different texts: their AUCs cannot be paired
# example by example, so each dataset is resampled on its own and the replicates are combined.

__all__ += ["claim4_lines", "is_structured", "STRUCTURED_DATASETS"]

#: Dataset names that count as structured (triples -> text) for claim 4; ``webnlg:DIR`` too.
STRUCTURED_DATASETS = ("infobox", "wiki-infobox", "webnlg", "web_nlg", "web_nlg_en")


def is_structured(dataset: str) -> bool:
    """True for the infobox corpus and WebNLG (by name, ``webnlg:DIR``, or a folder named so)."""
    name = str(dataset).strip().lower()
    prefix = name.partition(":")[0]
    return (name in STRUCTURED_DATASETS or prefix in ("webnlg", "web_nlg")
            or "webnlg" in Path(name).name)


def _across(parts, alpha: float):
    """``sum(sign * sum(w * AUC))`` over ``(boot, weights, sign)`` parts from independent
    bootstraps, with the percentile interval of the same sum formed on replicate ``b`` of
    every part (independent resamples, so the replicates combine row by row)."""
    from jaxmem.bootstrap import _percentile_interval
    from jaxmem.paired import Estimate

    value = float(sum(s * sum(w * boot.auc[k] for k, w in ws.items()) for boot, ws, s in parts))
    if any(not boot.n_boot for boot, _, _ in parts):
        return Estimate(value)
    stat = sum(s * sum(w * boot.samples[k] for k, w in ws.items()) for boot, ws, s in parts)
    return Estimate(value, *_percentile_interval(np.asarray(stat), alpha))


def claim4_lines(rows, model, attack, scores=None, n_boot: int = 1000, seed: int = 0,
                 structured=None) -> list[str]:
    """Claim 4: prompt-based tuning memorizes more on structured data than on free text.

    The quantity is ``D_prompt = mean_m AUC_S(m) - mean_m AUC_F(m)`` over the prompt-based
    methods m trained on both datasets, each at its dataset's last epoch, where S is a
    structured dataset (:func:`is_structured`: the infobox corpus, WebNLG) and F a free-text
    one. As the paper frames it against parameter-based tuning, the same difference
    ``D_param`` over the parameter-based methods and the difference of differences
    ``D_prompt - D_param`` are given too.

    S and F hold different texts, so their AUCs are not paired: each dataset gets its own
    paired bootstrap over its methods (:func:`jaxmem.paired.paired_bootstrap`, stratified;
    seed ``seed`` for the free-text dataset, ``seed + 1`` for the structured one), and
    replicate b of a difference is formed from replicate b of each dataset's independent
    resamples. Its 95% percentile interval reads reproduced when entirely above 0,
    contradicted when entirely below, inconclusive otherwise (as :func:`claim_lines`).

    Args:
      rows: the study's result rows (``model``, ``dataset``, ``method``, ``epoch``,
        ``attack``).
      scores: ``dataset -> ((method, epoch) -> scores table or None)``, e.g.
        ``lambda d: score_reader(out, model, d)``; without it no claim is decided.
      n_boot, seed: the bootstrap's resamples and seed (the study's ``audit`` settings).
      structured: dataset names to treat as structured, overriding :func:`is_structured`.

    Returns:
      One line per (structured, free-text) pair of the model's datasets, or ``[]`` when the
      study lacks either kind or prompt-based methods on both.

    Example:
        >>> claim4_lines(rows, "smollm2-135m", "loss",
        ...              lambda d: score_reader("results/claim4", "smollm2-135m", d))
    """
    sub = [r for r in rows if r["model"] == model and r["attack"] == attack
           and r["method"] != "base"]
    # like claims 1 and 2: a method far from the base model's utility on a dataset says nothing
    flagged = {d: not_comparable(rows, model, d) for d in dict.fromkeys(r["dataset"] for r in sub)}
    sub = [r for r in sub if r["method"] not in flagged[r["dataset"]]]
    datasets = list(dict.fromkeys(r["dataset"] for r in sub))
    struct = [d for d in datasets if (d in structured if structured is not None
                                      else is_structured(d))]
    free = [d for d in datasets if d not in struct]
    out = []
    for s_name in struct:
        for f_name in free:
            line = _claim4_pair(sub, s_name, f_name, attack, scores, n_boot, seed)
            if line:
                out.append(line + _base_gap(rows, model, attack, s_name, f_name))
    return out + [""] if out else []


def _base_gap(rows, model, attack, s_name, f_name) -> str:
    """The base model's AUC on both datasets: a gap there is no memorization by tuning, yet
    it enters every cross-dataset difference of AUCs (the ref attack calibrates it away)."""
    base = {r["dataset"]: r["auc"] for r in rows if r["model"] == model
            and r["attack"] == attack and r["method"] == "base"}
    if s_name not in base or f_name not in base:
        return ""
    return (f" The base model, not fine-tuned, already has AUC {base[s_name]:.3f} on {s_name} "
            f"and {base[f_name]:.3f} on {f_name} ({base[s_name] - base[f_name]:+.3f}), which "
            "every difference above includes.")


def _claim4_pair(sub, s_name, f_name, attack, scores, n_boot, seed) -> str | None:
    last = {d: max(r["epoch"] for r in sub if r["dataset"] == d) for d in (s_name, f_name)}
    methods = {d: {r["method"] for r in sub if r["dataset"] == d and r["epoch"] == last[d]}
               for d in (s_name, f_name)}
    both = [m for m in dict.fromkeys(r["method"] for r in sub)
            if m in methods[s_name] and m in methods[f_name]]
    pro = [m for m in both if _family(m) == "prompt"]
    par = [m for m in both if _family(m) == "parameter"]
    if not pro:
        return None
    names = lambda ms: ", ".join(display_name(m) for m in ms)  # noqa: E731
    head = (f"- Claim 4 (prompt-based tuning memorizes more on structured data), {attack} "
            f"attack, {s_name} vs {f_name}: ")
    boots, why_not = {}, None
    for d, d_seed in ((f_name, seed), (s_name, seed + 1)):
        read = (scores or (lambda _d: lambda *_: None))(d)
        tables = {(m, last[d]): read(m, last[d]) for m in both}
        missing = [f"{d} / {display_name(m)} (epoch {e})" for (m, e), t in tables.items()
                   if t is None or attack not in t]
        if missing:
            why_not = f"per-example scores missing for {', '.join(missing)}"
            break
        try:
            boots[d] = _paired_aucs(tables, attack, n_boot, d_seed)
        except ValueError as e:
            why_not = str(e)
            break
    if why_not:
        return head + f"inconclusive ({why_not})."
    from jaxmem.paired import verdict

    alpha = boots[s_name].alpha

    def mean_w(ms, d):
        return {(m, last[d]): 1.0 / len(ms) for m in ms}

    def shift(ms):  # mean AUC on S minus mean AUC on F, as (boot, weights, sign) parts
        return [(boots[s_name], mean_w(ms, s_name), 1.0), (boots[f_name], mean_w(ms, f_name),
                                                           -1.0)]

    d_pro = _across(shift(pro), alpha)
    line = (head + f"{verdict(d_pro)}: {d_pro}, the mean AUC of the prompt-based methods "
            f"({names(pro)}) on {s_name} (epoch {last[s_name]}) minus that on {f_name} (epoch "
            f"{last[f_name]}). By method: " + "; ".join(
                f"{display_name(m)} {_across(shift([m]), alpha)}" for m in pro) + ".")
    if par:
        d_par = _across(shift(par), alpha)
        did = _across(shift(pro) + [(b, w, -s) for b, w, s in shift(par)], alpha)
        line += (f" The same difference for the parameter-based methods ({names(par)}): "
                 f"{d_par}; prompt-based minus parameter-based difference: {verdict(did)}: "
                 f"{did}.")
    return line + (" The datasets hold different texts, so each is resampled on its own "
                   f"(seeds {seed} and {seed + 1}) and the interval combines the two.")
