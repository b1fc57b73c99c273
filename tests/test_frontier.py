"""The privacy-utility frontier (jaxmem.study.frontier) and the study's privacy columns: a tiny
frontier end to end, its numbers against what the studies and jaxmem.dp give directly."""

import math

import numpy as np
import pytest

from jaxmem import runs
from jaxmem.io import read_json, write_table
from jaxmem.study.folders import study_attack_dir, study_run_dir
from jaxmem.study.frontier import FrontierConfig, load_frontier, run_frontier, study_at
from test_study import _cfg


def test_tiny_frontier_end_to_end(tiny_setup, tmp_path):
    import pyarrow.parquet as pq

    from jaxmem.dp import empirical_epsilon

    model, corpus = tiny_setup
    scfg = _cfg(model, corpus, **{"train.epochs": 1})
    fcfg = FrontierConfig(epsilons=["inf", 8], delta=1e-3)
    out = tmp_path / "f"
    rows = run_frontier(scfg, fcfg, out, progress=False)

    # one ordinary study per epsilon, DP set by the frontier
    assert read_json(out / "epsilon-inf" / "study.json")["train"]["dp"] is None
    assert read_json(out / "epsilon-8" / "study.json")["train"]["dp"] == \
        "epsilon=8,delta=0.001,clip=1"
    assert {(r["method"], r["epsilon"]) for r in rows} == {
        ("base", None), ("lora", math.inf), ("prompt", math.inf), ("lora", 8.0), ("prompt", 8.0)}

    for r in rows:
        label = "inf" if r["epsilon"] in (None, math.inf) else "8"
        study = read_json(out / f"epsilon-{label}" / "results.json")
        study = [s for s in study if s["method"] == r["method"] and s["epoch"] == r["epoch"]]
        assert r["val_ppl"] == pytest.approx(study[0]["val_ppl"])
        # the strongest attack's TPR is the largest at the lowest FPR 16 non-members support
        assert r["strongest_fpr"] == 0.1
        assert r["strongest_tpr"] == max(s["tpr@10%fpr"] for s in study)
        # the accountant's epsilon is run.json's; without DP there is none
        if r["method"] != "base" and r["epsilon"] == 8.0:
            spec = runs.read_run_spec(study_run_dir(out / "epsilon-8", model, corpus,
                                                         r["method"]))
            assert r["dp_epsilon"] == pytest.approx(spec["dp"]["epsilon"])
            assert r["dp_epsilon"] == pytest.approx(8.0, rel=0.01)
        else:
            assert r["dp_epsilon"] is None
        # the empirical epsilon: the largest over attacks, recomputed from the scores
        where = study_attack_dir(out / f"epsilon-{label}", model, corpus, r["method"],
                                      r["epoch"])
        table = pq.read_table(where / runs.SCORES).to_pydict()
        delta = 1e-3 if r["epsilon"] == 8.0 and r["method"] != "base" else 0.0
        want = max(empirical_epsilon(table[a], np.asarray(table["member"], int), delta=delta)
                   for a in ("loss", "ref", "min_k:0.2"))
        assert r["empirical_epsilon"] == pytest.approx(want)

    assert (out / "frontier.png").stat().st_size > 10_000
    md = (out / "frontier.md").read_text()
    assert "![frontier](frontier.png)" in md and "inf (no DP)" in md
    report = (out / "epsilon-8" / "report.md").read_text()
    assert "Privacy (DP-SGD, delta 0.001)" in report and "emp. eps" in report
    assert "Privacy (DP-SGD" not in (out / "epsilon-inf" / "report.md").read_text()

    # resuming recomputes nothing; another frontier in the folder is refused
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    assert run_frontier(scfg, fcfg, out, progress=False) == rows
    assert stamp == {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    # a frontier of fewer privacy levels is the same frontier; another delta is not
    assert run_frontier(scfg, FrontierConfig(epsilons=[8], delta=1e-3), out, progress=False) \
        == [r for r in rows if r["epsilon"] in (None, 8.0)]
    with pytest.raises(FileExistsError, match="different frontier.*delta"):
        run_frontier(scfg, FrontierConfig(epsilons=[8], delta=1e-4), out, progress=False)


def test_privacy_columns_from_run_and_scores(tmp_path):
    """privacy_columns: the accountant's epsilon spent by the attacked epoch (not the whole run's),
    and each attack's empirical epsilon at the study's delta, an infinite score kept as the
    most extreme rank and a NaN dropped, against jaxmem.dp.empirical_epsilon called directly."""
    import json

    from jaxmem.dp import empirical_epsilon
    from jaxmem.study.rows import privacy_columns

    rng = np.random.default_rng(0)
    member = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    a = rng.normal(size=120) + 3.0 * member  # separates well: a clearly positive bound
    b = a.copy()
    b[0], b[1] = np.inf, np.nan  # a member at +inf, a member without a score
    where = tmp_path / "cell"
    write_table([{"index": i, "member": bool(member[i]), "a": float(a[i]),
                  "b": float(b[i]), "text": "x"} for i in range(120)], where / runs.SCORES)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(
        {"dp": {"epsilon": 8.0, "delta": 0.2, "noise_multiplier": 1.1}}))
    (run_dir / "checkpoints" / "epoch_001.json").write_text(
        json.dumps({"metrics": {"dp_epsilon": 5.0}}))

    cols, emp = privacy_columns(where, run_dir, 1, ["a", "b", "missing"], delta=0.2)
    assert cols == {"dp_epsilon": 5.0, "dp_delta": 0.2, "dp_noise_multiplier": 1.1}
    want = empirical_epsilon(a, member.astype(int), delta=0.2)
    assert emp["a"] == pytest.approx(want) and want > 0.5
    assert emp["a"] != pytest.approx(empirical_epsilon(a, member.astype(int), delta=0.0))
    b_ref = b.copy()
    b_ref[0] = 1e300
    keep = ~np.isnan(b_ref)
    assert emp["b"] == pytest.approx(empirical_epsilon(b_ref[keep], member[keep].astype(int),
                                                       delta=0.2))
    assert "missing" not in emp
    # an epoch without its record (never finished) reads the run's epsilon
    assert privacy_columns(where, run_dir, 2, ["a"], delta=0.2)[0]["dp_epsilon"] == 8.0


