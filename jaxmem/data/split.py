"""Sizes, and the seeded split of a corpus into train / held-out / validation pools.

:func:`requested_sizes` fills the sizes not given with defaults (Table 1 of
the paper for the named corpora, see :data:`PAPER_SIZES`). :func:`pools`
decides which examples may become training texts and which are held out
(non-member candidates) under one of the :data:`SPLITS` designs (see
:func:`resolve_split` for which design each corpus gets and why).
:func:`draw_train` and :func:`draw_heldout` then sample train, members,
non-members and validation; non-member and validation candidates that copy
a training text are skipped. Every random choice draws from its own stream
(:func:`seeded_rng`), so e.g. changing ``n_nonmembers`` leaves the members as
they are.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from jaxmem.data.overlap import dedupe, drop_exact_copies, pick_nonmembers
from jaxmem.data.units import Source, Unit

__all__ = [
    "PAPER_SIZES",
    "SPLITS",
    "resolve_split",
    "requested_sizes",
    "seeded_rng",
    "sample",
    "pools",
    "draw_train",
    "draw_heldout",
]

#: Table 1 of the paper: fine-tuning examples, members, non-members.
PAPER_SIZES = {
    "wikitext": {"n_train": 22_335, "n_members": 2_000, "n_nonmembers": 2_000},
    "webnlg": {"n_train": 35_426, "n_members": 1_779, "n_nonmembers": 1_779},
    "xsum": {"n_train": 5_000, "n_members": 1_000, "n_nonmembers": 1_000},
}

# Sizes for the embedded corpus suit a CPU demo of a few minutes; local files
# of unknown origin get "all of train" and a moderate MIA set.
_EMBEDDED_SIZES = {"n_train": 1_000, "n_validation": 200, "n_members": 500, "n_nonmembers": 500}
# The infobox corpus has about 530 examples from 47 entities; half at most is held out.
_INFOBOX_SIZES = {"n_train": 256, "n_validation": 32, "n_members": 128, "n_nonmembers": 128}
_LOCAL_SIZES = {"n_train": None, "n_members": 1_000, "n_nonmembers": 1_000}
_DEFAULT_VALIDATION = 500


def requested_sizes(name: str, given: dict[str, int | None]) -> tuple[dict, list[str], set[str]]:
    """Sizes to aim for, the keys passed explicitly, and those that may be cut quietly.

    ``given`` maps ``n_train`` / ``n_validation`` / ``n_members`` /
    ``n_nonmembers`` to a size or None (use the default for corpus ``name``).
    """
    named = {"wiki-gensim": _EMBEDDED_SIZES, "infobox": _INFOBOX_SIZES, **PAPER_SIZES}
    defaults = dict(named.get(name, _LOCAL_SIZES))
    defaults.setdefault("n_validation", _DEFAULT_VALIDATION)
    want = {k: int(v) if v is not None else defaults[k] for k, v in given.items()}
    explicit = sorted(k for k, v in given.items() if v is not None)
    soft = {"n_validation"} - set(explicit)  # a default validation size may be cut quietly
    return want, explicit, soft


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    # One independent stream per decision, so e.g. changing n_nonmembers does
    # not change which texts become members.
    return np.random.default_rng([seed, stream])


#: How members and non-members are separated (``load_corpus(split=...)``):
#:
#: * ``"auto"``: the design :func:`resolve_split` picks for the corpus.
#: * ``"matched"``: one pool with groups (articles, entities), membership by example: every
#:   group holds out its share of examples at random (stratified), and non-members are drawn
#:   to match the members group for group (a member from article A, a non-member from article
#:   A), so both sides have the same topics in the same proportions. Plain random draws
#:   leave chance imbalances (five members of one article, one non-member) that a model-free
#:   classifier finds in some draws; matching removes them.
#: * ``"random"``: one pool, every example held out or not at random (IID at the example):
#:   members and non-members are two random samples of one distribution.
#: * ``"given"``: the dataset's own train / test (or validation) files, as published.
#: * ``"by-group"``: one pool, membership by group (a WebNLG triple set): whole random groups
#:   held out, as many groups as texts needed, and both sides drawn one text per group before
#:   a group gives a second, so neither side is a few groups' texts.
#: * ``"legacy-by-group"``: jaxmem's split up to 2026-12-06, kept for runs trained then:
#:   whole random groups held out until they hold enough texts. With a few large groups (97
#:   articles) three articles filled the held-out side and a model-free classifier told
#:   members from non-members (AUC 0.92 on the demo's split).
SPLITS = ("auto", "matched", "random", "given", "by-group", "legacy-by-group")


def resolve_split(source: Source, splits: dict, split: str = "auto") -> str:
    """The split design for ``source``: ``split`` itself unless it is ``"auto"``.

    ``"auto"`` picks a design whose members and non-members come from one distribution:

    * WebNLG: ``"by-group"`` over its train and dev files, by triple set (thousands of small
      groups, at most a few verbalisations each). Its test file is left out: 2,433 of its
      4,928 texts come from 5 categories train does not have, so non-members from test would
      build a topic shift into every attack.
    * Other data with a train file and a test (or validation) file: ``"given"``; published
      splits such as WikiText's are document-level with many held-out documents.
    * One pool (the embedded corpus, the infobox corpus, WikiText's test file alone, a
      single file): ``"random"``. Its members and non-members are two random samples of one
      distribution, so a model-free classifier's cross-validated AUC is centred on 0.5 and a
      label-permutation test of it is exact (:mod:`jaxmem.blind`). ``"matched"`` balances
      the articles exactly, but then cross-validation learns backwards (a held-out member's
      article is, in the other folds, one member short: AUC 0.36-0.45 on fair data), which
      reads as a shift below chance.

    Raises:
      ValueError: an unknown ``split``, or ``"given"`` for data without a train and a
        held-out file.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} "
                         "(see jaxmem.data.split.SPLITS)")
    has_given = "train" in splits and ("test" in splits or "validation" in splits)
    if split == "given" and not has_given:
        raise ValueError(f"split='given' needs a train file and a test (or validation) file; "
                         f"{source.origin} has {', '.join(sorted(splits)) or 'none'}. Use "
                         "split='random' (or 'auto').")
    if split != "auto":
        return split
    if source.name == "webnlg":
        return "by-group"
    return "given" if has_given else "random"


