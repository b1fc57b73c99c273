"""The attack pipeline end to end: files written, bad input, and the base-model sanity check."""

import json

import pytest

from conftest import CharTok, random_texts, tiny_hf_model, to_jaxmem
from jaxmem.audit import AuditConfig, check_member_sets, metrics_table, run_attacks_on


def _texts(n, seed=0):
    return random_texts(n, seed, "abcdefgh ABC")


def test_pipeline_writes_every_file(tmp_path):
    params, cfg = to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))
    ref, _ = to_jaxmem(tiny_hf_model("llama", seed=1, num_key_value_heads=2))
    res = run_attacks_on(params, cfg, CharTok(), _texts(20, 0), _texts(20, 1),
                         AuditConfig(block_size=48, n_boot=50), reference_params=ref,
                         out_dir=tmp_path, title="tiny")
    for f in ("scores.parquet", "metrics.json", "roc.png", "histograms.png"):
        assert (tmp_path / f).stat().st_size > 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["metrics"]) == {"loss", "ref", "zlib", "min_k:0.2", "min_k_pp:0.2", "lowercase"}
    import pyarrow.parquet as pq
    table = pq.read_table(tmp_path / "scores.parquet").to_pylist()
    assert len(table) == 40 and sum(r["member"] for r in table) == 20
    assert [r["loss"] for r in table] == pytest.approx(list(res["scores"]["loss"]))
    assert len(metrics_table(res["metrics"])) == 6
    # 20 non-members measure a 10% FPR but not 1%: null plus its reason, in file and table
    assert m["metrics"]["loss"]["tpr@10%fpr"] is not None
    assert m["metrics"]["loss"]["tpr@1%fpr"] is None
    assert m["metrics"]["loss"]["tpr_na"]["tpr@1%fpr"] == "n/a (needs >= 100 non-members)"
    assert metrics_table(res["metrics"])[0]["TPR@1%FPR"] == "n/a (needs >= 100 non-members)"
    # exactly one attack is marked strongest: the highest TPR at 10% FPR (ties: higher AUC)
    marked = [r["attack"] for r in metrics_table(res["metrics"]) if r["strongest"]]
    top = max(m["metrics"].items(), key=lambda kv: (kv[1]["tpr@10%fpr"], kv[1]["auc"]))[0]
    assert marked == [top]
    with pytest.raises(FileExistsError, match="already holds results"):
        run_attacks_on(params, cfg, CharTok(), _texts(20, 0), _texts(20, 1),
                       AuditConfig(block_size=48, n_boot=50), out_dir=tmp_path)


def test_member_set_checks():
    with pytest.raises(ValueError, match="Need both"):
        check_member_sets([], ["a"])
    with pytest.raises(ValueError, match="identical"):
        check_member_sets(["a b", "c"], ["A  b", "c"])
    with pytest.warns(UserWarning, match="Dropped 1 non-members"):
        m, n = check_member_sets(["a b", "c"], ["a b", "d"])
    assert n == ["d"]


def test_block_size_beyond_context(tmp_path):
    params, cfg = to_jaxmem(tiny_hf_model("gpt2"))
    with pytest.raises(ValueError, match="exceeds the model's context"):
        run_attacks_on(params, cfg, CharTok(), ["ab"], ["cd"],
                       AuditConfig(block_size=cfg.max_positions + 1))


@pytest.mark.slow
def test_base_model_on_a_random_split_is_near_chance(smollm2):
    """The pipeline's sanity check: the untouched base model cannot tell members (a random half of
    one distribution) from non-members, so every attack's AUC CI should cover ~0.5."""
    from jaxmem.data import load_corpus

    params, cfg, tok = smollm2
    # 48 + 48 texts of 32 tokens (the 135M forward pass is the cost): AUC's sd under chance
    # is ~0.06, so a scoring path that treats the two sides differently still lands outside
    c = load_corpus("default", n_members=48, n_nonmembers=48, seed=0)
    res = run_attacks_on(params, cfg, tok, c.members, c.nonmembers,
                         AuditConfig(block_size=32, batch_size=16, n_boot=200,
                                     attacks=("loss", "zlib", "min_k", "min_k_pp")))
    for name, m in res["metrics"].items():
        assert 0.3 < m["auc"] < 0.7, (name, m["auc"])
        assert m["auc_ci"][0] < 0.5 < m["auc_ci"][1] or abs(m["auc"] - 0.5) < 0.12, name


def test_gradient_norm_attacks_through_the_audit(tmp_path):
    """grad_norm (the method's trainable leaves) and grad_norm_all in run_attacks_on equal
    gradnorm.grad_norm_scores called directly (itself tested against a per-example loop); the
    base model (no labels) counts every leaf; the streamed path refuses them by name."""
    import jax
    import numpy as np

    from jaxmem.gradnorm import grad_norm_scores
    from jaxmem.tuning import init_method

    base, cfg = to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))
    params, labels = init_method("lora", base, cfg, jax.random.PRNGKey(0))
    members, nonmembers = _texts(6, 0), _texts(6, 1)
    acfg = AuditConfig(attacks=("loss", "grad_norm", "grad_norm_all"), block_size=32, n_boot=0)
    res = run_attacks_on(params, cfg, CharTok(), members, nonmembers, acfg,
                         param_labels=labels)
    texts = members + nonmembers
    for name, which in (("grad_norm", "trainable"), ("grad_norm_all", "all")):
        want = grad_norm_scores(params, cfg, labels, CharTok(), texts, which=which,
                                batch_size=acfg.batch_size, block_size=32)
        np.testing.assert_allclose(res["scores"][name], want, rtol=1e-6)
    assert not np.allclose(res["scores"]["grad_norm"], res["scores"]["grad_norm_all"])
    res0 = run_attacks_on(base, cfg, CharTok(), members, nonmembers,
                          AuditConfig(attacks=("grad_norm",), block_size=32, n_boot=0))
    want = grad_norm_scores(base, cfg, None, CharTok(), texts, which="all", block_size=32)
    np.testing.assert_allclose(res0["scores"]["grad_norm"], want, rtol=1e-6)

    from jaxmem import streaming as S

    m, n = tmp_path / "m.txt", tmp_path / "n.txt"
    m.write_text("\n\n".join(members))
    n.write_text("\n\n".join(nonmembers))
    with pytest.raises(ValueError, match="gradient-norm attacks.*not streamed"):
        S.attack_files(params, cfg, CharTok(), S.scan_input(m), S.scan_input(n), acfg,
                       out_dir=tmp_path / "out", settings={})
