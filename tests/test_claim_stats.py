"""How the claims are judged: the two-level (seeds, texts) bootstrap against a plain loop, Holm
and the intersection-union test against hand computations, TOST, Clopper-Pearson against
scipy, and the two-sided utility gate."""

import math

import numpy as np
import pytest

from jaxmem.study.claims import claim_lines, score_reader
from jaxmem.paired import (Estimate, hierarchical_bootstrap, holm, judge_equivalence,
                           judge_pairs, p_above, p_below, paired_bootstrap, two_level_indices)

# ----------------------------------------------------------------------------- two-level bootstrap


def _exact_auc(scores, labels):
    """Mann-Whitney AUC from integer counts, divided once: the float the library's AUC gives."""
    pos, neg = scores[labels], scores[~labels]
    greater = int((pos[:, None] > neg[None, :]).sum())
    ties = int((pos[:, None] == neg[None, :]).sum())
    return (2 * greater + ties) / (2 * pos.size * neg.size)


def _seed_data(seed=0, n=40, seeds=3):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.r_[np.ones(n, bool), np.zeros(n + 7, bool)])
    text = rng.normal(0, 1, labels.size)  # per-text difficulty, shared by every run

    def run(strength, s):  # one training run: its own strength and noise
        r = np.random.default_rng([seed, s, int(strength * 100)])
        return labels * (strength + r.normal(0, 0.3)) + text + r.normal(0, 0.5, labels.size)

    scores = {("A", 1): [run(0.4, s) for s in range(seeds)],
              ("A", 2): [np.round(run(0.9, s), 1) for s in range(seeds)],  # ties
              ("B", 2): [run(0.2, s) for s in range(seeds - 1)]}
    return labels, scores


def test_two_level_bootstrap_equals_a_plain_loop():
    labels, scores = _seed_data()
    n_boot, seed, alpha = 50, 11, 0.1
    group = lambda key: key[0]  # noqa: E731
    boot = hierarchical_bootstrap(scores, labels, n_boot=n_boot, seed=seed, alpha=alpha,
                                  group=group)
    texts, draws = two_level_indices(labels, {"A": 3, "B": 2}, n_boot, seed)
    # the text resamples are stratified (members first, then non-members, with replacement)
    n_m = int(labels.sum())
    assert labels[texts[:, :n_m]].all() and not labels[texts[:, n_m:]].any()
    assert draws["A"].shape == (n_boot, 3) and draws["B"].shape == (n_boot, 2)
    loop = {k: [] for k in scores}
    for b in range(n_boot):
        idx = texts[b]  # one text resample for every key and every seed
        for key, per_seed in scores.items():
            total = 0.0
            for j in draws[key[0]][b]:  # ("A", 1) and ("A", 2) share the draw of group "A"
                total += _exact_auc(per_seed[j][idx], labels[idx])
            loop[key].append(total / len(per_seed))
    for key, per_seed in scores.items():
        assert boot.n_seeds[key] == len(per_seed)
        point = 0.0
        for s in per_seed:
            point += _exact_auc(s, labels)
        assert boot.auc[key] == point / len(per_seed)  # mean over seeds of full-data AUC
        assert boot.samples[key].tolist() == loop[key]  # exact, not a tolerance
        q = np.quantile(np.array(loop[key]), [alpha / 2, 1 - alpha / 2])
        assert boot.ci(key) == (q[0], q[1])
    growth = boot.difference(("A", 2), ("A", 1))
    assert growth.replicates.tolist() == [a - b for a, b in zip(loop["A", 2], loop["A", 1])]
    # seeds are drawn with replacement and vary between replicates
    assert len({tuple(row) for row in draws["A"]}) > 1


def test_one_seed_reduces_exactly_to_paired_bootstrap():
    labels, scores = _seed_data(1, seeds=1)
    scores.pop(("B", 2))  # B had seeds - 1 = 0
    one = {k: v[0] for k, v in scores.items()}
    one[("B", 2)] = np.where(np.arange(labels.size) == 3, np.nan, one[("A", 1)] * 0.5)
    plain = paired_bootstrap(one, labels, n_boot=80, seed=5, nan_policy="drop")
    two = hierarchical_bootstrap({k: [v] for k, v in one.items()}, labels, n_boot=80, seed=5,
                                 nan_policy="drop", group=lambda k: k[0])
    assert two.auc == plain.auc
    for k in one:
        assert two.samples[k].tolist() == plain.samples[k].tolist()
    assert str(two.difference(("A", 2), ("A", 1))) == str(plain.difference(("A", 2), ("A", 1)))


