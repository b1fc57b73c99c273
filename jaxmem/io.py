"""Writing and reading jaxmem's files: whole or not at all, and tables in any of five formats.

* :func:`atomic_write`: a file written into a temporary file beside it, then renamed, so a
  reader never sees half of it; :func:`read_json` names a corrupt file and how to recover.
* :func:`write_table` / :func:`markdown_table`: rows (dicts) as ``.csv``, ``.json``,
  ``.jsonl``, ``.md`` or ``.parquet`` (:data:`TABLE_FORMATS`).
* :func:`check_output_file`, :func:`check_table_path`, :func:`check_writable`: an output is
  checked before any work, so a long job never fails at its last step.

Where each file goes is :mod:`jaxmem.runs`'s business; this module only writes them.

Example:
    >>> read_json(atomic_write("results.json", [{"auc": 0.61}]))
    [{'auc': 0.61}]
    >>> print(write_table([{"method": "lora", "auc": 0.61}], "t.csv").read_text().strip())
    method,auc
    lora,0.61
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["TABLE_FORMATS", "atomic_write", "check_output_file", "check_table_path",
           "check_writable", "markdown_table", "read_json", "write_table"]


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], Any] | Any) -> Path:
    """Writes a file whole or not at all: into a temporary file beside it, then renamed.

    A reader (another process, a resumed job) never sees half a file, and a writer that fails
    leaves the old file, if any, as it was and no temporary file behind.

    Args:
      path: the file to write.
      data: text, bytes, a function that writes the file at the path it is given (parquet,
        figures), or anything else, written as JSON (indent 1).

    Returns:
      ``path``.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes) and not callable(data):
        data = json.dumps(data, indent=1).encode()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


TABLE_FORMATS = (".csv", ".json", ".jsonl", ".md", ".parquet")


def check_table_path(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Checks, before any work, that a table can be written at ``path``.

    Raises:
      ValueError: an unknown format (suffix).
      FileExistsError: the file exists and ``overwrite`` is False.
    """
    return check_output_file(path, option="--out", suffixes=TABLE_FORMATS, overwrite=overwrite)


def check_writable(folder: str | os.PathLike, option: str = "") -> None:
    """Checks, before any work, that the folder ``folder`` exists or can be made, and that
    this process may write in it (its nearest existing ancestor is a writable folder).

    Raises:
      NotADirectoryError: ``folder``, or a folder above it, is a file.
      PermissionError: that folder is not writable.
    """
    what = f"{option} {folder}" if option else str(folder)
    p = Path(os.path.abspath(folder))
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise NotADirectoryError(f"{what}: {p} is a file, not a folder; choose another place.")
    if not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(f"{what}: cannot write in {p} (permission denied); choose a "
                              "folder you can write to.")


def check_output_file(path: str | os.PathLike, *, option: str, suffixes: Sequence[str],
                      overwrite: bool = False) -> Path:
    """Checks, before any work, an output file given as ``option``: its suffix is one of
    ``suffixes``, it is not an existing file (unless ``overwrite``) nor a folder, and its
    folder exists or can be made, writable (:func:`check_writable`).

    Raises:
      ValueError: an unknown suffix.
      FileExistsError: the file exists and ``overwrite`` is False.
      IsADirectoryError, NotADirectoryError, PermissionError: it cannot be written there.
    """
    path = Path(path)
    if path.suffix not in suffixes:
        raise ValueError(f"{option} {path}: unknown output format {path.suffix!r}; use "
                         f"{', '.join(suffixes)}.")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; {option} takes a file name.")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} exists; choose another file for {option} or pass "
                              "--overwrite to replace it.")
    check_writable(path.parent, option)
    return path


def write_table(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Writes rows (dicts with the same keys) in the format the file's suffix names, atomically.

    Args:
      rows: the table; the first row's keys are the columns of a CSV or Markdown table.
      path: ``.csv``, ``.json`` (a list, indent 1), ``.jsonl``, ``.md`` or ``.parquet``; the
        folder is made if missing.

    Raises:
      ValueError: another suffix.
    """
    path = Path(path)
    rows = list(rows)
    if path.suffix == ".csv":
        f = io.StringIO()
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        data = f.getvalue()
    elif path.suffix == ".json":
        data = json.dumps(rows, indent=1)
    elif path.suffix == ".jsonl":
        data = "".join(json.dumps(r) + "\n" for r in rows)
    elif path.suffix == ".md":
        data = markdown_table(rows) + "\n"
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows)
        data = lambda tmp: pq.write_table(table, tmp)  # noqa: E731
    else:
        raise ValueError(f"unknown output format {path.suffix!r}; use .csv, .json, .jsonl, .md "
                         "or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, data)


def read_json(path: str | os.PathLike):
    """A JSON file jaxmem wrote; a corrupt one is named, with how to recover.

    Raises:
      ValueError: the file is not valid JSON (truncated or edited by hand).
    """
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is corrupt ({e}); it was truncated or edited. Restore it, or "
                         "start over in another folder (or with --overwrite).") from None


def markdown_table(rows: list[dict], floatfmt: str = ".4g") -> str:
    """A list of dicts as a GitHub Markdown table.

    Example:
        >>> print(markdown_table([{"method": "lora", "auc": 0.61234}]))
        | method | auc |
        |---|---|
        | lora | 0.6123 |
    """
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    fmt = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
