"""Tests for jaxmem.data: corpus loading, splitting and overlap detection.

Every format is tested on small fixtures the tests write themselves. The real
WikiText-2 test split and WebNLG in ../shared/data are used when present and
skipped when absent. The embedded corpus needs gensim==4.4.0 (and
mwparserfromhell for the first parse); those tests skip without gensim.
"""

import importlib.metadata
import json
import random
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest

from jaxmem import data
from jaxmem.data import embedded, overlap
from jaxmem.data import KNOWN_CORPORA, Corpus, find_overlaps, load_corpus, read_text_file

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Random prose over this vocabulary: two generated paragraphs share no 5-gram.
WORDS = (
    "river stone light garden window paper music winter bridge forest letter mirror orange "
    "silver morning candle engine harbor island market meadow pencil planet rocket saddle "
    "shadow signal spirit summer ticket tunnel valley violin wagon whistle anchor basket "
    "blanket castle cattle circle copper cotton desert dragon feather finger flower glass "
    "hammer helmet honey jacket kettle ladder lemon marble needle ocean palace pepper pillow "
    "pocket powder rabbit ribbon saddle school spider sugar sunset thunder tower velvet"
).split()


def para(rng: random.Random, n_words: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


def paras(seed: int, n: int, n_words: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [para(rng, n_words) for _ in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def check_corpus(c: Corpus) -> None:
    """Invariants every corpus must satisfy."""
    assert set(c.members) <= set(c.train)
    assert not set(c.nonmembers) & set(c.train)
    assert not set(c.validation) & set(c.nonmembers)
    assert c.info["actual"] == {
        "n_train": len(c.train),
        "n_validation": len(c.validation),
        "n_members": len(c.members),
        "n_nonmembers": len(c.nonmembers),
    }
    json.dumps(c.info)  # JSON-able


# ---------------------------------------------------------------------------
# find_overlaps
# ---------------------------------------------------------------------------


def test_find_overlaps_exact_near_and_unrelated():
    a = paras(1, 5, n_words=150)
    b = paras(2, 5, n_words=150)
    b[1] = "  " + a[3].upper().replace(" ", "   ") + "  "  # exact up to case / spacing
    words = a[0].split()
    words[40], words[100] = "changed", "edited"  # a few words changed
    b[4] = " ".join(words)
    pairs = find_overlaps(a, b)
    assert [(i, j) for i, j, _ in pairs] == [(0, 4), (3, 1)]
    sims = {(i, j): s for i, j, s in pairs}
    assert sims[(3, 1)] == 1.0
    assert 0.8 <= sims[(0, 4)] < 1.0


def test_find_overlaps_threshold_and_short_texts():
    a = ["One two three.", "alpha beta gamma delta epsilon zeta eta theta"]
    b = ["one TWO three", "alpha beta gamma delta epsilon zeta eta iota", "unrelated words here"]
    assert find_overlaps(a, b, threshold=1.0) == [(0, 0, 1.0)]
    # 8 words -> 4 shingles; one word changed at the end -> 3 of 5 shared.
    assert [(i, j) for i, j, _ in find_overlaps(a, b, threshold=0.5)] == [(0, 0), (1, 1)]
    assert find_overlaps([], b) == [] and find_overlaps(a, []) == []
    for bad in (0, 1.5, -0.1, "0.8"):
        with pytest.raises(ValueError, match="threshold"):
            find_overlaps(a, b, threshold=bad)


def test_find_overlaps_matches_brute_force():
    # A tiny vocabulary makes many pairs overlap partially.
    rng = random.Random(0)
    small = "a b c d e f".split()
    base = [[rng.choice(small) for _ in range(rng.randint(3, 30))] for _ in range(60)]
    a = [" ".join(w) for w in base[:30]]
    b = [
        " ".join(w[: len(w) - rng.randint(0, 3)]) for w in base[30:] + base[:30]
    ]  # some near copies
    sa, sb = [overlap.shingles(t) for t in a], [overlap.shingles(t) for t in b]
    for threshold in (0.3, 0.5, 0.8, 1.0):
        expected = [
            (i, j, len(x & y) / len(x | y))
            for i, x in enumerate(sa)
            for j, y in enumerate(sb)
            if x and y and len(x & y) / len(x | y) >= threshold
        ]
        got = find_overlaps(a, b, threshold)
        assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in expected]
        assert all(abs(g[2] - e[2]) < 1e-12 for g, e in zip(got, expected, strict=True))
        assert len(expected) > 0


def test_find_overlaps_is_fast_on_2000_by_2000():
    a = paras(10, 2000, n_words=100)
    b = paras(11, 2000, n_words=100)
    b[777] = a[123]
    start = time.perf_counter()
    pairs = find_overlaps(a, b)
    elapsed = time.perf_counter() - start
    assert [(i, j) for i, j, _ in pairs] == [(123, 777)]
    assert elapsed < 5.0, f"2000 x 2000 took {elapsed:.1f} s"


# ---------------------------------------------------------------------------
# WikiText
# ---------------------------------------------------------------------------


def wikitext_lines(seed: int, n_articles: int, per_article: int) -> list[str]:
    rng = random.Random(seed)
    lines = [""]
    for k in range(n_articles):
        lines += [f" = Article {seed} {k} = ", ""]
        for s in range(per_article):
            if s % 3 == 0:
                lines += [f" = = Section {s} = = ", "", " = = = Sub = = = ", ""]
            lines += [" " + para(rng) + " ", ""]
    return lines


@pytest.fixture
def wikitext_dir(tmp_path):
    d = tmp_path / "wikitext-2-raw"
    d.mkdir()
    for split, seed, n in (("train", 1, 20), ("valid", 2, 4), ("test", 3, 5)):
        (d / f"wiki.{split}.raw").write_text(
            "\n".join(wikitext_lines(seed, n, 10)), encoding="utf-8"
        )
    return d


def test_wikitext_raw_files(wikitext_dir):
    c = load_corpus(
        f"wikitext:{wikitext_dir}", n_train=150, n_validation=30, n_members=50, n_nonmembers=40
    )
    check_corpus(c)
    assert c.name == "wikitext"
    assert c.info["actual"] == {
        "n_train": 150,
        "n_validation": 30,
        "n_members": 50,
        "n_nonmembers": 40,
    }
    assert not any(
        t.startswith("=") or not t.strip() for t in c.train + c.validation + c.nonmembers
    )
    test_paras = {
        p.strip() for p in wikitext_lines(3, 5, 10) if p.strip() and not p.strip().startswith("=")
    }
    valid_paras = {
        p.strip() for p in wikitext_lines(2, 4, 10) if p.strip() and not p.strip().startswith("=")
    }
    assert set(c.nonmembers) <= test_paras
    assert set(c.validation) <= valid_paras
    assert c.info["pools"] == {
        "read": 290,
        "dropped_short": 0,
        "dropped_repeats": 0,
        "train": 200,
        "heldout": 50,
        "validation": 40,
    }
    assert "paragraph" in c.info["format"]
    # Paper defaults are far above this fixture: capped with warnings.
    c = load_corpus(str(wikitext_dir))  # detected without the prefix
    assert c.info["requested"]["n_train"] == 22_335
    assert any("n_train: requested 22335 (default), got 200" in w for w in c.info["warnings"])


def test_wikitext_test_split_only_is_split_at_random(tmp_path):
    (tmp_path / "wiki.test.raw").write_text("\n".join(wikitext_lines(5, 30, 8)), encoding="utf-8")
    c = load_corpus(
        f"wikitext:{tmp_path}", n_train=100, n_validation=20, n_members=50, n_nonmembers=50
    )
    check_corpus(c)
    assert c.info["actual"]["n_members"] == 50 and c.info["actual"]["n_nonmembers"] == 50
    assert any("only the test split is available" in w for w in c.info["warnings"])
    article_of = {}
    for line in wikitext_lines(5, 30, 8):
        if line.startswith(" = ") and not line.startswith(" = ="):
            title = line.strip(" =")
        elif line.strip() and not line.strip().startswith("="):
            article_of[line.strip()] = title
    # "auto" on one pool: paragraphs held out at random, articles on both sides
    assert c.info["split"]["design"] == "random"
    shared = {article_of[t] for t in c.members} & {article_of[t] for t in c.nonmembers}
    assert len(shared) >= 10
    # the legacy design, by name: whole articles held out
    old = load_corpus(f"wikitext:{tmp_path}", n_train=100, n_validation=20, n_members=50,
                      n_nonmembers=50, split="legacy-by-group")
    assert {article_of[t] for t in old.train}.isdisjoint(
        {article_of[t] for t in old.nonmembers + old.validation}
    )
    held = set(old.info["split"]["heldout_groups"])
    assert {"test:" + article_of[t] for t in old.nonmembers} <= held


def test_unknown_or_impossible_split_is_refused(tmp_path):
    (tmp_path / "wiki.test.raw").write_text("\n".join(wikitext_lines(5, 30, 8)), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown split 'articles'; choose one of auto"):
        load_corpus(f"wikitext:{tmp_path}", split="articles")
    with pytest.raises(ValueError, match="split='given' needs a train file"):
        load_corpus(f"wikitext:{tmp_path}", split="given")


def test_wikitext_hub_parquet_layout(tmp_path):
    root = tmp_path / "Salesforce-wikitext"
    for split, seed, n in (("train", 1, 6), ("validation", 2, 3), ("test", 3, 3)):
        lines = [line + "\n" if line else "" for line in wikitext_lines(seed, n, 5)]
        folder = root / "wikitext-2-raw-v1"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": lines}), folder / f"{split}-00000-of-00001.parquet")
    # A sibling config must not be mixed in.
    other = root / "wikitext-103-raw-v1"
    other.mkdir()
    pq.write_table(pa.table({"text": [" odd one out \n"]}), other / "train-00000-of-00002.parquet")
    c = load_corpus(f"wikitext:{root}", n_train=25, n_validation=10, n_members=10, n_nonmembers=10)
    check_corpus(c)
    assert c.info["pools"]["train"] == 30 and c.info["pools"]["heldout"] == 15
    assert "odd one out" not in c.train
    assert (
        load_corpus(str(root), n_train=25, n_validation=10, n_members=10, n_nonmembers=10).train
        == c.train
    )


@pytest.mark.skipif(
    not (SHARED_DATA / "wikitext-2-raw" / "wiki.test.raw").is_file(), reason="no ../shared/data"
)
def test_real_wikitext_test_split():
    start = time.perf_counter()
    c = load_corpus(
        f"wikitext:{SHARED_DATA / 'wikitext-2-raw'}",
        n_train=900,
        n_validation=100,
        n_members=400,
        n_nonmembers=400,
    )
    assert time.perf_counter() - start < 10
    check_corpus(c)
    # Non-empty lines that are not " = Heading = " (two legend lines such as
    # " = National record " start like a heading but are not one).
    assert c.info["pools"]["read"] == 2185
    assert c.info["pools"]["dropped_repeats"] >= 12  # e.g. the 13 " <formula> " lines count once
    assert len(set(c.nonmembers)) == len(c.nonmembers)
    assert c.info["actual"] == {
        "n_train": 900,
        "n_validation": 100,
        "n_members": 400,
        "n_nonmembers": 400,
    }
    assert any("only the test split" in w for w in c.info["warnings"])
    with pytest.raises(ValueError, match="strict=True"):
        load_corpus(f"wikitext:{SHARED_DATA / 'wikitext-2-raw'}", strict=True)


# ---------------------------------------------------------------------------
# WebNLG
# ---------------------------------------------------------------------------


def webnlg_rows(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        subject = f"Entity_{seed}_{k}"
        triples = [
            [subject, rng.choice(["country", "leader", "capital"]), f"Value_{k}_{j}"]
            for j in range(1 + k % 3)
        ]
        rows.append({"eid": f"x-{k}", "triples": triples, "text": para(rng, 20)})
    return rows


def to_gem(row: dict) -> dict:
    return {
        "gem_id": row["eid"],
        "input": [" | ".join(t) for t in row["triples"]],
        "target": row["text"],
        "references": [row["text"]],
    }


def test_webnlg_jsonl_and_gem_layouts_agree(tmp_path):
    splits = {"train": webnlg_rows(1, 120), "dev": webnlg_rows(2, 20), "test": webnlg_rows(3, 40)}
    for name, rows in splits.items():
        write_jsonl(tmp_path / "plain" / f"{name}.jsonl", rows)
        write_jsonl(tmp_path / "gem" / f"{name}.jsonl", [to_gem(r) for r in rows])
    kwargs = dict(n_train=100, n_validation=10, n_members=30, n_nonmembers=30, seed=3)
    plain = load_corpus(f"webnlg:{tmp_path / 'plain'}", **kwargs)
    gem = load_corpus(str(tmp_path / "gem"), **kwargs)  # detected from its columns
    check_corpus(plain)
    assert plain.name == gem.name == "webnlg"
    assert (plain.train, plain.members, plain.nonmembers, plain.validation) == (
        gem.train,
        gem.members,
        gem.nonmembers,
        gem.validation,
    )
    row = splits["train"][0]
    expected = " && ".join(" | ".join(t) for t in row["triples"]) + " => " + row["text"]
    assert (
        expected
        in load_corpus(
            f"webnlg:{tmp_path / 'plain'}", n_train=120, n_members=1, n_nonmembers=1
        ).train
    )
    assert "=>" in plain.info["format"] and "&&" in plain.info["format"]
    test_texts = {r["text"] for r in splits["test"]}
    # "auto" keeps WebNLG's test (unseen categories) out; "given" takes non-members from it
    assert not any(t.split(" => ", 1)[1] in test_texts for t in plain.nonmembers)
    given = load_corpus(f"webnlg:{tmp_path / 'plain'}", **kwargs, split="given")
    assert all(t.split(" => ", 1)[1] in test_texts for t in given.nonmembers)


@pytest.mark.skipif(
    not (SHARED_DATA / "webnlg" / "train.jsonl").is_file(), reason="no ../shared/data"
)
def test_real_webnlg():
    c = load_corpus(f"webnlg:{SHARED_DATA / 'webnlg'}", n_train=5000)
    check_corpus(c)
    assert c.info["pools"]["read"] == 18_102 + 2_262 + 4_928
    # "auto": by triple set within train + dev; test (unseen categories) left out
    assert c.info["split"]["design"] == "by-group"
    assert 20_000 < c.info["pools"]["train"] + c.info["pools"]["heldout"] <= 18_102 + 2_262
    assert len(c.members) == len(c.nonmembers) == 1_779  # Table 1
    assert c.info["split"]["nonmembers_groups"] == 1_779  # one text per triple set
    test = {json.loads(line)["text"] for line in
            (SHARED_DATA / "webnlg" / "test.jsonl").read_text().splitlines()}
    assert not any(t.split(" => ", 1)[1] in test for t in c.nonmembers)
    given = load_corpus(f"webnlg:{SHARED_DATA / 'webnlg'}", n_train=500, n_members=100,
                        n_nonmembers=100, split="given")
    assert all(t.split(" => ", 1)[1] in test for t in given.nonmembers)
    assert all(" => " in t and " | " in t for t in c.train[:50])


# ---------------------------------------------------------------------------
# XSum
# ---------------------------------------------------------------------------


def xsum_rows(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "id": f"{seed}-{k}",
            "document": para(rng, 80) + "\n" + para(rng, 40),
            "summary": para(rng, 15),
        }
        for k in range(n)
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_xsum_local_formats(tmp_path, fmt):
    for split, seed, n in (("train", 1, 60), ("validation", 2, 10), ("test", 3, 20)):
        rows = xsum_rows(seed, n)
        path = tmp_path / f"{split}.{fmt}"
        if fmt == "jsonl":
            write_jsonl(path, rows)
        elif fmt == "csv":
            pa.csv.write_csv(pa.Table.from_pylist(rows), path)
        else:
            pq.write_table(pa.Table.from_pylist(rows), path)
    c = load_corpus(f"xsum:{tmp_path}", n_train=50, n_validation=5, n_members=20, n_nonmembers=20)
    check_corpus(c)
    assert c.name == "xsum" and c.info["requested"]["n_train"] == 50
    row = xsum_rows(3, 20)[0]
    tests = {f"{r['document']}\nSummary: {r['summary']}" for r in xsum_rows(3, 20)}
    assert set(c.nonmembers) <= tests and row["summary"] in "".join(tests)
    assert "Summary: " in c.info["format"]
    # A single file is one split: split into train / held-out with the seed.
    single = load_corpus(str(tmp_path / f"train.{fmt}"), n_train=30, n_members=10, n_nonmembers=10)
    check_corpus(single)
    assert single.name == "xsum" and len(single.nonmembers) == 10
    assert load_corpus(f"xsum:{tmp_path}").info["requested"] == {
        "n_train": 5000,
        "n_validation": 500,
        "n_members": 1000,
        "n_nonmembers": 1000,
    }


# ---------------------------------------------------------------------------
# Generic local files
# ---------------------------------------------------------------------------


def test_local_txt_paragraphs_and_lines(tmp_path):
    texts = paras(7, 100)
    (tmp_path / "paras.txt").write_text(
        "\n\n".join(t.replace(" ", "\n", 1) for t in texts), encoding="utf-8"
    )
    (tmp_path / "lines.txt").write_text("\n".join(texts), encoding="utf-8")
    by_para = load_corpus(
        str(tmp_path / "paras.txt"), n_train=50, n_validation=10, n_members=20, n_nonmembers=20
    )
    by_line = load_corpus(
        str(tmp_path / "lines.txt"), n_train=50, n_validation=10, n_members=20, n_nonmembers=20
    )
    check_corpus(by_para)
    assert by_para.name == by_line.name == "local"
    assert "paragraph" in by_para.info["format"] and "line" in by_line.info["format"]
    # A line break inside a paragraph is just a space.
    assert set(by_para.train) <= {" ".join(t.split()) for t in texts}
    assert set(by_line.train) <= set(texts)
    assert by_para.info["pools"]["read"] == by_line.info["pools"]["read"] == 100


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_local_structured_files_with_text_column(tmp_path, fmt):
    rows = [{"id": k, "body": t} for k, t in enumerate(paras(8, 80))]
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        pa.csv.write_csv(pa.Table.from_pylist(rows), path)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    c = load_corpus(
        str(path), text_column="body", n_train=40, n_validation=10, n_members=20, n_nonmembers=20
    )
    check_corpus(c)
    assert set(c.train) <= {r["body"] for r in rows}
    assert c.info["actual"]["n_nonmembers"] == 20
    with pytest.raises(
        ValueError, match=r"missing column.*'text'.*columns present: \['id', 'body'\]"
    ):
        load_corpus(str(path))


def test_read_text_file(tmp_path):
    (tmp_path / "a.txt").write_text("One\ntwo.\n\n\nThree.\n")
    assert read_text_file(tmp_path / "a.txt") == ["One two.", "Three."]
    (tmp_path / "b.txt").write_text("x\ny\n\n")  # only a trailing blank line: one text a line
    assert read_text_file(str(tmp_path / "b.txt")) == ["x", "y"]
    rows = [{"body": "first"}, {"body": " "}, {"body": "second"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    assert read_text_file(tmp_path / "c.parquet", text_column="body") == ["first", "second"]
    with pytest.raises(ValueError, match=r"columns present: \['body'\]"):
        read_text_file(tmp_path / "c.parquet")
    with pytest.raises(FileNotFoundError):
        read_text_file(tmp_path / "missing.jsonl")
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_text_file(tmp_path / "d.xml")


def test_local_directory_uses_split_names(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in paras(1, 50)])
    write_jsonl(tmp_path / "valid.jsonl", [{"text": t} for t in paras(2, 10)])
    write_jsonl(tmp_path / "test.jsonl", [{"text": t} for t in paras(3, 30)])
    (tmp_path / "notes.txt").write_text("not a split")
    c = load_corpus(str(tmp_path), n_members=20, n_nonmembers=20)
    check_corpus(c)
    assert len(c.train) == 50  # default for local data: all of train
    assert set(c.validation) <= set(paras(2, 10)) and set(c.nonmembers) <= set(paras(3, 30))
    assert any("ignored files" in w for w in c.info["warnings"])


# ---------------------------------------------------------------------------
# Overlap between train and non-members
# ---------------------------------------------------------------------------


def test_duplicates_of_train_are_dropped_from_nonmembers(tmp_path):
    train = paras(1, 40, n_words=120)
    test = paras(2, 40, n_words=120)
    test[:3] = [train[0], "  " + train[1].upper(), train[2]]  # exact after normalisation
    words = train[3].split()
    words[10], words[60] = "changed", "edited"
    test[3] = " ".join(words)  # near duplicate
    write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in train])
    write_jsonl(tmp_path / "test.jsonl", [{"text": t} for t in test])
    c = load_corpus(str(tmp_path), n_members=40, n_nonmembers=36, n_validation=0)
    check_corpus(c)
    ov = c.info["overlap"]
    assert ov["dropped"] == 4 and ov["exact_train"] == 3 and ov["near_train"] == 1
    assert ov["exact_members"] == 3 and ov["near_members"] == 1  # every train text is a member here
    assert len(c.nonmembers) == 36 and not set(c.nonmembers) & set(test[:4])
    assert {e["kind"] for e in ov["examples"]} <= {"exact", "near"} and ov["examples"]
    # Only exact duplicates with near_dup_threshold=None.
    exact_only = load_corpus(
        str(tmp_path), n_members=40, n_nonmembers=36, n_validation=0, near_dup_threshold=None
    )
    assert exact_only.info["overlap"]["dropped"] == 3 and test[3] in exact_only.nonmembers
    # Asking for all 40 leaves 4 short: a warning, or an error under strict.
    short = load_corpus(str(tmp_path), n_members=40, n_nonmembers=40, n_validation=0)
    assert any(
        "n_nonmembers: requested 40, got 36 (4 candidates dropped" in w
        for w in short.info["warnings"]
    )
    with pytest.raises(ValueError, match="n_nonmembers: requested 40, got 36"):
        load_corpus(str(tmp_path), n_members=40, n_nonmembers=40, n_validation=0, strict=True)


def test_repeated_texts_count_once(tmp_path):
    texts = paras(6, 30)
    lines = ["<formula>"] * 5 + texts + ["<FORMULA>"] + texts[:5]
    write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in paras(5, 30)])
    write_jsonl(tmp_path / "validation.jsonl", [{"text": t} for t in lines])
    write_jsonl(tmp_path / "test.jsonl", [{"text": t} for t in lines])
    c = load_corpus(str(tmp_path), n_members=10, n_nonmembers=31, n_validation=31)
    check_corpus(c)
    assert c.info["pools"]["dropped_repeats"] == 2 * 10
    assert len(c.nonmembers) == 31 and len(set(c.nonmembers)) == 31
    # Validation shares its texts with the test split: none may be a non-member too.
    assert c.validation == [] and c.info["overlap"]["validation_dropped"] == 31


def test_identical_train_and_test_is_an_error(tmp_path):
    texts = [{"text": t} for t in paras(1, 30)]
    write_jsonl(tmp_path / "train.jsonl", texts)
    write_jsonl(tmp_path / "test.jsonl", texts)
    with pytest.raises(ValueError, match="same as the training data"):
        load_corpus(str(tmp_path), n_members=10, n_nonmembers=10)


# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------


def test_same_seed_same_corpus_different_seed_different(tmp_path):
    (tmp_path / "wiki.test.raw").write_text("\n".join(wikitext_lines(9, 40, 8)), encoding="utf-8")
    kwargs = dict(n_train=100, n_validation=20, n_members=40, n_nonmembers=40)
    a = load_corpus(f"wikitext:{tmp_path}", seed=1, **kwargs)
    b = load_corpus(f"wikitext:{tmp_path}", seed=1, **kwargs)
    other = load_corpus(f"wikitext:{tmp_path}", seed=2, **kwargs)
    assert (a.train, a.validation, a.members, a.nonmembers) == (
        b.train,
        b.validation,
        b.members,
        b.nonmembers,
    )
    assert a.info == b.info
    assert a.members != other.members and a.nonmembers != other.nonmembers


def test_members_do_not_depend_on_nonmember_count(wikitext_dir):
    # With given splits every choice has its own random stream.
    kwargs = dict(n_train=100, n_validation=20, n_members=40)
    a = load_corpus(f"wikitext:{wikitext_dir}", n_nonmembers=40, **kwargs)
    b = load_corpus(f"wikitext:{wikitext_dir}", n_nonmembers=30, **kwargs)
    assert (a.train, a.members, a.validation) == (b.train, b.members, b.validation)
    assert a.nonmembers[:30] == b.nonmembers


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_unknown_name_lists_known_corpora():
    with pytest.raises(
        ValueError,
        match="unknown corpus 'wikitext3'.*default, wiki-gensim, infobox, wikitext, webnlg, xsum",
    ):
        load_corpus("wikitext3")
    assert KNOWN_CORPORA == ("default", "wiki-gensim", "infobox", "wikitext", "webnlg", "xsum")


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match="wikitext:"):
        load_corpus(f"wikitext:{tmp_path / 'nope'}")
    with pytest.raises(FileNotFoundError, match="no data files"):
        load_corpus(str(tmp_path))  # exists, but empty
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="wiki.train.raw"):
        load_corpus(f"wikitext:{tmp_path / 'x.parquet'}")