def test_frontier_config_from_yaml_and_bad_input(tmp_path):
    scfg, fcfg = load_frontier("experiments/cpu/frontier.yaml")
    assert fcfg.epsilons == (math.inf, 8.0, 1.0) and scfg.train.dp is None
    assert str(study_at(scfg, fcfg, 8.0).train.dp) == "epsilon=8,delta=1e-05,clip=1"
    assert study_at(scfg, fcfg, math.inf).name == "frontier-epsilon-inf"
    _, f = load_frontier("experiments/cpu/frontier.yaml", ["frontier.epsilons=[inf, 2]"])
    assert f.epsilons == (math.inf, 2.0)
    with pytest.raises(ValueError, match="Unknown frontier options.*sigma"):
        load_frontier("experiments/cpu/frontier.yaml", ["frontier.sigma=1"])
    with pytest.raises(ValueError, match="sets train.dp itself"):
        load_frontier("experiments/cpu/frontier.yaml", ["train.dp=epsilon=2"])
    with pytest.raises(ValueError, match="frontier: must be a mapping"):
        load_frontier("experiments/cpu/frontier.yaml", ["frontier=[inf, 8]"])
    for bad in (["inf", "x"], [8, 8], [0], [1, 1.0000001]):
        with pytest.raises(ValueError, match="frontier.epsilons"):
            FrontierConfig(epsilons=bad)
    with pytest.raises(ValueError, match="jaxmem frontier"):
        from jaxmem.study import StudyConfig
        StudyConfig.from_yaml("experiments/cpu/frontier.yaml")
