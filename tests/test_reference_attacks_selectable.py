"""LiRA and RMIA as attacks of run_attacks_on, `jaxmem attack --run-dir` and a study: the same
scores as jaxmem.references' functions on the same reference runs, trained once and reused."""

import json

import numpy as np
import pytest

from jaxmem import reference_models
from jaxmem import references as R
from jaxmem.attacks import parse_attack
from jaxmem.audit import AuditConfig, run_attacks_on
from jaxmem.optim import OptimConfig
from jaxmem.reference_attacks import reference_provider
from jaxmem.reference_models import ReferenceModels, population_candidates, sample_population
from jaxmem.trainer import TrainConfig

TCFG = TrainConfig(epochs=2, batch_size=4, block_size=24, optim=OptimConfig(lr=1e-2))
KW = dict(batch_size=16, block_size=24, dtype="float32")


@pytest.fixture
def count_training(monkeypatch):
    """How many times reference models were trained (each call trains K of them)."""
    calls = []
    real = R.train_references

    def counted(*a, **kw):
        calls.append(kw.get("until"))
        return real(*a, **kw)

    monkeypatch.setattr(reference_models, "train_references", counted)  # where it is called
    return calls


def _setup(tiny_setup, tmp_path):
    from jaxmem.data import load_corpus
    from jaxmem.models import load_model
    from jaxmem.trainer import train

    model, corpus_file = tiny_setup
    base, cfg, tok = load_model(model)
    c = load_corpus(corpus_file, n_train=8, n_validation=4, n_members=8, n_nonmembers=8)
    train(base, cfg, tok, "lora", c.train, c.validation, tmp_path / "run", TCFG, progress=False)
    exclude = c.train + c.validation + c.members + c.nonmembers
    candidates = lambda: population_candidates(corpus_file, exclude)  # noqa: E731
    return base, cfg, tok, c, candidates


def _direct(refs_at, base, cfg, tok, population, target_params, texts):
    """LiRA and RMIA (a = 0.5) from jaxmem.references' own functions on given references."""
    from jaxmem.scoring import score_texts

    target = -score_texts(target_params, cfg, tok, texts, **KW).nll()
    z_target = -score_texts(target_params, cfg, tok, population, **KW).nll()
    ll = R.reference_log_likelihoods(refs_at, cfg, tok, texts, **KW)
    z_ll = R.reference_log_likelihoods(refs_at, cfg, tok, population, **KW)
    return (R.lira_offline(target, ll),
            R.rmia_offline(target, ll, z_target, z_ll, z_ref_out=~refs_at.membership, a=0.5))


def test_run_attacks_on_lira_rmia_equal_the_functions_and_reuse_references(
        tiny_setup, tmp_path, count_training):
    from jaxmem import runs
    from jaxmem.trainer import load_checkpoint

    base, cfg, tok, c, candidates = _setup(tiny_setup, tmp_path)
    acfg = AuditConfig(attacks="loss,lira:k=2,rmia:k=2,a=0.5", n_boot=0, **KW)
    assert acfg.attacks == ("loss", "lira:k=2", "rmia:k=2,a=0.5")

    def attack(epoch):
        params, _ = load_checkpoint(tmp_path / "run", base, cfg, tok, epoch=epoch)
        refs = reference_provider(tmp_path / "refs", base, cfg, tok, model_name="tiny",
                                  method="lora", tcfg=TCFG, epoch=epoch, candidates=candidates,
                                  n_train=len(c.train), epochs=(1, 2))
        return params, run_attacks_on(params, cfg, tok, c.members, c.nonmembers, acfg,
                                      references=refs)

    params1, res1 = attack(1)
    assert count_training == [2]  # one training of both references, through epoch 2
    assert list(res1["scores"]) == ["loss", "lira:k=2", "rmia:k=2,a=0.5"]
    # the same reference runs, restored from their checkpoint, through the functions directly
    population = sample_population(candidates(), 2 * len(c.train), TCFG.seed)
    rm = ReferenceModels(tmp_path / "refs", base, cfg, tok, model_name="tiny", method="lora",
                         tcfg=TCFG, population=population, k=2)
    assert res1["info"]["references"]["k=2,pop=auto"]["folder"] == str(rm.folder)
    assert runs.finished_epochs(rm.folder) == [1, 2]
    texts = c.members + c.nonmembers
    stacked, labels, _ = rm._restore(1)
    restored = R.References(stacked, labels, rm.membership, np.zeros(0))
    lira, rmia = _direct(restored, base, cfg, tok, population, params1, texts)
    np.testing.assert_allclose(res1["scores"]["lira:k=2"], lira, rtol=1e-6)
    np.testing.assert_allclose(res1["scores"]["rmia:k=2,a=0.5"], rmia)
    # ... and they are what train_references gives in memory (experiments/reference_attacks.py)
    fresh = R.train_references(base, cfg, tok, "lora", population, TCFG, n_refs=2, until=1)
    lira, rmia = _direct(fresh, base, cfg, tok, population, params1, texts)
    np.testing.assert_allclose(res1["scores"]["lira:k=2"], lira, rtol=1e-4)
    count_training.clear()

    # the next epoch and a rerun read the cached references: nothing is trained again
    stamps = {p: p.stat().st_mtime_ns for p in rm.folder.rglob("*")
              if p.is_file() and p.name != "references.json"}  # checkpoints, log-likelihoods
    assert len(stamps) > 4
    params2, res2 = attack(2)
    _, again = attack(1)
    assert count_training == []
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    for name in res1["scores"]:
        np.testing.assert_array_equal(again["scores"][name], res1["scores"][name])
    stacked, labels, _ = rm._restore(2)
    lira, rmia = _direct(R.References(stacked, labels, rm.membership, np.zeros(0)), base, cfg,
                         tok, population, params2, texts)
    np.testing.assert_allclose(res2["scores"]["lira:k=2"], lira, rtol=1e-6)
    np.testing.assert_allclose(res2["scores"]["rmia:k=2,a=0.5"], rmia)