def test_seeds_widen_the_interval_and_groups_must_match():
    labels, scores = _seed_data(2, n=80, seeds=4)
    several = hierarchical_bootstrap({("A", 2): scores["A", 2]}, labels, n_boot=300)
    first = hierarchical_bootstrap({("A", 2): scores["A", 2][:1]}, labels, n_boot=300)
    width = lambda b: np.subtract(*b.ci(("A", 2))[::-1])  # noqa: E731
    per_seed = [paired_bootstrap({"x": s}, labels, n_boot=0).auc["x"] for s in scores["A", 2]]
    assert np.std(per_seed) > 0.01  # the runs differ ...
    assert width(several) > width(first) * 0.9  # ... and the interval keeps that spread
    with pytest.raises(ValueError, match="different numbers of seeds"):
        hierarchical_bootstrap({("A", 1): scores["A", 1], ("A", 2): scores["A", 2][:2]},
                               labels, n_boot=10, group=lambda k: k[0])


# ----------------------------------------------------------------------------- Holm and the IUT


def test_holm_matches_a_hand_computation():
    # sorted: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1), each the running maximum
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx(
        [3 * 0.01, max(4 * 0.005, 3 * 0.01, 2 * 0.03), 2 * 0.03, 4 * 0.005], abs=1e-15, rel=0)
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    nan = holm([0.02, float("nan"), 0.01])  # NaN: no test, left out of m
    assert nan[0] == pytest.approx(0.02) and math.isnan(nan[1]) and nan[2] == 2 * 0.01


def _replicates(n_at_or_below: int, below: float, above: float, b: int = 199):
    """``b`` replicates, ``n_at_or_below`` of them at ``below``, the rest at ``above``."""
    return np.r_[np.full(n_at_or_below, below), np.full(b - n_at_or_below, above)]


def _est(r):
    return Estimate(float(np.mean(r)), float(np.min(r)), float(np.max(r)), replicates=r)


def test_pair_verdicts_match_a_hand_computation():
    """p = (1 + #{replicates on the null side}) / (B + 1), B = 199; Holm per direction at 2.5%."""
    margin = 0.05
    pairs = {"P1": _est(_replicates(0, 0.04, 0.2)),   # p_above 1/200 = 0.005
             "P2": _est(_replicates(1, 0.04, 0.2)),   # 2/200 = 0.01
             "P3": _est(_replicates(3, 0.04, 0.2)),   # 4/200 = 0.02
             "P4": _est(_replicates(199, -0.2, 0.01))}  # all reversed: p_below 1/200
    assert [p_above(e.replicates, margin) for e in pairs.values()] == [
        1 / 200, 2 / 200, 4 / 200, 200 / 200]
    assert [p_below(e.replicates, 0.0) for e in pairs.values()] == [1.0, 1.0, 1.0, 1 / 200]
    test = judge_pairs(pairs, margin)
    # Holm, p_above: sorted 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.02 x 2 = 0.04, 1 x 1 = 1
    assert [t.p_above_holm for t in test.pairs.values()] == pytest.approx(
        [0.02, 0.03, 0.04, 1.0], abs=1e-15, rel=0)
    # Holm, p_below: 0.005 x 4 = 0.02 for P4, 1 for the others
    assert [t.p_below_holm for t in test.pairs.values()] == pytest.approx(
        [1.0, 1.0, 1.0, 0.02], abs=1e-15, rel=0)
    assert [t.verdict for t in test.pairs.values()] == [
        "reproduced", "inconclusive", "inconclusive", "contradicted"]
    assert test.verdict == "mixed"  # one pair each way, Holm-significant
    # Without P4 every raw p_above is below 2.5%: the intersection-union test reproduces the
    # claim, though Holm leaves each pair inconclusive alone (0.01 x 3 = 0.03 >= 0.025).
    three = {"P1": _est(_replicates(1, 0.04, 0.2)), "P2": _est(_replicates(2, 0.04, 0.2)),
             "P3": _est(_replicates(3, 0.04, 0.2))}
    test = judge_pairs(three, margin)
    assert test.verdict == "reproduced"
    assert [t.verdict for t in test.pairs.values()] == ["inconclusive"] * 3
    # one pair at p = 10/200 = 0.05: not every pair passes, so not reproduced
    test = judge_pairs({**three, "P5": _est(_replicates(9, 0.04, 0.2))}, margin)
    assert test.verdict == "inconclusive"
    # every pair reversed: contradicted; no replicates (n_boot 0): inconclusive
    rev = _est(-_replicates(0, 0.1, 0.2))
    assert judge_pairs({"a": rev, "b": rev}, margin).verdict == "contradicted"
    assert judge_pairs({"a": Estimate(0.3)}, margin).verdict == "inconclusive"


