"""The blind baseline (jaxmem.blind): members vs non-members told apart by their texts alone,
checked against plain scikit-learn and numpy, on shifted and fair splits, and wired into the
audit, the streamed attack and a study's rows."""

import json

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from conftest import CharTok, tiny_hf_model, to_jaxmem
from jaxmem.blind import N_REPEATS, blind_baseline, split_check
from jaxmem.study.folders import mark_cell_done


def _sentences(n: int, seed: int, tilt: float) -> tuple[list[str], list[str]]:
    """n members and n non-members: random sentences over one vocabulary, the members' words
    drawn a little (``tilt``) towards its first half, so the classifiers are neither perfect
    nor at chance."""
    rng = np.random.default_rng(seed)
    vocab = [f"{a}{b}" for a in "bcdfghklmnprst" for b in ("ap", "ela", "ior", "umb")]
    half = len(vocab) // 2
    p_member = np.r_[np.full(half, 1 + tilt), np.full(len(vocab) - half, 1 - tilt)]

    def texts(p):
        return [" ".join(rng.choice(vocab, rng.integers(6, 20), p=p / p.sum())).capitalize()
                + "." for _ in range(n)]
    return texts(p_member), texts(np.ones(len(vocab)))


def _sorted(members, nonmembers):
    """Texts and labels in the order blind_baseline reads them: sorted, members first among
    equal texts."""
    pairs = sorted([(t, 1) for t in members] + [(t, 0) for t in nonmembers],
                   key=lambda p: (p[0], -p[1]))
    return [t for t, _ in pairs], np.array([y for _, y in pairs])


def _articles():
    """The embedded corpus's paragraphs (first 200 characters) by article, in corpus order."""
    from jaxmem.data.sources import resolve

    by = {}
    for units in resolve("default", "text").splits.values():
        for u in units:
            by.setdefault(u.group, []).append(u.text[:200])
    return by


def test_equals_a_plain_scikit_learn_pipeline():
    members, nonmembers = _sentences(60, 0, tilt=0.15)
    texts, y = _sorted(members, nonmembers)
    b = blind_baseline(members, nonmembers, seed=3)
    assert b["n_folds"] == 5 and b["n_members"] == b["n_nonmembers"] == 60
    counts = dict(n_features=2**20, alternate_sign=False, norm=None)
    vectorizers = {"word": HashingVectorizer(analyzer="word", ngram_range=(1, 2),
                                             lowercase=True, **counts),
                   "char": HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                             lowercase=False, **counts)}
    for name, vec in vectorizers.items():
        pipe = make_pipeline(vec, TfidfTransformer(sublinear_tf=True),
                             LogisticRegression(C=1.0, class_weight="balanced",
                                                solver="liblinear", dual=True, random_state=3))
        probs = np.mean([cross_val_predict(pipe, texts, y, method="predict_proba",
                                           cv=StratifiedKFold(5, shuffle=True,
                                                              random_state=3 + r))[:, 1]
                         for r in range(N_REPEATS)], axis=0)  # repeated cross-validation
        assert b[name]["auc"] == pytest.approx(roc_auc_score(y, probs), abs=1e-12)
        assert 0.52 < b[name]["auc"] < 0.95  # a real signal, short of perfect
    best = max(("word", "char"), key=lambda n: b[n]["auc"])
    assert b["auc"] == b[best]["auc"] and b["features"] == best
    assert blind_baseline(members, nonmembers, seed=3) == b  # deterministic for a seed
    assert blind_baseline(members[::-1], nonmembers[::-1], seed=3) == b  # and for the sets
    assert blind_baseline(members, nonmembers, seed=4)["word"]["auc"] != b["word"]["auc"]


def test_interval_equals_a_bootstrap_loop():
    """The stratified percentile interval: members and non-members resampled separately (all
    member draws first, as jaxmem.bootstrap draws them), the AUC recomputed on each."""
    members, nonmembers = _sentences(40, 1, tilt=0.2)
    texts, y = _sorted(members, nonmembers)
    # n_perm: the least alpha allows; the permutation test (tested below) is not this test's
    b = blind_baseline(members, nonmembers, seed=7, n_boot=300, alpha=0.1, n_perm=9)
    pipe = make_pipeline(
        HashingVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=True,
                          n_features=2**20, alternate_sign=False, norm=None),
        TfidfTransformer(sublinear_tf=True),
        LogisticRegression(class_weight="balanced", solver="liblinear", dual=True,
                           random_state=7))
    probs = np.mean([cross_val_predict(pipe, texts, y, method="predict_proba",
                                       cv=StratifiedKFold(5, shuffle=True,
                                                          random_state=7 + r))[:, 1]
                     for r in range(N_REPEATS)], axis=0)
    rng = np.random.default_rng(7)
    draw_m = np.flatnonzero(y == 1)[rng.integers(0, 40, size=(300, 40))]
    draw_n = np.flatnonzero(y == 0)[rng.integers(0, 40, size=(300, 40))]
    aucs = [roc_auc_score(y[np.r_[m, n]], probs[np.r_[m, n]]) for m, n in zip(draw_m, draw_n)]
    assert b["word"]["auc_ci"] == pytest.approx(list(np.quantile(aucs, [0.05, 0.95])),
                                                abs=1e-12)


