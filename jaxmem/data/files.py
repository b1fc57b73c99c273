"""Readers for local data files: .txt, .jsonl, .json, .csv, .tsv and .parquet.

:func:`read_text_file` gives the texts of one file as they are, for scoring
or inspection; :func:`iter_text_file` gives the same texts one at a time, in
constant memory, for files too large to hold. The helpers below them serve
the corpus sources: rows of a structured file as dicts, column checks whose
errors list the columns present, and which split (train / validation / test)
a file's name says it holds.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Iterable, Iterator

__all__ = [
    "LOCAL_EXTS",
    "read_text_file",
    "iter_text_file",
    "read_txt",
    "read_records",
    "columns",
    "require_columns",
    "split_of",
    "list_files",
]

LOCAL_EXTS = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")
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


def decode_text(path: Path, *, strict: bool = False) -> str:
    """A text file's content as UTF-8. Lines that are not valid UTF-8 (or a binary file) are
    named: a warning with their count (they read with U+FFFD), or an error under ``strict``."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines = raw.split(b"\n")
    bad = 0
    for line in lines:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    kind = "binary data, not text" if b"\x00" in raw else "not valid UTF-8"
    msg = (f"{path}: {bad} of {len(lines)} lines are {kind}. Convert the file to UTF-8 (e.g. "
           "`iconv -f latin1 -t utf-8`)")
    if strict:
        raise ValueError(msg + ".")
    warnings.warn(msg + "; they are read with U+FFFD replacement characters (--strict refuses "
                  "such a file).", stacklevel=3)
    return raw.decode("utf-8", errors="replace")


def read_txt(path: Path, *, strict: bool = False) -> tuple[list[str], str]:
    """Paragraphs (blank-line separated) of a text file, or its lines if it has no blank lines."""
    text = decode_text(path, strict=strict).replace("\r\n", "\n")
    if re.search(r"\n[ \t]*\n", text.strip()):
        return [" ".join(p.split()) for p in re.split(r"\n[ \t]*\n", text)], "paragraph"
    return [line.strip() for line in text.split("\n")], "line"


def read_records(path: Path) -> list[dict]:
    """Rows of a .jsonl / .json / .csv / .tsv / .parquet file as dicts."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".csv", ".tsv"):  # line formats: the streaming reader, kept whole
        return list(_iter_records(path))
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
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(
        f"{path}: unsupported file type {suffix!r}; use one of {', '.join(LOCAL_EXTS)}"
    )


def columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows[:100]:
        seen.update(dict.fromkeys(row))
    return list(seen)


def require_columns(rows: list[dict], needed: Iterable[str], where: str, hint: str) -> None:
    present = columns(rows)
    missing = [c for c in needed if c not in present]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing}; columns present: {present}. {hint}"
        )


def split_of(path: Path, root: Path) -> str | None:
    """train / validation / test from a file's name or its folders below ``root``."""
    # Only names below root count: a root folder called e.g. "test_x" says nothing.
    parts = path.relative_to(root).parts if root in path.parents else (path.name,)
    for part in reversed(parts):
        m = _SPLIT_RE.match(part.lower())
        if m:
            return _SPLIT_NAMES[m.group(1)]
    return None


def list_files(path: Path, exts: Iterable[str]) -> list[Path]:
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


