"""Texts into token batches, the same way for every pass (scoring, training, gradient norms).

* :func:`encode_texts`: tokenize as the tokenizer does by default, cut to ``block_size``
  tokens (one warning counting the texts cut);
* :func:`truncate_texts`: each text as it is scored (the part its first ``block_size`` tokens
  cover), for the attacks that read the text itself (Zlib, Lowercase);
* :func:`length_buckets` / :func:`make_batches`: right-padded [B, L] batches with L from a few
  static lengths, so each length compiles once.

Example:
    >>> from jaxmem import tiny_model
    >>> _, _, tok = tiny_model()
    >>> seqs, truncated = encode_texts(tok, ["a cat", "a dog ran far"], block_size=128)
    >>> [len(s) for s in seqs], truncated.tolist()
    ([5, 13], [False, False])
    >>> length_buckets(128)
    (16, 32, 64, 128)
    >>> ids, mask, index = next(make_batches(seqs, 4, length_buckets(128)))
    >>> ids.shape, mask.sum(1).tolist(), index.tolist()  # the last rows are filler
    ((4, 16), [5, 13, 0, 0], [0, 1, -1, -1])
"""

from __future__ import annotations

import warnings
from typing import Iterator, Sequence

import numpy as np


def length_buckets(max_len: int, min_len: int = 16) -> tuple[int, ...]:
    """A few static padded lengths: powers of two from ``min_len`` up to ``max_len`` (inclusive)."""
    out, n = [], min_len
    while n < max_len:
        out.append(n)
        n *= 2
    return tuple(out + [max_len])


