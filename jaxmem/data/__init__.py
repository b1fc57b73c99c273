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
* ``"infobox"`` (alias ``"wiki-infobox"``): a structured corpus from the same
  dump, needing the same install: WebNLG-style examples of up to 2 triples
  ``"s | p | o && s | p | o => verbalisation"`` read from the articles'
  infoboxes (about 1,030 triples, 530 examples, 47 entities); split by
  entity, a subject joined with every subject its objects name (see
  :mod:`jaxmem.data.infobox`). Default sizes 256 / 32 / 128 / 128.
* any other path: a ``.txt`` (paragraphs separated by blank lines, or one
  example a line when there are none), ``.jsonl``, ``.json``, ``.csv``,
  ``.tsv`` or ``.parquet`` file with a ``text_column``, or a directory of
  such files. Files named ``train*`` / ``dev*`` / ``valid*`` / ``test*``
  are used as those splits. Local directories that look like WikiText,
  WebNLG or XSum are recognised without the prefix.

Default sizes follow Table 1 of the paper (see :data:`PAPER_SIZES`), capped
by what the data has. A cap is recorded in ``info["warnings"]``, or raises
``ValueError`` with ``strict=True``. Members and non-members are drawn from
one distribution (``split="auto"``): sources with a single split (or only a
test split) are split at random, example by example, so both sides draw on
the same articles; a model-free classifier (:mod:`jaxmem.blind`) checks it
on every attack.

Example:
    >>> corpus = load_corpus("default", n_train=200, n_members=100,
    ...                      n_nonmembers=100, n_validation=50)
    >>> len(corpus.members), len(corpus.nonmembers)
    (100, 100)
    >>> set(corpus.members) <= set(corpus.train)
    True

Modules:

* :mod:`jaxmem.data.sources`: resolve ``name_or_path`` and read every example
  (embedded corpus, Hugging Face Hub, local files).
* :mod:`jaxmem.data.formats`: WikiText / WebNLG / XSum rows to examples.
* :mod:`jaxmem.data.files`: readers for .txt / .jsonl / .json / .csv / .tsv /
  .parquet files, and :func:`read_text_file`.
* :mod:`jaxmem.data.embedded` and :mod:`jaxmem.data.mediawiki`: the
  embedded Wikipedia corpus and the MediaWiki markup cleaner;
  :mod:`jaxmem.data.infobox`: its infobox triples.
* :mod:`jaxmem.data.overlap`: the one text normaliser, exact and
  near-duplicate detection (:func:`find_overlaps`).
* :mod:`jaxmem.data.split`: default sizes, the seeded split and sampling into
  train / members / non-members / validation.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from jaxmem.data import embedded
from jaxmem.data.embedded import EMBEDDED_INSTALL
from jaxmem.data.files import read_text_file
from jaxmem.data.overlap import check_threshold, dedupe, find_overlaps
from jaxmem.data.sources import KNOWN_CORPORA, resolve
from jaxmem.data.split import (PAPER_SIZES, SPLITS, draw_heldout, draw_train, pools,
                               requested_sizes)
from jaxmem.data.units import Source, Unit

