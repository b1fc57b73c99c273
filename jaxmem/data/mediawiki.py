"""MediaWiki markup: pages of an XML dump, and prose paragraphs of an article.

:func:`iter_articles` streams the real articles (namespace 0, no redirects)
of a ``.xml.bz2`` dump; :func:`article_paragraphs` strips an article's
markup down to prose paragraphs, dropping references, templates, tables,
file / category links, lists, headings and end sections such as References
or External links. Parsing uses mwparserfromhell, imported only when needed.
"""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable

__all__ = ["PARSER_VERSION", "iter_articles", "article_paragraphs"]

# Bump whenever the cleaning changes, so caches of parsed paragraphs are ignored.
PARSER_VERSION = 1

_DROP_TAGS = {
    "ref",
    "references",
    "math",
    "gallery",
    "imagemap",
    "timeline",
    "score",
    "syntaxhighlight",
    "source",
    "pre",
    "table",
    "graph",
    "chem",
    "ce",
    "hiero",
    "templatedata",
    "nowiki",
    "code",
    "poem",
    "mapframe",
    "noinclude",
    "includeonly",
}
_SKIP_SECTIONS = {
    "references",
    "external links",
    "further reading",
    "see also",
    "notes",
    "bibliography",
    "sources",
    "footnotes",
    "citations",
    "notes and references",
    "works cited",
    "literature",
}
# File/Image/Category links and interlanguage links ([[de:...]]) are not prose.
_NON_PROSE_LINK = re.compile(r"^\s*:?\s*(file|image|category|media|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)
_REF_RE = re.compile(r"<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>", re.S | re.I)
_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_RESIDUE_RE = re.compile(r"\{\{|\}\}|\[\[|\]\]|</?[a-zA-Z][^>]*>|https?://|\|")
# Sentinels survive strip_code (plain Text nodes) and mark structure that
# strip_code would otherwise erase: headings, list items and wiki links.
_HEAD, _HSEP, _LIST, _LINK_OPEN, _LINK_CLOSE = "\x01", "\x02", "\x03", "\x04", "\x05"
_LINK_ONLY_RE = re.compile(
    f"[\\s,;·•|\\-–]*({_LINK_OPEN}[^{_LINK_CLOSE}]*{_LINK_CLOSE}[\\s,;·•|\\-–]*)+"
)


def iter_articles(path: Path) -> Iterable[tuple[str, str]]:
    """(title, wikitext) of every real article: namespace 0, not a redirect."""
    with bz2.open(path, "rb") as fh:
        for _, elem in ET.iterparse(fh, events=("end",)):
            if elem.tag.rsplit("}", 1)[-1] != "page":
                continue
            fields, redirect = {}, False
            for child in elem.iter():
                tag = child.tag.rsplit("}", 1)[-1]
                if tag == "redirect":
                    redirect = True
                elif tag in ("ns", "title", "text") and tag not in fields:
                    fields[tag] = child.text or ""
            text = fields.get("text", "")
            if (
                fields.get("ns") == "0"
                and not redirect
                and not text.lstrip().upper().startswith("#REDIRECT")
            ):
                yield fields.get("title", ""), text
            elem.clear()  # keep memory flat


def _prune(code, nodes_mod) -> None:
    """Drop non-prose nodes in place and mark structure with sentinels."""
    kept = []
    for node in code.nodes:
        if isinstance(node, (nodes_mod.Comment, nodes_mod.Template, nodes_mod.Argument)):
            continue
        if isinstance(node, nodes_mod.Tag):
            tag = str(node.tag).strip().lower()
            if tag in _DROP_TAGS:
                continue
            if tag in ("li", "dd", "dt") and node.wiki_markup:
                kept.append(nodes_mod.Text(_LIST))
                continue
            if node.contents is not None:
                _prune(node.contents, nodes_mod)
        elif isinstance(node, nodes_mod.Wikilink):
            if _NON_PROSE_LINK.match(str(node.title)):
                continue
            label = node.text if node.text is not None else node.title
            _prune(label, nodes_mod)
            text = label.strip_code(normalize=True, collapse=True)
            kept.append(nodes_mod.Text(f"{_LINK_OPEN}{text}{_LINK_CLOSE}"))
            continue
        elif isinstance(node, nodes_mod.Heading):
            _prune(node.title, nodes_mod)
            kept.append(
                nodes_mod.Text(f"\n{_HEAD}{node.level}{_HSEP}{node.title.strip_code().strip()}\n")
            )
            continue
        elif isinstance(node, nodes_mod.ExternalLink):
            if not node.brackets or node.title is None:
                continue  # a bare URL is not prose
            _prune(node.title, nodes_mod)
        kept.append(node)
    code.nodes = kept


def article_paragraphs(wikitext: str) -> list[str]:
    """Prose paragraphs of one article, markup stripped."""
    import mwparserfromhell
    from mwparserfromhell import nodes as nodes_mod

    # Refs and comments first by regex: the parser leaves some malformed ones as text.
    wikitext = _COMMENT_RE.sub("", _REF_RE.sub("", wikitext))
    code = mwparserfromhell.parse(wikitext)
    _prune(code, nodes_mod)
    paragraphs, skip_level = [], None
    for line in code.strip_code(normalize=True, collapse=False).split("\n"):
        s = line.strip()
        if s.startswith(_HEAD):
            level, title = s[1:].split(_HSEP, 1)
            title = title.replace(_LINK_OPEN, "").replace(_LINK_CLOSE, "").strip().lower()
            if skip_level is not None and int(level) <= skip_level:
                skip_level = None
            if skip_level is None and title in _SKIP_SECTIONS:
                skip_level = int(level)
            continue
        if (
            skip_level is not None
            or not s
            or s[0] in _LIST + "*#:;|!{}="
            or _LINK_ONLY_RE.fullmatch(s)
        ):
            continue
        p = " ".join(s.replace(_LINK_OPEN, "").replace(_LINK_CLOSE, "").split())
        # Removed templates leave "( ; , " and " ," behind.
        p = re.sub(r"\(\s*[;,]?\s*\)\s?", "", p)
        p = re.sub(r"\(\s*[;,]\s*", "(", p)
        p = re.sub(r"\s+([,.;:])", r"\1", p).strip()
        if p and not _RESIDUE_RE.search(p):
            paragraphs.append(p)
    return paragraphs

