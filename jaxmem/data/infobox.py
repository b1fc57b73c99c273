"""A structured corpus that needs no network: WebNLG-style triples from Wikipedia infoboxes.

WebNLG's inputs are DBpedia triples, and DBpedia's triples are extracted from Wikipedia
infoboxes. This module does the same extraction on the embedded MediaWiki dump (the gensim
wheel's test data, :mod:`jaxmem.data.embedded`): every named field of an ``{{Infobox ...}}``
(or ``{{Taxobox}}`` / ``{{Speciesbox}}`` / ``{{Automatic taxobox}}``) becomes one triple
``(subject, property, object)``:

* subject: the article title, spaces as underscores (DBpedia / WebNLG: ``Abraham_Lincoln``);
* property: the field name in camelCase (``birth_place`` -> ``birthPlace``, DBpedia's
  spelling);
* object: the field's value as plain text. Common value templates are rendered (dates as
  ``YYYY-MM-DD`` as in WebNLG, ``{{convert|52,420|sqmi}}`` as ``52,420 sqmi``, list templates
  and ``<br>`` as ``, ``); other templates, references and comments are dropped.

Fields that hold no fact (images, captions, maps, flags, widths, the name again) and values
that are empty, longer than :data:`MAX_OBJECT_CHARS` or still hold markup are skipped.

One example is a few consecutive triples of one subject, linearised as in
:data:`~jaxmem.data.formats.FORMATS` ``"webnlg"``, followed by a template verbalisation (no
human text exists offline): ``"s | p1 | o1 && s | p2 | o2 => The p1 of s is o1. The p2 of s
is o2."``. The group that keeps examples on one side of every split is the *entity*: the
subject, merged with every other subject that one of its objects names (a wiki link to it or
its exact title), so ``Economy_of_Angola | country | Angola`` and Angola's own triples never
fall on both sides.

Example:
    >>> triples("Ada", "{{Infobox person|name=Ada|birth_place=[[London]]}}")
    [Triple(subject='Ada', property='birthPlace', object='London', links=('London',))]
"""

from __future__ import annotations

import re
from typing import NamedTuple

from jaxmem.data.embedded import cached_parse, embedded_origin
from jaxmem.data.formats import FORMATS
from jaxmem.data.mediawiki import iter_articles
from jaxmem.data.units import Source, Unit

__all__ = [
    "INFOBOX_FORMAT",
    "INFOBOX_VERSION",
    "MAX_OBJECT_CHARS",
    "TRIPLES_PER_EXAMPLE",
    "Triple",
    "triples",
    "entity_groups",
    "examples",
    "infobox_source",
]

# Bump whenever extraction changes, so cached triples are ignored.
INFOBOX_VERSION = 1
#: Longer values are prose or lists, not a DBpedia-like object.
MAX_OBJECT_CHARS = 100
#: Triples per example: WebNLG's triple sets have 1 to 7 triples (about 3 on average); 2 keeps
#: examples near 64 tokens with their verbalisation and gives enough examples from 51 infoboxes.
TRIPLES_PER_EXAMPLE = 2  # FORMATS["infobox"] says "up to 2"

INFOBOX_FORMAT = FORMATS["infobox"]


class Triple(NamedTuple):
    subject: str
    property: str
    object: str
    links: tuple[str, ...]  # targets of the wiki links in the value: entities it names


