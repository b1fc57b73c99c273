"""Readers for local data files: .txt, .jsonl, .json, .csv, .tsv and .parquet.

:func:`read_text_file` gives the texts of one file as they are, for scoring
or inspection. The helpers below it serve the corpus sources: rows of a
structured file as dicts, column checks whose errors list the columns
present, and which split (train / validation / test) a file's name says it
holds.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Iterable

__all__ = [
    "LOCAL_EXTS",
    "read_text_file",
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
        >>> _ = Path("/tmp/two.txt").write_text("First one.\\n\\nSecond one.\\n")
        >>> read_text_file("/tmp/two.txt")
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