def test_empty_corpus_after_filtering(tmp_path):
    write_jsonl(tmp_path / "short.jsonl", [{"text": "tiny"}, {"text": "small"}])
    with pytest.raises(ValueError, match="no examples left.*lower min_chars"):
        load_corpus(str(tmp_path / "short.jsonl"), min_chars=100)
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(ValueError, match="no examples left"):
        load_corpus(str(tmp_path / "blank.txt"))


def test_too_few_examples_warns_or_raises(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in paras(4, 40)])
    c = load_corpus(
        str(tmp_path / "d.jsonl"), n_train=100, n_members=50, n_nonmembers=50, n_validation=0
    )
    check_corpus(c)
    warnings = " | ".join(c.info["warnings"])
    assert "n_train: requested 100, got 20" in warnings and "n_members: requested 50" in warnings
    with pytest.raises(ValueError, match="strict=True.*n_train: requested 100, got 20"):
        load_corpus(
            str(tmp_path / "d.jsonl"), n_train=100, n_members=50, n_nonmembers=50, strict=True
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_train": 0}, "n_train must be an integer >= 1"),
        ({"n_members": -5}, "n_members"),
        ({"n_nonmembers": 2.5}, "n_nonmembers"),
        ({"n_validation": True}, "n_validation"),
        ({"seed": -1}, "seed"),
        ({"near_dup_threshold": 0}, "threshold"),
        ({"min_chars": -1}, "min_chars"),
        ({"text_column": ""}, "text_column"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in paras(4, 10)])
    with pytest.raises(ValueError, match=match):
        load_corpus(str(tmp_path / "d.jsonl"), **kwargs)


