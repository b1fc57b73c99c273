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
- methods not at comparable utility (:func:`jaxmem.study.utility.comparable_utility`, two-sided) are
  left out and named.

``docs/statistics.md`` explains the choices. :func:`judge_claims` judges claims 1 and 2 once
into data (:mod:`jaxmem.study.verdicts`: what the study writes as ``claims.json``), which
:mod:`jaxmem.study.claim_text` renders as the report's lines (:func:`claim_lines`, both at once).

Example:
    >>> import numpy as np
    >>> member = [True] * 60 + [False] * 60
    >>> def scores(method, epoch):  # LoRA separates members more with every epoch
    ...     rng = np.random.default_rng(len(method))
    ...     gap = {"lora": 1.5, "prompt": 0.0}[method] * epoch
    ...     return {"member": member, "loss": list(np.array(member) * gap
    ...                                            + rng.normal(size=120))}
    >>> rows = [{"model": "m", "dataset": "d", "method": m, "epoch": e, "attack": "loss",
    ...          "val_ppl": 20.0} for m in ("lora", "prompt") for e in (1, 2)]
    >>> section = judge_claims(rows, "m", "d", "loss", scores, n_boot=200)
    >>> [(c.claim, c.verdict) for c in section.claims]
    [('1', 'reproduced'), ('2', 'reproduced'), ('2 near chance', 'inconclusive')]
    >>> claim_lines(rows, "m", "d", "loss", scores, n_boot=200)[2][:70]
    '- Claim 1 (every parameter-based method memorizes more than every prom'
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from jaxmem import runs
from jaxmem.attacks import as_ranks
from jaxmem.paired import (EQUIVALENCE_ALPHA, hierarchical_bootstrap, judge_equivalence,
                           judge_pairs)
from jaxmem.study.claim_text import section_lines
from jaxmem.study.folders import study_attack_dir
from jaxmem.study.utility import base_val_ppl, not_comparable, select, utility_note
from jaxmem.study.verdicts import Claim, ClaimSection
from jaxmem.tuning.names import display_name, family

__all__ = ["CHANCE_MARGIN", "MIN_EFFECT", "PRIMARY_ATTACKS", "claim_lines", "judge_claims",
           "method_seeds", "primary_attack", "read_tables", "score_reader", "seed_aucs",
           "where_text"]

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
    import pyarrow.parquet as pq

    @functools.lru_cache(maxsize=None)
    def read(method, epoch, seed=None):
        where = (study_attack_dir(out, model, dataset, method, epoch) if seed is None
                 else study_attack_dir(out, model, dataset, method, epoch, seed=seed))
        f = where / runs.SCORES
        return pq.read_table(f).to_pydict() if f.exists() else None

    return read


def method_seeds(rows, model, dataset, method) -> list:
    """The training seeds of a method's rows (``seed`` column; ``[None]`` without one)."""
    seeds = {r.get("seed") for r in rows if r["model"] == model and r["dataset"] == dataset
             and r["method"] == method}
    return sorted(seeds, key=lambda s: (s is not None, s if s is not None else 0)) or [None]


def where_text(key, s=None) -> str:
    m, e = key
    return f"{display_name(m)} (epoch {e}" + (f", seed {s})" if s is not None else ")")


def read_tables(scores, keys, seeds_of) -> tuple[dict, list]:
    """``({key: [table per seed]}, missing)`` for keys ``(method, epoch)``; ``scores`` is
    called with ``seed=`` only for a seed that is not None, so a two-argument reader works."""
    tables, missing = {}, []
    for key in keys:
        tables[key] = []
        for s in seeds_of(key[0]):
            t = None if scores is None else scores(*key) if s is None else scores(*key, seed=s)
            if t is None:
                missing.append(where_text(key, s))
            tables[key].append(t)
    return tables, missing


