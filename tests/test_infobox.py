"""The offline structured corpus: WebNLG-style triples from the embedded dump's infoboxes."""

import importlib.metadata

import pytest

from jaxmem.data import embedded, infobox, load_corpus
from jaxmem.data.infobox import Triple, entity_groups, examples, triples

pytest.importorskip("mwparserfromhell")

SAMPLE = """{{Short description|American president}}
{{Infobox officeholder
| name         = Abraham Lincoln
| image        = Abraham Lincoln O-77 matte collodion print.jpg
| caption      = Lincoln in 1863
| order        = 16th
| office       = [[President of the United States]]
| birth_date   = {{birth date|1809|2|12}}
| birth_place  = [[Hodgenville, Kentucky|Hodgenville]], Kentucky<ref>A source.</ref>
| death_date   = {{death date and age|1865|4|15|1809|2|12}}
| spouse       = {{marriage|[[Mary Todd Lincoln|Mary Todd]]|1842}}
| children     = Robert<br>Edward<br/>Willie <!-- and Tad -->
| height       = {{convert|6|ft|4|in|m}}
| party        = {{plainlist|
* [[Whig Party (United States)|Whig]]
* [[Republican Party (United States)|Republican]]}}
| signature    = Abraham Lincoln autograph.svg
| lat_d        = 38
| empty_field  =
| box_width    = 300px
| motto        = {{some unknown template|x}}
}}
'''Abraham Lincoln''' was the 16th [[President of the United States]].
{{Infobox person|nationality=American}}
"""

# Written by hand from SAMPLE: what a DBpedia-like extraction should keep.
EXPECTED = [
    ("Abraham_Lincoln", "order", "16th"),
    ("Abraham_Lincoln", "office", "President of the United States"),
    ("Abraham_Lincoln", "birthDate", "1809-02-12"),
    ("Abraham_Lincoln", "birthPlace", "Hodgenville, Kentucky"),
    ("Abraham_Lincoln", "deathDate", "1865-04-15"),
    ("Abraham_Lincoln", "spouse", "Mary Todd"),
    ("Abraham_Lincoln", "children", "Robert, Edward, Willie"),
    ("Abraham_Lincoln", "height", "6 ft"),
    ("Abraham_Lincoln", "party", "Whig, Republican"),
    ("Abraham_Lincoln", "nationality", "American"),
]


def test_triples_from_a_handwritten_infobox():
    got = triples("Abraham Lincoln", SAMPLE)
    assert [t[:3] for t in got] == EXPECTED
    by_prop = {t.property: t for t in got}
    assert by_prop["birthPlace"].links == ("Hodgenville, Kentucky",)
    assert by_prop["party"].links == (
        "Whig Party (United States)",
        "Republican Party (United States)",
    )
    # A page without an infobox, or with an unrelated template, gives nothing.
    assert triples("X", "{{Cite web|title=A}} Plain prose.") == []


def test_entity_groups_join_subjects_that_objects_name():
    ts = [
        Triple("Economy_of_Angola", "country", "Angola", ()),
        Triple("Angola", "capital", "Luanda", ("Luanda",)),
        Triple("Angolan_Armed_Forces", "commander", "the President", ("Angola",)),
        Triple("Alabama", "country", "United States", ("United States",)),
        Triple("Alaska", "capital", "Juneau", ()),
    ]
    groups = entity_groups(ts)
    assert groups == {
        "Angola": "Angola",
        "Economy_of_Angola": "Angola",
        "Angolan_Armed_Forces": "Angola",
        "Alabama": "Alabama",
        "Alaska": "Alaska",
    }


def test_examples_chunk_one_subject_and_verbalise():
    ts = [Triple("Ada", "birthPlace", "London", ()), Triple("Ada", "field", "Maths", ()),
          Triple("Ada", "spouse", "William", ()), Triple("Bob", "field", "Ada", ("Ada",))]
    units = examples(ts, per_example=2)
    assert [u.text for u in units] == [
        "Ada | birthPlace | London && Ada | field | Maths => The birth place of Ada is London. "
        "The field of Ada is Maths.",
        "Ada | spouse | William => The spouse of Ada is William.",
        "Bob | field | Ada => The field of Bob is Ada.",
    ]
    assert {u.group for u in units} == {"entity:Ada"}
    with pytest.raises(ValueError, match="per_example must be an integer >= 1"):
        examples(ts, per_example=0)


def _has_gensim():
    try:
        importlib.metadata.distribution("gensim")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def infobox_cache(tmp_path_factory):
    if not _has_gensim():
        pytest.skip(f"needs: {embedded.EMBEDDED_INSTALL}")
    cache = tmp_path_factory.mktemp("jaxmem-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXMEM_CACHE", str(cache))
    all_triples, meta = infobox.embedded_triples()
    assert meta["cache_hit"] is False
    yield all_triples
    mp.undo()


def test_infobox_corpus_on_the_embedded_dump(infobox_cache):
    c = load_corpus("infobox")
    assert c.name == "infobox" and c.info["cache"]["cache_hit"] is True
    assert c.info["actual"] == {"n_train": 256, "n_validation": 32, "n_members": 128,
                                "n_nonmembers": 128}
    assert not c.info["warnings"] and c.info["split"]["grouped_by"] == "entity"
    assert c.info["triples"] >= 1000 and c.info["entities"] >= 40
    # Record-level membership ("auto" = "random"): entities on both sides. Entity-disjoint
    # with the legacy design: no subject, nor any subject an object names, on both sides.
    group = entity_groups(infobox_cache)
    subject_of = lambda text: text.split(" | ", 1)[0]  # noqa: E731
    assert c.info["split"]["design"] == "random"
    assert len({group[subject_of(t)] for t in c.nonmembers}) >= 20
    old = load_corpus("infobox", split="legacy-by-group")
    train_side = {group[subject_of(t)] for t in old.train}
    held_side = {group[subject_of(t)] for t in old.nonmembers + old.validation}
    assert train_side.isdisjoint(held_side)
    assert set(c.members) <= set(c.train)
    assert set(c.nonmembers).isdisjoint(c.validation)
    for t in infobox_cache:  # an object naming a subject: both in one group
        named = [s for s in group if s.replace("_", " ") in (t.object, *t.links)]
        assert all(group[s] == group[t.subject] for s in named)
    # Deterministic for a seed, different for another.
    again = load_corpus("wiki-infobox")
    assert (again.train, again.members, again.nonmembers) == (c.train, c.members, c.nonmembers)
    other = load_corpus("infobox", seed=1)
    assert other.members != c.members


def test_infobox_corpus_missing_package(monkeypatch):
    monkeypatch.setattr(embedded, "_EMBEDDED_DIST", "surely-not-an-installed-dist")
    with pytest.raises(ImportError, match="pip install gensim==4.4.0 --no-deps mwparserfromhell"):
        load_corpus("infobox")