def test_wrong_columns_for_forced_format(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "x y z"}])
    with pytest.raises(ValueError, match=r"'document', 'summary'.*columns present: \['text'\]"):
        load_corpus(f"xsum:{tmp_path}")
    with pytest.raises(ValueError, match="not WebNLG data"):
        load_corpus(f"webnlg:{tmp_path}")


# ---------------------------------------------------------------------------
# Hugging Face Hub (no network here: load_dataset is replaced)
# ---------------------------------------------------------------------------


def test_hub_failure_explains_offline_use(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    for name, hint in (
        ("wikitext", "wikitext:/path"),
        ("webnlg", "webnlg:/path"),
        ("xsum", "xsum:/path"),
    ):
        with pytest.raises(RuntimeError, match=f"To work offline.*{hint}") as err:
            load_corpus(name)
        assert "no network" in str(err.value)


def test_hub_rows_are_converted(monkeypatch):
    datasets = pytest.importorskip("datasets")
    wt = {s: wikitext_lines(k, 3, 6) for k, s in enumerate(("train", "validation", "test"))}
    gem = {
        s: [to_gem(r) for r in webnlg_rows(k, 30)]
        for k, s in enumerate(("train", "validation", "test"))
    }
    xs = {s: xsum_rows(k, 30) for k, s in enumerate(("train", "validation", "test"))}
    calls = []

    def fake(repo, config=None, **kwargs):
        calls.append((repo, config))
        rows = {
            "Salesforce/wikitext": {s: [{"text": t} for t in v] for s, v in wt.items()},
            "GEM/web_nlg": gem,
            "EdinburghNLP/xsum": xs,
        }[repo]
        return datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in rows.items()})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    small = dict(n_train=15, n_validation=5, n_members=5, n_nonmembers=5)
    w = load_corpus("wikitext", **small)
    g = load_corpus("webnlg", **small)
    x = load_corpus("xsum", **small)
    assert calls == [
        ("Salesforce/wikitext", "wikitext-2-raw-v1"),
        ("GEM/web_nlg", "en"),
        ("EdinburghNLP/xsum", None),
    ]
    for c in (w, g, x):
        check_corpus(c)
        assert c.info["source"].startswith("hub:") and not c.info["warnings"]
    assert w.info["pools"] == {
        "read": 54,
        "dropped_short": 0,
        "dropped_repeats": 0,
        "train": 18,
        "heldout": 18,
        "validation": 18,
    }
    assert all(" => " in t for t in g.train) and all("\nSummary: " in t for t in x.train)


