"""Corpora for fine-tuning and membership inference.

:func:`load_corpus` turns a dataset into a :class:`Corpus`: the texts to
fine-tune on (``train``), texts for validation perplexity (``validation``),
and the two sets a membership-inference attack (MIA) scores: ``members``,
a seeded subset of ``train``, and ``nonmembers``, a seeded subset of
held-out data the model never trains on. ``info`` records where the data
came from, how examples are formatted, requested versus actual sizes, how
many candidate non-members were dropped as (near-)duplicates of training
texts, and every warning.

Sources (``name_or_path``):

* ``"wikitext"``: WikiText-2 raw (``Salesforce/wikitext``,
  ``wikitext-2-raw-v1``) from the Hugging Face Hub, or a local copy as
  ``"wikitext:/dir"``, where ``dir`` holds ``wiki.{train,valid,test}.raw``
  or the Hub's parquet layout (``wikitext-2-raw-v1/*.parquet``). One example
  is one paragraph: a non-empty line that is not a `` = Heading = ``.
* ``"webnlg"``: GEM WebNLG, English (``GEM/web_nlg``, config ``en``), or
  local JSONL files (``train/dev/test.jsonl`` with ``triples`` and ``text``,
  or GEM rows with ``input`` and ``target``) as ``"webnlg:/dir"``.
  One example is ``"s1 | p1 | o1 && s2 | p2 | o2 => verbalisation"``.
* ``"xsum"``: ``EdinburghNLP/xsum``, or local JSONL / CSV / parquet files
  with ``document`` and ``summary`` columns as ``"xsum:/path"``. One
  example is ``"{document}\\nSummary: {summary}"``.
* ``"default"`` (alias ``"wiki-gensim"``): the embedded corpus, about 4,100
  English Wikipedia paragraphs from 97 articles, parsed from a MediaWiki
  dump that the ``gensim==4.4.0`` wheel ships as test data (gensim itself
  is never imported). Needs ``pip install gensim==4.4.0 --no-deps
  mwparserfromhell``. Parsed once, then cached as JSON.
* any other path: a ``.txt`` (paragraphs separated by blank lines, or one
  example a line when there are none), ``.jsonl``, ``.json``, ``.csv``,
  ``.tsv`` or ``.parquet`` file with a ``text_column``, or a directory of
  such files. Files named ``train*`` / ``dev*`` / ``valid*`` / ``test*``
  are used as those splits. Local directories that look like WikiText,
  WebNLG or XSum are recognised without the prefix.

Default sizes follow Table 1 of the paper (see :data:`PAPER_SIZES`), capped
by what the data has. A cap is recorded in ``info["warnings"]``, or raises
``ValueError`` with ``strict=True``. Sources with a single split (or only a
test split) are split deterministically, by article where articles are
known, so members and non-members come from the same distribution but
never from the same article.

Example:
    >>> corpus = load_corpus("default", n_train=200, n_members=100,
    ...                      n_nonmembers=100, n_validation=50)
    >>> len(corpus.members), len(corpus.nonmembers)
    (100, 100)
    >>> set(corpus.members) <= set(corpus.train)
    True
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import re
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

__all__ = [
    "Corpus",
    "load_corpus",
    "find_overlaps",
    "read_text_file",
    "KNOWN_CORPORA",
    "PAPER_SIZES",
    "EMBEDDED_INSTALL",
]

#: Corpus names accepted by :func:`load_corpus` (besides local paths).
KNOWN_CORPORA = ("default", "wiki-gensim", "wikitext", "webnlg", "xsum")

#: Table 1 of the paper: fine-tuning examples, members, non-members.
PAPER_SIZES = {
    "wikitext": {"n_train": 22_335, "n_members": 2_000, "n_nonmembers": 2_000},
    "webnlg": {"n_train": 35_426, "n_members": 1_779, "n_nonmembers": 1_779},
    "xsum": {"n_train": 5_000, "n_members": 1_000, "n_nonmembers": 1_000},
}

#: The one command that makes the embedded default corpus available.
EMBEDDED_INSTALL = "pip install gensim==4.4.0 --no-deps mwparserfromhell"

# Sizes for the embedded corpus suit a CPU demo of a few minutes; local files
# of unknown origin get "all of train" and a moderate MIA set.
_EMBEDDED_SIZES = {"n_train": 1_000, "n_validation": 200, "n_members": 500, "n_nonmembers": 500}
_LOCAL_SIZES = {"n_train": None, "n_members": 1_000, "n_nonmembers": 1_000}
_DEFAULT_VALIDATION = 500

_ALIASES = {
    "default": "wiki-gensim",
    "wiki-gensim": "wiki-gensim",
    "wikitext": "wikitext",
    "wikitext-2": "wikitext",
    "wikitext-2-raw-v1": "wikitext",
    "webnlg": "webnlg",
    "web_nlg": "webnlg",
    "web_nlg_en": "webnlg",
    "xsum": "xsum",
}

_FORMATS = {
    "wikitext": (
        "one WikiText-2 (raw) paragraph per example: a non-empty line of the raw file "
        "that is not a ' = Heading = ' line, with surrounding whitespace stripped "
        "(WikiText's own tokenisation such as ' @-@ ' is kept)"
    ),
    "webnlg": (
        "'s1 | p1 | o1 && s2 | p2 | o2 => text': the input triples "
        "(subject | predicate | object, joined by ' && ') then ' => ' and the "
        "human verbalisation"
    ),
    "xsum": (
        "'{document}\\nSummary: {summary}': the article, a newline, 'Summary: ' and its "
        "one-sentence summary"
    ),
    "wiki-gensim": (
        "one English Wikipedia paragraph per example, MediaWiki markup stripped "
        "(no references, templates, tables, file/category links, lists, headings, "
        "or References / External links / Further reading / See also sections)"
    ),
}

_HUB = {
    # (repository, config) tried in order; the parquet branch is the Hub's own
    # conversion, which works where a repository still ships a loading script.
    "wikitext": [("Salesforce/wikitext", "wikitext-2-raw-v1", None)],
    "webnlg": [("GEM/web_nlg", "en", None), ("GEM/web_nlg", "en", "refs/convert/parquet")],
    "xsum": [
        ("EdinburghNLP/xsum", None, None),
        ("EdinburghNLP/xsum", None, "refs/convert/parquet"),
    ],
}

_OFFLINE_HINT = {
    "wikitext": (
        "load_corpus('wikitext:/path/to/dir') where dir holds wiki.train.raw / wiki.valid.raw / "
        "wiki.test.raw (any subset, e.g. ../shared/data/wikitext-2-raw) or the Hub layout "
        "wikitext-2-raw-v1/*.parquet"
    ),
    "webnlg": (
        "load_corpus('webnlg:/path/to/dir') where dir holds train.jsonl / dev.jsonl / test.jsonl "
        "with 'triples' and 'text' (e.g. ../shared/data/webnlg) or GEM rows with 'input' and "
        "'target'"
    ),
    "xsum": (
        "load_corpus('xsum:/path') where path is a JSONL / CSV / parquet file, or a directory of "
        "train / validation / test files, with 'document' and 'summary' columns"
    ),
}

_LOCAL_EXTS = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")
_SPLIT_RE = re.compile(r"^(train|training|validation|valid|val|dev|test|testing)(?:[-_.]|$)")
_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
_WIKITEXT_RAW_RE = re.compile(r"^wiki\.(train|valid|test)\.raw$")

# Parsed embedded corpus lives in this version of the cache format; bump it
# whenever the MediaWiki cleaning changes so stale caches are ignored.
_PARSER_VERSION = 1
_EMBEDDED_DIST = "gensim"
_EMBEDDED_FILE = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
_EMBEDDED_MIN_CHARS = 200

_SHINGLE = 5  # words per shingle for near-duplicate detection
_N_EXAMPLES = 3  # overlap examples kept in info


@dataclasses.dataclass
class Corpus:
    """Texts for fine-tuning and for a membership-inference attack.

    Attributes:
        name: Canonical corpus name (``"wikitext"``, ``"webnlg"``, ``"xsum"``,
            ``"wiki-gensim"``) or ``"local"``.
        train: The fine-tuning set.
        validation: Held-out texts for validation perplexity; never in
            ``train`` or ``nonmembers``.
        members: A seeded random subset of ``train``.
        nonmembers: A seeded random subset of held-out data, none an exact or
            near duplicate of a training text.
        info: JSON-able record of how the corpus was made: ``source``,
            ``format`` (how one example is written), ``seed``, ``requested``
            and ``actual`` sizes (``explicit`` lists the sizes passed in, the
            rest are defaults), ``pools`` (examples read, dropped as too
            short or repeated, and the sizes of the train / held-out /
            validation pools), ``split`` (how train and held-out were
            separated), ``overlap`` (non-member candidates dropped as exact
            or near duplicates of training texts, by kind, with examples)
            and ``warnings`` (every cap and oddity, as sentences).

    Example:
        >>> c = Corpus("toy", ["a", "b"], [], ["a"], ["c"], {})
        >>> c
        Corpus(name='toy', train=2, validation=0, members=1, nonmembers=1, warnings=0)
    """

    name: str
    train: list[str]
    validation: list[str]
    members: list[str]
    nonmembers: list[str]
    info: dict

    def __repr__(self) -> str:  # the lists are far too long to print
        return (
            f"Corpus(name={self.name!r}, train={len(self.train)}, "
            f"validation={len(self.validation)}, "
            f"members={len(self.members)}, nonmembers={len(self.nonmembers)}, "
            f"warnings={len(self.info.get('warnings', []))})"
        )


class _Unit(NamedTuple):
    text: str
    group: str  # units of one group (an article, a triple set) are never split apart


@dataclasses.dataclass
class _Source:
    name: str
    origin: str
    format: str
    splits: dict[str, list[_Unit]]  # keys: train / validation / test, or "all"
    grouped_by: str | None = None  # "article", "triple set", ... or None
    warnings: list[str] = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------
# Overlap detection
# ---------------------------------------------------------------------------


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _dedupe(units: list[_Unit]) -> tuple[list[_Unit], int]:
    """Keep the first of units with the same normalised text."""
    seen: set[str] = set()
    kept = []
    for u in units:
        key = _normalize(u.text)
        if key not in seen:
            seen.add(key)
            kept.append(u)
    return kept, len(units) - len(kept)


def _shingles(text: str) -> frozenset[int]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < _SHINGLE:
        # Short texts still need to match their duplicates: use one shingle.
        return frozenset([hash(tuple(words))]) if words else frozenset()
    return frozenset(hash(tuple(words[i : i + _SHINGLE])) for i in range(len(words) - _SHINGLE + 1))


def _prefix_len(size: int, threshold: float) -> int:
    # Two sets with Jaccard >= t share a token within these prefixes of their
    # tokens under any fixed global order (the "prefix filtering" bound).
    return size - math.ceil(threshold * size - 1e-9) + 1


def _overlaps_from_shingles(
    sa: list[frozenset[int]], sb: list[frozenset[int]], threshold: float
) -> list[tuple[int, int, float]]:
    """Exact Jaccard similarity join via prefix filtering."""
    freq = Counter()
    for s in sa:
        freq.update(s)
    for s in sb:
        freq.update(s)

    def order(tokens: frozenset[int]) -> list[int]:
        # Rare tokens first keeps the prefixes, and so the candidate lists, short.
        return sorted(tokens, key=lambda tok: (freq[tok], tok))

    index: dict[int, list[int]] = {}
    for j, s in enumerate(sb):
        if s:
            for tok in order(s)[: _prefix_len(len(s), threshold)]:
                index.setdefault(tok, []).append(j)

    pairs = []
    for i, s in enumerate(sa):
        if not s:
            continue
        candidates: set[int] = set()
        for tok in order(s)[: _prefix_len(len(s), threshold)]:
            candidates.update(index.get(tok, ()))
        lo, hi = threshold * len(s), len(s) / threshold
        for j in candidates:
            other = sb[j]
            if not lo - 1e-9 <= len(other) <= hi + 1e-9:
                continue
            inter = len(s & other)
            sim = inter / (len(s) + len(other) - inter)
            if sim >= threshold - 1e-12:
                pairs.append((i, j, sim))
    pairs.sort()
    return pairs


def find_overlaps(
    a: list[str], b: list[str], threshold: float = 0.8
) -> list[tuple[int, int, float]]:
    """Find near-duplicate pairs between two lists of texts.

    Two texts are near duplicates when the Jaccard similarity of their sets
    of word 5-gram shingles (lower-cased ``\\w+`` words, so case, spacing and
    punctuation are ignored) is at least ``threshold``. Texts shorter than
    five words are compared as a single shingle, i.e. only exactly. The
    search is exact (no MinHash approximation) and fast: prefix filtering
    only verifies pairs that share a rare shingle; 2,000 x 2,000 paragraphs
    take well under a second.

    Args:
        a: First list of texts.
        b: Second list of texts.
        threshold: Minimum Jaccard similarity, in (0, 1].

    Returns:
        ``(i, j, similarity)`` for every pair with ``a[i]`` and ``b[j]`` at
        least ``threshold`` similar, sorted by ``(i, j)``.

    Raises:
        ValueError: If ``threshold`` is outside (0, 1].

    Example:
        >>> find_overlaps(["the cat sat on the mat today"],
        ...               ["The cat sat on the mat today!", "a dog"])
        [(0, 0, 1.0)]
    """
    _check_threshold(threshold)
    return _overlaps_from_shingles(
        [_shingles(t) for t in a], [_shingles(t) for t in b], float(threshold)
    )


def _check_threshold(threshold: Any) -> None:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0 < threshold <= 1
    ):
        raise ValueError(
            f"near-duplicate threshold must be a number in (0, 1], got {threshold!r}; "
            "0.8 is the usual choice (pass near_dup_threshold=None to only drop exact duplicates)"
        )


# ---------------------------------------------------------------------------
# Reading local files
# ---------------------------------------------------------------------------


def _read_txt(path: Path) -> tuple[list[str], str]:
    """Paragraphs (blank-line separated) of a text file, or its lines if it has no blank lines."""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    if re.search(r"\n[ \t]*\n", text.strip()):
        return [" ".join(p.split()) for p in re.split(r"\n[ \t]*\n", text)], "paragraph"
    return [line.strip() for line in text.split("\n")], "line"


def _read_records(path: Path) -> list[dict]:
    """Rows of a .jsonl / .json / .csv / .tsv / .parquet file as dicts."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(
                        f"{path}:{lineno}: not valid JSON ({exc.msg}); expected one object per line"
                    ) from exc
                if not isinstance(row, dict):
                    raise ValueError(
                        f"{path}:{lineno}: expected one JSON object per line, "
                        f"got {type(row).__name__}"
                    )
                rows.append(row)
        return rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if any(k in data for k in ("data", "rows", "examples")):
                data = next(data[k] for k in ("data", "rows", "examples") if k in data)
            elif lists and len(lists) == len(data) and len({len(v) for v in lists}) == 1:
                # Column layout: {"text": [...], "id": [...]}.
                data = [
                    dict(zip(data, row, strict=True)) for row in zip(*data.values(), strict=True)
                ]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(
                f"{path}: expected a JSON list of objects, an object of equal-length column lists, "
                "or {'data': [...]}"
            )
        return data
    if suffix in (".csv", ".tsv"):
        csv.field_size_limit(
            min(sys.maxsize, 2**31 - 1)
        )  # XSum documents exceed the 128 kB default
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(
        f"{path}: unsupported file type {suffix!r}; use one of {', '.join(_LOCAL_EXTS)}"
    )