def test_cli_attack_run_dir_lira_rmia_trains_references_once(tiny_setup, tmp_path, capsys,
                                                             count_training):
    import pyarrow.parquet as pq

    from jaxmem.cli import main
    from jaxmem.data import load_corpus
    from jaxmem.models import load_model

    model, corpus = tiny_setup
    run = tmp_path / "run"
    data = f"--corpus {corpus} --n-train 8 --n-validation 4 --n-members 8 --n-nonmembers 8"
    assert main(f"train --model {model} --run-dir {run} --method lora --epochs 2 --batch-size 4 "
                f"--block-size 24 --lr 1e-2 {data}".split()) == 0
    attack = (f"attack --run-dir {run} --attacks loss,lira:k=2,rmia:k=2,a=0.5 --n-boot 0 "
              "--batch-size 16 --epoch 1 --out-dir").split()
    assert main([*attack, str(tmp_path / "a1")]) == 0
    assert count_training == [1]  # the attacked epoch only
    scores = pq.read_table(tmp_path / "a1" / "scores.parquet").to_pydict()
    info = json.loads((tmp_path / "a1" / "metrics.json").read_text())["info"]
    folder = info["references"]["k=2,pop=auto"]["folder"]
    assert folder.startswith(str(run / "references" / "k2-pop16-"))
    # the reference runs the CLI trained, restored and put through the functions directly
    base, cfg, tok = load_model(model)
    spec = json.loads((run / "run.json").read_text())
    c = load_corpus(corpus, n_train=8, n_validation=4, n_members=8, n_nonmembers=8)
    exclude = c.train + c.validation + c.members + c.nonmembers
    population = sample_population(population_candidates(corpus, exclude), 16, 0)
    rm = ReferenceModels(run / "references", base, cfg, tok, model_name=spec["model"],
                         method="lora", tcfg=TrainConfig.from_dict(spec["train"]),
                         population=population, k=2)
    assert str(rm.folder) == folder
    stacked, labels, _ = rm._restore(1)
    ll = R.reference_log_likelihoods(R.References(stacked, labels, rm.membership, np.zeros(0)),
                                     cfg, tok, c.members + c.nonmembers, **KW)
    target = np.asarray(scores["loss"])  # the target's mean token log-likelihood
    np.testing.assert_allclose(scores["lira:k=2"], R.lira_offline(target, ll), rtol=1e-6)
    # a second attack of the same epoch reads the cache: nothing trained, the same scores
    count_training.clear()
    assert main([*attack, str(tmp_path / "a2")]) == 0
    assert count_training == []
    again = pq.read_table(tmp_path / "a2" / "scores.parquet").to_pydict()
    assert again["lira:k=2"] == scores["lira:k=2"]
    assert again["rmia:k=2,a=0.5"] == scores["rmia:k=2,a=0.5"]
    # epoch 2 resumes the references from their epoch-1 checkpoint (weights and optimizer
    # state): the same as training both epochs at once
    assert main([*attack[:-3], "--epoch", "2", "--out-dir", str(tmp_path / "a5")]) == 0
    assert count_training == [2]
    s2 = pq.read_table(tmp_path / "a5" / "scores.parquet").to_pydict()
    fresh = R.train_references(base, cfg, tok, "lora", population,
                               TrainConfig.from_dict(spec["train"]), n_refs=2)
    ll = R.reference_log_likelihoods(fresh, cfg, tok, c.members + c.nonmembers, **KW)
    np.testing.assert_allclose(s2["lira:k=2"], R.lira_offline(np.asarray(s2["loss"]), ll),
                               rtol=1e-4)
    # refused before any work: no run to repeat; RMIA's a tuned with 2 references
    capsys.readouterr()
    assert main(f"attack --model {model} --corpus {corpus} --attacks lira:k=2 --out-dir "
                f"{tmp_path / 'a3'}".split()) == 2
    assert "--run-dir" in capsys.readouterr().err and not (tmp_path / "a3").exists()
    assert main(f"attack --run-dir {run} --attacks rmia:k=2 --out-dir {tmp_path / 'a4'}"
                .split()) == 2
    err = capsys.readouterr().err
    assert "k >= 4" in err and "rmia:k=2,a=0.5" in err


