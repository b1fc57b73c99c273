"""Each claim is judged once into data: ``claims.json`` holds the verdicts the report's lines
show, in the same order, as valid JSON (no NaN), for every kind of claim and of verdict."""

import json
import re

import numpy as np

from jaxmem.study.claim4 import judge_claim4
from jaxmem.study.claim5 import judge_claim5
from jaxmem.study.claim_text import section_lines
from jaxmem.study.claims import judge_claims
from jaxmem.study.verdicts import VERDICTS, claims_json, write_claims

N = 100
ATT, MLP, ALL = "lora:target=attention", "lora:target=mlp", "lora:target=all"
MATCHED = "lora:target=attention,r=13,alpha=13"
# the first verdict word of a report line: after the head, before ":" or " ("
VERDICT = re.compile(r"\b(" + "|".join(VERDICTS) + r")(?=: | \()")


def _reader(strength: dict, dataset="d"):
    """``(method, epoch) -> scores table``: members sit ``strength`` above non-members."""
    rng = np.random.default_rng(len(dataset))
    member = [True] * N + [False] * N
    shared = rng.normal(0, 1, 2 * N)
    tables = {k: {"member": member, "text": [f"{dataset}{i}" for i in range(2 * N)],
                  "loss": list(np.array(member, float) * s + shared + rng.normal(0, 0.3, 2 * N))}
              for k, s in strength.items()}
    return lambda method, epoch: tables.get((method, epoch))


def _row(method, epoch, dataset="d", auc=0.6, val_ppl=20.0):
    return {"model": "m", "dataset": dataset, "method": method, "epoch": epoch,
            "attack": "loss", "auc": auc, "val_ppl": val_ppl}


def _sections(n_boot=200):
    rows = [_row("base", 0, auc=0.52)] + [_row(m, e) for m in ("lora", "prompt") for e in (1, 3)]
    read = _reader({("lora", 1): 0.4, ("lora", 3): 2.0, ("prompt", 1): 0.0, ("prompt", 3): 0.0})
    yield judge_claims(rows, "m", "d", "loss", read, n_boot=n_boot)
    yield judge_claims(rows, "m", "d", "loss", None, n_boot=n_boot)  # nothing to decide from
    rows5 = [_row(m, 2) for m in (ATT, MLP, ALL, MATCHED)]
    read = _reader({(ATT, 2): 1.5, (MLP, 2): 0.2, (ALL, 2): 2.5, (MATCHED, 2): 0.3})
    yield judge_claim5(rows5, "m", "d", "loss", read, n_boot=n_boot)  # mixed
    rows4 = [_row(m, 2, d) for d in ("default", "infobox") for m in ("lora", "prompt")]
    readers = {d: _reader({("lora", 2): 1.0, ("prompt", 2): 0.2 if d == "default" else 1.5}, d)
               for d in ("default", "infobox")}
    yield judge_claim4(rows4, "m", "loss", readers.get, n_boot=n_boot)
    lost = [_row("base", 0, "infobox")] + [_row(m, 2, "infobox", val_ppl=1.0)
                                           for m in ("lora", "prompt")]
    yield judge_claim4(rows4[:2] + lost, "m", "loss", readers.get, n_boot=n_boot)  # not judged


def _shown(lines):
    """The verdict of every claim line of the report (not the secondary lines)."""
    return [VERDICT.search(x).group(1) for x in lines
            if x.startswith("- Claim") and "under each attack" not in x]


def test_claims_json_holds_the_verdicts_the_report_shows(tmp_path):
    sections = list(_sections())
    lines = [x for s in sections for x in section_lines(s)]
    path = write_claims(tmp_path / "claims.json", sections)
    # strict JSON: a NaN p-value (no resamples) must be null, never NaN
    data = json.loads(path.read_text(), parse_constant=lambda c: 1 / 0)
    claims = data["claims"]
    assert [c["verdict"] for c in claims] == _shown(lines)
    kinds = {(c["claim"], c["verdict"]) for c in claims}
    assert {"1", "2", "2 near chance", "4", "5", "5 size"} <= {c for c, _ in kinds}
    assert {"reproduced", "mixed", "inconclusive", "not judged"} <= {v for _, v in kinds}
    c1 = next(c for c in claims if c["claim"] == "1" and c["test"])
    assert c1["test"] == "IUT" and c1["methods"] == {"parameter": ["lora"], "prompt": ["prompt"]}
    (pair,) = c1["pairs"]
    assert pair["key"] == ["lora", "prompt"] and pair["verdict"] in VERDICTS
    assert pair["estimate"]["low"] < pair["estimate"]["value"] < pair["estimate"]["high"]
    assert c1["by_attack"]["loss"]["pairs"] == c1["pairs"]
    chance = next(c for c in claims if c["claim"] == "2 near chance" and c["test"])
    assert chance["test"] == "TOST" and chance["base_auc"] == {"d": 0.52}
    assert [p["key"] for p in chance["pairs"]] == [["prompt", 1], ["prompt", 3]]
    undecided = next(c for c in claims if c["claim"] == "1" and not c["test"])
    assert undecided["verdict"] == "inconclusive" and "scores missing" in undecided["reason"]
    assert f"inconclusive ({undecided['reason']})." in "\n".join(lines)
    four = next(c for c in claims if c["claim"] == "4" and c["test"])
    assert four["datasets"] == ["infobox", "default"] and four["boot_seeds"] == [0, 1]


def test_no_resamples_give_null_p_values():
    rows = [_row(m, 2) for m in ("lora", "prompt")]
    read = _reader({("lora", 2): 2.0, ("prompt", 2): 0.0})
    data = claims_json([judge_claims(rows, "m", "d", "loss", read, n_boot=0), None])
    json.dumps(data, allow_nan=False)  # raises on a NaN left in
    (c1, _) = data["claims"]
    assert c1["verdict"] == "inconclusive" and c1["pairs"][0]["estimate"]["low"] is None