def _columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows[:100]:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _require_columns(rows: list[dict], needed: Iterable[str], where: str, hint: str) -> None:
    present = _columns(rows)
    missing = [c for c in needed if c not in present]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing}; columns present: {present}. {hint}"
        )


def _split_of(path: Path, root: Path) -> str | None:
    """train / validation / test from a file's name or its folders below ``root``."""
    # Only names below root count: a root folder called e.g. "test_x" says nothing.
    parts = path.relative_to(root).parts if root in path.parents else (path.name,)
    for part in reversed(parts):
        m = _SPLIT_RE.match(part.lower())
        if m:
            return _SPLIT_NAMES[m.group(1)]
    return None


def _list_files(path: Path, exts: Iterable[str]) -> list[Path]:
    if path.is_file():
        return [path]
    exts = tuple(exts)
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in exts
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and not p.name.lower().startswith("readme")
    )


def read_text_file(path: str | os.PathLike, *, text_column: str = "text") -> list[str]:
    """Texts of one local file, in file order, for scoring or inspection.

    No splitting, sampling or de-duplication: use :func:`load_corpus` for
    that. A ``.txt`` file gives one text per paragraph (blank-line
    separated; one per line if it has no blank lines); ``.jsonl``,
    ``.json``, ``.csv``, ``.tsv`` and ``.parquet`` files give the
    ``text_column`` of each row. Empty texts are skipped.

    Args:
        path: The file.
        text_column: Column holding the text in structured files.

    Returns:
        The texts, surrounding whitespace stripped.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: Unsupported suffix, missing column (the message lists
            the columns present) or no text at all.

    Example:
        >>> from pathlib import Path
        >>> _ = Path("/tmp/two.txt").write_text("First one.\\n\\nSecond one.\\n")
        >>> read_text_file("/tmp/two.txt")
        ['First one.', 'Second one.']
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file; pass a {', '.join(_LOCAL_EXTS)} file")
    if path.suffix.lower() == ".txt":
        texts, _ = _read_txt(path)
    else:
        rows = _read_records(path)
        _require_columns(
            rows, (text_column,), str(path), f"Pass the right text column (got {text_column!r})."
        )
        texts = [str(r[text_column]).strip() for r in rows if r.get(text_column) is not None]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"{path}: no non-empty texts")
    return texts


# ----- WikiText -----


def _is_heading(line: str) -> bool:
    s = line.strip()
    return len(s) >= 3 and s.startswith("= ") and s.endswith(" =")


def _wikitext_units(lines: Iterable[str], split: str) -> list[_Unit]:
    """Paragraph units from WikiText lines; the group is the article title."""
    units, article = [], f"{split}:(no title)"
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if _is_heading(s):
            if not s.startswith("= ="):  # " = Title = " opens a new article; "= = Sub = =" does not
                article = f"{split}:{s.strip('= ').strip()}"
            continue
        units.append(_Unit(s, article))
    return units


def _wikitext_local(path: Path) -> _Source:
    raw = [p for p in _list_files(path, (".raw",)) if _WIKITEXT_RAW_RE.match(p.name)]
    splits: dict[str, list[_Unit]] = {}
    if raw:
        for p in raw:
            split = {"train": "train", "valid": "validation", "test": "test"}[
                _WIKITEXT_RAW_RE.match(p.name).group(1)
            ]
            if split in splits:
                raise ValueError(
                    f"{path}: more than one wiki.*.raw file for the {split} split; keep one copy"
                )
            text = p.read_text(encoding="utf-8", errors="replace")
            splits[split] = _wikitext_units(
                text.split("\n"), split
            )  # not splitlines(): it also breaks on U+2028 etc.
        fmt_origin = "raw wiki.*.raw files"
    else:
        parquet = _list_files(path, (".parquet",)) if path.is_dir() else []
        preferred = [p for p in parquet if "wikitext-2-raw-v1" in p.parts]
        parquet = preferred or parquet
        if not parquet:
            raise FileNotFoundError(
                f"{path}: no WikiText files found; expected wiki.train.raw / wiki.valid.raw / "
                "wiki.test.raw "
                "or the Hub layout wikitext-2-raw-v1/{train,validation,test}-*.parquet"
            )
        import pyarrow.parquet as pq

        for p in parquet:
            split = _split_of(p, path if path.is_dir() else p.parent)
            if split is None:
                continue
            table = pq.read_table(p)
            if "text" not in table.column_names:
                raise ValueError(
                    f"{p}: missing column 'text'; columns present: {table.column_names}"
                )
            splits.setdefault(split, []).extend(
                _wikitext_units(table.column("text").to_pylist(), split)
            )
        if not splits:
            raise FileNotFoundError(
                f"{path}: parquet files found, but none named train-* / validation-* / test-*"
            )
        fmt_origin = "Hub parquet layout"
    return _Source(
        "wikitext",
        f"local:{path} ({fmt_origin})",
        _FORMATS["wikitext"],
        splits,
        grouped_by="article",
    )


# ----- WebNLG -----


def _webnlg_unit(row: dict) -> _Unit | None:
    """One example from a WebNLG row (either layout); None if it has no triples or text."""
    if "triples" in row:
        triples = [" | ".join(str(x).strip() for x in t) for t in row["triples"] or []]
        text = row.get("text")
    else:
        # GEM layout: input is a list of "s | p | o" strings.
        triples = [
            " | ".join(part.strip() for part in str(t).split("|")) for t in row["input"] or []
        ]
        text = row.get("target") or next(iter(row.get("references") or []), None)
    if not triples or not text or not str(text).strip():
        return None
    linear = " && ".join(triples)
    return _Unit(f"{linear} => {' '.join(str(text).split())}", f"triples:{linear}")


def _webnlg_rows(rows: list[dict], where: str) -> list[_Unit]:
    cols = _columns(rows)
    if not ("triples" in cols and "text" in cols) and not ("input" in cols and "target" in cols):
        raise ValueError(
            f"{where}: not WebNLG data; expected columns 'triples' + 'text' or GEM's "
            "'input' + 'target', "
            f"columns present: {cols}"
        )
    return [u for row in rows if (u := _webnlg_unit(row)) is not None]


# ----- XSum -----


def _xsum_rows(rows: list[dict], where: str) -> list[_Unit]:
    _require_columns(
        rows, ("document", "summary"), where, "XSum files need a 'document' and a 'summary' column."
    )
    units = []
    for k, row in enumerate(rows):
        doc, summary = (str(row.get(c) or "").strip() for c in ("document", "summary"))
        if doc and summary:
            units.append(_Unit(f"{doc}\nSummary: {summary}", f"doc:{row.get('id', k)}:{k}"))
    return units


# ----- generic -----


def _detect_kind(rows: list[dict]) -> str:
    cols = _columns(rows)
    if "triples" in cols and "text" in cols:
        return "webnlg"
    if "input" in cols and "target" in cols and rows and isinstance(rows[0].get("input"), list):
        return "webnlg"
    if "document" in cols and "summary" in cols:
        return "xsum"
    return "local"


def _local_source(path: Path, kind: str | None, text_column: str) -> _Source:
    """Read a local file or directory; ``kind`` None means detect it."""
    if kind == "wikitext" or (
        kind is None
        and (
            _WIKITEXT_RAW_RE.match(path.name)
            or (
                path.is_dir()
                and any(_WIKITEXT_RAW_RE.match(p.name) for p in path.rglob("wiki.*.raw"))
            )
            or (path.is_dir() and any(path.rglob("wikitext-2-raw-v1")))
        )
    ):
        return _wikitext_local(path)

    files = _list_files(path, _LOCAL_EXTS)
    if not files:
        raise FileNotFoundError(
            f"{path}: no data files found; expected {', '.join(_LOCAL_EXTS)} files "
            "(or wiki.*.raw for WikiText)"
        )
    root = path if path.is_dir() else path.parent
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(_split_of(f, root) or "all", []).append(f)
    warnings = []
    if "all" in by_split and len(by_split) > 1:
        ignored = [str(f.relative_to(root)) for f in by_split.pop("all")]
        warnings.append(f"ignored files not named train* / dev* / valid* / test*: {ignored[:5]}")

    splits: dict[str, list[_Unit]] = {}
    detected = kind
    txt_mode = None
    for split, split_files in by_split.items():
        for f in split_files:
            where = str(f)
            if f.suffix.lower() == ".txt":
                if kind in ("webnlg", "xsum"):
                    raise ValueError(
                        f"{f}: {kind} needs structured files (JSONL / CSV / parquet), not .txt"
                    )
                paras, txt_mode = _read_txt(f)
                splits.setdefault(split, []).extend(
                    _Unit(p, f"{f.name}:{k}") for k, p in enumerate(paras) if p
                )
                detected = detected or "local"
                continue
            rows = _read_records(f)
            if detected is None:
                detected = _detect_kind(rows)
            if detected == "webnlg":
                units = _webnlg_rows(rows, where)
            elif detected == "xsum":
                units = _xsum_rows(rows, where)
            else:
                _require_columns(
                    rows,
                    (text_column,),
                    where,
                    "Pass text_column=<one of those> to load_corpus "
                    f"(currently text_column={text_column!r}).",
                )
                units = [
                    _Unit(str(row[text_column]).strip(), f"{f.name}:{k}")
                    for k, row in enumerate(rows)
                    if row.get(text_column) is not None
                ]
            splits.setdefault(split, []).extend(units)

    detected = detected or "local"
    if detected in _FORMATS:
        fmt = _FORMATS[detected]
    elif txt_mode:
        fmt = f"one example per {txt_mode} of the .txt file(s), surrounding whitespace stripped"
    else:
        fmt = f"one example per record: the {text_column!r} field, surrounding whitespace stripped"
    grouped = {"webnlg": "triple set"}.get(detected)
    return _Source(detected, f"local:{path}", fmt, splits, grouped_by=grouped, warnings=warnings)


# ---------------------------------------------------------------------------
# Hugging Face Hub
# ---------------------------------------------------------------------------


def _hub_source(name: str) -> _Source:
    errors = []
    for repo, config, revision in _HUB[name]:
        try:
            import datasets

            kwargs = {"revision": revision} if revision else {}
            ds = datasets.load_dataset(repo, config, **kwargs)
            break
        except Exception as exc:  # noqa: BLE001 - any failure means "use a local copy"
            errors.append(
                f"{repo}{f' ({config})' if config else ''}{f' @ {revision}' if revision else ''}: "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            )
    else:
        raise RuntimeError(
            f"could not load {name!r} from the Hugging Face Hub ({'; '.join(errors)}). "
            f"To work offline, pass a local copy: {_OFFLINE_HINT[name]}; "
            "or use load_corpus('default') for the embedded corpus."
        )

    origin = f"hub:{repo}" + (f"/{config}" if config else "") + (f"@{revision}" if revision else "")
    splits: dict[str, list[_Unit]] = {}
    for split in ("train", "validation", "test"):
        if split not in ds:
            continue
        if name == "wikitext":
            splits[split] = _wikitext_units(ds[split]["text"], split)
        else:
            rows = ds[split].to_list()
            splits[split] = (
                _webnlg_rows(rows, origin) if name == "webnlg" else _xsum_rows(rows, origin)
            )
    grouped = {"wikitext": "article", "webnlg": "triple set"}.get(name)
    return _Source(name, origin, _FORMATS[name], splits, grouped_by=grouped)


# ---------------------------------------------------------------------------
# The embedded corpus: Wikipedia articles shipped in the gensim wheel
# ---------------------------------------------------------------------------

_DROP_TAGS = {
    "ref",
    "references",
    "math",
    "gallery",
    "imagemap",
    "timeline",
    "score",
    "syntaxhighlight",
    "source",
    "pre",
    "table",
    "graph",
    "chem",
    "ce",
    "hiero",
    "templatedata",
    "nowiki",
    "code",
    "poem",
    "mapframe",
    "noinclude",
    "includeonly",
}
_SKIP_SECTIONS = {
    "references",
    "external links",
    "further reading",
    "see also",
    "notes",
    "bibliography",
    "sources",
    "footnotes",
    "citations",
    "notes and references",
    "works cited",
    "literature",
}
# File/Image/Category links and interlanguage links ([[de:...]]) are not prose.
_NON_PROSE_LINK = re.compile(r"^\s*:?\s*(file|image|category|media|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)
_REF_RE = re.compile(r"<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>", re.S | re.I)
_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_RESIDUE_RE = re.compile(r"\{\{|\}\}|\[\[|\]\]|</?[a-zA-Z][^>]*>|https?://|\|")
# Sentinels survive strip_code (plain Text nodes) and mark structure that
# strip_code would otherwise erase: headings, list items and wiki links.
_HEAD, _HSEP, _LIST, _LINK_OPEN, _LINK_CLOSE = "\x01", "\x02", "\x03", "\x04", "\x05"
_LINK_ONLY_RE = re.compile(
    f"[\\s,;·•|\\-–]*({_LINK_OPEN}[^{_LINK_CLOSE}]*{_LINK_CLOSE}[\\s,;·•|\\-–]*)+"
)


def _embedded_path() -> Path:
    try:
        dist = importlib.metadata.distribution(_EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "the embedded default corpus is test data inside the gensim wheel, "
            "which is not installed. "
            f"Install it with: {EMBEDDED_INSTALL}"
        ) from None
    path = Path(dist.locate_file(_EMBEDDED_FILE))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed {_EMBEDDED_DIST} ({dist.version}); "
            f"reinstall the exact version: {EMBEDDED_INSTALL}"
        )
    return path


def _cache_dir() -> Path:
    return Path(os.environ.get("JAXMEM_CACHE") or Path.home() / ".cache" / "jaxmem")


def _iter_articles(path: Path) -> Iterable[tuple[str, str]]:
    """(title, wikitext) of every real article: namespace 0, not a redirect."""
    with bz2.open(path, "rb") as fh:
        for _, elem in ET.iterparse(fh, events=("end",)):
            if elem.tag.rsplit("}", 1)[-1] != "page":
                continue
            fields, redirect = {}, False
            for child in elem.iter():
                tag = child.tag.rsplit("}", 1)[-1]
                if tag == "redirect":
                    redirect = True
                elif tag in ("ns", "title", "text") and tag not in fields:
                    fields[tag] = child.text or ""
            text = fields.get("text", "")
            if (
                fields.get("ns") == "0"
                and not redirect
                and not text.lstrip().upper().startswith("#REDIRECT")
            ):
                yield fields.get("title", ""), text
            elem.clear()  # keep memory flat


def _prune(code, nodes_mod) -> None:
    """Drop non-prose nodes in place and mark structure with sentinels."""
    kept = []
    for node in code.nodes:
        if isinstance(node, (nodes_mod.Comment, nodes_mod.Template, nodes_mod.Argument)):
            continue
        if isinstance(node, nodes_mod.Tag):
            tag = str(node.tag).strip().lower()
            if tag in _DROP_TAGS:
                continue
            if tag in ("li", "dd", "dt") and node.wiki_markup:
                kept.append(nodes_mod.Text(_LIST))
                continue
            if node.contents is not None:
                _prune(node.contents, nodes_mod)
        elif isinstance(node, nodes_mod.Wikilink):
            if _NON_PROSE_LINK.match(str(node.title)):
                continue
            label = node.text if node.text is not None else node.title
            _prune(label, nodes_mod)
            text = label.strip_code(normalize=True, collapse=True)
            kept.append(nodes_mod.Text(f"{_LINK_OPEN}{text}{_LINK_CLOSE}"))
            continue
        elif isinstance(node, nodes_mod.Heading):
            _prune(node.title, nodes_mod)
            kept.append(
                nodes_mod.Text(f"\n{_HEAD}{node.level}{_HSEP}{node.title.strip_code().strip()}\n")
            )
            continue
        elif isinstance(node, nodes_mod.ExternalLink):
            if not node.brackets or node.title is None:
                continue  # a bare URL is not prose
            _prune(node.title, nodes_mod)
        kept.append(node)
    code.nodes = kept


def _article_paragraphs(wikitext: str) -> list[str]:
    """Prose paragraphs of one article, markup stripped."""
    import mwparserfromhell
    from mwparserfromhell import nodes as nodes_mod

    # Refs and comments first by regex: the parser leaves some malformed ones as text.
    wikitext = _COMMENT_RE.sub("", _REF_RE.sub("", wikitext))
    code = mwparserfromhell.parse(wikitext)
    _prune(code, nodes_mod)
    paragraphs, skip_level = [], None
    for line in code.strip_code(normalize=True, collapse=False).split("\n"):
        s = line.strip()
        if s.startswith(_HEAD):
            level, title = s[1:].split(_HSEP, 1)
            title = title.replace(_LINK_OPEN, "").replace(_LINK_CLOSE, "").strip().lower()
            if skip_level is not None and int(level) <= skip_level:
                skip_level = None
            if skip_level is None and title in _SKIP_SECTIONS:
                skip_level = int(level)
            continue
        if (
            skip_level is not None
            or not s
            or s[0] in _LIST + "*#:;|!{}="
            or _LINK_ONLY_RE.fullmatch(s)
        ):
            continue
        p = " ".join(s.replace(_LINK_OPEN, "").replace(_LINK_CLOSE, "").split())
        # Removed templates leave "( ; , " and " ," behind.
        p = re.sub(r"\(\s*[;,]?\s*\)\s?", "", p)
        p = re.sub(r"\(\s*[;,]\s*", "(", p)
        p = re.sub(r"\s+([,.;:])", r"\1", p).strip()
        if p and not _RESIDUE_RE.search(p):
            paragraphs.append(p)
    return paragraphs


def _embedded_articles() -> tuple[list[tuple[str, list[str]]], dict]:
    """Articles of the embedded corpus as (title, paragraphs), parsed or cached.

    The cache key is the dump's sha256 plus the parser version, so a changed
    file or changed cleaning rules never reuse stale paragraphs.
    """
    path = _embedded_path()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = _cache_dir() / f"wiki-gensim-{sha[:16]}-p{_PARSER_VERSION}.json"
    meta = {"file": str(path), "sha256": sha, "cache": str(cache)}
    start = time.perf_counter()
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("sha256") == sha and data.get("parser_version") == _PARSER_VERSION:
            meta.update(cache_hit=True, seconds=round(time.perf_counter() - start, 3))
            return [(a["title"], a["paragraphs"]) for a in data["articles"]], meta
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache or an unreadable one: parse again

    try:
        import mwparserfromhell  # noqa: F401
    except ImportError:
        raise ImportError(
            "parsing the embedded default corpus needs mwparserfromhell. "
            f"Install it with: {EMBEDDED_INSTALL}"
        ) from None
    articles = [(title, _article_paragraphs(text)) for title, text in _iter_articles(path)]
    articles = [(t, ps) for t, ps in articles if ps]
    meta.update(cache_hit=False, seconds=round(time.perf_counter() - start, 3))
    payload = {
        "source": _EMBEDDED_FILE,
        "sha256": sha,
        "parser_version": _PARSER_VERSION,
        "articles": [{"title": t, "paragraphs": ps} for t, ps in articles],
    }
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, ensure_ascii=False)
            os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the cache is plain public text
            os.replace(tmp, cache)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        meta["cache_error"] = (
            f"could not write the cache ({exc}); set JAXMEM_CACHE to a writable folder"
        )
    return articles, meta


def _embedded_source() -> _Source:
    articles, meta = _embedded_articles()
    units = [_Unit(p, title) for title, paragraphs in articles for p in paragraphs]
    source = _Source(
        "wiki-gensim",
        f"embedded:{_EMBEDDED_DIST}=={importlib.metadata.version(_EMBEDDED_DIST)}:{_EMBEDDED_FILE}",
        _FORMATS["wiki-gensim"],
        {"all": units},
        grouped_by="article",
        extra={"cache": meta},
    )
    if "cache_error" in meta:
        source.warnings.append(meta["cache_error"])
    return source


# ---------------------------------------------------------------------------
# Resolving name_or_path
# ---------------------------------------------------------------------------


def _resolve(name_or_path: str, text_column: str) -> _Source:
    key = name_or_path.strip()
    prefix, sep, rest = key.partition(":")
    if sep and _ALIASES.get(prefix.lower()) in ("wikitext", "webnlg", "xsum") and rest:
        kind, path = _ALIASES[prefix.lower()], Path(rest).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist (from {name_or_path!r}); {_OFFLINE_HINT[kind]}"
            )
        return _local_source(path, kind, text_column)
    if key.lower() in _ALIASES:
        kind = _ALIASES[key.lower()]
        return _embedded_source() if kind == "wiki-gensim" else _hub_source(kind)
    path = Path(key).expanduser()
    if path.exists():
        return _local_source(path, None, text_column)
    if os.sep in key or "/" in key or path.suffix:
        raise FileNotFoundError(
            f"{path} does not exist. Pass an existing file or directory, "
            "or one of the corpus names "
            f"{', '.join(KNOWN_CORPORA)}"
        )
    raise ValueError(
        f"unknown corpus {name_or_path!r}; known corpora: {', '.join(KNOWN_CORPORA)} "
        "(or a local path; prefix it as 'wikitext:DIR', 'webnlg:DIR' or 'xsum:PATH' "
        "to force a format)"
    )


# ---------------------------------------------------------------------------
# Splitting and sampling
# ---------------------------------------------------------------------------


def _rng(seed: int, stream: int) -> np.random.Generator:
    # One independent stream per decision, so e.g. changing n_nonmembers does
    # not change which texts become members.
    return np.random.default_rng([seed, stream])


def _split_by_group(
    units: list[_Unit], target: int, rng: np.random.Generator
) -> tuple[list[_Unit], list[_Unit], list[str]]:
    """Move whole random groups to held-out until it has ``target`` units."""
    sizes = Counter(u.group for u in units)
    groups = list(sizes)  # order of first appearance, so the split is reproducible
    held: set[str] = set()
    count = 0
    for g in rng.permutation(len(groups)):
        if count >= target or len(held) >= len(groups) - 1:  # always leave train one group
            break
        held.add(groups[g])
        count += sizes[groups[g]]
    train = [u for u in units if u.group not in held]
    heldout = [u for u in units if u.group in held]
    return train, heldout, [g for g in groups if g in held]


def _sample(items: list, n: int | None, rng: np.random.Generator) -> list:
    order = rng.permutation(len(items))
    return [items[k] for k in (order if n is None else order[:n])]


def _check_size(value: Any, name: str, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"{name} must be an integer >= {minimum} (or None for the default), got {value!r}"
        )


def _pools(
    source: _Source, splits: dict[str, list[_Unit]], want: dict, seed: int, warnings: list[str]
) -> tuple[list[_Unit], list[_Unit], list[_Unit] | None, dict, int]:
    """Train pool, held-out pool (non-member candidates) and validation pool.

    The validation pool is None when validation is carved from held-out.
    Also returns a description for ``info["split"]`` and the number of
    repeated texts dropped when splits are merged into one pool.
    """
    n_repeats = 0
    split_info: dict[str, Any] = {
        "available_splits": sorted(splits),
        "grouped_by": source.grouped_by,
    }
    if source.grouped_by:
        split_info["groups"] = len({u.group for v in splits.values() for u in v})
    val_pool: list[_Unit] | None = splits.get("validation")
    if "train" in splits and "test" in splits:
        train_pool, heldout = splits["train"], splits["test"]
        split_info["strategy"] = "given splits: train -> train/members, test -> non-members" + (
            ", validation -> validation"
            if val_pool
            else ", validation carved from test (disjoint from non-members)"
        )
    elif "train" in splits and "validation" in splits:
        train_pool, heldout, val_pool = splits["train"], splits["validation"], None
        split_info["strategy"] = (
            "no test split: non-members and validation both from the validation split (disjoint)"
        )
        warnings.append(
            "no test split found; non-members and validation are disjoint parts of the "
            "validation split"
        )
    else:
        units, dropped = _dedupe(
            [u for k in ("all", "train", "validation", "test") for u in splits.get(k, [])]
        )
        n_repeats += dropped
        if source.grouped_by and len({u.group for u in units}) < 2:
            units = [_Unit(u.text, f"unit:{k}") for k, u in enumerate(units)]
            warnings.append(f"only one {source.grouped_by} in the data; split by example instead")
        target = min(want["n_validation"] + want["n_nonmembers"], len(units) // 2)
        train_pool, heldout, held_groups = _split_by_group(units, target, _rng(seed, 0))
        val_pool = None
        unit = source.grouped_by or "example"
        split_info["strategy"] = (
            f"single pool of {len(units)} examples split by {unit} (seeded): "
            f"{len(train_pool)} train-side, {len(heldout)} held-out "
            "(validation and non-members, disjoint)"
        )
        if source.grouped_by:
            split_info["heldout_groups"] = held_groups
        if source.name in PAPER_SIZES:
            present = " + ".join(sorted(splits))
            warnings.append(
                f"only the {present} split is available ({source.origin}); it was split by "
                f"{unit} into train / validation / held-out with the seed, so sizes are far "
                "below the paper's Table 1"
            )
    if not heldout:
        raise ValueError(
            f"{source.origin}: no held-out examples for non-members; the data is too small to split"
        )
    return train_pool, heldout, val_pool, split_info, n_repeats


def load_corpus(
    name_or_path: str | os.PathLike,
    *,
    n_train: int | None = None,
    n_validation: int | None = None,
    n_members: int | None = None,
    n_nonmembers: int | None = None,
    seed: int = 0,
    text_column: str = "text",
    min_chars: int | None = None,
    near_dup_threshold: float | None = 0.8,
    strict: bool = False,
) -> Corpus:
    """Load a corpus and draw its train / validation / member / non-member sets.

    Members are a seeded random subset of ``train``; non-members a seeded
    random subset of held-out data (the test split), with every candidate
    that exactly or nearly duplicates a training text dropped and replaced
    by the next candidate. Validation texts come from the validation split,
    or from held-out data disjoint from the non-members.

    Sources with a single split (a lone file, the embedded corpus, a local
    WikiText copy with only ``wiki.test.raw``) are split into train and
    held-out by group: whole articles (WikiText, Wikipedia) or whole triple
    sets (WebNLG) go to one side, so a member and a non-member never share
    an article. Held-out gets ``n_validation + n_nonmembers`` units, but at
    most half the data; when that caps it, validation and non-members share
    it in proportion to the request (a default validation size gets what the
    non-members leave).

    Args:
        name_or_path: A name from :data:`KNOWN_CORPORA`, ``"wikitext:DIR"``,
            ``"webnlg:DIR"``, ``"xsum:PATH"``, or a local file / directory.
        n_train: Fine-tuning examples. Default: Table 1 of the paper
            (:data:`PAPER_SIZES`); 1,000 for the embedded corpus; all of
            the train split for other local data.
        n_validation: Validation examples. Default: up to 500 (200 for the
            embedded corpus); a default that the data cannot fill is cut
            quietly, an explicit request is not.
        n_members: Members, drawn from ``train``. Default as ``n_train``
            (500 embedded, 1,000 other local data).
        n_nonmembers: Non-members, drawn from held-out data. Default as
            ``n_members``.
        seed: Seed for every random choice; the same seed gives the same
            corpus.
        text_column: Column holding the text in generic JSON / CSV / parquet
            files (WikiText, WebNLG and XSum use their own columns).
        min_chars: Drop examples shorter than this many characters. Default:
            200 for the embedded corpus (its paragraphs), else 1.
        near_dup_threshold: Jaccard threshold on word 5-gram shingles above
            which a held-out text counts as a near duplicate of a training
            text (see :func:`find_overlaps`). ``None`` drops exact duplicates
            only.
        strict: Raise instead of warning when a requested (or Table 1
            default) size cannot be met.

    Returns:
        The :class:`Corpus`.

    Raises:
        ValueError: Unknown corpus name, bad argument, empty corpus, missing
            text column, sizes not met under ``strict=True``, or held-out data
            that duplicates the training data entirely.
        FileNotFoundError: A path that does not exist or holds no data files.
        ImportError: ``"default"`` without gensim / mwparserfromhell.
        RuntimeError: A Hub dataset that cannot be downloaded (the message
            says how to pass a local copy instead).

    Example:
        >>> c = load_corpus("wikitext:../shared/data/wikitext-2-raw",  # test split only
        ...                 n_train=900, n_validation=100, n_members=400, n_nonmembers=400)
        >>> c.info["actual"]
        {'n_train': 900, 'n_validation': 100, 'n_members': 400, 'n_nonmembers': 400}
    """
    for value, name, minimum in (
        (n_train, "n_train", 1),
        (n_validation, "n_validation", 0),
        (n_members, "n_members", 1),
        (n_nonmembers, "n_nonmembers", 1),
        (min_chars, "min_chars", 0),
    ):
        _check_size(value, name, minimum)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if near_dup_threshold is not None:
        _check_threshold(near_dup_threshold)
    if not isinstance(text_column, str) or not text_column:
        raise ValueError(f"text_column must be a non-empty column name, got {text_column!r}")

    source = _resolve(os.fspath(name_or_path), text_column)
    warnings = list(source.warnings)

    # ----- sizes -----
    defaults = dict(
        _EMBEDDED_SIZES
        if source.name == "wiki-gensim"
        else PAPER_SIZES.get(source.name, _LOCAL_SIZES)
    )
    defaults.setdefault("n_validation", _DEFAULT_VALIDATION)
    given = {
        "n_train": n_train,
        "n_validation": n_validation,
        "n_members": n_members,
        "n_nonmembers": n_nonmembers,
    }
    want = {k: int(v) if v is not None else defaults[k] for k, v in given.items()}
    explicit = sorted(k for k, v in given.items() if v is not None)
    soft = {"n_validation"} - set(explicit)  # a default validation size may be cut quietly

    # ----- filtering -----
    if min_chars is None:
        min_chars = _EMBEDDED_MIN_CHARS if source.name == "wiki-gensim" else 1
    total_before = sum(len(v) for v in source.splits.values())
    splits = {
        k: [u for u in v if len(u.text) >= max(min_chars, 1)] for k, v in source.splits.items()
    }
    splits = {k: v for k, v in splits.items() if v}
    n_short = total_before - sum(len(v) for v in splits.values())
    # Repeated texts (WikiText has many " <formula> " lines) would let one text
    # be a member and a non-member at once, or a non-member twice.
    n_repeats = 0
    for k in splits:
        splits[k], dropped = _dedupe(splits[k])
        n_repeats += dropped
    if not splits:
        raise ValueError(
            f"{source.origin}: no examples left ({total_before} read, "
            f"{n_short} shorter than min_chars={min_chars}); "
            + (
                "lower min_chars"
                if total_before
                else f"check the files and text_column={text_column!r}"
            )
        )

    train_pool, heldout, val_pool, split_info, n_merged = _pools(
        source, splits, want, seed, warnings
    )
    n_repeats += n_merged

    # ----- train and members -----
    train_units = _sample(train_pool, want["n_train"], _rng(seed, 1))
    train = [u.text for u in train_units]
    member_idx = [int(k) for k in _rng(seed, 2).permutation(len(train))[: want["n_members"]]]
    members = [train[k] for k in member_idx]

    # ----- non-members (and carved validation), dropping duplicates of train -----
    if val_pool is None:
        k_want, v_want = want["n_nonmembers"], want["n_validation"]
        if len(heldout) < k_want + v_want:  # too little: share held-out
            if "n_validation" in soft:  # a default validation size takes what is left
                k_want = min(k_want, len(heldout))
            else:  # both requested: in proportion
                k_want = min(k_want, max(1, round(len(heldout) * k_want / (k_want + v_want))))
            v_want = min(v_want, len(heldout) - k_want)
    else:
        k_want, v_want = want["n_nonmembers"], None
    candidates = _sample(heldout, None, _rng(seed, 3))
    picked, overlap = _pick_nonmembers(
        train, set(member_idx), candidates, k_want + (v_want or 0), near_dup_threshold
    )
    nonmembers = [u.text for u in picked[:k_want]]
    if val_pool is None:
        validation = [u.text for u in picked[k_want : k_want + v_want]]
    else:
        # Validation perplexity must not be measured on training or non-member texts.
        taken = {_normalize(t) for t in train + nonmembers}
        usable = [
            u.text
            for u in _sample(val_pool, None, _rng(seed, 4))
            if _normalize(u.text) not in taken
        ]
        overlap["validation_dropped"] = len(val_pool) - len(usable)
        validation = usable[: want["n_validation"]]

    if candidates and not nonmembers:
        raise ValueError(
            f"all {overlap['checked']} non-member candidates are exact or near duplicates of "
            "training texts: the held-out data is the same as the training data. Check that "
            "the test split is not a copy of the train split"
            + ("" if near_dup_threshold is None else ", or raise near_dup_threshold")
        )

    # ----- report -----
    actual = {
        "n_train": len(train),
        "n_validation": len(validation),
        "n_members": len(members),
        "n_nonmembers": len(nonmembers),
    }
    shortfalls = []
    for key, got in actual.items():
        if want[key] is None or got >= want[key] or key in soft:
            continue
        reason = f"{key}: requested {want[key]}{'' if key in explicit else ' (default)'}, got {got}"
        if key == "n_nonmembers" and overlap["dropped"]:
            reason += f" ({overlap['dropped']} candidates dropped as duplicates of train)"
        shortfalls.append(reason)
    warnings.extend(f"{s}: the data has too few examples" for s in shortfalls)
    if overlap["dropped"]:
        warnings.append(
            f"dropped {overlap['dropped']} non-member candidates that duplicate training texts "
            f"({overlap['exact_train']} exact, {overlap['near_train']} near)"
        )
    if strict and shortfalls:
        raise ValueError(
            "strict=True and the data cannot meet the requested sizes: "
            + "; ".join(shortfalls)
            + ". Request smaller sizes or pass strict=False to accept them with a warning."
        )

    info = {
        "name": source.name,
        "source": source.origin,
        "format": source.format,
        "seed": int(seed),
        "requested": want,
        "explicit": explicit,
        "actual": actual,
        "pools": {
            "read": total_before,
            "dropped_short": n_short,
            "dropped_repeats": n_repeats,
            "train": len(train_pool),
            "heldout": len(heldout),
            "validation": None if val_pool is None else len(val_pool),
        },
        "min_chars": min_chars,
        "split": split_info,
        "overlap": overlap,
        "warnings": warnings,
        **source.extra,
    }
    return Corpus(source.name, train, validation, members, nonmembers, info)


def _pick_nonmembers(
    train: list[str],
    member_idx: set[int],
    candidates: list[_Unit],
    needed: int,
    threshold: float | None,
) -> tuple[list[_Unit], dict]:
    """First ``needed`` candidates that duplicate no training text, in order.

    Candidates are checked in chunks a little larger than what is still
    needed, so a large test split is not compared in full.
    """
    train_norm: dict[str, int] = {}
    for i, t in enumerate(train):
        train_norm.setdefault(_normalize(t), i)
    members_norm = {_normalize(train[i]) for i in member_idx}
    train_sh = [_shingles(t) for t in train] if threshold is not None else []

    picked: list[_Unit] = []
    report = {
        "threshold": threshold,
        "checked": 0,
        "dropped": 0,
        "exact_train": 0,
        "near_train": 0,
        "exact_members": 0,
        "near_members": 0,
        "examples": [],
    }
    pos = 0
    while len(picked) < needed and pos < len(candidates):
        chunk = candidates[
            pos : pos + (needed - len(picked)) + max(16, (needed - len(picked)) // 10)
        ]
        pos += len(chunk)
        near: dict[int, tuple[int, float]] = (
            {}
        )  # chunk index -> most similar (train index, similarity)
        near_member: set[int] = set()  # chunk indices near a member
        if threshold is not None:
            for i, j, sim in _overlaps_from_shingles(
                train_sh, [_shingles(u.text) for u in chunk], threshold
            ):
                if j not in near or sim > near[j][1]:
                    near[j] = (i, sim)
                if i in member_idx:
                    near_member.add(j)
        for j, unit in enumerate(chunk):
            if len(picked) >= needed:
                break
            report["checked"] += 1
            norm = _normalize(unit.text)
            if norm in train_norm:
                kind, i, sim, hits_member = "exact", train_norm[norm], 1.0, norm in members_norm
            elif j in near:
                kind, (i, sim), hits_member = "near", near[j], j in near_member
            else:
                picked.append(unit)
                continue
            report["dropped"] += 1
            report[f"{kind}_train"] += 1
            report[f"{kind}_members"] += int(hits_member)
            if len(report["examples"]) < _N_EXAMPLES:
                report["examples"].append(
                    {
                        "kind": kind,
                        "similarity": round(float(sim), 4),
                        "nonmember_candidate": unit.text[:200],
                        "train_text": train[i][:200],
                    }
                )
    return picked, report