# ---------------------------------------------------------------------------
# The embedded default corpus
# ---------------------------------------------------------------------------


def _has_dist(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_gensim = pytest.mark.skipif(not _has_dist("gensim"), reason=f"needs: {data.EMBEDDED_INSTALL}")


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory):
    """A fresh cache folder, filled by one parse of the embedded dump."""
    if not _has_dist("gensim"):
        pytest.skip(f"needs: {data.EMBEDDED_INSTALL}")
    pytest.importorskip("mwparserfromhell")
    cache = tmp_path_factory.mktemp("jaxmem-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXMEM_CACHE", str(cache))
    start = time.perf_counter()
    articles, meta = embedded.embedded_articles()
    first = time.perf_counter() - start
    yield {"dir": cache, "articles": articles, "meta": meta, "first_s": first}
    mp.undo()


@needs_gensim
def test_embedded_corpus_is_cached(embedded_cache, monkeypatch):
    monkeypatch.setenv("JAXMEM_CACHE", str(embedded_cache["dir"]))
    assert embedded_cache["meta"]["cache_hit"] is False
    files = list(embedded_cache["dir"].iterdir())
    assert [f.suffix for f in files] == [".json"]  # no temp file left behind
    start = time.perf_counter()
    articles, meta = embedded.embedded_articles()
    assert meta["cache_hit"] is True and articles == embedded_cache["articles"]
    assert time.perf_counter() - start < max(1.0, embedded_cache["first_s"] / 2)
    # A corrupt cache is ignored and rewritten.
    files[0].write_text("{ not json")
    articles, meta = embedded.embedded_articles()
    assert meta["cache_hit"] is False and articles == embedded_cache["articles"]
    assert json.loads(files[0].read_text())["sha256"] == meta["sha256"]


