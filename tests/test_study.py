"""A tiny study end to end: files, resumption without recomputation, refusal of another study."""

import json

import pytest

import jaxmem.models
import jaxmem.data
from conftest import save_tiny_tokenizer, tiny_hf_model
from jaxmem.study import StudyConfig, run_study


@pytest.fixture
def tiny_setup(tmp_path, monkeypatch):
    """A tiny Llama saved as a HF directory and a local text corpus (word-level vocabulary)."""
    model = tiny_hf_model("llama", num_key_value_heads=2)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    save_tiny_tokenizer(model_dir)
    import numpy as np
    rng = np.random.default_rng(0)
    lines = [" ".join(f"w{i}" for i in rng.integers(0, 90, rng.integers(8, 20)))
             for _ in range(120)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(lines))
    return str(model_dir), str(corpus)


def _cfg(model, corpus, **kw):
    d = dict(name="tiny", models=[model], datasets=[corpus], methods=["lora", "prompt"],
             lr={"lora": 1e-2, "prompt": 1e-1}, epochs=2, n_train=24, n_validation=8,
             n_members=16, n_nonmembers=16, batch_size=8, block_size=32, n_boot=20,
             attacks=["loss", "ref", "min_k"])
    d.update(kw)
    return StudyConfig.from_dict(d)


def test_tiny_study_end_to_end_and_resume(tiny_setup, tmp_path):
    model, corpus = tiny_setup
    out = tmp_path / "study"
    rows_killed = run_study(_cfg(model, corpus), out, progress=False, stop_after=2)
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
              "figures/privacy_utility.png", "figures/loss_distributions.png"):
        assert (out / f).stat().st_size > 0, f
    res = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in res} == {"base", "lora", "prompt"}
    assert {r["epoch"] for r in res if r["method"] == "lora"} == {1, 2}
    assert len(res) == 3 * (1 + 2 + 2)
    report = (out / "report.md").read_text()
    assert "Claim 1" in report and "lora" in report
    with pytest.raises(FileExistsError, match="different study.*epochs"):
        run_study(_cfg(model, corpus, epochs=3), out, progress=False)


def test_config_from_yaml_with_overrides(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nmethods: [full, lora]\nepochs: 2\nlr: {lora: 0.001}\n")
    cfg = StudyConfig.from_yaml(p, ["epochs=4", "methods=[prefix]"])
    assert cfg.epochs == 4 and cfg.methods == ("prefix",) and cfg.lr_for("lora") == 1e-3
    with pytest.raises(ValueError, match="Unknown study options"):
        StudyConfig.from_yaml(p, ["epoch=4"])
    with pytest.raises(ValueError, match="Unknown fine-tuning method"):
        StudyConfig.from_yaml(p, ["methods=[dora]"])


def test_report_draws_size_and_placement_figures_when_the_study_has_them(tmp_path):
    from jaxmem.report import write_study_report

    rows = []
    for model, n in (("small", 1e8), ("large", 1e9)):
        for method in ("base", "lora:target=mlp", "lora:target=attention", "prompt"):
            for e in ((0,) if method == "base" else (1, 2)):
                rows.append(dict(model=model, model_params=n, dataset="d", method=method, epoch=e,
                                 val_loss=3.0, val_ppl=20.0, attack="loss", auc=0.6, auc_lo=0.5,
                                 auc_hi=0.7, n_members=10, n_nonmembers=10,
                                 **{"tpr@10%fpr": 0.1, "tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.0}))
    cfg = StudyConfig(methods=("lora:target=mlp", "lora:target=attention", "prompt"),
                      attacks=("loss",))
    report = write_study_report(tmp_path, cfg, rows).read_text()
    assert "figures/auc_vs_size.png" in report and "figures/lora_placement.png" in report
    assert (tmp_path / "figures" / "lora_placement.png").stat().st_size > 0


def test_mesh_is_how_not_what(tmp_path):
    """A study resumes on another mesh; any other change of config is a different study."""
    from jaxmem.study import _claim_folder

    _claim_folder(tmp_path, StudyConfig(methods=("lora",)), overwrite=False)
    _claim_folder(tmp_path, StudyConfig(methods=("lora",), mesh="auto"), overwrite=False)
    assert StudyConfig(mesh="4x2").identity() == StudyConfig().identity()
    with pytest.raises(FileExistsError, match="different study.*epochs"):
        _claim_folder(tmp_path, StudyConfig(methods=("lora",), mesh="auto", epochs=9), False)