N = 150


def _row(method, epoch, attack="loss", **kw):
    return {"model": "m", "dataset": "d", "method": method, "epoch": epoch, "attack": attack,
            "auc": 0.6, "auc_lo": 0.5, "auc_hi": 0.7, "val_ppl": 20.0, "n_members": N,
            "n_nonmembers": N, **kw}


def _reader(strength: dict, seed=0, n=N, seeds=(None,)):
    """``(method, epoch, seed=None) -> table``: per-seed scores on one set of texts."""
    rng = np.random.default_rng(seed)
    member = [True] * n + [False] * n
    labels = np.array(member, float)
    shared = rng.normal(0, 1, 2 * n)
    tables = {}
    for i, ((m, e), s) in enumerate(strength.items()):
        for sd in seeds:
            r = np.random.default_rng([seed, i, 0 if sd is None else sd + 1])
            shift = 0.0 if sd is None else r.normal(0, 0.4)  # runs differ
            tables[m, e, sd] = {"member": member, "text": [f"t{i}" for i in range(2 * n)],
                                "loss": list(labels * (s + shift) + shared
                                             + r.normal(0, 0.3, 2 * n))}
    calls = []

    def read(method, epoch, seed=None):
        calls.append(seed)
        return tables.get((method, epoch, seed))

    return read, tables, calls


def test_one_pair_significantly_reversed_makes_claim1_mixed_though_the_mean_is_positive():
    """The issue's case: the mean over pairs is clearly positive, yet one pair goes
    significantly the other way: mixed, not reproduced."""
    methods = ("lora", "head", "prompt", "prefix")
    rows = [_row(m, 2) for m in methods]
    read, _, _ = _reader({("lora", 2): 2.5, ("head", 2): 0.3, ("prompt", 2): 0.3,
                          ("prefix", 2): 1.0})
    lines = claim_lines(rows, "m", "d", "loss", read, n_boot=400)
    claim1 = next(x for x in lines if "Claim 1 (" in x)
    assert ("loss attack: mixed: 2 of 4 pairs above the +0.05 margin, 1 significantly reversed"
            in claim1), claim1
    assert "head − prefix -" in claim1 and "] contradicted (p " in claim1
    mean = claim1.split("prompt-based ones (prompt, prefix): ")[1]
    assert float(mean.split("[95% CI ")[1].split(",")[0]) > 0  # the mean alone would say yes
    # every pair clearly positive: reproduced
    read, _, _ = _reader({("lora", 2): 2.5, ("head", 2): 2.0, ("prompt", 2): 0.1,
                          ("prefix", 2): 0.2})
    claim1 = next(x for x in claim_lines(rows, "m", "d", "loss", read, n_boot=400)
                  if "Claim 1 (" in x)
    assert "loss attack: reproduced: all 4 pairs are above the +0.05 margin" in claim1


# ----------------------------------------------------------------------------- TOST


