"""The three named dataset families: WikiText-2, WebNLG and XSum.

Each family turns its rows (local files or Hub splits alike) into
:class:`~jaxmem.data.units.Unit` examples, grouped so that one article or one
triple set never lands on both sides of a split. :data:`FORMATS` says, for
``info["format"]``, how one example of each corpus is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from jaxmem.data.files import columns, list_files, require_columns, split_of
from jaxmem.data.units import Source, Unit

__all__ = [
    "FORMATS",
    "WIKITEXT_RAW_RE",
    "wikitext_units",
    "wikitext_local",
    "webnlg_rows",
    "xsum_rows",
    "detect_kind",
]

FORMATS = {
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
    "infobox": (
        "'s | p1 | o1 && s | p2 | o2 => The p1 of s is o1. The p2 of s is o2.': up to 2 "
        "consecutive triples of one Wikipedia infobox (subject = article title, property = "
        "field name in camelCase, object = the value as plain text) joined by ' && ' as in "
        "WebNLG, then ' => ' and a template verbalisation"
    ),
    "wiki-gensim": (
        "one English Wikipedia paragraph per example, MediaWiki markup stripped "
        "(no references, templates, tables, file/category links, lists, headings, "
        "or References / External links / Further reading / See also sections)"
    ),
}

WIKITEXT_RAW_RE = re.compile(r"^wiki\.(train|valid|test)\.raw$")


# ----- WikiText -----


def _is_heading(line: str) -> bool:
    s = line.strip()
    return len(s) >= 3 and s.startswith("= ") and s.endswith(" =")


def wikitext_units(lines: Iterable[str], split: str) -> list[Unit]:
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
        units.append(Unit(s, article))
    return units


def wikitext_local(path: Path) -> Source:
    raw = [p for p in list_files(path, (".raw",)) if WIKITEXT_RAW_RE.match(p.name)]
    splits: dict[str, list[Unit]] = {}
    if raw:
        for p in raw:
            split = {"train": "train", "valid": "validation", "test": "test"}[
                WIKITEXT_RAW_RE.match(p.name).group(1)
            ]
            if split in splits:
                raise ValueError(
                    f"{path}: more than one wiki.*.raw file for the {split} split; keep one copy"
                )
            text = p.read_text(encoding="utf-8", errors="replace")
            splits[split] = wikitext_units(
                text.split("\n"), split
            )  # not splitlines(): it also breaks on U+2028 etc.
        fmt_origin = "raw wiki.*.raw files"
    else:
        parquet = list_files(path, (".parquet",)) if path.is_dir() else []
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
            split = split_of(p, path if path.is_dir() else p.parent)
            if split is None:
                continue
            table = pq.read_table(p)
            if "text" not in table.column_names:
                raise ValueError(
                    f"{p}: missing column 'text'; columns present: {table.column_names}"
                )
            splits.setdefault(split, []).extend(
                wikitext_units(table.column("text").to_pylist(), split)
            )
        if not splits:
            raise FileNotFoundError(
                f"{path}: parquet files found, but none named train-* / validation-* / test-*"
            )
        fmt_origin = "Hub parquet layout"
    return Source(
        "wikitext",
        f"local:{path} ({fmt_origin})",
        FORMATS["wikitext"],
        splits,
        grouped_by="article",
    )


# ----- WebNLG -----


def _webnlg_unit(row: dict) -> Unit | None:
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
    return Unit(f"{linear} => {' '.join(str(text).split())}", f"triples:{linear}")


def webnlg_rows(rows: list[dict], where: str) -> list[Unit]:
    cols = columns(rows)
    if not ("triples" in cols and "text" in cols) and not ("input" in cols and "target" in cols):
        raise ValueError(
            f"{where}: not WebNLG data; expected columns 'triples' + 'text' or GEM's "
            "'input' + 'target', "
            f"columns present: {cols}"
        )
    return [u for row in rows if (u := _webnlg_unit(row)) is not None]


# ----- XSum -----


def xsum_rows(rows: list[dict], where: str) -> list[Unit]:
    require_columns(
        rows, ("document", "summary"), where, "XSum files need a 'document' and a 'summary' column."
    )
    units = []
    for k, row in enumerate(rows):
        doc, summary = (str(row.get(c) or "").strip() for c in ("document", "summary"))
        if doc and summary:
            units.append(Unit(f"{doc}\nSummary: {summary}", f"doc:{row.get('id', k)}:{k}"))
    return units


def detect_kind(rows: list[dict]) -> str:
    """``"webnlg"``, ``"xsum"`` or ``"local"`` from the columns of structured rows."""
    cols = columns(rows)
    if "triples" in cols and "text" in cols:
        return "webnlg"
    if "input" in cols and "target" in cols and rows and isinstance(rows[0].get("input"), list):
        return "webnlg"
    if "document" in cols and "summary" in cols:
        return "xsum"
    return "local"
