"""Claim 4 (prompt-based tuning memorizes more on structured data): two unpaired datasets,
each bootstrapped on its own, read against an independent float64 computation."""

import numpy as np

from jaxmem.study.claim4 import claim4_lines, is_structured

N = 150  # members and non-members each
METHODS = ("lora", "prompt", "ptuning")


def _rows(datasets=("default", "infobox"), epoch=2):
    return [{"model": "m", "dataset": d, "method": m, "epoch": epoch, "attack": "loss", "val_ppl": 10.0}
            for d in datasets for m in METHODS]


def _tables(strength: dict, seed=0):
    """``dataset -> (method, epoch) -> scores table``; ``strength[(dataset, method)]`` is how
    far members' scores sit above non-members'. Each dataset has its own texts and noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for d in sorted({d for d, _ in strength}):
        member = [True] * N + [False] * N
        labels = np.array(member, float)
        shared = rng.normal(0, 1, 2 * N)
        out[d] = {(m, 2): {"member": member, "text": [f"{d}{i}" for i in range(2 * N)],
                           "loss": list(labels * s + shared + rng.normal(0, 0.3, 2 * N))}
                  for (dd, m), s in strength.items() if dd == d}
    return out, (lambda d: lambda m, e: out.get(d, {}).get((m, e)))


def _auc_loop(scores, member):
    """Mann-Whitney AUC by a plain double loop: P(member > non-member) + ties / 2."""
    pos = [s for s, y in zip(scores, member) if y]
    neg = [s for s, y in zip(scores, member) if not y]
    total = 0.0
    for p in pos:
        for q in neg:
            total += 1.0 if p > q else 0.5 if p == q else 0.0
    return total / (len(pos) * len(neg))


def _reference(tables, methods):
    auc = {d: np.mean([_auc_loop(t[(m, 2)]["loss"], t[(m, 2)]["member"]) for m in methods])
           for d, t in tables.items()}
    return auc["infobox"] - auc["default"]


def _line(lines):
    (line,) = [x for x in lines if x.startswith("- Claim 4")]
    return line


def _value(line, after):
    return float(line.split(after, 1)[1].split()[0].rstrip(","))


MEAN = "Secondary, the mean over the prompt-based methods (prompt, P-tuning): "


def test_claim4_reproduced_matches_a_float64_reference():
    strength = {("default", "lora"): 1.5, ("default", "prompt"): 0.1, ("default", "ptuning"): 0.2,
                ("infobox", "lora"): 1.5, ("infobox", "prompt"): 1.2, ("infobox", "ptuning"): 1.4}
    tables, read = _tables(strength)
    line = _line(claim4_lines(_rows(), "m", "loss", read, n_boot=300, seed=0))
    # every prompt-based method above the margin; ref (the primary attack) was not run
    assert "infobox vs default: reproduced: all 2 methods are above the +0.05 margin" in line
    assert "(its primary attack, ref, was not run: read under loss)" in line
    assert _value(line, "): prompt ") == round(_reference(tables, ("prompt",)), 3)
    assert _value(line, "; P-tuning ") == round(_reference(tables, ("ptuning",)), 3)
    assert _value(line, MEAN) == round(_reference(tables, ("prompt", "ptuning")), 3)
    par = _value(line, "parameter-based methods (LoRA (q,v; r=8)): ")
    assert par == round(_reference(tables, ("lora",)), 3)
    assert "prompt-based minus parameter-based: +" in line
    assert "base model" not in line  # no base rows: nothing to say
    rows = _rows() + [{"model": "m", "dataset": d, "method": "base", "epoch": 0,
                       "attack": "loss", "auc": a, "val_ppl": 10.0} for d, a in (("default", .6), ("infobox", .45))]
    line = _line(claim4_lines(rows, "m", "loss", read, n_boot=300, seed=0))
    assert "already has AUC 0.450 on infobox and 0.600 on default (-0.150)" in line


def test_claim4_contradicted_and_inconclusive():
    strength = {("default", "lora"): 1.0, ("default", "prompt"): 1.2, ("default", "ptuning"): 1.0,
                ("infobox", "lora"): 1.0, ("infobox", "prompt"): 0.1, ("infobox", "ptuning"): 0.0}
    tables, read = _tables(strength)
    line = _line(claim4_lines(_rows(), "m", "loss", read, n_boot=300))
    assert "infobox vs default: contradicted: all 2 methods are significantly below 0" in line
    assert _value(line, MEAN) == round(_reference(tables, ("prompt", "ptuning")), 3)
    # The same signal on both datasets: the interval straddles 0.
    same = {(d, m): s for d in ("default", "infobox")
            for m, s in (("lora", 1.0), ("prompt", 0.5), ("ptuning", 0.5))}
    _, read = _tables(same, seed=3)
    line = _line(claim4_lines(_rows(), "m", "loss", read, n_boot=300))
    assert "infobox vs default: inconclusive: 0 of 2 methods above" in line
    assert "[95% CI -" in line
    # one prompt-based method clearly more on infobox, the other clearly less: mixed
    mixed = {**same, ("infobox", "prompt"): 2.0, ("default", "ptuning"): 2.0,
             ("infobox", "ptuning"): 0.0}
    _, read = _tables(mixed, seed=3)
    line = _line(claim4_lines(_rows(), "m", "loss", read, n_boot=300))
    assert "infobox vs default: mixed: 1 of 2 methods above the +0.05 margin, 1 significantly " \
        "reversed" in line


def test_claim4_says_why_it_cannot_decide():
    assert claim4_lines(_rows(("default", "wikitext")), "m", "loss", None) == []  # no structured
    line = _line(claim4_lines(_rows(), "m", "loss", None))
    assert "inconclusive (per-example scores missing for default / LoRA" in line
    lines = claim4_lines(_rows(("default", "webnlg:/data/webnlg")), "m", "loss", None)
    assert "webnlg:/data/webnlg vs default" in _line(lines)
    assert is_structured("infobox") and is_structured("../shared/data/webnlg")
    assert not is_structured("default") and not is_structured("wikitext")


def test_claim4_config_tests_the_claim():
    from pathlib import Path

    from jaxmem.tuning.names import family
    from jaxmem.study import StudyConfig

    cfg = StudyConfig.from_yaml(Path(__file__).parents[1] / "experiments/cpu/claim4.yaml")
    assert [is_structured(d) for d in cfg.datasets] == [False, True]
    families = {family(m) for m in cfg.methods}
    assert families == {"parameter", "prompt"}
    assert cfg.n_members >= 128 and cfg.n_nonmembers >= 128 and cfg.n_train >= cfg.n_members
    assert {"loss", "ref"} <= set(cfg.audit.attacks)
    assert cfg.attack_epochs == (cfg.train.epochs,)


def test_claim4_leaves_out_a_method_not_at_comparable_utility():
    """P-tuning's infobox perplexity is 3x the base model's: only prompt tuning is read there."""
    strength = {("default", "lora"): 1.5, ("default", "prompt"): 0.1, ("default", "ptuning"): 0.2,
                ("infobox", "lora"): 1.5, ("infobox", "prompt"): 1.2, ("infobox", "ptuning"): 1.0}
    tables, read = _tables(strength)
    rows = [dict(r, val_ppl=30.0) if (r["dataset"], r["method"]) == ("infobox", "ptuning") else r
            for r in _rows()]
    rows += [{"model": "m", "dataset": d, "method": "base", "epoch": 0, "attack": "loss",
              "auc": 0.5, "val_ppl": 10.0} for d in ("default", "infobox")]
    line = _line(claim4_lines(rows, "m", "loss", read, n_boot=300, seed=0))
    assert "P-tuning" not in line
    assert "infobox vs default: reproduced: the method is above" in line
    got = _value(line, "): prompt ")
    auc = {d: _auc_loop(t[("prompt", 2)]["loss"], t[("prompt", 2)]["member"])
           for d, t in tables.items()}
    assert got == round(auc["infobox"] - auc["default"], 3)
