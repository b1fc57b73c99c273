"""Training seeds in a study: one run per seed on the same texts, results per seed and per
cell (mean and spread over seeds), the data seed apart from the training seeds."""

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from jaxmem import runs
from jaxmem.seeds import over_seeds
from jaxmem.study import StudyConfig, run_study
from jaxmem.study.folders import study_attack_dir, study_run_dir


def _cfg(model, corpus, **kw):
    d = {"name": "seeds", "models": [model], "datasets": [corpus], "methods": ["prompt"],
         "lr": {"prompt": 1e-1}, "n_train": 24, "n_validation": 8, "n_members": 16,
         "n_nonmembers": 16, "seeds": [0, 1], "train.epochs": 1, "train.batch_size": 8,
         "train.block_size": 32, "audit.block_size": 32, "audit.n_boot": 20,
         "audit.attacks": ["loss", "min_k"]}
    d.update(kw)
    return StudyConfig.from_dict(d)


def test_a_study_trains_every_seed_on_the_same_texts(tiny_setup, tmp_path):
    model, corpus = tiny_setup
    out = tmp_path / "study"
    rows = run_study(_cfg(model, corpus), out, progress=False)
    for seed in (0, 1):
        run = study_run_dir(out, model, corpus, "prompt", seed)
        assert run.name == f"seed_{seed}" and runs.read_run_spec(run)["train"]["seed"] == seed
    tables = [pq.read_table(study_attack_dir(out, model, corpus, "prompt", 1, s)
                            / runs.SCORES).to_pydict() for s in (0, 1)]
    # the same members and non-members, scored by two differently trained models
    assert tables[0]["text"] == tables[1]["text"] and tables[0]["member"] == tables[1]["member"]
    assert tables[0]["loss"] != tables[1]["loss"]
    assert {r["seed"] for r in rows if r["method"] == "prompt"} == {0, 1}
    assert {r["seed"] for r in rows if r["method"] == "base"} == {None}
    # results_by_cell.csv: per cell the mean and sample sd over seeds, as numpy has them
    with open(out / runs.RESULTS_BY_CELL) as f:
        cells = {(r["method"], r["attack"]): r for r in csv.DictReader(f)}
    for attack in {r["attack"] for r in rows}:
        aucs = [r["auc"] for r in rows if r["method"] == "prompt" and r["attack"] == attack]
        c = cells["prompt", attack]
        assert float(c["auc"]) == pytest.approx(np.mean(aucs), abs=1e-12)
        assert float(c["auc_sd"]) == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
        assert c["n_seeds"] == "2" and c["seeds"] == "0 1"
    # the train-validation gap of each row: validation loss minus the members' mean loss
    for s, t in zip((0, 1), tables):
        member_nll = -np.mean([v for v, m in zip(t["loss"], t["member"]) if m])
        for r in rows:
            if r["method"] == "prompt" and r["seed"] == s:
                assert r["member_loss"] == pytest.approx(member_nll, rel=1e-12)
                assert r["gap"] == pytest.approx(r["val_loss"] - member_nll, rel=1e-12)
    report = (out / "report.md").read_text()
    assert "training seeds [0, 1]" in report and " ± " in report
    # another data seed draws other texts; the training seeds do not change them
    other = run_study(_cfg(model, corpus, data_seed=1, seeds=[0]), tmp_path / "d1",
                      progress=False)
    t = pq.read_table(study_attack_dir(tmp_path / "d1", model, corpus, "prompt", 1, 0)
                      / runs.SCORES).to_pydict()
    assert t["text"] != tables[0]["text"]
    assert len(other) == len(rows) - 2  # one seed: the base row and one prompt row per attack


def test_over_seeds_keeps_cells_apart_and_counts_seeds():
    rows = [{"model": "m", "dataset": "d", "method": m, "seed": s, "epoch": 1, "attack": "loss",
             "auc": a, "val_ppl": p, "comparable_utility": c, "tpr@1%fpr": None}
            for m, s, a, p, c in (("lora", 0, .6, 10., True), ("lora", 1, .8, 12., False),
                                  ("prompt", 0, .5, 11., True))]
    by = {r["method"]: r for r in over_seeds(rows)}
    assert by["lora"]["auc"] == pytest.approx(.7) and by["lora"]["auc_sd"] == pytest.approx(
        np.std([.6, .8], ddof=1))
    assert by["lora"]["comparable_utility"] is False and by["lora"]["tpr@1%fpr"] is None
    assert by["prompt"]["n_seeds"] == 1 and by["prompt"]["auc_sd"] == 0.0


@pytest.mark.parametrize("seeds, why", [([0, 0], "distinct"), ([], "distinct"),
                                        (["a"], "distinct"), ([-1], "distinct")])
def test_bad_seeds_are_refused(seeds, why):
    with pytest.raises(ValueError, match=why):
        StudyConfig.from_dict({"seeds": seeds})


def test_bad_split_is_refused():
    with pytest.raises(ValueError, match="one of auto, matched, random"):
        StudyConfig.from_dict({"split": "articles"})


def test_gap_correlations_equal_scipy():
    from scipy.stats import pearsonr, spearmanr

    from jaxmem.overfit import gap_correlations

    rng = np.random.default_rng(0)
    gaps, aucs = rng.normal(size=9), rng.uniform(.4, 1, size=9)
    rows = [{"method": "m%d" % k, "attack": "ref", "auc": a, "gap": g}
            for k, (g, a) in enumerate(zip(gaps, aucs))]
    rows.append({"method": "base", "attack": "ref", "auc": .99, "gap": 5.0})  # not fine-tuned
    (c,) = gap_correlations(rows)
    assert c["n_cells"] == 9
    assert c["pearson_r"] == pytest.approx(pearsonr(gaps, aucs)[0], abs=1e-12)
    assert c["spearman_r"] == pytest.approx(spearmanr(gaps, aucs)[0], abs=1e-12)
    assert gap_correlations(rows[:3]) == []  # too few cells to say anything
