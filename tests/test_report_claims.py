"""The study report's claims come from a paired bootstrap, and say no more than it allows; its
tables and figures name methods for people and leave out TPRs the sample cannot measure."""

import numpy as np
import pytest

from jaxmem.metrics import strongest_attack
from jaxmem.study.claims import claim_lines as _claims
from jaxmem.study.tables import last_epoch_table, strongest_attacks, tpr_text
from jaxmem.study.utility import not_comparable
from jaxmem.tuning.names import display_name

N = 120  # members and non-members each


def _row(method, epoch, auc=0.6, attack="loss", n_nonmembers=N, **kw):
    return {"model": "m", "dataset": "d", "method": method, "epoch": epoch, "attack": attack,
            "auc": auc, "auc_lo": auc - 0.1, "auc_hi": auc + 0.1, "val_ppl": 20.0,
            "n_members": N, "n_nonmembers": n_nonmembers, **kw}


def _scores(strength: dict, seed=0):
    """Scores tables for (method, epoch) -> separation; every table on the same texts, with
    shared per-text noise (as a real study has: some texts are easy for every method)."""
    rng = np.random.default_rng(seed)
    member = [True] * N + [False] * N
    labels = np.array(member, float)
    shared = rng.normal(0, 1, 2 * N)
    tables = {k: {"member": member, "text": [f"t{i}" for i in range(2 * N)],
                  "loss": list(labels * s + shared + rng.normal(0, 0.3, 2 * N))}
              for k, s in strength.items()}
    return lambda method, epoch: tables.get((method, epoch))


def _claim(lines, tag):
    return next(line for line in lines if tag in line)


ROWS = [_row(m, e) for m in ("lora", "prompt") for e in (1, 3)]
C1 = "- Claim 1 (every parameter-based method memorizes more than every prompt-based one), "
C2 = "- Claim 2 (parameter-based memorization grows with epochs), "
CHANCE = "- Claim 2, prompt-based side"


def test_clear_differences_are_reproduced():
    scores = _scores({("lora", 3): 2.0, ("lora", 1): 0.5, ("prompt", 3): 0.2,
                      ("prompt", 1): 0.1})
    lines = _claims(ROWS, "m", "d", "loss", scores, n_boot=200)
    claim1 = _claim(lines, "Claim 1 (")
    assert claim1.startswith(C1 + "loss attack: reproduced: the pair is above the +0.05 margin")
    assert "LoRA (q,v; r=8) − prompt +" in claim1 and "[95% CI +" in claim1
    assert "] reproduced (p 0.005 / 1.000)" in claim1  # 1 / (200 + 1): no resample at 0.05
    assert "Secondary, the mean AUC of the parameter-based methods" in claim1
    assert _claim(lines, "Claim 2").startswith(C2 + "loss attack: reproduced: ")
    assert "loss: reproduced (1 of 1 pairs above the margin" in _claim(lines, "under each attack")
    assert "one training seed per method" in lines[0]  # the intervals are over the texts only


def test_a_difference_below_the_margin_is_not_reproduced():
    """Clearly positive, but smaller than the +0.05 fixed in advance: inconclusive, and said so."""
    scores = _scores({("lora", 3): 0.9, ("lora", 1): 0.5, ("prompt", 3): 0.8,
                      ("prompt", 1): 0.1}, seed=4)
    lines = _claims(ROWS, "m", "d", "loss", scores, n_boot=400)
    claim1 = _claim(lines, "Claim 1 (")
    low = float(claim1.split("[95% CI ")[1].split(",")[0])
    assert low > 0, claim1  # significantly positive, yet not above the margin
    assert C1 + "loss attack: inconclusive: 0 of 1 pair above the +0.05 margin" in claim1
    lines = _claims(ROWS, "m", "d", "loss", scores, n_boot=400, min_effect=0.0)
    assert "loss attack: reproduced" in _claim(lines, "Claim 1 (")