_BOX_RE = re.compile(r"^\s*(infobox\b|taxobox\s*$|speciesbox\s*$|automatic taxobox\s*$)", re.I)
# Fields that describe the box, not the subject: media, links to them, layout, the name
# repeated, coordinates (lat_d / longm ...), web addresses.
_SKIP_FIELD_RE = re.compile(
    r"image|img|caption|logo|seal|signature|map|flag|coat|symbol|width|size|upright|footnote"
    r"|module|embed|colou?r|website|url|pushpin|locator|coord|label_position|relief"
    r"|^(name|native_name|alt|(lat|long)[_a-z]?[dmsew]?|[a-z]*_?alt)$",
    re.I,
)
_MEDIA_RE = re.compile(r"\.(png|jpe?g|svg|gif|tiff?)\b|\b\d+px\b", re.I)
_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_REF_RE = re.compile(r"<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>", re.S | re.I)
_BR_RE = re.compile(r"<br\s*/?>", re.I)
_RESIDUE_RE = re.compile(r"\{\{|\}\}|\[\[|\]\]|</?[a-zA-Z][^>]*>|https?://|\|")
_NON_ENTITY_LINK = re.compile(r"^\s*:?\s*(file|image|category|media|wikt|wiktionary)\s*:", re.I)
_DATE_TEMPLATES = {
    "birth date", "death date", "birth date and age", "death date and age", "start date",
    "end date", "start date and age", "end date and age", "dts", "date", "birth-date",
    "film date", "release date", "start and end dates", "birth year and age", "death year and age",
}  # fmt: skip
_LIST_TEMPLATES = {"ubl", "unbulleted list", "hlist", "plain list", "plainlist", "flatlist",
                   "flat list", "bulleted list", "collapsible list", "nowrap", "nobr", "small",
                   "big", "url", "marriage", "abbr", "flag", "flagcountry", "flagu"}  # fmt: skip


def _property(key: str) -> str:
    """``birth_place`` / ``birth place`` -> ``birthPlace`` (DBpedia's property spelling)."""
    words = [w for w in re.split(r"[\s_]+", key.strip()) if w]
    return words[0].lower() + "".join(w[:1].upper() + w[1:] for w in words[1:]) if words else ""


def _positional(template) -> list:
    return [p.value for p in template.params if not p.showkey]


def _date(args: list[str]) -> str:
    """``['1809', '2', '12']`` -> ``1809-02-12``; a year alone stays a year."""
    nums = [a for a in args if re.fullmatch(r"\d{1,4}", a)]
    if len(nums) >= 3 and len(nums[0]) == 4:
        return f"{nums[0]}-{int(nums[1]):02d}-{int(nums[2]):02d}"
    if nums and len(nums[0]) == 4:
        return nums[0] + (f"-{int(nums[1]):02d}" if len(nums) == 2 else "")
    return ""


def _template_text(template) -> str:
    """Plain text for the value templates an infobox commonly holds; '' for the rest."""
    name = " ".join(str(template.name).split()).lower().replace("_", " ")
    args = [_plain(v) for v in _positional(template)]
    args = [a for a in args if a]
    if name in _DATE_TEMPLATES:
        return _date(args)
    if name in ("convert", "cvt"):
        return " ".join(args[:2])
    if name in ("lang", "native name", "transl"):
        return args[1] if len(args) > 1 else ""
    if name in ("circa", "c."):
        return f"c. {args[0]}" if args else ""
    if name in _LIST_TEMPLATES:
        if name in ("marriage", "abbr", "flag", "flagcountry", "flagu", "url"):
            args = args[:1]
        return ", ".join(args)
    return ""


def _plain(value) -> str:
    """A field value (mwparserfromhell Wikicode) as one line of plain text."""
    for link in value.filter_wikilinks(recursive=False):
        if _NON_ENTITY_LINK.match(str(link.title)):
            value.remove(link)  # an icon or a category, not part of the value
    for t in value.filter_templates(recursive=False):
        value.replace(t, _template_text(t))
    lines = value.strip_code(normalize=True, collapse=True).split("\n")
    items = [ln.strip().lstrip("*#:;").strip() for ln in lines]
    return ", ".join(" ".join(i.split()) for i in items if i).strip(" ,;")


def _links(value) -> tuple[str, ...]:
    out = []
    for link in value.filter_wikilinks():
        title = str(link.title).split("#")[0].strip()
        if title and not _NON_ENTITY_LINK.match(title):
            out.append(title[:1].upper() + title[1:])  # MediaWiki capitalises the first letter
    return tuple(dict.fromkeys(out))