def test_equivalence_on_constructed_near_chance_cases():
    u = np.linspace(0, 1, 199)
    near = _est(0.47 + 0.06 * u)          # 90% interval inside (0.45, 0.55)
    far = _est(0.60 + 0.05 * u)           # entirely above 0.55
    wide = _est(0.40 + 0.20 * u)          # straddles both bounds
    test = judge_equivalence({"near": near}, 0.5, 0.05)
    assert test.verdict == "reproduced" and test.pairs["near"].verdict == "equivalent"
    assert test.pairs["near"].p_above < 0.05  # the TOST p-value agrees
    test = judge_equivalence({"near": near, "far": far, "wide": wide}, 0.5, 0.05)
    assert [t.verdict for t in test.pairs.values()] == [
        "equivalent", "not equivalent", "inconclusive"]
    assert test.verdict == "contradicted"
    assert judge_equivalence({"wide": wide}, 0.5, 0.05).verdict == "inconclusive"


def test_near_chance_line_from_scores():
    """A prompt-based method with no signal on 600 + 600 texts is shown near chance (its 90%
    interval inside 0.45-0.55); the same on 60 + 60 texts cannot be shown."""
    rows = [_row(m, e) for m in ("lora", "prompt") for e in (1, 2)]
    strength = {("lora", 1): 1.0, ("lora", 2): 2.0, ("prompt", 1): 0.0, ("prompt", 2): 0.0}
    read, _, _ = _reader(strength, n=600)
    line = next(x for x in claim_lines(rows, "m", "d", "loss", read, n_boot=300)
                if "near chance" in x)
    assert "loss attack: reproduced: all 2 AUCs shown within 0.5 ± 0.05" in line
    assert "By method and epoch: prompt (epoch 1) " in line and "[90% CI 0.4" in line
    assert "] equivalent; prompt (epoch 2) " in line
    read, _, _ = _reader(strength, n=60)
    line = next(x for x in claim_lines(rows, "m", "d", "loss", read, n_boot=300)
                if "near chance" in x)
    assert "loss attack: inconclusive: " in line


# ----------------------------------------------------------------------------- seeds in the claims


def test_claims_read_every_seed_and_say_how_many():
    rows = [_row(m, e, seed=s) for m in ("lora", "prompt") for e in (1, 2) for s in (0, 1, 2)]
    strength = {("lora", 1): 0.6, ("lora", 2): 1.6, ("prompt", 1): 0.1, ("prompt", 2): 0.1}
    read, tables, calls = _reader(strength, seeds=(0, 1, 2))
    lines = claim_lines(rows, "m", "d", "loss", read, n_boot=200)
    assert set(calls) == {0, 1, 2}  # read per seed, with seed=
    assert "3 training seeds per method, so every interval includes the seed-to-seed " \
        "variance" in lines[0]
    claim1 = next(x for x in lines if "Claim 1 (" in x)
    # the point estimate: mean over seeds of each seed's AUC, minus the same for prompt
    auc = {k: _exact_auc(np.asarray(t["loss"]), np.asarray(t["member"]))
           for k, t in tables.items()}
    want = np.mean([auc["lora", 2, s] for s in range(3)]) - np.mean(
        [auc["prompt", 2, s] for s in range(3)])
    assert f"LoRA (q,v; r=8) − prompt {want:+.3f} [95% CI " in claim1