def read_text_file(path: str | os.PathLike, *, text_column: str = "text",
                   strict: bool = False) -> list[str]:
    """Texts of one local file, in file order, for scoring or inspection.

    No splitting, sampling or de-duplication: use :func:`jaxmem.data.load_corpus`
    for that. A ``.txt`` file gives one text per paragraph (blank-line
    separated; one per line if it has no blank lines); ``.jsonl``,
    ``.json``, ``.csv``, ``.tsv`` and ``.parquet`` files give the
    ``text_column`` of each row. Empty texts are skipped.

    Args:
        path: The file.
        text_column: Column holding the text in structured files.
        strict: Refuse a ``.txt`` file with lines that are not valid UTF-8 (default: a
            warning naming the file and how many lines).

    Returns:
        The texts, surrounding whitespace stripped.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: Unsupported suffix, missing column (the message lists
            the columns present) or no text at all.

    Example:
        >>> from pathlib import Path
        >>> _ = Path("two.txt").write_text("First one.\\n\\nSecond one.\\n")
        >>> read_text_file("two.txt")
        ['First one.', 'Second one.']
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file; pass a {', '.join(LOCAL_EXTS)} file")
    if path.suffix.lower() == ".txt":
        texts, _ = read_txt(path, strict=strict)
    else:
        rows = read_records(path)
        require_columns(
            rows, (text_column,), str(path), f"Pass the right text column (got {text_column!r})."
        )
        texts = [str(r[text_column]).strip() for r in rows if r.get(text_column) is not None]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"{path}: no non-empty texts")
    return texts


# ----------------------------------------------------------------------------- streaming readers

_BLANK_RE = re.compile(r"[ \t]*")
_HEAD = 100  # rows whose columns are checked, as require_columns() checks a whole file's


def _txt_lines(path: Path) -> Iterator[bytes]:
    """Lines of a file as bytes, split on ``\\n`` alone, with ``\\r\\n`` read as ``\\n`` (what
    :func:`read_txt` does to the whole text)."""
    with path.open("rb") as fh:
        for raw in fh:
            if raw.endswith(b"\n"):
                raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            yield raw


def _txt_layout(path: Path, *, strict: bool) -> tuple[bool, bool]:
    """One pass over a text file: (paragraph layout?, any line not valid UTF-8?).

    The layout rule is :func:`read_txt`'s: paragraphs if a blank line ([ \\t]* only) has text
    on both sides of it, else lines. Undecodable lines are warned about (or refused under
    ``strict``) with :func:`decode_text`'s message.
    """
    content = pending = paragraph = False
    bad = total = 0
    binary = False
    for raw in _txt_lines(path):
        total += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            binary = binary or b"\x00" in raw
            line = raw.decode("utf-8", errors="replace")
        if line.strip():
            paragraph = paragraph or pending
            content = True
        elif content and _BLANK_RE.fullmatch(line):
            pending = True
    if bad:
        kind = "binary data, not text" if binary else "not valid UTF-8"
        msg = (f"{path}: {bad} of {total} lines are {kind}. Convert the file to UTF-8 (e.g. "
               "`iconv -f latin1 -t utf-8`)")
        if strict:
            raise ValueError(msg + ".")
        warnings.warn(msg + "; they are read with U+FFFD replacement characters (--strict "
                      "refuses such a file).", stacklevel=4)
    return paragraph, bad > 0


def _iter_txt(path: Path, *, strict: bool) -> Iterator[str]:
    """:func:`read_txt`'s texts, one at a time: two passes over the file (layout, then texts),
    never the whole file in memory."""
    paragraph, _ = _txt_layout(path, strict=strict)
    lines = (raw.decode("utf-8", errors="replace") for raw in _txt_lines(path))
    if not paragraph:
        for line in lines:
            yield line.strip()
        return
    words: list[str] = []
    for line in lines:
        if _BLANK_RE.fullmatch(line):  # a paragraph break, as read_txt's split pattern
            yield " ".join(words)
            words = []
        else:
            words.extend(line.split())
    yield " ".join(words)


def _iter_records(path: Path) -> Iterator[dict]:
    """Rows of a .jsonl / .csv / .tsv / .parquet file one at a time (a .json file is read
    whole: a JSON document cannot be parsed in pieces without another dependency)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
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
                yield row
    elif suffix in (".csv", ".tsv"):
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # XSum documents exceed 128 kB
        with path.open(encoding="utf-8", newline="") as fh:
            yield from csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
    else:  # .json (whole) or an unsupported suffix (read_records names it)
        yield from read_records(path)


def iter_text_file(path: str | os.PathLike, *, text_column: str = "text",
                   strict: bool = False) -> Iterator[str]:
    """The texts of :func:`read_text_file`, one at a time, in constant memory.

    Same texts, order, validation and messages as :func:`read_text_file`: a ``.txt`` file is
    read twice (its layout, then its texts), ``.jsonl`` / ``.csv`` / ``.tsv`` line by line,
    ``.parquet`` by record batches of the text column alone; a ``.json`` file is parsed whole
    (JSON has no streaming parser in the standard library). The column check looks at the
    first 100 rows, as :func:`require_columns` does.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_text_file`, when iteration reaches the
            problem (a bad line far into a file is found there; run a counting pass first,
            e.g. :func:`jaxmem.streaming.scan_input`, to find it before any work).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file; pass a {', '.join(LOCAL_EXTS)} file")
    n = 0
    for text in _iter_raw_texts(path, text_column, strict):
        if text:
            n += 1
            yield text
    if not n:
        raise ValueError(f"{path}: no non-empty texts")


def _iter_raw_texts(path: Path, text_column: str, strict: bool) -> Iterator[str]:
    hint = f"Pass the right text column (got {text_column!r})."
    suffix = path.suffix.lower()
    if suffix == ".txt":
        yield from _iter_txt(path, strict=strict)
        return
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        present = pf.schema_arrow.names if pf.metadata.num_rows else []
        if text_column not in present:
            raise ValueError(f"{path}: missing column(s) {[text_column]}; columns present: "
                             f"{present}. {hint}")
        for batch in pf.iter_batches(batch_size=4096, columns=[text_column]):
            for value in batch.column(0).to_pylist():
                if value is not None:
                    yield str(value).strip()
        return
    rows = _iter_records(path)
    head = [row for _, row in zip(range(_HEAD), rows)]
    require_columns(head, (text_column,), str(path), hint)
    for row in itertools.chain(head, rows):
        if row.get(text_column) is not None:
            yield str(row[text_column]).strip()