def triples(title: str, wikitext: str) -> list[Triple]:
    """Every infobox triple of one article, in the order of its fields.

    Args:
        title: The article's title; the subject (spaces become underscores).
        wikitext: The article's MediaWiki markup.

    Returns:
        The triples of every top-level infobox / taxobox of the article.

    Example:
        >>> triples("X", "{{Infobox person|birth_date={{birth date|1809|2|12}}}}")[0].object
        '1809-02-12'
    """
    import mwparserfromhell

    wikitext = _BR_RE.sub("\n", _COMMENT_RE.sub("", _REF_RE.sub("", wikitext)))
    subject = "_".join(title.split())
    out = []
    for box in mwparserfromhell.parse(wikitext).filter_templates(recursive=False):
        if not _BOX_RE.match(str(box.name)):
            continue
        for param in box.params:
            key = str(param.name).strip()
            if not param.showkey or _SKIP_FIELD_RE.search(key):
                continue
            links = _links(param.value)
            obj = _plain(param.value)
            prop = _property(key)
            if (
                prop
                and obj
                and len(obj) <= MAX_OBJECT_CHARS
                and not _RESIDUE_RE.search(obj)
                and not _MEDIA_RE.search(obj)
            ):
                out.append(Triple(subject, prop, obj, links))
    return out


def entity_groups(all_triples: list[Triple]) -> dict[str, str]:
    """``{subject: group}``: subjects joined when an object of one names another.

    An object names a subject when it links to it or equals its title (underscores or
    spaces). Joined subjects share one group (the alphabetically first subject of the
    connected component), so they land on the same side of every split.
    """
    subjects = sorted({t.subject for t in all_triples})
    by_name = {s.replace("_", " ").lower(): s for s in subjects}
    parent = {s: s for s in subjects}

    def find(s):
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    for t in all_triples:
        for name in (t.object, *t.links):
            other = by_name.get(" ".join(name.replace("_", " ").split()).lower())
            if other is not None and other != t.subject:
                a, b = sorted((find(t.subject), find(other)))
                parent[b] = a
    return {s: find(s) for s in subjects}


def _verbalise(t: Triple) -> str:
    words = re.sub(r"(?<=[a-z0-9])([A-Z])", r" \1", t.property).lower()
    return f"The {words} of {t.subject.replace('_', ' ')} is {t.object}."


def examples(all_triples: list[Triple], per_example: int = TRIPLES_PER_EXAMPLE) -> list[Unit]:
    """Units of ``per_example`` consecutive triples of one subject, grouped by entity.

    Example:
        >>> t = Triple("Ada", "born", "1815", ())
        >>> examples([t])[0].text
        'Ada | born | 1815 => The born of Ada is 1815.'
    """
    if isinstance(per_example, bool) or not isinstance(per_example, int) or per_example < 1:
        raise ValueError(f"per_example must be an integer >= 1, got {per_example!r}")
    group = entity_groups(all_triples)
    by_subject: dict[str, list[Triple]] = {}
    for t in all_triples:
        by_subject.setdefault(t.subject, []).append(t)
    units = []
    for subject, ts in by_subject.items():
        for k in range(0, len(ts), per_example):
            chunk = ts[k : k + per_example]
            linear = " && ".join(f"{t.subject} | {t.property} | {t.object}" for t in chunk)
            text = f"{linear} => {' '.join(_verbalise(t) for t in chunk)}"
            units.append(Unit(text, f"entity:{group[subject]}"))
    return units


def embedded_triples() -> tuple[list[Triple], dict]:
    """Every infobox triple of the embedded dump, parsed once then cached."""

    def parse(path):
        return [list(t) for title, text in iter_articles(path) for t in triples(title, text)]

    items, meta = cached_parse("infobox", INFOBOX_VERSION, parse)
    return [Triple(s, p, o, tuple(links)) for s, p, o, links in items], meta


def infobox_source() -> Source:
    """The ``"infobox"`` corpus: one pool of examples, split by entity (see the module doc)."""
    all_triples, meta = embedded_triples()
    units = examples(all_triples)
    groups = {u.group for u in units}
    source = Source(
        "infobox",
        f"{embedded_origin()} (infobox triples)",
        INFOBOX_FORMAT,
        {"all": units},
        grouped_by="entity",
        extra={
            "cache": meta,
            "triples": len(all_triples),
            "subjects": len({t.subject for t in all_triples}),
            "entities": len(groups),
        },
    )
    if "cache_error" in meta:
        source.warnings.append(meta["cache_error"])
    return source
