"""Claim 5 of the paper (its Table 4), checked on a study's numbers: LoRA on the MLP
projections memorizes more than on attention, and on both most.

Every LoRA run of the study is attacked on the same texts, so its pairs are paired
differences, judged as claim 1's are (:mod:`jaxmem.study.claims`).

Example:
    >>> lora_placement("lora:target=mlp,r=8"), lora_placement("prefix")
    (('mlp', 8), None)
"""

from __future__ import annotations

from jaxmem.paired import judge_pairs
from jaxmem.study.claim_text import section_lines
from jaxmem.study.claims import MIN_EFFECT, method_seeds, primary_attack, read_tables, seed_aucs
from jaxmem.study.utility import not_comparable
from jaxmem.study.verdicts import Claim, ClaimSection
from jaxmem.tuning import method_config
from jaxmem.tuning.names import family

__all__ = ["claim5_lines", "judge_claim5", "lora_placement"]


def lora_placement(method: str) -> tuple[str, int] | None:
    """``("attention" | "mlp" | "all", r)`` for a LoRA spec on one of the presets, else None."""
    if family(method) != "parameter" or method.partition(":")[0] != "lora":
        return None
    mcfg = method_config(method)
    target = getattr(mcfg, "target", None)
    return (target, int(mcfg.r)) if target in ("attention", "mlp", "all") else None


def judge_claim5(rows, model, dataset, attack, scores=None, n_boot: int = 1000, seed: int = 0,
                 *, primary: dict | None = None, min_effect: float = MIN_EFFECT
                 ) -> ClaimSection | None:
    """Claim 5: LoRA on the MLP projections leaks more than on attention, both most.

    Judged like claim 1 (:func:`jaxmem.study.claims.judge_claims`) on the last epoch under the
    primary attack, as the three pairs MLP - attention, all - MLP and all - attention
    (intersection-union test with margin ``min_effect``; each pair Holm-adjusted; seeds in
    every interval). The placements train different numbers of parameters (at r = 8 on
    SmolLM2-135M 0.92M / 1.52M / 2.44M), so a study that also runs attention at a larger rank
    gets a second claim, ``"5 size"``: MLP minus that attention run, the placement at a
    similar parameter count.

    Args:
      rows, model, dataset, attack, scores, n_boot, seed, primary, min_effect: as for
        :func:`jaxmem.study.claims.judge_claims` (``primary``: ``{5: attack}``).

    Returns:
      The claims (:class:`jaxmem.study.verdicts.ClaimSection`), or None without LoRA runs on
      at least two of the placements at one rank.

    Example:
        >>> import numpy as np
        >>> member = [True] * 60 + [False] * 60
        >>> gap = {"lora:target=attention": 0.2, "lora:target=mlp": 1.0, "lora:target=all": 2.0}
        >>> def scores(method, epoch):
        ...     rng = np.random.default_rng(0)  # the same texts, the same noise
        ...     return {"member": member,
        ...             "loss": list(np.array(member) * gap[method] + rng.normal(size=120))}
        >>> rows = [{"model": "m", "dataset": "d", "method": m, "epoch": 2, "attack": "loss",
        ...          "val_ppl": 20.0} for m in gap]
        >>> (c,) = judge_claim5(rows, "m", "d", "loss", scores, n_boot=200).claims
        >>> c.verdict, [p.verdict for p in c.test.pairs.values()]
        ('reproduced', ['reproduced', 'reproduced', 'reproduced'])
    """
    sub = [r for r in rows if r["model"] == model and r["dataset"] == dataset
           and r["method"] != "base"]
    if not sub:
        return None
    last = max(r["epoch"] for r in sub)
    flagged = not_comparable(rows, model, dataset)
    lora = {m: lora_placement(m) for m in dict.fromkeys(r["method"] for r in sub
                                                       if r["epoch"] == last)}
    lora = {m: p for m, p in lora.items() if p is not None and m not in flagged}
    ranks = [p[1] for p in lora.values()]
    if not ranks:
        return None
    r0 = min(ranks, key=lambda r: (-ranks.count(r), r))  # the rank most placements share
    at = {p[0]: m for m, p in lora.items() if p[1] == r0}
    if len(at) < 2:
        return None
    matched = [m for m, p in lora.items() if p[0] == "attention" and p[1] != r0]
    pairs = [(a, b) for a, b in (("mlp", "attention"), ("all", "mlp"), ("all", "attention"))
             if a in at and b in at]
    methods = list(dict.fromkeys([*at.values(), *matched]))
    seeds_of = {m: method_seeds(rows, model, dataset, m) for m in methods}.get
    tables, missing = read_tables(scores, [(m, last) for m in methods], seeds_of)
    attacks = list(dict.fromkeys(r["attack"] for r in sub))
    a5, note = primary_attack(5, attacks, attack, primary)
    c = dict(claim="5", statement="LoRA on the MLP projections memorizes more than on "
             "attention, both most", model=model, datasets=(dataset,), attack=a5,
             attack_note=note, epochs=(last,), methods={"lora": tuple(methods)}, n_boot=n_boot,
             boot_seeds=(seed,))

    def section(*claims):
        return ClaimSection("claim 5", model, dataset, claims, min_effect=min_effect)

    if missing:
        return section(Claim(verdict="inconclusive", reason="per-example scores missing for "
                             + ", ".join(missing), **c))
    try:
        boot = seed_aucs(tables, a5, n_boot, seed, seeds_of)
    except (ValueError, KeyError) as e:
        return section(Claim(verdict="inconclusive", reason=str(e), **c))
    n_seeds = tuple(sorted(set(boot.n_seeds.values())))
    test = judge_pairs({(at[a], at[b]): boot.difference((at[a], last), (at[b], last))
                        for a, b in pairs}, min_effect)
    claims = [Claim(verdict=test.verdict, test=test, test_name="IUT", n_seeds=n_seeds,
                    aucs={m: boot.auc[(m, last)] for m in methods}, **c)]
    for m in matched:
        if "mlp" in at:
            t = judge_pairs({(at["mlp"], m): boot.difference((at["mlp"], last), (m, last))},
                            min_effect)
            claims.append(Claim(**{**c, "claim": "5 size", "statement": "LoRA on the MLP "
                                   "projections memorizes more than on attention at a similar "
                                   "parameter count", "methods": {"lora": (at["mlp"], m)}},
                                verdict=t.verdict, test=t, test_name="IUT", n_seeds=n_seeds))
    return section(*claims)


def claim5_lines(rows, model, dataset, attack, scores=None, n_boot: int = 1000, seed: int = 0,
                 **kw) -> list[str]:
    """The report's lines of claim 5: :func:`judge_claim5` (same arguments) rendered by
    :func:`jaxmem.study.claim_text.section_lines`; ``[]`` when nothing was judged."""
    return section_lines(judge_claim5(rows, model, dataset, attack, scores, n_boot, seed, **kw))
