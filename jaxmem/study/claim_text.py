"""The report's text of the paper's claims, rendered from the judged records
(:mod:`jaxmem.study.verdicts`): nothing is computed here, so ``report.md`` and
``claims.json`` cannot disagree.

Example:
    >>> from jaxmem.study.verdicts import Claim, ClaimSection
    >>> c = Claim("5", "LoRA on the MLP projections memorizes more than on attention, both "
    ...           "most", "m", ("d",), "loss", "inconclusive", reason="no scores", epochs=(2,))
    >>> line, blank = section_lines(ClaimSection("claim 5", "m", "d", (c,)))
    >>> line.startswith("- Claim 5 (LoRA on the MLP"), line.split("epoch 2: ")[1]
    (True, 'inconclusive (no scores).')
"""

from __future__ import annotations

import math

from jaxmem.paired import ONE_SIDED_ALPHA, Estimate
from jaxmem.study.verdicts import Claim, ClaimSection
from jaxmem.tuning.names import display_name

__all__ = ["claim_line", "headline", "pairs_text", "section_lines", "seed_text", "tests_note"]


def _p(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def _names(ms) -> str:
    return ", ".join(display_name(m) for m in ms)


def _pair_name(k) -> str:
    return f"{display_name(k[0])} \u2212 {display_name(k[1])}"


def headline(test, noun: str, nouns: str) -> str:
    """``reproduced: all 9 pairs are above the +0.05 margin (...)`` for a
    :func:`jaxmem.paired.judge_pairs` test."""
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


def pairs_text(test, name) -> str:
    """Each pair: ``name ΔAUC [95% CI] verdict (Holm p above / below)``."""
    return "; ".join(f"{name(k)} {t.estimate} {t.verdict} (p {_p(t.p_above_holm)} / "
                     f"{_p(t.p_below_holm)})" for k, t in test.pairs.items())


def tests_note(test, n_boot: int, what: str) -> str:
    """What the per-pair p-values are, and a warning when the resamples are too few for Holm."""
    m = len(test.pairs)
    what = what if m > 1 else what.removesuffix("s")
    note = (f"Holm-adjusted p over the {m} {what} of H0 \u0394AUC <= {test.margin:+.2f} / of "
            "H0 \u0394AUC >= 0")
    if n_boot and m / (n_boot + 1) >= test.alpha:
        note += (f"; with {n_boot} resamples Holm cannot reach {test.alpha * 100:g}% over {m} "
                 f"{what}: use n_boot >= {math.ceil(m / test.alpha)}")
    return note


def seed_text(n_seeds) -> str:
    """How many training seeds stand behind the intervals, from each method's seed count."""
    ns = set(n_seeds) or {1}
    if max(ns) <= 1:
        return ("; one training seed per method, so the intervals cover the sampling of the "
                "texts, not retraining")
    count = str(max(ns)) if len(ns) == 1 else f"{min(ns)}-{max(ns)}"
    return (f"; {count} training seeds per method, so every interval includes the "
            "seed-to-seed variance (two-level bootstrap: each method's seeds drawn with "
            "replacement, then the texts)")


def _auc_text(e: Estimate) -> str:
    if e.low is None:
        return f"{e.value:.3f} (no CI)"
    return f"{e.value:.3f} [{e.level * 100:g}% CI {e.low:.3f}, {e.high:.3f}]"


def _claim1(c: Claim, head: str) -> list[str]:
    t, (last,) = c.test, c.epochs
    par, pro = c.methods["parameter"], c.methods["prompt"]
    each = "; ".join(f"{a}: {t_a.verdict} ({t_a.count('reproduced')} of {len(t_a.pairs)} pairs "
                     f"above the margin, {t_a.count('contradicted')} reversed; mean {mean})"
                     for a, (t_a, mean) in c.by_attack.items())
    return [head + headline(t, "pair", "pairs") + c.attack_note + ". By pair, \u0394AUC at "
            f"epoch {last} [95% CI], verdict ({tests_note(t, c.n_boot, 'pairs')}): "
            + pairs_text(t, _pair_name) + ". Secondary, the mean AUC of the parameter-based "
            f"methods ({_names(par)}) minus that of the prompt-based ones ({_names(pro)}): "
            f"{c.secondary['mean']}. Compare their validation perplexities in the table: the "
            "claim is about similar utility.",
            "- Claim 1 under each attack (secondary; the same pairs and tests): " + each + "."]


def _claim2(c: Claim, head: str) -> str:
    last, first = c.epochs
    return (head + headline(c.test, "method", "methods") + c.attack_note
            + f". By method, AUC(epoch {last}) \u2212 AUC(epoch {first}) [95% CI], verdict "
            f"({tests_note(c.test, c.n_boot, 'methods')}): " + pairs_text(c.test, display_name)
            + f". Secondary, the mean over {_names(c.methods['parameter'])}: "
            + str(c.secondary["mean"]) + ".")


def _near_chance(c: Claim, head: str) -> str:
    test, margin = c.test, c.test.margin
    band = f"0.5 \u00b1 {margin:.2f}"
    m_ = len(test.pairs)
    n_eq, n_out = test.count("equivalent"), test.count("not equivalent")
    aucs = "AUC" if m_ == 1 else "AUCs"
    says = {
        "reproduced": f"reproduced: {'the' if m_ == 1 else f'all {m_}'} {aucs} shown within "
                      f"{band}",
        "contradicted": f"contradicted: {n_out} of {m_} {aucs} significantly outside {band} "
                        "(Holm-adjusted)",
        "inconclusive": f"inconclusive: {n_eq} of {m_} {aucs} shown within {band}, none "
                        "significantly outside"}[test.verdict]
    each = "; ".join(f"{display_name(m)} (epoch {e}) {_auc_text(t.estimate)} {t.verdict}"
                     for (m, e), t in test.pairs.items())
    base = c.base_auc.get(c.datasets[0])
    return (head + says + c.attack_note + " (TOST at 5%: equivalent when the 90% interval "
            f"lies inside {band}). By method and epoch: {each}."
            + (f" The base model, not fine-tuned, has AUC {base:.3f} here: the level tuning "
               "starts from" + (" (outside 0.5 ± the margin: this draw of texts is told "
                                "apart by the untuned model's loss)" if abs(base - 0.5)
                                > margin else "") + "." if base is not None else ""))


def _claim4(c: Claim, head: str) -> str:
    (s_name, f_name), (s_last, f_last) = c.datasets, c.epochs
    par = c.methods.get("parameter", ())
    line = (head + headline(c.test, "method", "methods") + c.attack_note
            + f". By method, AUC on {s_name} (epoch {s_last}) \u2212 AUC on {f_name} "
            f"(epoch {f_last}) [95% CI], verdict ({tests_note(c.test, c.n_boot, 'methods')}): "
            + pairs_text(c.test, display_name)
            + f". Secondary, the mean over the prompt-based methods "
            f"({_names(c.methods['prompt'])}): {c.secondary['prompt']}")
    if par:
        line += (f"; the same difference for the parameter-based methods ({_names(par)}): "
                 f"{c.secondary['parameter']}; prompt-based minus parameter-based: "
                 f"{c.secondary['prompt - parameter']}")
    seeds, (b0, b1) = c.n_seeds, c.boot_seeds
    return line + (". The datasets hold different texts, so each is resampled on its own "
                   f"(seeds {b0} and {b1}) and the interval combines the two"
                   + ("" if seeds[-1] <= 1 else
                      f"; {'-'.join(map(str, sorted({seeds[0], seeds[-1]})))} training seeds "
                      "per method, drawn with replacement in every replicate")
                   + ".")


def _base_gap(c: Claim) -> str:
    """The base model's AUC on both of claim 4's datasets: a gap there is no memorization by
    tuning, yet it enters every cross-dataset difference of AUCs."""
    s_name, f_name = c.datasets
    if s_name not in c.base_auc or f_name not in c.base_auc:
        return ""
    s, f = c.base_auc[s_name], c.base_auc[f_name]
    return (f" The base model, not fine-tuned, already has AUC {s:.3f} on {s_name} "
            f"and {f:.3f} on {f_name} ({s - f:+.3f}), which every difference above includes.")


def claim_line(c: Claim) -> list[str]:
    """The report's line(s) of one claim (claim 1 also has its line under every attack)."""
    if c.claim == "5 size":
        (pair, t), = c.test.pairs.items()
        return [f"- Claim 5 at a similar parameter count: {_pair_name(pair)} "
                f"{headline(c.test, 'pair', 'pairs')}, {t.estimate}: placement, not only size, "
                "when reproduced."]
    if c.verdict == "not judged":
        return [f"- Claim {c.claim} ({c.statement}): not judged: {c.reason}."]
    if c.claim == "2 near chance":
        head = f"- Claim 2, prompt-based side ({c.statement}), {c.attack} attack: "
    elif c.claim == "4":
        head = (f"- Claim 4 ({c.statement}), {c.attack} attack, {c.datasets[0]} vs "
                f"{c.datasets[1]}: ")
    elif c.claim == "5":
        head = f"- Claim 5 ({c.statement}), {c.attack} attack{c.attack_note}, epoch {c.epochs[0]}: "
    else:
        head = f"- Claim {c.claim} ({c.statement}), {c.attack} attack: "
    if c.test is None:
        line = head + f"inconclusive ({c.reason})."
        return [line + _base_gap(c)] if c.claim == "4" else [line]
    if c.claim == "1":
        return _claim1(c, head)
    if c.claim == "2":
        return [_claim2(c, head)]
    if c.claim == "2 near chance":
        return [_near_chance(c, head)]
    if c.claim == "4":
        return [_claim4(c, head) + _base_gap(c)]
    return [head + headline(c.test, "pair", "pairs") + f". By pair: "
            f"{pairs_text(c.test, _pair_name)} ({tests_note(c.test, c.n_boot, 'pairs')}). "
            "AUCs: " + "; ".join(f"{display_name(m)} {v:.3f}" for m, v in c.aucs.items())
            + seed_text(c.n_seeds) + "."]


def _opening(s: ClaimSection) -> list[str]:
    """Claims 1 and 2's opening paragraph: how they are judged, and what was left out."""
    out = ["**The paper's claims on these numbers**, each stated as the paper states it (every "
           "method of one family against every method of the other) and judged on every pair "
           f"under one attack named in advance (claim 1: {s.primary[1]}; claim 2: "
           f"{s.primary[2]}). Paired bootstrap: members and non-members are resampled once "
           "and every method's AUC is recomputed on the same resample"
           + (seed_text(s.n_seeds) if s.n_seeds is not None else "")
           + ". A claim is reproduced only when every pair's \u0394AUC is above the minimum "
           f"effect {s.min_effect:+.2f}, fixed in advance (intersection-union test: each pair "
           f"one-sided at {ONE_SIDED_ALPHA * 100:g}%, about the lower end of its 95% interval); "
           "contradicted when every pair is significantly reversed (below 0); mixed when some "
           "pairs go each way (Holm-adjusted over the pairs); inconclusive otherwise. \"Near "
           "chance\" is an equivalence test (TOST at 5%: the 90% interval inside "
           f"0.5 \u00b1 {s.chance_margin:.2f}). Means over pairs and the other attacks are "
           "secondary. See docs/statistics.md.", ""]
    if s.left_out:
        out.append(f"- Left out of both claims: {_names(s.left_out)}. " + s.left_out_note
                   + (f" That leaves no {' or '.join(s.no_family)}-based method to compare."
                      if s.no_family else ""))
    return out


def section_lines(s: ClaimSection | None) -> list[str]:
    """The report's lines of one section of claims (``[]`` for None or, claim 4, none)."""
    if s is None or (s.section == "claim 4" and not s.claims):
        return []
    lines = _opening(s) if s.section == "claims 1-2" else []
    for c in s.claims:
        lines += claim_line(c)
    return lines + [""]
