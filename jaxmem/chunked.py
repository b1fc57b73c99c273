"""Tables written chunk by chunk, resumable: :class:`ChunkedTable` and its progress marker.

What the streamed paths (:mod:`jaxmem.streaming`: ``jaxmem score``, ``jaxmem attack --members
M --nonmembers N``) write their rows with. Each chunk of rows is appended to ``<out>.partial``
(``.csv``, ``.jsonl``, ``.json``, ``.md``) or to a part file in ``<out>.parts/`` (``.parquet``),
made durable, and only then counted in ``<out>.progress.json``; the finished output is renamed
(or merged) into place at the end, so ``<out>`` exists only whole. A rerun with the same
settings resumes after the last recorded chunk (:func:`resume_point`); rows past the marker are
cut off. A ``<out>.partial`` or ``<out>.parts`` that no marker vouches for is not jaxmem's: it is
refused, never truncated.

Example:
    >>> rows = [{"index": i, "score": i / 10} for i in range(5)]
    >>> table = ChunkedTable("scores.csv", {"kind": "example"})
    >>> for chunk in chunked(rows, 2):
    ...     table.append(chunk, len(chunk))
    >>> table.finish()
    PosixPath('scores.csv')
    >>> open("scores.csv").read().splitlines()[:3]
    ['index,score', '0,0.0', '1,0.1']
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from jaxmem import sharding as sh
from jaxmem.io import atomic_write, markdown_table, read_json

STREAMED_FORMATS = (".csv", ".jsonl", ".json", ".md", ".parquet")


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def progress_path(out: str | os.PathLike) -> Path:
    """The marker beside an output: ``<out>.progress.json``."""
    out = Path(out)
    return out.with_name(out.name + ".progress.json")


def resume_point(out: str | os.PathLike, settings: dict, *, overwrite: bool = False) -> int:
    """How many texts an interrupted run with these ``settings`` already wrote to ``out``.

    Cheap and read-only, so the CLI calls it before loading a model.

    Returns:
      0 for a fresh start (no marker, or ``overwrite``), else the number of texts done.

    Raises:
      ValueError: the marker was written for another input or other settings.
    """
    marker = progress_path(out)
    if not marker.exists():
        _refuse_foreign_work(out)
        return 0
    if overwrite:
        return 0
    old = read_json(marker)
    want = json.loads(json.dumps(settings))  # tuples as lists, as the marker holds them
    diff = sorted(k for k in set(want) | set(old["settings"])
                  if want.get(k) != old["settings"].get(k))
    if diff:
        raise ValueError(
            f"{marker} records an interrupted run with another input or other settings "
            f"(differs in: {', '.join(diff)}). Rerun the same command to resume it, or pass "
            "--overwrite to start over.")
    return int(old["done"])


def _refuse_foreign_work(out: str | os.PathLike) -> None:
    """Refuses a ``<out>.partial`` or ``<out>.parts`` that no progress marker vouches for: a
    user's file, which jaxmem never writes over (a run of jaxmem writes its marker first).

    Raises:
      FileExistsError: naming the file and the fix.
    """
    out = Path(out)
    for work in (out.with_name(out.name + ".partial"), out.with_name(out.name + ".parts")):
        if work.is_symlink() or work.is_file() or (work.is_dir() and any(work.iterdir())):
            raise FileExistsError(
                f"{work} exists, but jaxmem did not write it (no {progress_path(out).name} "
                "beside it), and jaxmem does not write over files it did not write (not even "
                "with --overwrite). Move it away, or choose another output.")


class ChunkedTable:
    """A table written chunk by chunk, with a progress marker, and renamed into place at the end.

    ``.csv``, ``.jsonl``, ``.json`` and ``.md`` rows go to ``<out>.partial`` (bytes identical to
    :func:`jaxmem.io.write_table` of all the rows); ``.parquet`` chunks go to part files in
    ``<out>.parts/``, merged into one file (one row group per chunk) by :meth:`finish`. After
    each chunk the data is flushed and fsynced, then ``<out>.progress.json`` is replaced
    atomically with the count of texts done, the byte length (or part count) that holds them,
    and the caller's running ``state``. Only process 0 writes.

    Args:
      out: the final file.
      settings: what the run is (see :func:`resume_point`).
      overwrite: discard an interrupted run instead of resuming it.
    """

    def __init__(self, out: str | os.PathLike, settings: dict, *, overwrite: bool = False):
        self.out = Path(out)
        if self.out.suffix not in STREAMED_FORMATS:
            raise ValueError(f"{self.out}: unknown output format {self.out.suffix!r}; use "
                             f"{', '.join(STREAMED_FORMATS)}.")
        self.marker = progress_path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.settings = json.loads(json.dumps(settings))
        self.writer = sh.is_main_process()
        self.done = resume_point(out, settings, overwrite=overwrite)
        old = read_json(self.marker) if self.done else {}
        self.offset, self.n_parts = old.get("offset", 0), old.get("parts", 0)
        self.state = old.get("state", {})
        sh.sync("jaxmem-stream-read")  # every process has read the marker before it changes
        if self.writer:
            self._cut_back()
        sh.sync("jaxmem-stream-open")

    def _cut_back(self) -> None:
        """Drops whatever was written past the marker (a chunk cut short by a kill), and an
        old marker when starting over."""
        if not self.done:  # the marker first: whatever is written next is jaxmem's
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._mark()
        if self.out.suffix == ".parquet":
            self.parts.mkdir(parents=True, exist_ok=True)
            for p in self.parts.glob("part-*.parquet"):
                if int(p.stem.split("-")[1]) >= self.n_parts:
                    p.unlink()
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.done and (not self.partial.exists()
                          or self.partial.stat().st_size < self.offset):
            raise ValueError(f"{self.partial} is shorter than {self.marker} records: it was "
                             "changed or removed. Pass --overwrite to start over.")
        with open(self.partial, "ab") as fh:
            fh.truncate(self.offset)

    def _encode(self, rows: Sequence[dict], first: bool) -> bytes:
        suffix = self.out.suffix
        if suffix == ".csv":
            f = io.StringIO()
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            if first:
                w.writeheader()
            w.writerows(rows)
            return f.getvalue().encode()
        if suffix == ".jsonl":
            return "".join(json.dumps(r) + "\n" for r in rows).encode()
        if suffix == ".json":  # json.dumps(all_rows, indent=1), one row at a time
            items = ["\n".join(" " + ln for ln in json.dumps(r, indent=1).splitlines())
                     for r in rows]
            return (("[\n" if first else ",\n") + ",\n".join(items)).encode()
        lines = markdown_table(list(rows)).split("\n")
        return ("\n".join(lines if first else lines[2:]) + "\n").encode()

    def append(self, rows: Sequence[dict], n_texts: int, state: dict | None = None) -> None:
        """Writes one chunk's rows, then records ``n_texts`` more texts done (and ``state``)."""
        if state is not None:
            self.state = state
        self.done += n_texts
        if not self.writer:
            return
        if self.out.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist(list(rows))
            part = self.parts / f"part-{self.n_parts:06d}.parquet"
            atomic_write(part, lambda tmp: _write_synced(tmp, table, pq))
            self.n_parts += 1
        else:
            data = self._encode(rows, first=self.offset == 0)
            with open(self.partial, "r+b") as fh:
                fh.seek(self.offset)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())  # the rows are on disk before the marker says so
            self.offset += len(data)
        self._mark()

    def _mark(self) -> None:
        atomic_write(self.marker, json.dumps(
            {"settings": self.settings, "done": self.done, "offset": self.offset,
             "parts": self.n_parts, "state": self.state}, indent=1))

    def part_files(self) -> list[Path]:
        """The parquet parts written so far, in order."""
        return [self.parts / f"part-{i:06d}.parquet" for i in range(self.n_parts)]

    def read_columns(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Whole columns read back from the parts (parquet only): O(N) scalars, for metrics."""
        import pyarrow.parquet as pq

        cols = {k: [] for k in names}
        for p in self.part_files():
            t = pq.read_table(p, columns=list(names))
            for k in names:
                cols[k].append(t.column(k).to_numpy())
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}

    def finish(self, *, cleanup: bool = True) -> Path:
        """Puts the whole output in place: a rename, or the parts merged (atomically).

        Args:
          cleanup: also drop the marker and parts (:meth:`cleanup`). An attack keeps them until
            its metrics are written, so a kill in between resumes from the parts.
        """
        if self.writer:
            if self.out.suffix == ".parquet":
                atomic_write(self.out, self._merge)
            else:
                if self.out.suffix == ".json":
                    with open(self.partial, "ab") as fh:
                        fh.write(b"\n]")
                os.replace(self.partial, self.out)
                # the marker now describes a file that is gone; dropped even without cleanup
                self.marker.unlink(missing_ok=True)
        if cleanup:
            self.cleanup()
        sh.sync("jaxmem-stream-finished")
        return self.out

    def cleanup(self) -> None:
        """Removes the marker and the parquet parts (after :meth:`finish`)."""
        if not self.writer:
            return
        if self.parts.is_dir():
            for p in self.parts.glob("part-*.parquet"):  # jaxmem's parts, nothing else
                p.unlink()
            with contextlib.suppress(OSError):  # kept if it holds a file of someone else's
                self.parts.rmdir()
        self.marker.unlink(missing_ok=True)

    def _merge(self, tmp: Path) -> None:
        import pyarrow.parquet as pq

        writer = None
        for p in self.part_files():  # one part in memory at a time
            t = pq.read_table(p)
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema)
            writer.write_table(t.cast(writer.schema))
        if writer is not None:
            writer.close()


def _write_synced(tmp: Path, table, pq) -> None:
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())


__all__ = ["ChunkedTable", "STREAMED_FORMATS", "chunked", "progress_path", "resume_point"]
