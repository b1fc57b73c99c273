"""Exact and near-duplicate detection between texts.

One normaliser, :func:`normalize` (lower-cased, whitespace collapsed),
decides exact duplicates everywhere: repeated texts within a corpus,
non-member candidates that copy a training text, validation texts that copy
either, and :func:`jaxmem.audit.check_member_sets`. :func:`text_key` is the
same key hashed to 16 bytes, for the checks that keep only keys (streamed
attacks, ReCaLL's prefix, DC-PDD's corpus, the LiRA / RMIA population). Near duplicates are pairs
of texts whose sets of word 5-gram shingles have a Jaccard similarity of at
least a threshold (:func:`find_overlaps`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from typing import Any, Iterable

from jaxmem.data.units import Unit

__all__ = [
    "normalize",
    "text_key",
    "dedupe",
    "drop_exact_copies",
    "shingles",
    "find_overlaps",
    "check_threshold",
    "pick_nonmembers",
]

SHINGLE = 5  # words per shingle for near-duplicate detection
N_EXAMPLES = 3  # overlap examples kept in info


def normalize(text: str) -> str:
    """The key under which two texts are exact duplicates: lower-cased, whitespace collapsed."""
    return " ".join(text.lower().split())


def text_key(text: str) -> bytes:
    """16 bytes standing for a text's :func:`normalize`\\ d form (exact-copy checks that keep
    only keys, not texts).

    Example:
        >>> text_key("A  b") == text_key("a b") != text_key("a c")
        True
    """
    return hashlib.blake2b(normalize(text).encode(), digest_size=16).digest()


def dedupe(units: list[Unit]) -> tuple[list[Unit], int]:
    """Keep the first of units with the same normalised text."""
    seen: set[str] = set()
    kept = []
    for u in units:
        key = normalize(u.text)
        if key not in seen:
            seen.add(key)
            kept.append(u)
    return kept, len(units) - len(kept)


def drop_exact_copies(texts: Iterable[str], reference: Iterable[str]) -> list[str]:
    """``texts``, in order, without those that exactly duplicate a text of ``reference``.

    Example:
        >>> drop_exact_copies(["A  b", "c"], ["a b"])
        ['c']
    """
    taken = {normalize(t) for t in reference}
    return [t for t in texts if normalize(t) not in taken]


def shingles(text: str) -> frozenset[int]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < SHINGLE:
        # Short texts still need to match their duplicates: use one shingle.
        return frozenset([hash(tuple(words))]) if words else frozenset()
    return frozenset(hash(tuple(words[i : i + SHINGLE])) for i in range(len(words) - SHINGLE + 1))


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
    check_threshold(threshold)
    return _overlaps_from_shingles(
        [shingles(t) for t in a], [shingles(t) for t in b], float(threshold)
    )


def check_threshold(threshold: Any) -> None:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0 < threshold <= 1
    ):
        raise ValueError(
            f"near-duplicate threshold must be a number in (0, 1], got {threshold!r}; "
            "0.8 is the usual choice (pass near_dup_threshold=None to only drop exact duplicates)"
        )


def pick_nonmembers(
    train: list[str],
    member_idx: set[int],
    candidates: list[Unit],
    needed: int,
    threshold: float | None,
) -> tuple[list[Unit], dict]:
    """First ``needed`` candidates that duplicate no training text, in order.

    Candidates are checked in chunks a little larger than what is still
    needed, so a large test split is not compared in full.
    """
    train_norm: dict[str, int] = {}
    for i, t in enumerate(train):
        train_norm.setdefault(normalize(t), i)
    members_norm = {normalize(train[i]) for i in member_idx}
    train_sh = [shingles(t) for t in train] if threshold is not None else []

    picked: list[Unit] = []
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
        near: dict[int, tuple[int, float]] = {}  # chunk index -> most similar (train index, sim)
        near_member: set[int] = set()  # chunk indices near a member
        if threshold is not None:
            for i, j, sim in _overlaps_from_shingles(
                train_sh, [shingles(u.text) for u in chunk], threshold
            ):
                if j not in near or sim > near[j][1]:
                    near[j] = (i, sim)
                if i in member_idx:
                    near_member.add(j)
        for j, unit in enumerate(chunk):
            if len(picked) >= needed:
                break
            report["checked"] += 1
            norm = normalize(unit.text)
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
            if len(report["examples"]) < N_EXAMPLES:
                report["examples"].append(
                    {
                        "kind": kind,
                        "similarity": round(float(sim), 4),
                        "nonmember_candidate": unit.text[:200],
                        "train_text": train[i][:200],
                    }
                )
    return picked, report