def test_reversed_differences_are_contradicted():
    scores = _scores({("lora", 3): 0.2, ("lora", 1): 2.0, ("prompt", 3): 2.0,
                      ("prompt", 1): 2.0})
    lines = _claims(ROWS, "m", "d", "loss", scores, n_boot=200)
    claim1 = _claim(lines, "Claim 1 (")
    assert "loss attack: contradicted: the pair is significantly below 0" in claim1
    assert "LoRA (q,v; r=8) − prompt -" in claim1 and "] contradicted (p 1.000 / 0.005)" in claim1
    assert "loss attack: contradicted: " in _claim(lines, "Claim 2")
    assert "near chance throughout), loss attack: contradicted: 2 of 2 AUCs significantly " \
        "outside 0.5 ± 0.05" in _claim(lines, CHANCE)


def test_identical_scores_are_inconclusive():
    scores = _scores({("lora", 3): 1.0, ("lora", 1): 1.0, ("prompt", 3): 1.0}, seed=1)
    same = scores("lora", 3)
    lines = _claims(ROWS, "m", "d", "loss", lambda m, e: same, n_boot=200)
    claim1 = _claim(lines, "Claim 1 (")
    assert "loss attack: inconclusive: 0 of 1 pair above the +0.05 margin, 0 significantly " \
        "reversed" in claim1
    assert "− prompt +0.000 [95% CI +0.000, +0.000] inconclusive (p 1.000 / 1.000)" in claim1
    assert "loss attack: inconclusive" in _claim(lines, "Claim 2")


def test_the_case_the_audit_found_is_not_reproduced():
    """0.656 -> 0.660 with wide intervals was once called reproduced; a small, noisy gain is
    inconclusive under the paired bootstrap too."""
    scores = _scores({("lora", 3): 0.62, ("lora", 1): 0.6, ("prompt", 3): 0.6,
                      ("prompt", 1): 0.6}, seed=2)
    lines = _claims(ROWS, "m", "d", "loss", scores, n_boot=200)
    assert C2 + "loss attack: inconclusive" in _claim(lines, "Claim 2")


def test_without_paired_scores_no_claim_is_decided():
    lines = _claims(ROWS, "m", "d", "loss", None, n_boot=200)
    assert "inconclusive (per-example scores missing for LoRA (q,v; r=8) (epoch 3)" in \
        _claim(lines, "Claim 1 (")
    scores = _scores({("lora", 3): 2.0, ("lora", 1): 0.5, ("prompt", 3): 0.2})
    # only the near-chance line needs the prompt-based method's first epoch
    lines = _claims(ROWS, "m", "d", "loss", scores, n_boot=200)
    assert "loss attack: reproduced" in _claim(lines, "Claim 1 (")
    assert "inconclusive (per-example scores missing for prompt (epoch 1))" in \
        _claim(lines, CHANCE)
    shuffled = dict(scores("prompt", 3), text=list(reversed(scores("prompt", 3)["text"])))
    lines = _claims(ROWS, "m", "d", "loss",
                    lambda m, e: shuffled if m == "prompt" else scores(m, e), n_boot=200)
    assert "not attacked on the same texts" in _claim(lines, "Claim 1 (")
    lines = _claims(ROWS, "m", "d", "loss", scores, n_boot=0)
    assert "loss attack: inconclusive: 0 of 1 pair" in lines[2] and "no CI" in lines[2]
    assert "(p n/a / n/a)" in lines[2]


@pytest.mark.parametrize("spec, name", [
    ("lora", "LoRA (q,v; r=8)"), ("lora:r=16,target=mlp", "LoRA (MLP; r=16)"),
    ("lora:target=q_proj+o_proj,alpha=32", "LoRA (q,o; r=8; alpha=32.0)"),
    ("prefix:prefix_projection=true", "prefix (reparam.)"), ("prefix", "prefix"),
    ("ptuning", "P-tuning"), ("ptuning:encoder=lstm", "P-tuning (LSTM)"),
    ("prompt:num_virtual_tokens=10", "prompt (10 tokens)"), ("full", "full"),
    ("head", "head"), ("base", "base model"), ("ia3", "IA3")])
