"""A tiny study end to end: files, resumption without recomputation, refusal of another study."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxmem.audit import AuditConfig
from jaxmem.io import read_json
from jaxmem.study import StudyConfig, run_study
from jaxmem.study.folders import study_attack_dir
from jaxmem.study.grid import claim_study_folder
from jaxmem.trainer import TrainConfig


def _cfg(model, corpus, **kw):
    d = {"name": "tiny", "models": [model], "datasets": [corpus], "methods": ["lora", "prompt"],
         "lr": {"lora": 1e-2, "prompt": 1e-1}, "n_train": 24, "n_validation": 8,
         "n_members": 16, "n_nonmembers": 16,
         "train.epochs": 2, "train.batch_size": 8, "train.block_size": 32,
         "audit.block_size": 32, "audit.n_boot": 20, "audit.attacks": ["loss", "ref", "min_k"]}
    d.update(kw)
    return StudyConfig.from_dict(d)


def test_tiny_study_end_to_end_and_resume(tiny_setup, tmp_path):
    model, corpus = tiny_setup
    out = tmp_path / "study"
    run_study(_cfg(model, corpus), out, progress=False, stop_after=2)
    assert not (out / "report.md").exists()
    done = sorted(p.parent.name for p in (out / "attacks").rglob("metrics.json"))
    stamp = {p: p.stat().st_mtime_ns for p in (out / "attacks").rglob("metrics.json")}
    rows = run_study(_cfg(model, corpus), out, progress=False)
    for p, t in stamp.items():  # finished cells were not recomputed
        assert p.stat().st_mtime_ns == t
    assert len(done) == 3  # base epoch 0 + two method epochs before the "kill"
    fresh = run_study(_cfg(model, corpus), tmp_path / "fresh", progress=False)
    key = lambda r: (r["method"], r["epoch"], r["attack"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(fresh, key=key)
    for f in ("results.csv", "results.json", "report.md", "study.json",
              "figures/auc_vs_epoch.png", "figures/ppl_vs_epoch.png",
              "figures/privacy_utility.png", "figures/loss_distributions.png",
              "figures/tpr_low_fpr.png", "figures/roc.png"):
        assert (out / f).stat().st_size > 0, f
    res = json.loads((out / "results.json").read_text())
    # 16 non-members support a TPR at 10% FPR, not at 1%: null in results.json, empty in the CSV
    assert all(r["tpr@10%fpr"] is not None and r["tpr@1%fpr"] is None for r in res)
    import csv
    with open(out / "results.csv") as f:
        assert {r["tpr@1%fpr"] for r in csv.DictReader(f)} == {""}
    assert {r["method"] for r in res} == {"base", "lora", "prompt"}
    assert {r["epoch"] for r in res if r["method"] == "lora"} == {1, 2}
    assert len(res) == 3 * (1 + 2 + 2)
    # each (method, epoch): its strongest attack (16 non-members: judged at 10% FPR, ties by AUC)
    # and its perplexity against the base model's, on every one of its rows
    cells = {}
    for r in res:
        cells.setdefault((r["method"], r["epoch"]), []).append(r)
    base_ppl = cells["base", 0][0]["val_ppl"]
    for rs in cells.values():
        best = max(rs, key=lambda r: (r["tpr@10%fpr"], r["auc"]))
        for r in rs:
            assert (r["strongest_attack"], r["strongest_tpr"], r["strongest_fpr"]) \
                == (best["attack"], best["tpr@10%fpr"], 0.1)
            assert r["ppl_vs_base"] == pytest.approx(r["val_ppl"] / base_ppl)
            assert r["comparable_utility"] == (r["val_ppl"] <= 1.25 * base_ppl)
    report = (out / "report.md").read_text()
    assert "Claim 1" in report and "LoRA (q,v; r=8)" in report
    # the log-log ROC of every method at its last epoch, under the main attack, from 1/16
    assert "![ROC, last epoch](figures/roc.png)" in report
    assert "loss attack, log-log (the false positive rate from 1/16, the smallest" in report
    assert "n/a (needs >= 100 non-members)" in report
    assert "| utility |" in report and "| strongest attack |" in report
    assert "@ 10% FPR |" in report
    claim1 = next(line for line in report.splitlines() if "Claim 1 (" in line)
    assert any(f"loss attack: {v}: " in claim1 for v in ("reproduced", "contradicted",
                                                          "inconclusive"))
    assert "[95% CI " in claim1  # decided from the scores files, paired
    # the verdicts the report shows are claims.json's, computed once
    judged = json.loads((out / "claims.json").read_text())["claims"]
    assert f"loss attack: {next(c for c in judged if c['claim'] == '1')['verdict']}: " in claim1
    spec = json.loads((out / "study.json").read_text())
    assert spec.pop("provenance")["jaxmem"] and spec == _cfg(model, corpus).to_dict()
    with pytest.raises(FileExistsError, match="different study.*train"):
        run_study(_cfg(model, corpus, **{"train.epochs": 3}), out, progress=False)


def test_config_from_yaml_with_overrides(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nmethods: [full, lora]\ntrain: {epochs: 2}\nlr: {lora: 0.001}\n")
    cfg = StudyConfig.from_yaml(p, ["train.epochs=4", "methods=[prefix]"])
    assert cfg.train.epochs == 4 and cfg.methods == ("prefix",) and cfg.lr_for("lora") == 1e-3
    with pytest.raises(ValueError, match="Unknown study options"):
        StudyConfig.from_yaml(p, ["train.epoch=4"])
    with pytest.raises(ValueError, match="Unknown fine-tuning method"):
        StudyConfig.from_yaml(p, ["methods=[dora]"])


@pytest.mark.parametrize("path", sorted(
    str(p) for p in (Path(__file__).parents[1] / "experiments").rglob("*.yaml")))
def test_every_experiment_config_loads(path):
    """Every shipped config parses (cpu/figures.yaml once failed: its attack_epochs were checked
    against the default 5 epochs before its own 15 were set), and prefix tuning starts from the
    base model's activations wherever it appears."""
    if path.endswith("reference_attacks.yaml"):  # not a study: experiments/reference_attacks.py
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "reference_attacks", Path(__file__).parents[1] / "experiments" / "reference_attacks.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # its dataclasses look their module up there
        spec.loader.exec_module(mod)
        assert mod.ReferenceExperiment.from_yaml(path).n_refs >= 2
        return
    if path.endswith("frontier.yaml"):  # a study per epsilon: jaxmem.study.frontier
        from jaxmem.study.frontier import load_frontier

        cfg, fcfg = load_frontier(path)
        assert len(fcfg.epsilons) >= 2
    else:
        cfg = StudyConfig.from_yaml(path)
    for m in cfg.methods:
        if m.startswith("prefix"):
            assert "init=activations" in m and cfg.lr_for(m) == 1e-3