def make_batches(seqs: Sequence[Sequence[int]], batch_size: int, buckets: Sequence[int],
                 pad_id: int = 0, order: Sequence[int] | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Groups token sequences into right-padded [B, L] batches with L from ``buckets``.

    The one batch builder: scoring takes the default order, the trainer a shuffled one. Every
    batch has exactly ``batch_size`` rows (the last is filled with empty rows) so each bucket
    compiles once.

    Args:
      seqs: token id lists.
      batch_size: rows per batch.
      buckets: the padded lengths, ascending (see :func:`length_buckets`).
      pad_id: the token id of padding.
      order: which sequences, in which order, fill the batches (default: sorted by length, so
        each batch pads little).

    Yields:
      (input_ids int32 [B, L], attention_mask int32 [B, L], index int64 [B] into ``seqs``,
      -1 for filler rows).

    Raises:
      ValueError: a non-positive ``batch_size``, or a sequence longer than the last bucket.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if order is None:
        order = np.argsort([len(s) for s in seqs], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        longest = max(len(seqs[i]) for i in idx)
        length = next((b for b in buckets if b >= longest), None)
        if length is None:
            raise ValueError(f"A sequence of {longest} tokens exceeds the largest bucket "
                             f"{buckets[-1]}; truncate first (see encode_texts).")
        ids = np.full((batch_size, length), pad_id, np.int32)
        mask = np.zeros((batch_size, length), np.int32)
        index = np.full(batch_size, -1, np.int64)
        for row, i in enumerate(idx):
            ids[row, :len(seqs[i])] = seqs[i]
            mask[row, :len(seqs[i])] = 1
            index[row] = i
        yield ids, mask, index


def encode_texts(tokenizer, texts: Sequence[str], block_size: int,
                 on_overflow: str = "truncate") -> tuple[list[list[int]], np.ndarray]:
    """Tokenizes texts as the tokenizer does by default (BOS where the model expects it).

    Args:
      block_size: tokens per text; longer texts are cut to their first ``block_size`` tokens
        (``on_overflow="truncate"``, with one warning counting them) or refused (``"error"``).

    Returns:
      (token id lists, bool array marking truncated texts).
    """
    if on_overflow not in ("truncate", "error"):
        raise ValueError(f"on_overflow must be 'truncate' or 'error', got {on_overflow!r}.")
    seqs = [list(x) for x in tokenizer(list(texts))["input_ids"]]
    truncated = np.array([len(s) > block_size for s in seqs], bool)
    if truncated.any():
        msg = (f"{truncated.sum()} of {len(seqs)} texts are longer than {block_size} tokens "
               f"(longest {max(len(s) for s in seqs)})")
        if on_overflow == "error":
            raise ValueError(msg + "; raise block_size (up to the model's context) or pass "
                             "on_overflow='truncate'.")
        warnings.warn(msg + f"; they are truncated to their first {block_size} tokens.",
                      stacklevel=2)
        seqs = [s[:block_size] for s in seqs]
    return seqs, truncated


def truncate_texts(tokenizer, texts: Sequence[str], block_size: int) -> list[str]:
    """Each text as :func:`jaxmem.scoring.score_texts` scores it: the part its first
    ``block_size`` tokens cover.

    What text-level statistics of a scored text must read (zlib's compressed size, a model-free
    baseline on the scored texts): :func:`encode_texts` keeps a text's first ``block_size``
    tokens, so a longer text's tail never reaches the model.

    A text of at most ``block_size`` tokens comes back unchanged (the same string). A longer one
    comes back as the prefix of the original string that its kept tokens cover, so no decode
    round trip alters it (no added BOS/special tokens, no "<unk>", no whitespace clean-up):

    * tokenizers that give character offsets (Hugging Face fast tokenizers): the original text
      up to the end of the last character any kept token covers (special tokens such as BOS
      cover none);
    * other tokenizers (any callable returning ``{"input_ids": ...}``): the shortest prefix of
      the original text that tokenizes to exactly the kept token ids; failing that (a tokenizer
      that merges across the cut), ``tokenizer.decode`` of the kept ids without special tokens.

    Either way the result re-encodes to the scored token ids whenever the tokenizer tokenizes
    that prefix as it tokenized the text's start (true of word, character and byte-level BPE
    tokenizers at a token boundary).

    Args:
      tokenizer: the tokenizer :func:`score_texts` is given.
      texts: the texts.
      block_size: the ``block_size`` passed to :func:`jaxmem.scoring.score_texts` (its tokens
        per text).

    Returns:
      list of ``len(texts)`` strings.

    Raises:
      ValueError: a text cannot be cut (no offsets, no prefix that re-encodes, no ``decode``).

    Example:
        >>> from jaxmem import tiny_model
        >>> _, _, tok = tiny_model()  # one token per character
        >>> truncate_texts(tok, ["a short text", "a very long text indeed"], block_size=12)
        ['a short text', 'a very long ']
    """
    texts = list(texts)
    if not texts:
        return []
    seqs = [list(x) for x in tokenizer(texts)["input_ids"]]
    cut = [i for i, s in enumerate(seqs) if len(s) > block_size]
    out = list(texts)
    if not cut:
        return out
    offsets = None
    if getattr(tokenizer, "is_fast", False):
        try:
            enc = tokenizer([texts[i] for i in cut], return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
            if [list(enc["input_ids"][k]) for k in range(len(cut))] != [seqs[i] for i in cut]:
                offsets = None  # not the default tokenization: do not trust these offsets
        except (NotImplementedError, TypeError, ValueError, KeyError):
            offsets = None
    for k, i in enumerate(cut):
        if offsets is not None:
            ends = [int(e) for (s, e) in offsets[k][:block_size] if e > s]
            out[i] = texts[i][:max(ends, default=0)]
        else:
            out[i] = _scored_prefix(tokenizer, texts[i], seqs[i][:block_size])
    return out


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer([text])["input_ids"][0])


def _scored_prefix(tokenizer, text: str, kept: list[int], scan: int = 256) -> str:
    """The shortest prefix of ``text`` that tokenizes to ``kept`` (see :func:`truncate_texts`):
    a binary search for the first prefix with ``len(kept)`` tokens, then a forward scan (a
    word-level tokenizer reaches that count mid-word)."""
    n = len(kept)
    lo, hi = 0, len(text)  # the first j with len(ids(text[:j])) >= n, if counts grow with j
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_ids(tokenizer, text[:mid])) >= n:
            hi = mid
        else:
            lo = mid + 1
    for j in range(lo, min(len(text), lo + scan) + 1):
        ids = _ids(tokenizer, text[:j])
        if ids == kept:
            return text[:j]
        if len(ids) > n:
            break
    if hasattr(tokenizer, "decode"):
        special = set(getattr(tokenizer, "all_special_ids", None) or ())
        return tokenizer.decode([t for t in kept if t not in special],
                                clean_up_tokenization_spaces=False)
    raise ValueError(f"Cannot find the part of a text that its first {n} tokens cover: no "
                     "prefix of it tokenizes to them and the tokenizer has no decode.")


__all__ = ["encode_texts", "length_buckets", "make_batches", "truncate_texts"]
