"""Claim 4 of the paper, checked on a study's numbers: prompt-based tuning memorizes more on
structured data (the infobox corpus, WebNLG) than on free text.

Claim 4 compares two datasets, which hold different texts: their AUCs cannot be paired
example by example, so each dataset is resampled on its own and the replicates are combined
(:func:`across`); otherwise it is judged like claims 1 and 2 (:mod:`jaxmem.study.claims`).

Example:
    >>> is_structured("infobox"), is_structured("webnlg:data/webnlg"), is_structured("default")
    (True, True, False)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmem.bootstrap import percentile_interval
from jaxmem.paired import Estimate, judge_pairs
from jaxmem.study.claim_text import section_lines
from jaxmem.study.claims import (MIN_EFFECT, method_seeds, primary_attack, read_tables, seed_aucs,
                                 where_text)
from jaxmem.study.utility import COMPARABLE_PPL_RATIO, MIN_COMPARABLE_PPL_RATIO, not_comparable
from jaxmem.study.verdicts import Claim, ClaimSection
from jaxmem.tuning.names import family

__all__ = ["STRUCTURED_DATASETS", "across", "claim4_lines", "is_structured", "judge_claim4"]

#: Dataset names that count as structured (triples -> text) for claim 4; ``webnlg:DIR`` too.
STRUCTURED_DATASETS = ("infobox", "wiki-infobox", "webnlg", "web_nlg", "web_nlg_en")


def is_structured(dataset: str) -> bool:
    """True for the infobox corpus and WebNLG (by name, ``webnlg:DIR``, or a folder named so)."""
    name = str(dataset).strip().lower()
    prefix = name.partition(":")[0]
    return (name in STRUCTURED_DATASETS or prefix in ("webnlg", "web_nlg")
            or "webnlg" in Path(name).name)


def across(parts, alpha: float) -> Estimate:
    """``sum(sign * sum(w * AUC))`` over ``(boot, weights, sign)`` parts from independent
    bootstraps, with the percentile interval of the same sum formed on replicate ``b`` of
    every part (independent resamples, so the replicates combine row by row); the replicates
    are kept for the tests of :func:`jaxmem.paired.judge_pairs`."""
    value = float(sum(s * sum(w * boot.auc[k] for k, w in ws.items()) for boot, ws, s in parts))
    if any(not boot.n_boot for boot, _, _ in parts):
        return Estimate(value, level=1 - alpha)
    stat = np.asarray(sum(s * boot.replicates(ws) for boot, ws, s in parts), np.float64)
    return Estimate(value, *percentile_interval(stat, alpha), level=1 - alpha, replicates=stat)


def judge_claim4(rows, model, attack, scores=None, n_boot: int = 1000, seed: int = 0,
                 structured=None, *, primary: dict | None = None,
                 min_effect: float = MIN_EFFECT) -> ClaimSection | None:
    """Claim 4: prompt-based tuning memorizes more on structured data than on free text.

    Judged per prompt-based method m trained on both datasets: ``AUC_S(m) - AUC_F(m)``, each
    at its dataset's last epoch, where S is a structured dataset (:func:`is_structured`: the
    infobox corpus, WebNLG) and F a free-text one; reproduced only when every prompt-based
    method's difference is above ``min_effect`` (:func:`jaxmem.paired.judge_pairs`: an
    intersection-union test, Holm per method), under the claim's primary attack
    (:data:`jaxmem.study.claims.PRIMARY_ATTACKS`: ref). Secondary: the mean over the
    prompt-based methods ``D_prompt``, the same mean over the parameter-based ones ``D_param``
    (the paper frames the claim against parameter-based tuning), and ``D_prompt - D_param``.

    S and F hold different texts, so their AUCs are not paired: each dataset gets its own
    paired bootstrap over its methods (:func:`jaxmem.paired.hierarchical_bootstrap`,
    stratified, over each method's training seeds; seed ``seed`` for the free-text dataset,
    ``seed + 1`` for the structured one), and replicate b of a difference is formed from
    replicate b of each dataset's independent resamples.

    Args:
      rows: the study's result rows (``model``, ``dataset``, ``method``, ``epoch``,
        ``attack``; ``seed`` optional).
      attack: the report's main attack, used when the primary attack was not run.
      scores: ``dataset -> ((method, epoch[, seed=]) -> scores table or None)``, e.g.
        ``lambda d: score_reader(out, model, d)``; without it no claim is decided.
      n_boot, seed: the bootstrap's resamples and seed (the study's ``audit`` settings).
      structured: dataset names to treat as structured, overriding :func:`is_structured`.
      primary: ``{4: attack}`` overriding :data:`jaxmem.study.claims.PRIMARY_ATTACKS`.
      min_effect: the least AUC difference each method must exceed
        (:data:`jaxmem.study.claims.MIN_EFFECT`).

    Returns:
      One claim per (structured, free-text) pair of the model's datasets with prompt-based
      methods on both (:class:`jaxmem.study.verdicts.ClaimSection`), a claim "not judged"
      when one side kept no method at comparable utility, or None when the study lacks
      either kind of dataset or prompt-based methods on both.

    Example:
        >>> import numpy as np
        >>> member = [True] * 60 + [False] * 60
        >>> def scores(dataset):  # prompt tuning separates members only on the infobox texts
        ...     def read(method, epoch):
        ...         rng = np.random.default_rng([len(method), len(dataset)])
        ...         gap = 2.0 if (method, dataset) == ("prompt", "infobox") else 0.0
        ...         return {"member": member, "text": [dataset + str(i) for i in range(120)],
        ...                 "loss": list(np.array(member) * gap + rng.normal(size=120))}
        ...     return read
        >>> rows = [{"model": "m", "dataset": d, "method": m, "epoch": 2, "attack": "loss",
        ...          "val_ppl": 10.0} for d in ("default", "infobox") for m in ("lora", "prompt")]
        >>> (c,) = judge_claim4(rows, "m", "loss", scores, n_boot=200).claims
        >>> c.datasets, c.attack, c.verdict
        (('infobox', 'default'), 'loss', 'reproduced')
    """
    mine = [r for r in rows if r["model"] == model and r["method"] != "base"]
    attack, note = primary_attack(4, dict.fromkeys(r["attack"] for r in mine), attack, primary)
    sub = [r for r in mine if r["attack"] == attack]
    # like claims 1 and 2: a method far from the base model's utility on a dataset says nothing
    flagged = {d: not_comparable(rows, model, d) for d in dict.fromkeys(r["dataset"] for r in sub)}
    is_struct = (lambda d: d in structured) if structured is not None else is_structured
    trained = list(dict.fromkeys(r["dataset"] for r in sub if r["method"] != "base"))
    sub = [r for r in sub if r["method"] not in flagged[r["dataset"]]]
    datasets = list(dict.fromkeys(r["dataset"] for r in sub if r["method"] != "base"))
    struct = [d for d in datasets if is_struct(d)]
    free = [d for d in datasets if d not in struct]
    # a structured and a free-text dataset were trained on, but one side kept no method
    lost = [d for d in trained if d not in datasets]
    if lost and any(is_struct(d) for d in trained) and any(not is_struct(d) for d in trained):
        why = (f"no method on {', '.join(lost)} is at comparable utility (validation perplexity "
               f"within {MIN_COMPARABLE_PPL_RATIO:g}x-{COMPARABLE_PPL_RATIO:g}x the base "
               "model's; see the table above), so no difference there is one of memorization "
               "at similar utility")
        return ClaimSection("claim 4", model, None, (Claim(
            "4", "prompt-based tuning memorizes more on structured data", model, tuple(lost),
            attack, "not judged", reason=why, attack_note=note),), min_effect=min_effect)
    claims = [_claim4_pair(rows, sub, model, s_name, f_name, attack, note, scores, n_boot,
                           seed, min_effect) for s_name in struct for f_name in free]
    claims = tuple(c for c in claims if c is not None)
    return ClaimSection("claim 4", model, None, claims, min_effect=min_effect) if claims else None


def claim4_lines(rows, model, attack, scores=None, n_boot: int = 1000, seed: int = 0,
                 structured=None, **kw) -> list[str]:
    """The report's lines of claim 4: :func:`judge_claim4` (same arguments) rendered by
    :func:`jaxmem.study.claim_text.section_lines`; ``[]`` when nothing was judged."""
    return section_lines(judge_claim4(rows, model, attack, scores, n_boot, seed, structured,
                                      **kw))


def _base_auc(rows, model, attack, s_name, f_name) -> dict:
    """The base model's AUC on both datasets (empty unless both have one): a gap there is no
    memorization by tuning, yet it enters every cross-dataset difference of AUCs (the ref
    attack calibrates it away)."""
    base = {r["dataset"]: r["auc"] for r in rows if r["model"] == model
            and r["attack"] == attack and r["method"] == "base"}
    return ({s_name: base[s_name], f_name: base[f_name]} if s_name in base and f_name in base
            else {})


def _claim4_pair(rows, sub, model, s_name, f_name, attack, note, scores, n_boot, seed,
                 min_effect) -> Claim | None:
    last = {d: max(r["epoch"] for r in sub if r["dataset"] == d) for d in (s_name, f_name)}
    methods = {d: {r["method"] for r in sub if r["dataset"] == d and r["epoch"] == last[d]}
               for d in (s_name, f_name)}
    both = [m for m in dict.fromkeys(r["method"] for r in sub)
            if m in methods[s_name] and m in methods[f_name]]
    pro = [m for m in both if family(m) == "prompt"]
    par = [m for m in both if family(m) == "parameter"]
    if not pro:
        return None
    c = dict(claim="4", statement="every prompt-based method memorizes more on structured "
             "data", model=model, datasets=(s_name, f_name), attack=attack, attack_note=note,
             epochs=(last[s_name], last[f_name]),
             methods={"prompt": tuple(pro), **({"parameter": tuple(par)} if par else {})},
             base_auc=_base_auc(rows, model, attack, s_name, f_name), n_boot=n_boot,
             boot_seeds=(seed, seed + 1))
    boots, why_not = {}, None
    for d, d_seed in ((f_name, seed), (s_name, seed + 1)):
        read = (scores or (lambda _d: None))(d)
        seeds_of = {m: method_seeds(rows, model, d, m) for m in both}.get
        tables, missing = read_tables(read, [(m, last[d]) for m in both], seeds_of)
        missing += [where_text(k, s) for k, ts in tables.items()
                    for s, t in zip(seeds_of(k[0]), ts) if t is not None and attack not in t]
        if missing:
            why_not = f"per-example scores missing for {d} / {', '.join(missing)}"
            break
        try:
            boots[d] = seed_aucs(tables, attack, n_boot, d_seed, seeds_of)
        except ValueError as e:
            why_not = str(e)
            break
    if why_not:
        return Claim(verdict="inconclusive", reason=why_not, **c)
    alpha = boots[s_name].alpha

    def mean_w(ms, d):
        return {(m, last[d]): 1.0 / len(ms) for m in ms}

    def shift(ms):  # mean AUC on S minus mean AUC on F, as (boot, weights, sign) parts
        return [(boots[s_name], mean_w(ms, s_name), 1.0), (boots[f_name], mean_w(ms, f_name),
                                                           -1.0)]

    test = judge_pairs({m: across(shift([m]), alpha) for m in pro}, min_effect)
    secondary = {"prompt": across(shift(pro), alpha)}
    if par:
        secondary["parameter"] = across(shift(par), alpha)
        secondary["prompt - parameter"] = across(
            shift(pro) + [(b, w, -s) for b, w, s in shift(par)], alpha)
    n_seeds = tuple(sorted({n for b in boots.values() for n in b.n_seeds.values()}))
    return Claim(verdict=test.verdict, test=test, test_name="IUT", secondary=secondary,
                 n_seeds=n_seeds, **c)