def _split_random(
    units: list[Unit], target: int, rng: np.random.Generator
) -> tuple[list[Unit], list[Unit]]:
    """Hold out ``target`` examples drawn at random (IID at the example)."""
    held = set(int(k) for k in rng.permutation(len(units))[:target])
    train = [u for k, u in enumerate(units) if k not in held]
    return train, [u for k, u in enumerate(units) if k in held]


def _split_stratified(
    units: list[Unit], target: int, rng: np.random.Generator
) -> tuple[list[Unit], list[Unit]]:
    """Hold out ``target`` examples, every group its share (systematic sampling over the
    units ordered by random group, then at random within it)."""
    groups = list(dict.fromkeys(u.group for u in units))
    g_rank = {g: int(k) for g, k in zip(groups, rng.permutation(len(groups)))}
    order = sorted(range(len(units)), key=lambda k: (g_rank[units[k].group], rng.random()))
    step = len(units) / max(target, 1)
    picks = {order[int(rng.random() * step + i * step)] for i in range(target)}
    train = [u for k, u in enumerate(units) if k not in picks]
    return train, [u for k, u in enumerate(units) if k in picks]


def _matched_order(candidates: list[Unit], member_groups: list[str]) -> list[Unit]:
    """``candidates`` with, first, one of each member's group per member (in member order), as
    far as the candidates allow; then the rest in their order."""
    by_group: dict[str, list[int]] = {}
    for k, u in enumerate(candidates):
        by_group.setdefault(u.group, []).append(k)
    first = []
    for g in member_groups:
        if by_group.get(g):
            first.append(by_group[g].pop(0))
    taken = set(first)
    return [candidates[k] for k in first] + [u for k, u in enumerate(candidates)
                                             if k not in taken]