def test_score_reader_passes_the_seed_only_when_there_is_one(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jaxmem import runs
    from jaxmem.study import claims

    seen = []

    def attack_dir(out, model, dataset, method, epoch, **kw):
        seen.append(kw)
        where = tmp_path / method / str(epoch) / str(kw.get("seed", "none"))
        where.mkdir(parents=True, exist_ok=True)
        return where

    monkeypatch.setattr(claims, "study_attack_dir", attack_dir)
    (tmp_path / "lora" / "2" / "7").mkdir(parents=True)
    pq.write_table(pa.table({"member": [True, False], "loss": [1.0, 0.0]}),
                   tmp_path / "lora" / "2" / "7" / runs.SCORES)
    read = score_reader(tmp_path, "m", "d")
    assert read("lora", 2, seed=7)["loss"] == [1.0, 0.0]
    assert read("lora", 2) is None  # the folder without a seed holds nothing
    assert seen == [{"seed": 7}, {}]


# ----------------------------------------------------------------------------- TPR intervals


@pytest.mark.parametrize("k, n", [(0, 128), (1, 128), (3, 128), (64, 128), (128, 128),
                                  (30, 120), (7, 1000)])
def test_clopper_pearson_matches_scipy(k, n):
    from scipy.stats import binomtest

    from jaxmem.dp import clopper_pearson
    from jaxmem.study.tables import tpr_text

    want = binomtest(k, n).proportion_ci(0.95, method="exact")
    low, high = clopper_pearson(k, n, 0.05)
    assert (float(low), float(high)) == pytest.approx((want.low, want.high), abs=1e-12)
    row = {"n_members": n, "n_nonmembers": 128, "tpr@1%fpr": k / n}
    assert tpr_text(row, "tpr@1%fpr") == f"{k / n:.3f} [{want.low:.3f}, {want.high:.3f}]"


def test_tpr_note_asks_for_1000_nonmembers():
    from jaxmem.study.tables import tpr_note

    note = tpr_note([{"n_nonmembers": 128}])
    assert "one false positive at most" in note and ">= 1,000 non-members" in note
    assert "5 false positives at most" in tpr_note([{"n_nonmembers": 500}])
    assert tpr_note([{"n_nonmembers": 1000}]) == ""  # enough
    assert tpr_note([{"n_nonmembers": 99}]) == ""  # 1% not measurable at all (n/a cells)


# ----------------------------------------------------------------------------- utility gate


def test_utility_gate_is_two_sided():
    from jaxmem.study.utility import (COMPARABLE_PPL_RATIO, MIN_COMPARABLE_PPL_RATIO,
                                      comparable_utility, not_comparable, utility_note)

    assert (MIN_COMPARABLE_PPL_RATIO, COMPARABLE_PPL_RATIO) == (0.5, 1.25)
    base = 20.0
    assert [comparable_utility(r * base, base) for r in (0.12, 0.49, 0.5, 1.0, 1.25, 1.26)] \
        == [False, False, True, True, True, False]
    assert not comparable_utility(float("nan"), base)
    rows = [_row("base", 0), _row("lora", 2, val_ppl=0.3 * base), _row("prompt", 2),
            _row("prefix", 2, val_ppl=1.5 * base)]
    flagged = not_comparable(rows, "m", "d")
    assert flagged == pytest.approx({"lora": 0.3, "prefix": 1.5})
    note = utility_note(flagged, base)
    assert "LoRA (q,v; r=8) (0.30x, below)" in note and "prefix (1.50x, above)" in note
    assert "outside 0.5x-1.25x the base model's (20.00)" in note
    # several seeds: judged on the mean of the seeds' perplexities (0.4x and 0.8x -> 0.6x)
    seeded = [_row("base", 0), _row("lora", 2, seed=0, val_ppl=0.4 * base),
              _row("lora", 2, seed=1, val_ppl=0.8 * base)]
    assert not_comparable(seeded, "m", "d") == {}
    # left out of the claims, and named
    read, _, _ = _reader({("lora", 2): 2.0, ("prompt", 2): 0.1, ("prefix", 2): 0.1})
    lines = claim_lines(rows, "m", "d", "loss", read, n_boot=100)
    left = next(x for x in lines if "Left out" in x)
    assert "Left out of both claims: LoRA (q,v; r=8), prefix." in left
    assert "no parameter-based method" in left
    assert not [x for x in lines if "Claim 1 (" in x]


def test_claim4_reads_every_seed_of_both_datasets():
    from jaxmem.study.claim4 import claim4_lines

    rows = [{"model": "m", "dataset": d, "method": m, "epoch": 2, "attack": a, "seed": s,
             "val_ppl": 10.0} for d in ("default", "infobox") for m in ("lora", "prompt")
            for a in ("loss", "ref") for s in (0, 1)]
    readers = {d: _reader({("lora", 2): 1.0, ("prompt", 2): 0.2 if d == "default" else 1.5},
                          seed=i, seeds=(0, 1)) for i, d in enumerate(("default", "infobox"))}
    for _, tables, _ in readers.values():
        for t in tables.values():
            t["ref"] = t["loss"]
    lines = claim4_lines(rows, "m", "loss", lambda d: readers[d][0], n_boot=200)
    (line,) = [x for x in lines if x.startswith("- Claim 4")]
    assert "ref attack, infobox vs default: reproduced: the method is above" in line  # primary
    assert "2 training seeds per method, drawn with replacement" in line
    assert all(set(calls) == {0, 1} for _, _, calls in readers.values())