__all__ = [
    "Corpus",
    "load_corpus",
    "find_overlaps",
    "read_text_file",
    "KNOWN_CORPORA",
    "PAPER_SIZES",
    "SPLITS",
    "EMBEDDED_INSTALL",
]


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

    def describe(self) -> str:
        """What each set is, in a sentence or two for the user (printed by the CLI).

        A lone file is one pool split at random, so it says how to give one's own sets.

        Example:
            >>> from pathlib import Path
            >>> _ = Path("notes.txt").write_text("".join(  # 96 texts, a blank line between
            ...     f"Note {i}: the river rose {i % 7} feet on day {i}.\\n\\n" for i in range(96)))
            >>> print(load_corpus("notes.txt").describe())
            local:notes.txt: one pool of 96 texts split at random (data seed 0): 48 train (all 48
            are the members), 16 validation, 32 non-members (held out, never trained on). To
            train on all of a file, give a folder holding train.txt (every text trains), test.txt
            (the non-members) and optionally validation.txt.
        """
        info, split = self.info, self.info.get("split", {})
        n_train, n_members = len(self.train), len(self.members)
        who = (f"all {n_members} are the members" if n_members == n_train
               else f"{n_members} of them are the members")
        sets = (f"{n_train} train ({who}), {len(self.validation)} validation, "
                f"{len(self.nonmembers)} non-members (held out, never trained on)")
        design = split.get("design", "?")
        if design == "given":
            how = "its own train / test files (train trains, test gives the non-members)"
        else:
            pool = info.get("pools", {})
            n = pool.get("train", 0) + pool.get("heldout", 0)
            how = (f"one pool of {n} texts split {'at random' if design == 'random' else 'by ' + design}"
                   f" (data seed {info.get('seed', 0)})")
        label = info.get("source", self.name) if self.name == "local" else self.name
        text = f"{label}: {how}: {sets}."
        if self.name == "local" and design != "given":
            text += (" To train on all of a file, give a folder holding train.txt (every text "
                     "trains), test.txt (the non-members) and optionally validation.txt.")
        return text

    def __repr__(self) -> str:  # the lists are far too long to print
        return (
            f"Corpus(name={self.name!r}, train={len(self.train)}, "
            f"validation={len(self.validation)}, "
            f"members={len(self.members)}, nonmembers={len(self.nonmembers)}, "
            f"warnings={len(self.info.get('warnings', []))})"
        )