def test_a_topic_shift_is_flagged_and_a_random_split_is_not():
    by = _articles()
    groups = list(by)
    # members: paragraphs of six articles; non-members: of six others
    members = [t for g in groups[:6] for t in by[g]][:60]
    nonmembers = [t for g in groups[6:12] for t in by[g]][:60]
    b = blind_baseline(members, nonmembers, n_perm=19)
    assert b["shifted"] and b["word"]["auc"] > 0.9 and b["word"]["auc_ci"][0] > 0.5
    assert b["p_value"] == pytest.approx(1 / 20) and b["n_permutations"] == 19
    assert "told apart without the model" in b["warning"] and "non-members from" in b["warning"]
    assert "CAN BE TOLD APART: **Members" in split_check(b, markdown=True)

    # a random split of one pool of paragraphs: nothing to find
    pool = [t for texts in by.values() for t in texts]
    pick = np.random.default_rng(0).choice(len(pool), 120, replace=False)
    fair = blind_baseline([pool[i] for i in pick[:60]], [pool[i] for i in pick[60:]])
    assert not fair["shifted"] and fair["warning"] is None and fair["p_value"] is None
    for name in ("word", "char"):
        lo, hi = fair[name]["auc_ci"]
        assert lo < 0.5 < hi, name
    assert "are indistinguishable" in split_check(fair)


def test_an_interval_above_one_half_needs_the_permutation_test():
    """A random split whose word n-gram interval lies above 0.5 by chance (texts come in
    clusters, paragraphs of one article): shuffled labels do as well often enough (p > 0.05),
    so it is not flagged."""
    by = _articles()
    pool = [t for texts in by.values() for t in texts]
    pick = np.random.default_rng(2).choice(len(pool), 120, replace=False)
    b = blind_baseline([pool[i] for i in pick[:60]], [pool[i] for i in pick[60:]], seed=24)
    assert b["char"]["auc_ci"][0] > 0.5 and b["p_value"] > 0.05
    assert not b["shifted"] and b["warning"] is None
    assert 1 / 0.05 <= b["n_permutations"] < 99  # stopped once p <= 0.05 was out of reach
    assert "as often with the labels shuffled: label-permutation p = 0.17" in split_check(b)


def test_few_duplicate_and_featureless_texts():
    few = blind_baseline(["only one"], ["a", "b", "c"])
    assert few["auc"] is None and few["word"] is None and not few["shifted"]
    assert "at least 2 distinct members" in few["reason"]
    assert "not computed" in split_check(few)
    same = blind_baseline(["same text"] * 8, ["same text"] * 8)  # one distinct text per class
    assert same["reason"] and same["n_duplicates"] == 14
    # 3 distinct members: 3 folds, repeats left out (a copy in another fold would be recognized)
    b = blind_baseline(["x y z"] * 4 + ["p q", "r s t"], ["u v", "w x", "k l m", "n o"])
    assert b["n_folds"] == 3 and b["n_members"] == 3 and b["n_duplicates"] == 3
    assert 0 <= b["auc"] <= 1 and not b["shifted"]
    # no word of two letters: no word n-grams at all, yet no error
    assert blind_baseline(list("abcdef"), list("uvwxyz"))["word"]["auc"] is not None
    for kw in ({"n_folds": 1}, {"n_boot": 0}, {"alpha": 1.5}, {"n_perm": 5}):
        with pytest.raises(ValueError):
            blind_baseline(["a b"] * 3, ["c d"] * 3, **kw)
    with pytest.raises(TypeError):
        blind_baseline("a text, not a list", ["b"])


def test_fast_on_256_texts():
    import time

    members, nonmembers = _sentences(128, 2, tilt=0.0)
    blind_baseline(members[:20], nonmembers[:20])  # imports
    t = time.perf_counter()
    b = blind_baseline(members, nonmembers, seed=1)
    assert b["p_value"] is None  # the fair path (no permutation test)
    assert time.perf_counter() - t < 2.0


# ----------------------------------------------------------------------------- wired in


