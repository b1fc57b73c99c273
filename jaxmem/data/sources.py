"""Where a corpus comes from: a name, a prefixed path, or a local file or directory.

:func:`resolve` turns ``name_or_path`` into a :class:`~jaxmem.data.units.Source`
holding every example read, by split: the embedded corpus (prose, or the
infobox triples of :mod:`jaxmem.data.infobox`), a Hugging Face
Hub dataset (``datasets.load_dataset``, with a message on how to work
offline when it fails), or local files, whose family (WikiText, WebNLG,
XSum, generic text) is forced by a ``"wikitext:"`` / ``"webnlg:"`` /
``"xsum:"`` prefix or detected from file names and columns.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxmem.data.embedded import embedded_source
from jaxmem.data.files import (
    LOCAL_EXTS,
    list_files,
    read_records,
    read_txt,
    require_columns,
    split_of,
)
from jaxmem.data.formats import (
    FORMATS,
    WIKITEXT_RAW_RE,
    detect_kind,
    webnlg_rows,
    wikitext_local,
    wikitext_units,
    xsum_rows,
)
from jaxmem.data.infobox import infobox_source
from jaxmem.data.units import Source, Unit

__all__ = ["ALIASES", "KNOWN_CORPORA", "resolve"]

#: Corpus names accepted by :func:`jaxmem.data.load_corpus` (besides local paths).
KNOWN_CORPORA = ("default", "wiki-gensim", "infobox", "wikitext", "webnlg", "xsum")

#: Every spelling of a known corpus -> its canonical name (also how
#: :func:`jaxmem.identity.locate_corpus` tells a named corpus from a path).
ALIASES = {
    "default": "wiki-gensim",
    "wiki-gensim": "wiki-gensim",
    "infobox": "infobox",
    "wiki-infobox": "infobox",
    "wikitext": "wikitext",
    "wikitext-2": "wikitext",
    "wikitext-2-raw-v1": "wikitext",
    "webnlg": "webnlg",
    "web_nlg": "webnlg",
    "web_nlg_en": "webnlg",
    "xsum": "xsum",
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


def _local_source(path: Path, kind: str | None, text_column: str) -> Source:
    """Read a local file or directory; ``kind`` None means detect it."""
    if kind == "wikitext" or (
        kind is None
        and (
            WIKITEXT_RAW_RE.match(path.name)
            or (
                path.is_dir()
                and any(WIKITEXT_RAW_RE.match(p.name) for p in path.rglob("wiki.*.raw"))
            )
            or (path.is_dir() and any(path.rglob("wikitext-2-raw-v1")))
        )
    ):
        return wikitext_local(path)

    files = list_files(path, LOCAL_EXTS)
    if not files:
        raise FileNotFoundError(
            f"{path}: no data files found; expected {', '.join(LOCAL_EXTS)} files "
            "(or wiki.*.raw for WikiText)"
        )
    root = path if path.is_dir() else path.parent
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(split_of(f, root) or "all", []).append(f)
    warnings = []
    if "all" in by_split and len(by_split) > 1:
        ignored = [str(f.relative_to(root)) for f in by_split.pop("all")]
        warnings.append(f"ignored files not named train* / dev* / valid* / test*: {ignored[:5]}")

    splits: dict[str, list[Unit]] = {}
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
                paras, txt_mode = read_txt(f)
                splits.setdefault(split, []).extend(
                    Unit(p, f"{f.name}:{k}") for k, p in enumerate(paras) if p
                )
                detected = detected or "local"
                continue
            rows = read_records(f)
            if detected is None:
                detected = detect_kind(rows)
            if detected == "webnlg":
                units = webnlg_rows(rows, where)
            elif detected == "xsum":
                units = xsum_rows(rows, where)
            else:
                require_columns(
                    rows,
                    (text_column,),
                    where,
                    "Pass text_column=<one of those> to load_corpus "
                    f"(currently text_column={text_column!r}).",
                )
                units = [
                    Unit(str(row[text_column]).strip(), f"{f.name}:{k}")
                    for k, row in enumerate(rows)
                    if row.get(text_column) is not None
                ]
            splits.setdefault(split, []).extend(units)

    detected = detected or "local"
    if detected in FORMATS:
        fmt = FORMATS[detected]
    elif txt_mode:
        fmt = f"one example per {txt_mode} of the .txt file(s), surrounding whitespace stripped"
    else:
        fmt = f"one example per record: the {text_column!r} field, surrounding whitespace stripped"
    grouped = {"webnlg": "triple set"}.get(detected)
    return Source(detected, f"local:{path}", fmt, splits, grouped_by=grouped, warnings=warnings)


def _hub_source(name: str) -> Source:
    """Download ``name`` with ``datasets.load_dataset``; on failure, say how to work offline."""
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
    splits: dict[str, list[Unit]] = {}
    for split in ("train", "validation", "test"):
        if split not in ds:
            continue
        if name == "wikitext":
            splits[split] = wikitext_units(ds[split]["text"], split)
        else:
            rows = ds[split].to_list()
            splits[split] = (
                webnlg_rows(rows, origin) if name == "webnlg" else xsum_rows(rows, origin)
            )
    grouped = {"wikitext": "article", "webnlg": "triple set"}.get(name)
    return Source(name, origin, FORMATS[name], splits, grouped_by=grouped)


def resolve(name_or_path: str, text_column: str) -> Source:
    """The source ``name_or_path`` names, every example read (see :func:`load_corpus`)."""
    key = name_or_path.strip()
    prefix, sep, rest = key.partition(":")
    if sep and ALIASES.get(prefix.lower()) in ("wikitext", "webnlg", "xsum") and rest:
        kind, path = ALIASES[prefix.lower()], Path(rest).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist (from {name_or_path!r}); {_OFFLINE_HINT[kind]}"
            )
        return _local_source(path, kind, text_column)
    if key.lower() in ALIASES:
        kind = ALIASES[key.lower()]
        if kind == "wiki-gensim":
            return embedded_source()
        return infobox_source() if kind == "infobox" else _hub_source(kind)
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