def _split_groups_spread(
    units: list[Unit], target: int, rng: np.random.Generator
) -> tuple[list[Unit], list[Unit], list[str]]:
    """Hold out ``target`` random whole groups (at most half of them), each side's units in
    :func:`_spread` order."""
    groups = list(dict.fromkeys(u.group for u in units))
    order = rng.permutation(len(groups))[: min(target, len(groups) // 2)]
    held = {groups[g] for g in order}
    train = _spread([u for u in units if u.group not in held], rng)
    heldout = _spread([u for u in units if u.group in held], rng)
    return train, heldout, [g for g in groups if g in held]


def _spread(units: list[Unit], rng: np.random.Generator) -> list[Unit]:
    """``units`` shuffled, then one of every group before any group's second, and so on: the
    first n of them come from as many groups as possible."""
    units = [units[k] for k in rng.permutation(len(units))]
    seen: Counter = Counter()
    rank = []
    for u in units:
        rank.append(seen[u.group])
        seen[u.group] += 1
    return [units[k] for k in np.argsort(rank, kind="stable")]


def _split_by_group(
    units: list[Unit], target: int, rng: np.random.Generator
) -> tuple[list[Unit], list[Unit], list[str]]:
    """Move whole random groups to held-out until it has ``target`` units."""
    sizes = Counter(u.group for u in units)
    groups = list(sizes)  # order of first appearance, so the split is reproducible
    held: set[str] = set()
    count = 0
    for g in rng.permutation(len(groups)):
        if count >= target or len(held) >= len(groups) - 1:  # always leave train one group
            break
        held.add(groups[g])
        count += sizes[groups[g]]
    train = [u for u in units if u.group not in held]
    heldout = [u for u in units if u.group in held]
    return train, heldout, [g for g in groups if g in held]


def sample(items: list, n: int | None, rng: np.random.Generator) -> list:
    order = rng.permutation(len(items))
    return [items[k] for k in (order if n is None else order[:n])]


def pools(
    source: Source, splits: dict[str, list[Unit]], want: dict, seed: int, warnings: list[str],
    split: str = "auto",
) -> tuple[list[Unit], list[Unit], list[Unit] | None, dict, int]:
    """Train pool, held-out pool (non-member candidates) and validation pool, under the
    ``split`` design (:data:`SPLITS`, resolved by :func:`resolve_split`).

    The validation pool is None when validation is carved from held-out.
    Also returns a description for ``info["split"]`` and the number of
    repeated texts dropped when splits are merged into one pool.
    """
    n_repeats = 0
    design = resolve_split(source, splits, split)
    split_info: dict[str, Any] = {
        "design": design,
        "requested": split,
        "available_splits": sorted(splits),
        "grouped_by": source.grouped_by,
    }
    if source.grouped_by:
        split_info["groups"] = len({u.group for v in splits.values() for u in v})
    val_pool: list[Unit] | None = splits.get("validation")
    if design == "given" and "test" in splits:
        train_pool, heldout = splits["train"], splits["test"]
        split_info["strategy"] = "given splits: train -> train/members, test -> non-members" + (
            ", validation -> validation"
            if val_pool
            else ", validation carved from test (disjoint from non-members)"
        )
    elif design == "given":
        train_pool, heldout, val_pool = splits["train"], splits["validation"], None
        split_info["strategy"] = (
            "no test split: non-members and validation both from the validation split (disjoint)"
        )
        warnings.append(
            "no test split found; non-members and validation are disjoint parts of the "
            "validation split"
        )
    else:
        # WebNLG's test holds categories train lacks: "auto" leaves it out (resolve_split)
        kinds = (("all", "train", "validation") if split == "auto" and source.name == "webnlg"
                 else ("all", "train", "validation", "test"))
        units, dropped = dedupe([u for k in kinds for u in splits.get(k, [])])
        n_repeats += dropped
        by_group = design in ("by-group", "legacy-by-group")
        if by_group and source.grouped_by and len({u.group for u in units}) < 2:
            units = [Unit(u.text, f"unit:{k}") for k, u in enumerate(units)]
            warnings.append(f"only one {source.grouped_by} in the data; split by example instead")
        target = min(want["n_validation"] + want["n_nonmembers"], len(units) // 2)
        if design == "legacy-by-group":
            train_pool, heldout, held_groups = _split_by_group(units, target, seeded_rng(seed, 0))
        elif by_group:
            train_pool, heldout, held_groups = _split_groups_spread(
                units, target, seeded_rng(seed, 0))
        elif design == "matched":
            train_pool, heldout = _split_stratified(units, target, seeded_rng(seed, 0))
        else:
            train_pool, heldout = _split_random(units, target, seeded_rng(seed, 0))
        val_pool = None
        unit = ((source.grouped_by or "example") if by_group else
                f"example, every {source.grouped_by} its share" if design == "matched"
                else "example, at random")
        split_info["strategy"] = (
            f"single pool of {len(units)} examples ({' + '.join(k for k in kinds if k in splits)})"
            f" split by {unit} (seeded): {len(train_pool)} train-side, {len(heldout)} held-out "
            "(validation and non-members, disjoint)"
        )
        if by_group and source.grouped_by:
            split_info["heldout_groups"] = held_groups
            if design == "legacy-by-group" and len(held_groups) < 20:
                warnings.append(
                    f"split={design!r} held out only {len(held_groups)} "
                    f"{source.grouped_by}s: members and non-members then differ in topic, "
                    "which a model-free classifier detects; use split='random' (the default "
                    "for one pool)")
        if source.name in PAPER_SIZES and not {"train", "test"} <= set(splits):
            present = " + ".join(sorted(splits))
            warnings.append(
                f"only the {present} split is available ({source.origin}); it was split by "
                f"{unit} into train / validation / held-out with the seed, so sizes are far "
                "below the paper's Table 1"
            )
    if not heldout:
        raise ValueError(
            f"{source.origin}: no held-out examples for non-members; the data is too small to split"
        )
    return train_pool, heldout, val_pool, split_info, n_repeats


def _share_heldout(want: dict, soft: set[str], n_heldout: int,
                   explicit: Sequence[str] = ()) -> tuple[int, int]:
    """Non-member and validation counts when validation is carved from ``n_heldout`` units.

    When held-out is too small for both, a size the caller gave goes first and a default takes
    what is left; two given sizes, or two defaults, share it in proportion to the request (so a
    lone file of 96 texts keeps 16 for validation instead of none).
    """
    k_want, v_want = want["n_nonmembers"], want["n_validation"]
    if n_heldout < k_want + v_want:  # too little: share held-out
        k_given, v_given = "n_nonmembers" in explicit, "n_validation" not in soft
        if k_given and not v_given:  # non-members given: a default validation takes the rest
            k_want = min(k_want, n_heldout)
        elif v_given and not k_given:  # validation given: non-members take the rest
            v_want = min(v_want, max(n_heldout - 1, 0))
            k_want = min(k_want, n_heldout - v_want)
        else:  # both given, or both defaults: in proportion
            k_want = min(k_want, max(1, round(n_heldout * k_want / (k_want + v_want))))
        v_want = min(v_want, n_heldout - k_want)
    return k_want, v_want


def draw_train(train_pool: list[Unit], want: dict, seed: int, ordered: bool = False
               ) -> tuple[list[str], list[int]]:
    """The training texts, and which of them (by index) are members; ``ordered``: the pool is
    in drawing order already (``"by-group"``: shuffled, one text per group first)."""
    if ordered:
        n = want["n_train"]
        train = [u.text for u in (train_pool if n is None else train_pool[:n])]
    else:
        train = [u.text for u in sample(train_pool, want["n_train"], seeded_rng(seed, 1))]
    member_idx = [int(k) for k in seeded_rng(seed, 2).permutation(len(train))[: want["n_members"]]]
    return train, member_idx


def draw_heldout(
    train: list[str],
    member_idx: list[int],
    heldout: list[Unit],
    val_pool: list[Unit] | None,
    want: dict,
    soft: set[str],
    seed: int,
    threshold: float | None,
    ordered: bool = False,
    member_groups: list[str] | None = None,
    explicit: Sequence[str] = (),
) -> tuple[list[str], list[str], dict]:
    """Non-members and validation texts, none a duplicate of a training text; the overlap
    report. ``ordered``: ``heldout`` is in drawing order already (see :func:`draw_train`);
    ``member_groups`` (``"matched"``): the members' groups, which the non-members match one
    for one as far as the held-out texts allow; ``explicit``: the sizes the caller gave
    (:func:`requested_sizes`), which go first when held-out is short."""
    if val_pool is None:
        k_want, v_want = _share_heldout(want, soft, len(heldout), explicit)
    else:
        k_want, v_want = want["n_nonmembers"], None
    candidates = list(heldout) if ordered else sample(heldout, None, seeded_rng(seed, 3))
    if member_groups is not None:
        candidates = _matched_order(candidates, member_groups)
    picked, overlap = pick_nonmembers(
        train, set(member_idx), candidates, k_want + (v_want or 0), threshold
    )
    nonmembers = [u.text for u in picked[:k_want]]
    if val_pool is None:
        validation = [u.text for u in picked[k_want : k_want + v_want]]
    else:
        # Validation perplexity must not be measured on training or non-member texts.
        usable = drop_exact_copies(
            [u.text for u in sample(val_pool, None, seeded_rng(seed, 4))], train + nonmembers
        )
        overlap["validation_dropped"] = len(val_pool) - len(usable)
        validation = usable[: want["n_validation"]]
    if candidates and not nonmembers:
        raise ValueError(
            f"all {overlap['checked']} non-member candidates are exact or near duplicates of "
            "training texts: the held-out data is the same as the training data. Check that "
            "the test split is not a copy of the train split"
            + ("" if threshold is None else ", or raise near_dup_threshold")
        )
    return nonmembers, validation, overlap
