"""The paper's claims, checked on a study's numbers: every pair judged, as the paper states them.

The paper states its claims about *every* method of a family: claim 1, every parameter-based
method memorizes more than every prompt-based one; claim 2, every parameter-based method's
memorization grows with epochs while the prompt-based ones stay near chance; claim 4, every
prompt-based method memorizes more on structured data. So each claim is judged pair by pair
(:func:`jaxmem.paired.judge_pairs`), from the study's per-example ``scores.parquet`` files:

- every pair's difference of AUCs comes from one paired bootstrap (:mod:`jaxmem.paired`: the
  same resample of the texts for every method and epoch; with several training seeds a
  two-level bootstrap, seeds then texts, so every interval includes the seed variance);
- a claim reads **reproduced** only when every pair's difference is above the minimum effect
  :data:`MIN_EFFECT` (an intersection-union test, each pair one-sided at 2.5%),
  **contradicted** when every pair is significantly reversed, **mixed** when some pairs go
  each way (Holm-adjusted over the pairs), **inconclusive** otherwise; the mean over the pairs
  is a secondary line;
- "near chance" is an equivalence test (TOST at 5%: the 90% interval of the AUC inside
  0.5 +- :data:`CHANCE_MARGIN`, :func:`jaxmem.paired.judge_equivalence`);
- each claim is read under one attack named in advance (:data:`PRIMARY_ATTACKS`); the other
  attacks are secondary lines;
- methods not at comparable utility (:func:`jaxmem.report.comparable_utility`, two-sided) are
  left out and named.

``docs/statistics.md`` explains the choices. :func:`claim_lines` and :func:`claim4_lines` give
the report's lines.

Example:
    >>> lines = claim_lines(rows, "smollm2-135m", "default", "loss",
    ...                     score_reader("results/demo", "smollm2-135m", "default"))
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jaxmem import runs
from jaxmem.paired import (EQUIVALENCE_ALPHA, ONE_SIDED_ALPHA, Estimate, judge_equivalence,
                           judge_pairs)
from jaxmem.report import (COMPARABLE_PPL_RATIO, MIN_COMPARABLE_PPL_RATIO, _family, _select,
                           base_val_ppl, display_name, not_comparable, utility_note)

__all__ = ["claim_lines", "score_reader", "MIN_EFFECT", "CHANCE_MARGIN", "PRIMARY_ATTACKS",
           "primary_attack"]

#: The least difference of AUCs that counts as "memorizes more" (claims 1 and 4) or "grows"
#: (claim 2), fixed before any study was read: 0.05 is a tenth of the AUC's range above chance,
#: the smallest gap the paper's tables treat as a difference (its prompt-based methods sit
#: within 0.05 of one another and of 0.5, the parameter-based ones 0.1-0.4 above them).
MIN_EFFECT = 0.05

#: Half-width of the band around AUC 0.5 that counts as "near chance" (claim 2's prompt-based
#: side), for the equivalence test: the paper's prompt-based AUCs lie within 0.478-0.532.
CHANCE_MARGIN = 0.05

#: The attack each claim is judged under, named in advance (override with ``primary=``).
#: Claims 1 and 2: LOSS, the paper's own attack: its Tables 2-4, on which it states these
#: claims, are LOSS AUCs, and within one dataset every method is attacked on the same texts,
#: so the base model's own prior on them is common to every difference. Claim 4 compares two
#: datasets, whose texts differ: there the base model's LOSS AUC already differs between them
#: (the offline infobox / default pair: 0.396 vs 0.505) and a LOSS difference would count that
#: as memorization. Ref, the paper's reference attack (loss minus the pre-trained model's
#: loss; the per-text calibration of Carlini et al. 2021 and Mireshghallah et al. 2022),
#: removes it. Claim 5 (LoRA placement): LOSS, the attack of the paper's Table 4, on one
#: dataset's texts like claim 1. Other attacks are reported as secondary lines.
PRIMARY_ATTACKS = {1: "loss", 2: "loss", 4: "ref", 5: "loss"}


def primary_attack(claim: int, attacks, fallback: str, primary: dict | None = None
                   ) -> tuple[str, str]:
    """``(attack, note)``: the claim's primary attack (:data:`PRIMARY_ATTACKS`, ``primary``
    overriding) if the study ran it (exactly, or a spec of it such as ``min_k@20``), else
    ``fallback`` with a note saying so."""
    wanted = {**PRIMARY_ATTACKS, **(primary or {})}.get(claim, fallback)
    attacks = list(attacks)
    got = wanted if wanted in attacks else next(
        (a for a in attacks if a.startswith(wanted)), None)
    if got is not None:
        return got, ""
    return fallback, (f" (its primary attack, {wanted}, was not run: read under {fallback})"
                      if wanted != fallback else "")


def score_reader(out: Path, model: str, dataset: str):
    """``(method, epoch, seed=None) -> {column: list}`` of that attack folder's
    ``scores.parquet`` (None if missing), each file read once. ``seed=None`` is the folder
    without a training seed (the base model, and studies with one seed)."""
    import functools

    import pyarrow.parquet as pq

    @functools.lru_cache(maxsize=None)
    def read(method, epoch, seed=None):
        where = (runs.study_attack_dir(out, model, dataset, method, epoch) if seed is None
                 else runs.study_attack_dir(out, model, dataset, method, epoch, seed=seed))
        f = where / runs.SCORES
        return pq.read_table(f).to_pydict() if f.exists() else None

    return read


def _seeds(rows, model, dataset, method) -> list:
    """The training seeds of a method's rows (``seed`` column; ``[None]`` without one)."""
    seeds = {r.get("seed") for r in rows if r["model"] == model and r["dataset"] == dataset
             and r["method"] == method}
    return sorted(seeds, key=lambda s: (s is not None, s if s is not None else 0)) or [None]