def test_display_names(spec, name):
    assert display_name(spec) == name


def test_tpr_cells_follow_the_support_rule_at_the_boundary():
    # 30 of 120 members, with its Clopper-Pearson 95% interval
    assert tpr_text(_row("lora", 3, n_nonmembers=100, **{"tpr@1%fpr": 0.25}), "tpr@1%fpr") \
        == "0.250 [0.175, 0.337]"
    assert tpr_text(_row("lora", 3, n_nonmembers=99, **{"tpr@1%fpr": 0.25}), "tpr@1%fpr") \
        == "n/a (needs >= 100 non-members)"
    assert tpr_text(_row("lora", 3, n_nonmembers=99, **{"tpr@1%fpr": None}), "tpr@1%fpr") \
        == "n/a (needs >= 100 non-members)"
    tprs = {"tpr@10%fpr": 0.5, "tpr@1%fpr": 0.2, "tpr@0.1%fpr": 0.1}
    table = last_epoch_table([_row("lora", 3, **tprs)], "loss", "m", "d")
    assert table[0]["method"] == "LoRA (q,v; r=8)"
    assert table[0]["loss TPR@1%FPR"] == "0.200 [0.133, 0.283]"
    assert table[0]["loss TPR@0.1%FPR"] == "n/a (needs >= 1000 non-members)"


def test_strongest_attack_is_judged_at_the_lowest_supported_fpr():
    final = [_row("lora", 3, 0.9, "loss", **{"tpr@10%fpr": 0.6, "tpr@1%fpr": 0.10}),
             _row("lora", 3, 0.7, "ref", **{"tpr@10%fpr": 0.3, "tpr@1%fpr": 0.20}),
             _row("prompt", 3, 0.6, "loss", **{"tpr@10%fpr": 0.2, "tpr@1%fpr": 0.05})]
    best = strongest_attacks(final)  # 120 non-members: 1% is the lowest supported FPR
    assert best["lora"]["attack"] == "ref" and best["prompt"]["attack"] == "loss"
    few = [dict(r, n_nonmembers=50) for r in final]  # only 10% supported now
    assert strongest_attacks(few)["lora"]["attack"] == "loss"
    assert strongest_attacks([dict(r, n_nonmembers=5) for r in final]) == {}


def _with_base(rows, base_ppl=20.0, **ppl):
    """``rows`` plus the base model's epoch-0 row; ``ppl``: method -> its validation perplexity."""
    rows = [dict(r, val_ppl=ppl.get(r["method"], r["val_ppl"])) for r in rows]
    return [_row("base", 0, val_ppl=base_ppl)] + rows


def test_methods_not_at_comparable_utility_are_left_out_of_the_claims():
    scores = _scores({("lora", 3): 2.0, ("lora", 1): 0.5, ("prompt", 3): 0.2})
    # 24.9 / 20 = 1.245 <= 1.25: still comparable, the claims stand as before
    lines = _claims(_with_base(ROWS, prompt=24.9), "m", "d", "loss", scores, n_boot=200)
    assert "reproduced" in _claim(lines, "Claim 1 (")
    assert not [line for line in lines if "Left out" in line]
    # 30 / 20 = 1.5: prompt is named, left out, and claim 1 has nothing to compare
    rows = _with_base(ROWS, prompt=30.0)
    assert not_comparable(rows, "m", "d") == {"prompt": 1.5}
    lines = _claims(rows, "m", "d", "loss", scores, n_boot=200)
    left = _claim(lines, "Left out of both claims: prompt.")
    assert "prompt (1.50x, above)" in left and "outside 0.5x-1.25x the base model's (20.00)" \
        in left
    assert "no prompt-based method" in left
    assert not [line for line in lines if "Claim 1 (" in line]
    assert "reproduced" in _claim(lines, "Claim 2")  # LoRA is at comparable utility
    # a diverged (NaN) perplexity is not comparable either; without a base row nothing is left out
    assert not_comparable(_with_base(ROWS, lora=float("nan")), "m", "d").keys() == {"lora"}
    assert not_comparable(ROWS, "m", "d") == {}