def test_report_draws_size_and_placement_figures_when_the_study_has_them(tmp_path):
    from jaxmem.study.report import write_study_report

    rows = []
    for model, n in (("small", 1e8), ("large", 1e9)):
        for method in ("base", "lora:target=mlp", "lora:target=attention", "prompt"):
            for e in ((0,) if method == "base" else (1, 2)):
                rows.append(dict(model=model, model_params=n, dataset="d", method=method, epoch=e,
                                 val_loss=3.0, val_ppl=20.0, attack="loss", auc=0.6, auc_lo=0.5,
                                 auc_hi=0.7, n_members=10, n_nonmembers=10,
                                 **{"tpr@10%fpr": 0.1, "tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.0}))
    cfg = StudyConfig(methods=("lora:target=mlp", "lora:target=attention", "prompt"),
                      audit=AuditConfig(attacks=("loss",)))
    report = write_study_report(tmp_path, cfg, rows).read_text()
    assert "figures/auc_vs_size.png" in report and "figures/lora_placement.png" in report
    assert (tmp_path / "figures" / "lora_placement.png").stat().st_size > 0


def test_mesh_is_how_not_what(tmp_path):
    """A study resumes on another mesh; any other change of config is a different study."""
    claim_study_folder(tmp_path, StudyConfig(methods=("lora",)), overwrite=False)
    claim_study_folder(tmp_path, StudyConfig(methods=("lora",), mesh="auto"), overwrite=False)
    assert StudyConfig(mesh="4x2").identity() == StudyConfig().identity()
    with pytest.raises(FileExistsError, match="different study.*train"):
        claim_study_folder(tmp_path, StudyConfig(methods=("lora",), mesh="auto",
                                            train=TrainConfig(epochs=9)), False)


# The demo's study.json as jaxmem wrote it before the options were nested (flat).
DEMO_FLAT_STUDY_JSON = {
    "name": "demo", "models": ["smollm2-135m"], "datasets": ["default"],
    "methods": ["full", "head", "lora", "prefix:prefix_projection=true", "prompt", "ptuning"],
    "lr": {"full": 0.0001, "head": 0.0001, "lora": 0.001, "prefix": 0.01, "prompt": 0.03,
           "ptuning": 0.001},
    "lr_default": 0.0001, "epochs": 3, "attack_epochs": None,
    "attacks": ["loss", "ref", "zlib", "min_k", "min_k_pp"], "n_train": 48, "n_validation": 24,
    "n_members": 48, "n_nonmembers": 48, "batch_size": 8, "grad_accum": 1, "block_size": 48,
    "dtype": "float32", "weight_decay": 0.0, "warmup_steps": 0, "schedule": "linear", "seed": 0,
    "n_boot": 500, "score_batch_size": 16, "mesh": None}


# The demo of that time as nested YAML: the config a user of that study would run today.
DEMO_OF_THAT_TIME = """
name: demo
models: [smollm2-135m]
datasets: [default]
methods: [full, head, lora, "prefix:prefix_projection=true", prompt, ptuning]
lr: {full: 1.0e-4, head: 1.0e-4, lora: 1.0e-3, prefix: 1.0e-2, prompt: 3.0e-2, ptuning: 1.0e-3}
train: {epochs: 3, batch_size: 8, block_size: 48}
audit: {attacks: [loss, ref, zlib, min_k, min_k_pp], block_size: 48, n_boot: 500}
n_train: 48
n_members: 48
n_nonmembers: 48
n_validation: 24
"""


def test_old_study_json_is_refused_with_what_changed_and_the_fix(tmp_path):
    """A study.json of an older form (flat options; no split) is not converted: one error
    names what changed and how to go on, before any work."""
    (tmp_path / "study.json").write_text(json.dumps(DEMO_FLAT_STUDY_JSON))
    (tmp_path / "demo.yaml").write_text(DEMO_OF_THAT_TIME)
    demo = StudyConfig.from_yaml(tmp_path / "demo.yaml")
    with pytest.raises(ValueError, match="older jaxmem.*flat.*train: and audit:.*--overwrite"):
        claim_study_folder(tmp_path, demo, overwrite=False)
    with pytest.raises(ValueError, match="older jaxmem.*flat"):  # run_study: the same error
        run_study(demo, tmp_path, progress=False)
    no_split = {k: v for k, v in demo.to_dict().items() if k not in ("split", "data_seed")}
    (tmp_path / "study.json").write_text(json.dumps(no_split))
    with pytest.raises(ValueError, match="older jaxmem.*split.*--out-dir.*--overwrite"):
        claim_study_folder(tmp_path, demo, overwrite=False)
    assert json.loads((tmp_path / "study.json").read_text()) == no_split  # left as it was


def test_flat_and_max_length_study_options_are_refused_with_their_new_homes(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("methods: [lora]\nepochs: 2\nmax_length: 64\nseed: 3\nscore_batch_size: 4\n")
    with pytest.raises(ValueError, match=r"epochs -> train\.epochs, .*score_batch_size -> "
                       r"audit\.batch_size, .*max_length -> train\.block_size and "
                       r"audit\.block_size\. Write them nested"):
        StudyConfig.from_yaml(p, ["batch_size=16"])
    with pytest.raises(ValueError, match=r"train\.max_length -> train\.block_size"):
        StudyConfig.from_dict({"train": {"max_length": 32}})
    nested = StudyConfig.from_dict({"train": {"epochs": 2, "optim": {"lr": 0.01}}})
    assert nested.train.epochs == 2 and nested.lr_for("full") == 0.01
    assert nested.train_config("full").optim.lr == 0.01


def test_study_started_before_new_options_resumes_with_their_defaults(tmp_path):
    """A study.json without options added since (audit.recall_shots, ...) is completed with
    their defaults and claimed as the same study; a real difference is still refused."""
    demo = StudyConfig.from_yaml(Path(__file__).parents[1] / "experiments" / "demo.yaml")
    old = demo.to_dict()
    for k in ("recall_shots", "recall_prefix", "dcpdd_corpus"):
        del old["audit"][k]
    (tmp_path / "study.json").write_text(json.dumps(old))
    claim_study_folder(tmp_path, demo, overwrite=False)
    spec = json.loads((tmp_path / "study.json").read_text())
    assert spec.pop("provenance") and spec == demo.to_dict()
    (tmp_path / "study.json").write_text(json.dumps(dict(old, n_train=7)))
    with pytest.raises(FileExistsError, match="differs in: n_train"):
        claim_study_folder(tmp_path, demo, overwrite=False)


def test_study_measures_verbatim_extraction_when_asked(tiny_setup, tmp_path):
    """extraction: {...} gives every attacked cell an extraction.json, equal for the base model
    to extraction_metrics called directly; rows and report carry it; bad options fail early."""
    from jaxmem import runs
    from jaxmem.data import load_corpus
    from jaxmem.extraction import ExtractionConfig, extraction_metrics
    from jaxmem.models import load_model

    model, corpus = tiny_setup
    ext = {"prefix_len": 4, "suffix_len": 4, "n_samples": [1, 10], "top_p": 0.9}
    cfg = _cfg(model, corpus, methods=["lora"], extraction=ext, **{"train.epochs": 1})
    rows = run_study(cfg, tmp_path / "s", progress=False)
    base_cell = study_attack_dir(tmp_path / "s", model, corpus, "base", 0)
    got = read_json(base_cell / runs.EXTRACTION)
    params, mcfg, tok = load_model(model)
    c = load_corpus(corpus, n_train=24, n_validation=8, n_members=16, n_nonmembers=16, seed=0)
    want = extraction_metrics(params, mcfg, tok, c.members, c.nonmembers, ExtractionConfig(**ext))
    for side in ("members", "nonmembers"):
        assert got[side]["k_extractable_rate"] == want[side]["k_extractable_rate"]
        lp = [[-np.inf if v is None else v for v in d[side]["per_text"]["log_px"]]
              for d in (got, want)]  # None: p_x = 0 under the truncated scheme
        np.testing.assert_allclose(*lp, rtol=1e-5)
        assert got[side]["discoverable"] == want[side]["discoverable"]
    lora = [r for r in rows if r["method"] == "lora"]
    assert lora and all("k_extractable_rate_members" in r for r in lora)
    assert all(r["discoverable_n10_nonmembers"] == got["nonmembers"]["discoverable"]
               ["n=10,p=0.5"] and r["discoverable_p"] == 0.5
               for r in rows if r["method"] == "base")
    report = (tmp_path / "s" / "report.md").read_text()
    assert "Verbatim extraction" in report and "(10, 0.5)-discoverable" in report
    assert "top-p 0.9" in report
    with pytest.raises(ValueError, match="Unknown extraction options.*prefix"):
        _cfg(model, corpus, extraction={"prefx_len": 4})