def test_study_lira_trains_references_once_for_every_epoch(tiny_setup, tmp_path,
                                                          count_training):
    from jaxmem.study import StudyConfig, run_study

    model, corpus = tiny_setup
    scfg = StudyConfig.from_dict({
        "models": [model], "datasets": [corpus], "methods": ["lora"], "lr": {"lora": 1e-2},
        "n_train": 8, "n_validation": 4, "n_members": 8, "n_nonmembers": 8,
        "train.epochs": 2, "train.batch_size": 4, "train.block_size": 24,
        "audit.block_size": 24, "audit.n_boot": 0, "audit.attacks": "loss,lira:k=2"})
    rows = run_study(scfg, tmp_path / "s", progress=False)
    assert count_training == [2]
    lira = {(r["method"], r["epoch"]): r["auc"] for r in rows if r["attack"] == "lira:k=2"}
    assert set(lira) == {("base", 0), ("lora", 1), ("lora", 2)}
    assert lira["base", 0] == 0.5  # epoch 0: the base model against copies of itself
    folders = list((tmp_path / "s" / "references").glob("*/*/lora/k2-pop16-*"))
    assert len(folders) == 1 and (folders[0] / "references.json").exists()
    # a rerun after the attacks are gone reuses the references (and their log-likelihoods)
    import shutil

    shutil.rmtree(tmp_path / "s" / "attacks")
    count_training.clear()
    again = run_study(scfg, tmp_path / "s", progress=False)
    assert count_training == []
    assert [r["auc"] for r in again] == [r["auc"] for r in rows]


def test_bad_specs_and_missing_references_are_refused_naming_the_fix(tiny_setup):
    from jaxmem.study import StudyConfig

    for spec, fix in (("lira:k=3", "even integer"), ("lira:k=4,a=0.3", "k, pop, variance"),
                      ("rmia:k=2", "rmia:k=2,a=0.5"), ("rmia:a=1.5", "tune or a number"),
                      ("lira:variance=local", "global or per_example"),
                      ("rmia:gamma=-1", "> 0"), ("lira:pop=1", ">= 2")):
        with pytest.raises(ValueError, match=fix):
            parse_attack(spec)
        with pytest.raises(ValueError, match=fix):
            StudyConfig(audit=AuditConfig(attacks=("loss", spec)))
    assert parse_attack("rmia")[0] == "rmia:k=4,a=tune"
    assert parse_attack("lira:k=2,variance=per_example,pop=10")[0] == \
        "lira:k=2,pop=10,variance=per_example"
    assert AuditConfig(attacks=["loss", "rmia:k=2", "a=0.5", "gamma=2"]).attacks == \
        ("loss", "rmia:k=2,a=0.5,gamma=2")
    from jaxmem.models import load_model

    base, cfg, tok = load_model(tiny_setup[0])
    with pytest.raises(ValueError, match="references="):
        run_attacks_on(base, cfg, tok, ["w1 w2 w3"], ["w4 w5 w6"],
                       AuditConfig(attacks=("lira:k=2",), block_size=8))
    with pytest.raises(ValueError, match="population of 400"):
        sample_population(["w1"] * 10, 400, 0)