def load_corpus(
    name_or_path: str | os.PathLike,
    *,
    n_train: int | None = None,
    n_validation: int | None = None,
    n_members: int | None = None,
    n_nonmembers: int | None = None,
    seed: int = 0,
    split: str = "auto",
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
    held-out at random, example by example (``split="random"``, what
    ``"auto"`` picks there): whole articles on one side would leave a few
    long articles filling the held-out side, a topic shift that a model-free
    classifier detects (AUC 0.92 on the embedded corpus). Held-out gets ``n_validation + n_nonmembers`` units, but at
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
        seed: The data seed, of every random choice here; the same seed gives the
            same corpus. (Training has its own seed.)
        split: How members and non-members are separated (:data:`SPLITS`):
            ``"auto"`` (default) draws both from one distribution: at random
            from one pool (the embedded and infobox corpora, a lone file), the
            published train / test files where they exist, WebNLG by triple
            set within its train + dev files. ``"matched"`` (the members'
            and non-members' articles balanced exactly), ``"random"``,
            ``"given"``, ``"by-group"`` and ``"legacy-by-group"`` (whole
            articles held out until they hold enough texts: jaxmem's split up
            to 2026-12-06, topic-shifted on the embedded corpus) name a design
            outright.
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
        >>> from pathlib import Path
        >>> _ = Path("notes.jsonl").write_text("".join(  # one JSON object a line
        ...     f'{{"body": "Note {i}: the river rose {i % 7} feet on day {i}."}}\\n'
        ...     for i in range(100)))
        >>> c = load_corpus("notes.jsonl", text_column="body", n_train=40, n_validation=10,
        ...                 n_members=20, n_nonmembers=20)
        >>> c
        Corpus(name='local', train=40, validation=10, members=20, nonmembers=20, warnings=0)
        >>> c.members[0] in c.train, c.nonmembers[0] in c.train
        (True, False)
    """
    sizes = {
        "n_train": n_train,
        "n_validation": n_validation,
        "n_members": n_members,
        "n_nonmembers": n_nonmembers,
    }
    _check_arguments(sizes, min_chars, seed, near_dup_threshold, text_column)
    if split not in SPLITS:  # before the data is read
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    # 1. Resolve the source and read every example, by split.
    source = resolve(os.fspath(name_or_path), text_column)
    warnings = list(source.warnings)
    want, explicit, soft = requested_sizes(source.name, sizes)
    # 2. Clean: drop short and repeated texts.
    if min_chars is None:
        min_chars = embedded.MIN_CHARS if source.name == "wiki-gensim" else 1
    splits, pool_info = clean_splits(source, min_chars, text_column)
    # 3. Split into train and held-out pools (by group where a source has one split).
    train_pool, heldout, val_pool, split_info, n_merged = pools(
        source, splits, want, seed, warnings, split
    )
    pool_info["dropped_repeats"] += n_merged
    # 4. Sample train and members, then non-members and validation that copy no training text.
    ordered = split_info["design"] == "by-group"  # pools drawn one text per group first
    train, member_idx = draw_train(train_pool, want, seed, ordered)
    members = [train[k] for k in member_idx]
    member_groups = None
    if split_info["design"] == "matched":  # non-members match the members group for group
        group_of = {u.text: u.group for u in train_pool}
        member_groups = [group_of[t] for t in members]
    nonmembers, validation, overlap_info = draw_heldout(
        train, member_idx, heldout, val_pool, want, soft, seed, near_dup_threshold, ordered,
        member_groups, explicit
    )
    if source.grouped_by:  # how many groups each side draws on: a few means a topic shift
        group_of = {u.text: u.group for v in splits.values() for u in v}
        for side, texts in (("members", members), ("nonmembers", nonmembers)):
            split_info[f"{side}_groups"] = len({group_of.get(t) for t in texts})
    # 5. Report sizes against the request, and record how the corpus was made.
    actual = {
        "n_train": len(train),
        "n_validation": len(validation),
        "n_members": len(members),
        "n_nonmembers": len(nonmembers),
    }
    warnings += _size_warnings(want, explicit, soft, actual, overlap_info, strict)
    info = {
        "name": source.name,
        "source": source.origin,
        "format": source.format,
        "seed": int(seed),
        "split_design": split_info["design"],
        "requested": want,
        "explicit": explicit,
        "actual": actual,
        "pools": {
            **pool_info,
            "train": len(train_pool),
            "heldout": len(heldout),
            "validation": None if val_pool is None else len(val_pool),
        },
        "min_chars": min_chars,
        "split": split_info,
        "overlap": overlap_info,
        "warnings": warnings,
        **source.extra,
    }
    return Corpus(source.name, train, validation, members, nonmembers, info)


def _check_arguments(
    sizes: dict, min_chars: Any, seed: Any, near_dup_threshold: Any, text_column: Any
) -> None:
    minimums = {"n_train": 1, "n_validation": 0, "n_members": 1, "n_nonmembers": 1, "min_chars": 0}
    for name, value in {**sizes, "min_chars": min_chars}.items():
        minimum = minimums[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(
                f"{name} must be an integer >= {minimum} (or None for the default), got {value!r}"
            )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"The corpus split's seed (--data-seed, data_seed; load_corpus's seed) "
                         f"must be a non-negative integer, got {seed!r}")
    if near_dup_threshold is not None:
        check_threshold(near_dup_threshold)
    if not isinstance(text_column, str) or not text_column:
        raise ValueError(f"text_column must be a non-empty column name, got {text_column!r}")


def clean_splits(source: Source, min_chars: int, text_column: str
                 ) -> tuple[dict[str, list[Unit]], dict]:
    """Splits without texts shorter than ``min_chars`` or repeated; counts for ``info["pools"]``
    (also how :func:`jaxmem.reference_models.population_candidates` cleans a dataset)."""
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
        splits[k], dropped = dedupe(splits[k])
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
    return splits, {"read": total_before, "dropped_short": n_short, "dropped_repeats": n_repeats}


def _size_warnings(
    want: dict, explicit: list[str], soft: set[str], actual: dict, overlap: dict, strict: bool
) -> list[str]:
    """Warnings for sizes not met and dropped duplicates; under ``strict``, an error instead."""
    shortfalls = []
    for key, got in actual.items():
        if want[key] is None or got >= want[key] or key in soft:
            continue
        reason = f"{key}: requested {want[key]}{'' if key in explicit else ' (default)'}, got {got}"
        if key == "n_nonmembers" and overlap["dropped"]:
            reason += f" ({overlap['dropped']} candidates dropped as duplicates of train)"
        shortfalls.append(reason)
    warnings = [f"{s}: the data has too few examples" for s in shortfalls]
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
    return warnings