def _where(key, s=None) -> str:
    m, e = key
    return f"{display_name(m)} (epoch {e}" + (f", seed {s})" if s is not None else ")")


def _read_tables(scores, keys, seeds_of) -> tuple[dict, list]:
    """``({key: [table per seed]}, missing)`` for keys ``(method, epoch)``; ``scores`` is
    called with ``seed=`` only for a seed that is not None, so a two-argument reader works."""
    tables, missing = {}, []
    for key in keys:
        tables[key] = []
        for s in seeds_of(key[0]):
            t = None if scores is None else scores(*key) if s is None else scores(*key, seed=s)
            if t is None:
                missing.append(_where(key, s))
            tables[key].append(t)
    return tables, missing


def _seed_aucs(tables: dict, attack: str, n_boot: int, seed: int, seeds_of=None):
    """Every key's AUC under ``attack`` on the same resamples, over its seeds
    (:func:`jaxmem.paired.hierarchical_bootstrap`; a method's epochs share each seed draw).

    Args:
      tables: ``{(method, epoch): [scores table of each seed]}`` as written by the audit
        (``member``, one column per attack, ``text``).

    Raises:
      ValueError: the tables do not hold the same texts in the same order, so their scores
        cannot be paired.
    """
    from jaxmem.paired import hierarchical_bootstrap

    seeds_of = seeds_of or (lambda _m: [None])
    key0, (t0, *_) = next(iter(tables.items()))
    for key, ts in tables.items():
        for s, t in zip(seeds_of(key[0]), ts):
            if t["member"] != t0["member"] or t.get("text") != t0.get("text"):
                raise ValueError(f"{_where(key, s)} was not attacked on the same texts in the "
                                 f"same order as {_where(key0, seeds_of(key0[0])[0])}")
    labels = np.asarray(t0["member"], bool)
    from jaxmem.attacks import as_ranks

    # an infinite score (EZ-MIA's all-positive error zone) is an extreme rank, not missing
    scores = {k: [as_ranks(np.asarray(t[attack], np.float64)) for t in ts]
              for k, ts in tables.items()}
    # "drop": an example without a score under one key leaves every key (audit's nan_policy).
    return hierarchical_bootstrap(scores, labels, n_boot=n_boot, seed=seed, nan_policy="drop",
                                  group=lambda key: key[0])