def test_strongest_attack_of_an_audit_and_of_a_study_cell():
    """The highest TPR at the lowest supported FPR, ties broken by AUC, on ``metrics.json``'s
    form (an audit's) and on a study's rows."""
    m = {"loss": {"auc": 0.8, "n_nonmembers": 150, "tpr@10%fpr": 0.5, "tpr@1%fpr": 0.1,
                  "tpr@0.1%fpr": 0.0},
         "zlib": {"auc": 0.7, "n_nonmembers": 150, "tpr@10%fpr": 0.3, "tpr@1%fpr": 0.2,
                  "tpr@0.1%fpr": 0.1},
         "min_k": {"auc": 0.75, "n_nonmembers": 150, "tpr@10%fpr": 0.3, "tpr@1%fpr": 0.2,
                   "tpr@0.1%fpr": 0.1}}
    assert strongest_attack(m) == {"attack": "min_k", "tpr": 0.2, "fpr": 0.01}  # tie: AUC
    m99 = {k: dict(v, n_nonmembers=99) for k, v in m.items()}  # 1% no longer supported
    assert strongest_attack(m99) == {"attack": "loss", "tpr": 0.5, "fpr": 0.1}
    assert strongest_attack({k: dict(v, n_nonmembers=9) for k, v in m.items()}) is None


def test_last_epoch_table_flags_utility_and_names_the_strongest_attack():
    final = _with_base([
        _row("lora", 3, 0.9, "loss", **{"tpr@10%fpr": 0.6, "tpr@1%fpr": 0.10}),
        _row("lora", 3, 0.7, "ref", **{"tpr@10%fpr": 0.3, "tpr@1%fpr": 0.125}),
        _row("prompt", 3, 0.6, "loss", **{"tpr@10%fpr": 0.2, "tpr@1%fpr": 0.05}),
        _row("prompt", 3, 0.6, "ref", **{"tpr@10%fpr": 0.2, "tpr@1%fpr": 0.05})], prompt=26.0)
    final[0].update({"tpr@10%fpr": 0.1, "tpr@1%fpr": 0.01})
    final.insert(1, dict(final[0], attack="ref"))
    table = {r["method"]: r for r in last_epoch_table(final, "loss", "m", "d")}
    assert table["LoRA (q,v; r=8)"]["utility"] == "comparable (1.00x base ppl)"
    assert table["prompt"]["utility"] == "NOT comparable (1.30x base ppl)"
    assert table["base model"]["utility"] == "reference"
    # 15 and 6 of 120 members, with Clopper-Pearson 95% intervals
    assert table["LoRA (q,v; r=8)"]["strongest attack"] == "ref: TPR 0.125 [0.072, 0.198] @ 1% FPR"
    assert table["prompt"]["strongest attack"] == "loss: TPR 0.05 [0.019, 0.106] @ 1% FPR"
    few = [dict(r, n_nonmembers=5) for r in final]
    assert last_epoch_table(few, "loss", "m", "d")[1]["strongest attack"] \
        == "n/a (needs >= 10 non-members)"


def test_histograms_survive_near_constant_scores(tmp_path):
    """Scores a few ulps apart (a fully clipped DC-PDD column) once made matplotlib refuse
    ("Too many bins for data range"); all-NaN and constant columns draw too."""
    import numpy as np

    from jaxmem.figures import plot_histograms

    tiny = 0.01 + np.arange(8) * np.spacing(0.01)
    labels = np.array([1, 0] * 4, bool)
    plot_histograms({"dc_pdd": tiny, "const": np.ones(8), "nan": np.full(8, np.nan),
                     "loss": np.linspace(-3, -1, 8)}, labels, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0
