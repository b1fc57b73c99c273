"""Claim 5 (LoRA placement) judged on every pair, with a parameter-matched attention run."""

import numpy as np

from jaxmem.study.claim5 import claim5_lines, lora_placement

N = 120
ATT, MLP, ALL = "lora:target=attention", "lora:target=mlp", "lora:target=all"
MATCHED = "lora:target=attention,r=13,alpha=13"


def _rows(methods, seeds=(0, 1)):
    return [{"model": "m", "dataset": "d", "method": m, "seed": s, "epoch": 2, "attack": "loss",
             "auc": 0.6, "val_ppl": 20.0, "n_members": N, "n_nonmembers": N}
            for m in methods for s in seeds] + [
        {"model": "m", "dataset": "d", "method": "base", "seed": None, "epoch": 0,
         "attack": "loss", "auc": 0.5, "val_ppl": 22.0, "n_members": N, "n_nonmembers": N}]


def _scores(strength: dict):
    """(method, epoch, seed) -> scores table, every one on the same texts."""
    rng = np.random.default_rng(0)
    member = [True] * N + [False] * N
    shared = rng.normal(0, 1, 2 * N)
    tables = {(m, 2, s): {"member": member, "text": [f"t{i}" for i in range(2 * N)],
                          "loss": list(np.array(member, float) * v + shared
                                       + rng.normal(0, 0.3, 2 * N))}
              for m, v in strength.items() for s in (0, 1)}
    return lambda method, epoch, seed=None: tables.get((method, epoch, seed))


def test_placements_are_recognised():
    assert lora_placement(ATT) == ("attention", 8) and lora_placement(MATCHED) == ("attention", 13)
    assert lora_placement("lora") is None and lora_placement("prompt") is None


def test_the_paper_order_is_reproduced_and_the_size_control_is_judged():
    lines = claim5_lines(_rows([ATT, MLP, ALL, MATCHED]), "m", "d", "loss",
                         _scores({ATT: 0.3, MLP: 1.2, ALL: 2.5, MATCHED: 1.1}), n_boot=400)
    head = lines[0]
    assert head.startswith("- Claim 5 (LoRA on the MLP projections memorizes more than on "
                           "attention, both most), loss attack, epoch 2: reproduced: all 3 pairs")
    assert "2 training seeds per method" in head
    size = lines[1]  # MLP vs attention at a similar count: 1.2 vs 1.1 is not 0.05 of AUC apart
    assert size.startswith("- Claim 5 at a similar parameter count: LoRA (MLP; r=8) \u2212 LoRA "
                           "(attn; r=13; alpha=13.0) inconclusive")


def test_a_reversed_pair_makes_the_claim_mixed():
    lines = claim5_lines(_rows([ATT, MLP, ALL]), "m", "d", "loss",
                         _scores({ATT: 1.5, MLP: 0.2, ALL: 2.5}), n_boot=400)
    assert ": mixed: 2 of 3 pairs above the +0.05 margin, 1 significantly reversed" in lines[0]


def test_no_placements_no_claim():
    assert claim5_lines(_rows(["lora", "prompt"]), "m", "d", "loss", _scores({})) == []


def test_claims_with_every_method_left_out_say_so():
    """Every method outside the utility gate (a template corpus learned to 0.1x the base
    perplexity): no claim can be judged, and the report says why instead of failing."""
    from jaxmem.study.claims import claim_lines

    rows = [dict(r, val_ppl=2.0) if r["method"] != "base" else r
            for r in _rows(["lora", "prompt"])]
    lines = claim_lines(rows, "m", "d", "loss", _scores({"lora": 1.0, "prompt": 0.2}),
                        n_boot=50)
    assert any("Left out of" in line for line in lines)
    assert claim5_lines(rows, "m", "d", "loss", _scores({})) == []


def test_claim4_is_not_judged_when_a_dataset_keeps_no_comparable_method():
    from jaxmem.study.claim4 import claim4_lines

    rows = []
    for d, ppl in (("default", 20.0), ("infobox", 2.0)):  # infobox: templates learned, 0.1x
        rows += [{"model": "m", "dataset": d, "method": m, "seed": None, "epoch": 2,
                  "attack": "ref", "auc": 0.6, "val_ppl": ppl} for m in ("lora", "prompt")]
        rows.append({"model": "m", "dataset": d, "method": "base", "seed": None, "epoch": 0,
                     "attack": "ref", "auc": 0.5, "val_ppl": 22.0})
    (line, _) = claim4_lines(rows, "m", "ref")
    assert line.startswith("- Claim 4 (prompt-based tuning memorizes more on structured data): "
                           "not judged: no method on infobox is at comparable utility")