def _mean_difference(plus: list, minus: list) -> dict:
    """Weights of ``mean(AUC over plus) - mean(AUC over minus)`` for ``PairedAUCs.contrast``."""
    weights = {k: 1.0 / len(plus) for k in plus}
    for k in minus:
        weights[k] = weights.get(k, 0.0) - 1.0 / len(minus)
    return weights


def _p(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def _headline(test, noun: str, nouns: str) -> str:
    """``reproduced: all 9 pairs are above the +0.05 margin (...)`` for a :func:`judge_pairs`."""
    m, up, down = len(test.pairs), test.count("reproduced"), test.count("contradicted")
    every = f"the {noun} is" if m == 1 else f"all {m} {nouns} are"
    margin = f"{test.margin:+.2f}"
    if test.verdict == "reproduced":
        return (f"reproduced: {every} above the {margin} margin (intersection-union test, each "
                f"one-sided at {test.alpha * 100:g}%)")
    if test.verdict == "contradicted":
        return f"contradicted: {every} significantly below 0"
    return (f"{test.verdict}: {up} of {m} {nouns if m > 1 else noun} above the {margin} margin, "
            f"{down} significantly reversed (Holm-adjusted)")


def _pairs_text(test, name) -> str:
    """Each pair: ``name ΔAUC [95% CI] verdict (Holm p above / below)``."""
    return "; ".join(f"{name(k)} {t.estimate} {t.verdict} (p {_p(t.p_above_holm)} / "
                     f"{_p(t.p_below_holm)})" for k, t in test.pairs.items())


def _tests_note(test, n_boot: int, what: str) -> str:
    """What the per-pair p-values are, and a warning when the resamples are too few for Holm."""
    m = len(test.pairs)
    what = what if m > 1 else what.removesuffix("s")
    note = (f"Holm-adjusted p over the {m} {what} of H0 \u0394AUC <= {test.margin:+.2f} / of "
            "H0 \u0394AUC >= 0")
    if n_boot and m / (n_boot + 1) >= test.alpha:
        note += (f"; with {n_boot} resamples Holm cannot reach {test.alpha * 100:g}% over {m} "
                 f"{what}: use n_boot >= {math.ceil(m / test.alpha)}")
    return note


def _auc_text(e: Estimate) -> str:
    if e.low is None:
        return f"{e.value:.3f} (no CI)"
    return f"{e.value:.3f} [{e.level * 100:g}% CI {e.low:.3f}, {e.high:.3f}]"


def _seed_text(boot) -> str:
    """How many training seeds stand behind the intervals."""
    ns = set(boot.n_seeds.values()) or {1}
    if max(ns) <= 1:
        return ("; one training seed per method, so the intervals cover the sampling of the "
                "texts, not retraining")
    count = str(max(ns)) if len(ns) == 1 else f"{min(ns)}-{max(ns)}"
    return (f"; {count} training seeds per method, so every interval includes the "
            "seed-to-seed variance (two-level bootstrap: each method's seeds drawn with "
            "replacement, then the texts)")


def claim_lines(rows, model, dataset, attack, scores=None, n_boot: int = 1000,
                seed: int = 0, *, primary: dict | None = None, min_effect: float = MIN_EFFECT,
                chance_margin: float = CHANCE_MARGIN) -> list[str]:
    """The paper's claims 1 and 2, each judged on every pair under its primary attack.

    Claim 1: every parameter-based method's last-epoch AUC minus every prompt-based one's
    (each pair a paired difference), judged by :func:`jaxmem.paired.judge_pairs` with margin
    ``min_effect``. Claim 2: each parameter-based method's AUC(last epoch) - AUC(first epoch),
    judged the same way, and its prompt-based side, "prompt-based methods stay near chance
    throughout": every prompt-based AUC at every attacked epoch tested for equivalence with
    0.5 +- ``chance_margin`` (TOST at 5%, :func:`jaxmem.paired.judge_equivalence`). The means
    over the pairs, and the other attacks, are secondary lines. Methods not at comparable
    utility (:func:`jaxmem.report.not_comparable`) are left out and named in a line of their
    own. Rows with a ``seed`` column (several training seeds) are read per seed and every
    interval includes the seed variance (:func:`jaxmem.paired.hierarchical_bootstrap`).

    Args:
      rows: the study's result rows (``model``, ``dataset``, ``method``, ``epoch``,
        ``attack``, ``val_ppl``; ``seed`` optional).
      attack: the report's main attack: used for a claim whose primary attack
        (:data:`PRIMARY_ATTACKS`) the study did not run.
      scores: ``(method, epoch) -> scores table or None``, also called with ``seed=s`` for
        rows that carry a seed (see :func:`score_reader`); without per-example scores no
        claim can be decided.
      n_boot, seed: the bootstrap's resamples and seed (the study's ``audit`` settings, so with
        one training seed each method's own interval is the one in its ``metrics.json``).
      primary: ``{claim number: attack}`` overriding :data:`PRIMARY_ATTACKS`.
      min_effect: the least AUC difference a pair must exceed (:data:`MIN_EFFECT`).
      chance_margin: the half-width of "near chance" (:data:`CHANCE_MARGIN`).
    """
    sub = [r for r in rows if r["model"] == model and r["dataset"] == dataset
           and r["method"] != "base"]
    if not sub:
        return []
    attacks = list(dict.fromkeys(r["attack"] for r in sub))
    last, first = max(r["epoch"] for r in sub), min(r["epoch"] for r in sub)
    # the claims compare methods at similar utility: leave out those that fit much worse/better
    flagged = not_comparable(rows, model, dataset)
    fin = list(dict.fromkeys(r["method"] for r in sub if r["epoch"] == last
                             and r["method"] not in flagged))
    par = [m for m in fin if _family(m) == "parameter"]
    pro = [m for m in fin if _family(m) == "prompt"]
    grows = [m for m in par if _select(sub, method=m, epoch=first)] if last > first else []
    pro_epochs = {m: sorted({r["epoch"] for r in sub if r["method"] == m}) for m in pro}
    keys = list(dict.fromkeys([(m, last) for m in fin] + [(m, first) for m in grows]))
    seeds_of = {m: _seeds(rows, model, dataset, m) for m in fin}.get
    tables, missing = _read_tables(scores, keys, seeds_of)
    # the near-chance test reads every epoch of the prompt-based methods: without them, only
    # that line is left undecided
    extra, missing_chance = _read_tables(
        scores, [(m, e) for m in pro for e in pro_epochs[m] if (m, e) not in tables], seeds_of)
    if not missing_chance:
        tables.update(extra)
    boots, why_not = {}, None
    if missing:
        why_not = f"per-example scores missing for {', '.join(missing)}"
    elif not tables:  # every method left out (not at comparable utility)
        why_not = "no method at comparable utility"
    else:
        try:
            for a in attacks:
                if all(a in t for ts in tables.values() for t in ts):
                    boots[a] = _seed_aucs(tables, a, n_boot, seed, seeds_of)
        except ValueError as e:
            why_not = str(e)
    a1, note1 = primary_attack(1, attacks, attack, primary)
    a2, note2 = primary_attack(2, attacks, attack, primary)
    if not why_not and (a1 not in boots or a2 not in boots):
        why_not = f"no per-example {a1 if a1 not in boots else a2} scores"

    names = lambda ms: ", ".join(display_name(m) for m in ms)  # noqa: E731
    out = ["**The paper's claims on these numbers**, each stated as the paper states it (every "
           "method of one family against every method of the other) and judged on every pair "
           f"under one attack named in advance (claim 1: {a1}; claim 2: {a2}). Paired "
           "bootstrap: members and non-members are resampled once and every method's AUC is "
           "recomputed on the same resample"
           + (_seed_text(next(iter(boots.values()))) if boots else "")
           + ". A claim is reproduced only when every pair's \u0394AUC is above the minimum "
           f"effect {min_effect:+.2f}, fixed in advance (intersection-union test: each pair "
           f"one-sided at {ONE_SIDED_ALPHA * 100:g}%, about the lower end of its 95% interval); "
           "contradicted when every pair is significantly reversed (below 0); mixed when some "
           "pairs go each way (Holm-adjusted over the pairs); inconclusive otherwise. \"Near "
           "chance\" is an equivalence test (TOST at 5%: the 90% interval inside "
           f"0.5 \u00b1 {chance_margin:.2f}). Means over pairs and the other attacks are "
           "secondary. See docs/statistics.md.", ""]
    if flagged:
        left = [f for f, ms in (("parameter", par), ("prompt", pro)) if not ms]
        out.append(f"- Left out of both claims: {names(flagged)}. "
                   + utility_note(flagged, base_val_ppl(rows, model, dataset))
                   + (f" That leaves no {' or '.join(left)}-based method to compare."
                      if left else ""))
    if par and pro:
        head = (f"- Claim 1 (every parameter-based method memorizes more than every "
                f"prompt-based one), {a1} attack: ")
        if why_not:
            out.append(head + f"inconclusive ({why_not}).")
        else:
            pairs = {(p, q): ((p, last), (q, last)) for p in par for q in pro}
            mean = _mean_difference([(m, last) for m in par], [(m, last) for m in pro])

            def judged(boot):
                return judge_pairs({k: boot.difference(*ab) for k, ab in pairs.items()},
                                   min_effect)

            test = judged(boots[a1])
            out.append(head + _headline(test, "pair", "pairs") + note1 + ". By pair, \u0394AUC "
                       f"at epoch {last} [95% CI], verdict ({_tests_note(test, n_boot, 'pairs')}"
                       "): " + _pairs_text(test, lambda k: f"{display_name(k[0])} \u2212 "
                                           f"{display_name(k[1])}")
                       + f". Secondary, the mean AUC of the parameter-based methods "
                       f"({names(par)}) minus that of the prompt-based ones ({names(pro)}): "
                       f"{boots[a1].contrast(mean)}. Compare their validation perplexities in "
                       "the table: the claim is about similar utility.")
            each = []
            for a, b in boots.items():
                t = judged(b)
                each.append(f"{a}: {t.verdict} ({t.count('reproduced')} of {len(t.pairs)} "
                            f"pairs above the margin, {t.count('contradicted')} reversed; mean "
                            f"{b.contrast(mean)})")
            out.append("- Claim 1 under each attack (secondary; the same pairs and tests): "
                       + "; ".join(each) + ".")
    if grows:
        head = f"- Claim 2 (parameter-based memorization grows with epochs), {a2} attack: "
        if why_not:
            out.append(head + f"inconclusive ({why_not}).")
        else:
            boot = boots[a2]
            test = judge_pairs({m: boot.difference((m, last), (m, first)) for m in grows},
                               min_effect)
            out.append(head + _headline(test, "method", "methods") + note2
                       + f". By method, AUC(epoch {last}) \u2212 AUC(epoch {first}) [95% CI], "
                       f"verdict ({_tests_note(test, n_boot, 'methods')}): "
                       + _pairs_text(test, display_name)
                       + f". Secondary, the mean over {names(grows)}: "
                       + str(boot.contrast(_mean_difference([(m, last) for m in grows],
                                                            [(m, first) for m in grows])))
                       + ".")
    if pro:
        out.append(_near_chance_line(
            rows, model, dataset, a2, note2, pro, pro_epochs, boots,
            why_not or (missing_chance and "per-example scores missing for "
                        + ", ".join(missing_chance)), chance_margin))
    return out + [""]


def _near_chance_line(rows, model, dataset, a, note, pro, pro_epochs, boots, why_not,
                      margin) -> str:
    """Claim 2's prompt-based side: every prompt-based AUC, at every attacked epoch, within
    0.5 +- margin (TOST at 5% on the 90% interval)."""
    head = ("- Claim 2, prompt-based side (prompt-based methods stay near chance "
            f"throughout), {a} attack: ")
    if why_not:
        return head + f"inconclusive ({why_not})."
    boot = boots[a]
    cells = {(m, e): boot.contrast({(m, e): 1.0}, alpha=2 * EQUIVALENCE_ALPHA)
             for m in pro for e in pro_epochs[m]}
    test = judge_equivalence(cells, 0.5, margin)
    band = f"0.5 \u00b1 {margin:.2f}"
    m_ = len(cells)
    n_eq, n_out = test.count("equivalent"), test.count("not equivalent")
    aucs = "AUC" if m_ == 1 else "AUCs"
    headline = {
        "reproduced": f"reproduced: {'the' if m_ == 1 else f'all {m_}'} {aucs} shown within "
                      f"{band}",
        "contradicted": f"contradicted: {n_out} of {m_} {aucs} significantly outside {band} "
                        "(Holm-adjusted)",
        "inconclusive": f"inconclusive: {n_eq} of {m_} {aucs} shown within {band}, none "
                        "significantly outside"}[test.verdict]
    each = "; ".join(f"{display_name(m)} (epoch {e}) {_auc_text(t.estimate)} {t.verdict}"
                     for (m, e), t in test.pairs.items())
    base = [r["auc"] for r in rows if r["model"] == model and r["dataset"] == dataset
            and r["method"] == "base" and r["attack"] == a and r.get("auc") is not None]
    return (head + headline + note + " (TOST at 5%: equivalent when the 90% interval lies "
            f"inside {band}). By method and epoch: {each}."
            + (f" The base model, not fine-tuned, has AUC {base[0]:.3f} here: the level tuning "
               "starts from" + (" (outside 0.5 ± the margin: this draw of texts is told "
                                "apart by the untuned model's loss)" if abs(base[0] - 0.5)
                                > margin else "") + "." if base else ""))


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


def _across(parts, alpha: float) -> Estimate:
    """``sum(sign * sum(w * AUC))`` over ``(boot, weights, sign)`` parts from independent
    bootstraps, with the percentile interval of the same sum formed on replicate ``b`` of
    every part (independent resamples, so the replicates combine row by row); the replicates
    are kept for the tests of :func:`jaxmem.paired.judge_pairs`."""
    from jaxmem.bootstrap import _percentile_interval

    value = float(sum(s * sum(w * boot.auc[k] for k, w in ws.items()) for boot, ws, s in parts))
    if any(not boot.n_boot for boot, _, _ in parts):
        return Estimate(value, level=1 - alpha)
    stat = np.asarray(sum(s * boot.replicates(ws) for boot, ws, s in parts), np.float64)
    return Estimate(value, *_percentile_interval(stat, alpha), level=1 - alpha, replicates=stat)


def claim4_lines(rows, model, attack, scores=None, n_boot: int = 1000, seed: int = 0,
                 structured=None, *, primary: dict | None = None,
                 min_effect: float = MIN_EFFECT) -> list[str]:
    """Claim 4: prompt-based tuning memorizes more on structured data than on free text.

    Judged per prompt-based method m trained on both datasets: ``AUC_S(m) - AUC_F(m)``, each
    at its dataset's last epoch, where S is a structured dataset (:func:`is_structured`: the
    infobox corpus, WebNLG) and F a free-text one; reproduced only when every prompt-based
    method's difference is above ``min_effect`` (:func:`jaxmem.paired.judge_pairs`: an
    intersection-union test, Holm per method), under the claim's primary attack
    (:data:`PRIMARY_ATTACKS`: ref). Secondary: the mean over the prompt-based methods
    ``D_prompt``, the same mean over the parameter-based ones ``D_param`` (the paper frames
    the claim against parameter-based tuning), and ``D_prompt - D_param``.

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
      primary: ``{4: attack}`` overriding :data:`PRIMARY_ATTACKS`.
      min_effect: the least AUC difference each method must exceed (:data:`MIN_EFFECT`).

    Returns:
      One line per (structured, free-text) pair of the model's datasets, or ``[]`` when the
      study lacks either kind or prompt-based methods on both.

    Example:
        >>> claim4_lines(rows, "smollm2-135m", "loss",
        ...              lambda d: score_reader("results/claim4", "smollm2-135m", d))
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
        return [f"- Claim 4 (prompt-based tuning memorizes more on structured data): not judged: "
                f"no method on {', '.join(lost)} is at comparable utility (validation perplexity "
                f"within {MIN_COMPARABLE_PPL_RATIO:g}x-{COMPARABLE_PPL_RATIO:g}x the base "
                "model's; see the table above), so no difference there is one of memorization "
                "at similar utility.", ""]
    out = []
    for s_name in struct:
        for f_name in free:
            line = _claim4_pair(rows, sub, model, s_name, f_name, attack, note, scores, n_boot,
                                seed, min_effect)
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


def _claim4_pair(rows, sub, model, s_name, f_name, attack, note, scores, n_boot, seed,
                 min_effect) -> str | None:
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
    head = (f"- Claim 4 (every prompt-based method memorizes more on structured data), "
            f"{attack} attack, {s_name} vs {f_name}: ")
    boots, why_not = {}, None
    for d, d_seed in ((f_name, seed), (s_name, seed + 1)):
        read = (scores or (lambda _d: None))(d)
        seeds_of = {m: _seeds(rows, model, d, m) for m in both}.get
        tables, missing = _read_tables(read, [(m, last[d]) for m in both], seeds_of)
        missing += [_where(k, s) for k, ts in tables.items()
                    for s, t in zip(seeds_of(k[0]), ts) if t is not None and attack not in t]
        if missing:
            why_not = f"per-example scores missing for {d} / {', '.join(missing)}"
            break
        try:
            boots[d] = _seed_aucs(tables, attack, n_boot, d_seed, seeds_of)
        except ValueError as e:
            why_not = str(e)
            break
    if why_not:
        return head + f"inconclusive ({why_not})."
    alpha = boots[s_name].alpha

    def mean_w(ms, d):
        return {(m, last[d]): 1.0 / len(ms) for m in ms}

    def shift(ms):  # mean AUC on S minus mean AUC on F, as (boot, weights, sign) parts
        return [(boots[s_name], mean_w(ms, s_name), 1.0), (boots[f_name], mean_w(ms, f_name),
                                                           -1.0)]

    test = judge_pairs({m: _across(shift([m]), alpha) for m in pro}, min_effect)
    line = (head + _headline(test, "method", "methods") + note
            + f". By method, AUC on {s_name} (epoch {last[s_name]}) \u2212 AUC on {f_name} "
            f"(epoch {last[f_name]}) [95% CI], verdict ({_tests_note(test, n_boot, 'methods')}): "
            + _pairs_text(test, display_name)
            + f". Secondary, the mean over the prompt-based methods ({names(pro)}): "
            f"{_across(shift(pro), alpha)}")
    if par:
        did = _across(shift(pro) + [(b, w, -s) for b, w, s in shift(par)], alpha)
        line += (f"; the same difference for the parameter-based methods ({names(par)}): "
                 f"{_across(shift(par), alpha)}; prompt-based minus parameter-based: {did}")
    seeds = sorted({n for b in boots.values() for n in b.n_seeds.values()})
    return line + (". The datasets hold different texts, so each is resampled on its own "
                   f"(seeds {seed} and {seed + 1}) and the interval combines the two"
                   + ("" if seeds[-1] <= 1 else
                      f"; {'-'.join(map(str, sorted({seeds[0], seeds[-1]})))} training seeds "
                      "per method, drawn with replacement in every replicate")
                   + ".")


# ----------------------------------------------------------------------------- claim 5
# LoRA placement (the paper's Table 4): every LoRA run of the study is attacked on the same
# texts, so its pairs are paired differences as in claim 1.

__all__ += ["claim5_lines", "lora_placement"]


def lora_placement(method: str) -> tuple[str, int] | None:
    """``("attention" | "mlp" | "all", r)`` for a LoRA spec on one of the presets, else None."""
    from jaxmem.tuning import method_config

    if _family(method) != "parameter" or method.partition(":")[0] != "lora":
        return None
    mcfg = method_config(method)
    target = getattr(mcfg, "target", None)
    return (target, int(mcfg.r)) if target in ("attention", "mlp", "all") else None


def claim5_lines(rows, model, dataset, attack, scores=None, n_boot: int = 1000, seed: int = 0,
                 *, primary: dict | None = None, min_effect: float = MIN_EFFECT) -> list[str]:
    """Claim 5: LoRA on the MLP projections leaks more than on attention, both most.

    Judged like claim 1 (:func:`claim_lines`) on the last epoch under the primary attack, as
    the three pairs MLP - attention, all - MLP and all - attention (intersection-union test
    with margin ``min_effect``; each pair Holm-adjusted; seeds in every interval). The
    placements train different numbers of parameters (at r = 8 on SmolLM2-135M 0.92M /
    1.52M / 2.44M), so a study that also runs attention at a larger rank gets a second line:
    MLP minus that attention run, the placement at a similar parameter count.

    Returns:
      ``[]`` without LoRA runs on at least two of the placements at one rank.
    """
    from jaxmem.paired import judge_pairs

    sub = [r for r in rows if r["model"] == model and r["dataset"] == dataset
           and r["method"] != "base"]
    if not sub:
        return []
    last = max(r["epoch"] for r in sub)
    flagged = not_comparable(rows, model, dataset)
    lora = {m: lora_placement(m) for m in dict.fromkeys(r["method"] for r in sub
                                                       if r["epoch"] == last)}
    lora = {m: p for m, p in lora.items() if p is not None and m not in flagged}
    ranks = [p[1] for p in lora.values()]
    if not ranks:
        return []
    r0 = min(ranks, key=lambda r: (-ranks.count(r), r))  # the rank most placements share
    at = {p[0]: m for m, p in lora.items() if p[1] == r0}
    if len(at) < 2:
        return []
    matched = [m for m, p in lora.items() if p[0] == "attention" and p[1] != r0]
    pairs = [(a, b) for a, b in (("mlp", "attention"), ("all", "mlp"), ("all", "attention"))
             if a in at and b in at]
    methods = list(dict.fromkeys([*at.values(), *matched]))
    seeds_of = {m: _seeds(rows, model, dataset, m) for m in methods}.get
    tables, missing = _read_tables(scores, [(m, last) for m in methods], seeds_of)
    attacks = list(dict.fromkeys(r["attack"] for r in sub))
    a5, note = primary_attack(5, attacks, attack, primary)
    head = (f"- Claim 5 (LoRA on the MLP projections memorizes more than on attention, both "
            f"most), {a5} attack{note}, epoch {last}: ")
    if missing:
        return [head + f"inconclusive (per-example scores missing for {', '.join(missing)}).",
                ""]
    try:
        boot = _seed_aucs(tables, a5, n_boot, seed, seeds_of)
    except (ValueError, KeyError) as e:
        return [head + f"inconclusive ({e}).", ""]
    est = {(at[a], at[b]): boot.difference((at[a], last), (at[b], last)) for a, b in pairs}
    test = judge_pairs(est, min_effect)
    name = lambda k: f"{display_name(k[0])} \u2212 {display_name(k[1])}"  # noqa: E731
    aucs = "; ".join(f"{display_name(m)} {boot.auc[(m, last)]:.3f}" for m in methods)
    out = [head + _headline(test, "pair", "pairs") + f". By pair: {_pairs_text(test, name)} "
           f"({_tests_note(test, n_boot, 'pairs')}). AUCs: {aucs}"
           + _seed_text(boot) + "."]
    for m in matched:
        if "mlp" in at:
            t = judge_pairs({(at["mlp"], m): boot.difference((at["mlp"], last), (m, last))},
                            min_effect)
            out.append(f"- Claim 5 at a similar parameter count: {name((at['mlp'], m))} "
                       f"{_headline(t, 'pair', 'pairs')}, {t.pairs[(at['mlp'], m)].estimate}: "
                       "placement, not only size, when reproduced.")
    return out + [""]