@needs_gensim
def test_embedded_corpus_default(embedded_cache, monkeypatch):
    monkeypatch.setenv("JAXMEM_CACHE", str(embedded_cache["dir"]))
    c = load_corpus("default")
    check_corpus(c)
    assert c.name == "wiki-gensim" and c.info["cache"]["cache_hit"] is True
    assert c.info["actual"] == {
        "n_train": 1000,
        "n_validation": 200,
        "n_members": 500,
        "n_nonmembers": 500,
    }
    assert not c.info["warnings"]
    pool = c.info["pools"]["train"] + c.info["pools"]["heldout"]
    assert pool >= 1000 and c.info["split"]["groups"] >= 50
    assert all(len(t) >= 200 for t in c.train + c.validation + c.nonmembers)
    assert not any(mark in t for t in c.train for mark in ("[[", "{{", "<ref", "|"))
    # One distribution: held out at random, so both sides draw on most articles (whole
    # articles held out, the legacy design, left 3 articles to the non-members).
    article_of = {p: title for title, ps in embedded_cache["articles"] for p in ps}
    assert c.info["split"]["design"] == "random"
    assert len({article_of[t] for t in c.nonmembers}) >= 40
    assert c.info["split"]["nonmembers_groups"] == len({article_of[t] for t in c.nonmembers})
    assert c.info["split"]["members_groups"] >= 40
    # The legacy design, asked for by name: members and non-members from disjoint articles.
    old = load_corpus("default", split="legacy-by-group", n_train=128, n_members=128,
                      n_nonmembers=128, n_validation=24)
    member_articles = {article_of[t] for t in old.train}
    held_articles = {article_of[t] for t in old.nonmembers + old.validation}
    assert member_articles.isdisjoint(held_articles)
    assert held_articles <= set(old.info["split"]["heldout_groups"])
    assert old.info["split"]["nonmembers_groups"] <= 7  # the topic shift it builds in
    assert any("split='legacy-by-group' held out only" in w for w in old.info["warnings"])
    # Sizes are overridable; the alias gives the same corpus.
    big = load_corpus(
        "wiki-gensim", n_train=2000, n_members=1000, n_nonmembers=800, n_validation=100, seed=3
    )
    assert big.info["actual"] == {
        "n_train": 2000,
        "n_validation": 100,
        "n_members": 1000,
        "n_nonmembers": 800,
    }
    assert load_corpus("wiki-gensim").members == c.members