def seed_aucs(tables: dict, attack: str, n_boot: int, seed: int, seeds_of=None):
    """Every key's AUC under ``attack`` on the same resamples, over its seeds
    (:func:`jaxmem.paired.hierarchical_bootstrap`; a method's epochs share each seed draw).

    Args:
      tables: ``{(method, epoch): [scores table of each seed]}`` as written by the audit
        (``member``, one column per attack, ``text``).

    Raises:
      ValueError: the tables do not hold the same texts in the same order, so their scores
        cannot be paired.
    """
    seeds_of = seeds_of or (lambda _m: [None])
    key0, (t0, *_) = next(iter(tables.items()))
    for key, ts in tables.items():
        for s, t in zip(seeds_of(key[0]), ts):
            if t["member"] != t0["member"] or t.get("text") != t0.get("text"):
                raise ValueError(f"{where_text(key, s)} was not attacked on the same texts in the "
                                 f"same order as {where_text(key0, seeds_of(key0[0])[0])}")
    labels = np.asarray(t0["member"], bool)
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


def judge_claims(rows, model, dataset, attack, scores=None, n_boot: int = 1000,
                 seed: int = 0, *, primary: dict | None = None, min_effect: float = MIN_EFFECT,
                 chance_margin: float = CHANCE_MARGIN) -> ClaimSection | None:
    """The paper's claims 1 and 2, each judged on every pair under its primary attack.

    Claim 1: every parameter-based method's last-epoch AUC minus every prompt-based one's
    (each pair a paired difference), judged by :func:`jaxmem.paired.judge_pairs` with margin
    ``min_effect``. Claim 2: each parameter-based method's AUC(last epoch) - AUC(first epoch),
    judged the same way, and its prompt-based side, "prompt-based methods stay near chance
    throughout": every prompt-based AUC at every attacked epoch tested for equivalence with
    0.5 +- ``chance_margin`` (TOST at 5%, :func:`jaxmem.paired.judge_equivalence`). The means
    over the pairs, and the other attacks, are secondary. Methods not at comparable utility
    (:func:`jaxmem.study.utility.not_comparable`) are left out and named. Rows with a ``seed``
    column (several training seeds) are read per seed and every interval includes the seed
    variance (:func:`jaxmem.paired.hierarchical_bootstrap`).

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

    Returns:
      The section's claims (:class:`jaxmem.study.verdicts.ClaimSection`: claim 1 when both
      families have a method, claim 2 when a parameter-based one has two epochs, its
      near-chance side when a prompt-based one is there), or None without fine-tuned rows.
    """
    sub = [r for r in rows if r["model"] == model and r["dataset"] == dataset
           and r["method"] != "base"]
    if not sub:
        return None
    attacks = list(dict.fromkeys(r["attack"] for r in sub))
    last, first = max(r["epoch"] for r in sub), min(r["epoch"] for r in sub)
    # the claims compare methods at similar utility: leave out those that fit much worse/better
    flagged = not_comparable(rows, model, dataset)
    fin = list(dict.fromkeys(r["method"] for r in sub if r["epoch"] == last
                             and r["method"] not in flagged))
    par = [m for m in fin if family(m) == "parameter"]
    pro = [m for m in fin if family(m) == "prompt"]
    grows = [m for m in par if select(sub, method=m, epoch=first)] if last > first else []
    pro_epochs = {m: sorted({r["epoch"] for r in sub if r["method"] == m}) for m in pro}
    keys = list(dict.fromkeys([(m, last) for m in fin] + [(m, first) for m in grows]))
    seeds_of = {m: method_seeds(rows, model, dataset, m) for m in fin}.get
    tables, missing = read_tables(scores, keys, seeds_of)
    # the near-chance test reads every epoch of the prompt-based methods: without them, only
    # that test is left undecided
    extra, missing_chance = read_tables(
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
                    boots[a] = seed_aucs(tables, a, n_boot, seed, seeds_of)
        except ValueError as e:
            why_not = str(e)
    a1, note1 = primary_attack(1, attacks, attack, primary)
    a2, note2 = primary_attack(2, attacks, attack, primary)
    if not why_not and (a1 not in boots or a2 not in boots):
        why_not = f"no per-example {a1 if a1 not in boots else a2} scores"
    n_seeds = tuple(sorted(set(next(iter(boots.values())).n_seeds.values()))) if boots else ()
    common = {"model": model, "datasets": (dataset,), "n_boot": n_boot, "boot_seeds": (seed,),
              "n_seeds": n_seeds}

    claims = []
    if par and pro:
        c1 = dict(claim="1", statement="every parameter-based method memorizes more than "
                  "every prompt-based one", attack=a1, attack_note=note1, epochs=(last,),
                  methods={"parameter": tuple(par), "prompt": tuple(pro)}, **common)
        if why_not:
            claims.append(Claim(verdict="inconclusive", reason=why_not, **c1))
        else:
            pairs = {(p, q): ((p, last), (q, last)) for p in par for q in pro}
            mean = _mean_difference([(m, last) for m in par], [(m, last) for m in pro])
            by_attack = {a: (judge_pairs({k: b.difference(*ab) for k, ab in pairs.items()},
                                         min_effect), b.contrast(mean))
                         for a, b in boots.items()}
            test, mean_a1 = by_attack[a1]
            claims.append(Claim(verdict=test.verdict, test=test, test_name="IUT",
                                secondary={"mean": mean_a1}, by_attack=by_attack, **c1))
    if grows:
        c2 = dict(claim="2", statement="parameter-based memorization grows with epochs",
                  attack=a2, attack_note=note2, epochs=(last, first),
                  methods={"parameter": tuple(grows)}, **common)
        if why_not:
            claims.append(Claim(verdict="inconclusive", reason=why_not, **c2))
        else:
            boot = boots[a2]
            test = judge_pairs({m: boot.difference((m, last), (m, first)) for m in grows},
                               min_effect)
            mean = boot.contrast(_mean_difference([(m, last) for m in grows],
                                                  [(m, first) for m in grows]))
            claims.append(Claim(verdict=test.verdict, test=test, test_name="IUT",
                                secondary={"mean": mean}, **c2))
    if pro:
        claims.append(_near_chance(
            rows, a2, note2, pro, pro_epochs, boots,
            why_not or (missing_chance and "per-example scores missing for "
                        + ", ".join(missing_chance)), chance_margin, common))
    left = tuple(f for f, ms in (("parameter", par), ("prompt", pro)) if not ms)
    return ClaimSection(
        "claims 1-2", model, dataset, tuple(claims), primary={1: a1, 2: a2},
        min_effect=min_effect, chance_margin=chance_margin, n_seeds=n_seeds if boots else None,
        left_out=tuple(flagged), left_out_note=utility_note(
            flagged, base_val_ppl(rows, model, dataset)) if flagged else "",
        no_family=left if flagged else ())


def _near_chance(rows, a, note, pro, pro_epochs, boots, why_not, margin, common) -> Claim:
    """Claim 2's prompt-based side: every prompt-based AUC, at every attacked epoch, within
    0.5 +- margin (TOST at 5% on the 90% interval)."""
    model, (dataset,) = common["model"], common["datasets"]
    base = [r["auc"] for r in rows if r["model"] == model and r["dataset"] == dataset
            and r["method"] == "base" and r["attack"] == a and r.get("auc") is not None]
    c = dict(claim="2 near chance", statement="prompt-based methods stay near chance "
             "throughout", attack=a, attack_note=note, methods={"prompt": tuple(pro)},
             epochs=tuple(sorted({e for m in pro for e in pro_epochs[m]})),
             base_auc={dataset: base[0]} if base else {}, **common)
    if why_not:
        return Claim(verdict="inconclusive", reason=why_not, **c)
    boot = boots[a]
    cells = {(m, e): boot.contrast({(m, e): 1.0}, alpha=2 * EQUIVALENCE_ALPHA)
             for m in pro for e in pro_epochs[m]}
    test = judge_equivalence(cells, 0.5, margin)
    return Claim(verdict=test.verdict, test=test, test_name="TOST", **c)


def claim_lines(rows, model, dataset, attack, scores=None, n_boot: int = 1000,
                seed: int = 0, **kw) -> list[str]:
    """The report's lines of claims 1 and 2: :func:`judge_claims` (same arguments) rendered
    by :func:`jaxmem.study.claim_text.section_lines`."""
    return section_lines(judge_claims(rows, model, dataset, attack, scores, n_boot, seed, **kw))