def _shifted_texts(n=24):
    rng = np.random.default_rng(0)
    make = lambda alphabet: ["".join(rng.choice(list(alphabet), rng.integers(12, 30)))  # noqa
                             for _ in range(n)]
    return make("abcd "), make("efgh ")


def test_audit_reports_the_blind_baseline(tmp_path, monkeypatch):
    import functools

    from jaxmem import audit
    from jaxmem.audit import AuditConfig, metrics_table, run_attacks_on
    from jaxmem.batching import truncate_texts
    from jaxmem.study.rows import cell_rows

    # 19 label permutations (the fewest that can flag at 0.05), not 99: a shifted split runs
    # them all, and the test is about the wiring, not the permutation test's resolution
    monkeypatch.setattr(audit, "blind_baseline", functools.partial(blind_baseline, n_perm=19))
    params, cfg = to_jaxmem(tiny_hf_model("gpt2"))
    members, nonmembers = _shifted_texts()
    acfg = AuditConfig(block_size=16, n_boot=50, attacks=("loss",))
    with pytest.warns(UserWarning, match="Split check: members and non-members can be told"):
        res = run_attacks_on(params, cfg, CharTok(), members, nonmembers, acfg,
                             out_dir=tmp_path / "cell")
    blind = res["blind"]
    # computed on the scored texts: each cut to its first block_size tokens
    tok = CharTok()
    assert blind == blind_baseline(truncate_texts(tok, members, 16),
                                   truncate_texts(tok, nonmembers, 16), seed=0, n_boot=50,
                                   n_perm=19)
    assert blind["shifted"] and blind["auc"] > 0.9 and blind["n_permutations"] == 19
    info = json.loads((tmp_path / "cell" / "metrics.json").read_text())["info"]
    assert info["blind"] == blind
    rows = metrics_table(res["metrics"], blind)
    assert rows[-1]["attack"] == "blind baseline (no model)" and "SHIFTED" in rows[-1]["strongest"]
    assert rows[-1]["AUC 95% CI"].startswith("[") and len(rows) == 2

    # a study's rows read it from the cell's metrics.json; a cell without it gives empty columns
    mark_cell_done(tmp_path / "cell", 1.0)
    r = cell_rows("m", 1, "d", "base", 0, tmp_path / "cell")[0]
    assert (r["blind_auc"], r["blind_auc_lo"], r["blind_auc_hi"]) == (blind["auc"],
                                                                     *blind["auc_ci"])
    assert r["blind_word_auc"] == blind["word"]["auc"]
    assert r["blind_char_auc"] == blind["char"]["auc"]
    off = run_attacks_on(params, cfg, CharTok(), members, nonmembers,
                         AuditConfig(block_size=16, n_boot=50, attacks=("loss",), blind=False),
                         out_dir=tmp_path / "old")
    assert off["blind"] is None and "blind" not in off["info"]
    mark_cell_done(tmp_path / "old", 1.0)
    r = cell_rows("m", 1, "d", "base", 0, tmp_path / "old")[0]
    assert r["blind_auc"] is None and r["blind_word_auc"] is None
    with pytest.raises(ValueError, match="blind"):
        AuditConfig(blind="yes")


def test_streamed_attack_reads_the_same_texts(tmp_path):
    """The streamed attack's blind baseline (both files read once more) equals the in-memory
    one: the same texts, non-members that copy a member left out, cut as scored."""
    from jaxmem import streaming as S
    from jaxmem.audit import AuditConfig, blind_check, blind_picks
    from jaxmem.batching import truncate_texts

    pool = [t.strip() for t in _shifted_texts(12)[0]]  # one distribution, as files read back
    members, nonmembers = pool[:6], pool[6:] + [pool[0]]  # the last: a member's copy, dropped
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in members))
    (tmp_path / "n.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                              for t in nonmembers))
    m_in, n_in = S.scan_input(tmp_path / "m.jsonl"), S.scan_input(tmp_path / "n.jsonl")
    keep = np.array([True] * 6 + [False])
    acfg = AuditConfig(block_size=10, n_boot=50)
    tok = CharTok()
    streamed = S._blind_baseline(m_in, n_in, keep, tok, acfg)
    direct = blind_check(truncate_texts(tok, members, 10),
                         truncate_texts(tok, nonmembers[:6], 10), acfg)
    assert streamed == direct and streamed["n_nonmembers"] == 6 and streamed["auc"] is not None
    assert list(blind_picks(5, 0)) == list(range(5))
    many = blind_picks(10_000, 0, 1)
    assert len(many) == 2_000 and np.all(np.diff(many) > 0)
    assert not np.array_equal(many, blind_picks(10_000, 0, 0))