def test_embedded_corpus_missing_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded, "_EMBEDDED_DIST", "surely-not-an-installed-dist")
    with pytest.raises(ImportError, match="pip install gensim==4.4.0 --no-deps mwparserfromhell"):
        load_corpus("default")
    monkeypatch.undo()
    if not _has_dist("gensim"):
        return
    monkeypatch.setenv("JAXMEM_CACHE", str(tmp_path))  # empty cache: must parse
    monkeypatch.setitem(sys.modules, "mwparserfromhell", None)  # import fails
    with pytest.raises(ImportError, match="pip install gensim==4.4.0 --no-deps mwparserfromhell"):
        load_corpus("default")


@needs_gensim
def test_matched_split_balances_articles(embedded_cache, monkeypatch):
    """split="matched": non-members drawn article for article with the members, as far as the
    held-out texts allow; each article holds out its share."""
    from collections import Counter

    monkeypatch.setenv("JAXMEM_CACHE", str(embedded_cache["dir"]))
    article_of = {p: title for title, ps in embedded_cache["articles"] for p in ps}
    c = load_corpus("default", split="matched", n_train=128, n_members=128, n_nonmembers=128,
                    n_validation=24)
    assert c.info["split"]["design"] == "matched"
    m = Counter(article_of[t] for t in c.members)
    n = Counter(article_of[t] for t in c.nonmembers)
    shared = sum((m & n).values())  # members with a non-member of their own article
    r = load_corpus("default", split="random", n_train=128, n_members=128, n_nonmembers=128,
                    n_validation=24)
    by_chance = sum((Counter(article_of[t] for t in r.members)
                     & Counter(article_of[t] for t in r.nonmembers)).values())
    assert shared >= 80 and shared > by_chance + 20
    assert set(c.members).isdisjoint(c.nonmembers)
