"""The embedded default corpus: English Wikipedia articles shipped in the gensim wheel.

The ``gensim==4.4.0`` wheel carries a shortened MediaWiki dump as test data
(about 4,100 paragraphs from 97 articles); gensim itself is never imported.
The dump is parsed once with :mod:`jaxmem.data.mediawiki` and cached as JSON
in ``$JAXMEM_CACHE`` (default ``~/.cache/jaxmem``), keyed by the dump's
sha256 and the parser version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
import time
from pathlib import Path

from jaxmem.data.formats import FORMATS
from jaxmem.data.mediawiki import PARSER_VERSION, article_paragraphs, iter_articles
from jaxmem.data.units import Source, Unit

__all__ = [
    "EMBEDDED_INSTALL",
    "MIN_CHARS",
    "cache_dir",
    "cached_parse",
    "embedded_articles",
    "embedded_origin",
    "embedded_source",
]

#: The one command that makes the embedded default corpus available.
EMBEDDED_INSTALL = "pip install gensim==4.4.0 --no-deps mwparserfromhell"

_EMBEDDED_DIST = "gensim"
_EMBEDDED_FILE = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
MIN_CHARS = 200  # default min_chars: drops captions and stubs, keeps paragraphs


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


def cache_dir() -> Path:
    """jaxmem's cache folder: ``$JAXMEM_CACHE``, default ``~/.cache/jaxmem``."""
    return Path(os.environ.get("JAXMEM_CACHE") or Path.home() / ".cache" / "jaxmem")


def cached_parse(kind: str, version: int, parse) -> tuple[list, dict]:
    """``parse(dump_path)``'s JSON-able list for the embedded dump, parsed once then cached.

    The cache file is keyed by the dump's sha256, ``kind`` and the parser ``version``, so a
    changed file or changed parsing rules never reuse stale results. Used for the prose
    paragraphs (:func:`embedded_articles`) and the infobox triples
    (:mod:`jaxmem.data.infobox`).

    Returns:
        The parsed items and a record of the cache (``file``, ``sha256``, ``cache``,
        ``cache_hit``, ``seconds``, and ``cache_error`` when the cache could not be written).
    """
    path = _embedded_path()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = cache_dir() / f"{kind}-{sha[:16]}-p{version}.items.json"
    meta = {"file": str(path), "sha256": sha, "cache": str(cache)}
    start = time.perf_counter()
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("sha256") == sha and data.get("parser_version") == version:
            meta.update(cache_hit=True, seconds=round(time.perf_counter() - start, 3))
            return data["items"], meta
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache or an unreadable one: parse again

    try:
        importlib.import_module("mwparserfromhell")  # only to fail early with the hint
    except ImportError:
        raise ImportError(
            "parsing the embedded default corpus needs mwparserfromhell. "
            f"Install it with: {EMBEDDED_INSTALL}"
        ) from None
    items = parse(path)
    meta.update(cache_hit=False, seconds=round(time.perf_counter() - start, 3))
    payload = {"source": _EMBEDDED_FILE, "sha256": sha, "parser_version": version, "items": items}
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
    return items, meta


def embedded_origin() -> str:
    """Where the embedded dump comes from, for ``info["source"]``."""
    return (
        f"embedded:{_EMBEDDED_DIST}=={importlib.metadata.version(_EMBEDDED_DIST)}:{_EMBEDDED_FILE}"
    )


def embedded_articles() -> tuple[list[tuple[str, list[str]]], dict]:
    """Articles of the embedded corpus as (title, paragraphs), parsed or cached."""

    def parse(path):
        articles = [(title, article_paragraphs(text)) for title, text in iter_articles(path)]
        return [{"title": t, "paragraphs": ps} for t, ps in articles if ps]

    items, meta = cached_parse("wiki-gensim", PARSER_VERSION, parse)
    return [(a["title"], a["paragraphs"]) for a in items], meta


def embedded_source() -> Source:
    articles, meta = embedded_articles()
    units = [Unit(p, title) for title, paragraphs in articles for p in paragraphs]
    source = Source(
        "wiki-gensim",
        embedded_origin(),
        FORMATS["wiki-gensim"],
        {"all": units},
        grouped_by="article",
        extra={"cache": meta},
    )
    if "cache_error" in meta:
        source.warnings.append(meta["cache_error"])
    return source

