"""Sizes, and the seeded split of a corpus into train / held-out / validation pools.

:func:`requested_sizes` fills the sizes not given with defaults (Table 1 of
the paper for the named corpora, see :data:`PAPER_SIZES`). :func:`pools`
decides which examples may become training texts and which are held out
(non-member candidates), using the given splits when there are enough,
else splitting one pool by group (article, triple set) with the seed.
:func:`draw_train` and :func:`draw_heldout` then sample train, members,
non-members and validation; non-member and validation candidates that copy
a training text are skipped. Every random choice draws from its own stream
(:func:`seeded_rng`), so e.g. changing ``n_nonmembers`` leaves the members as
they are.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from jaxmem.data.overlap import dedupe, drop_exact_copies, pick_nonmembers
from jaxmem.data.units import Source, Unit

__all__ = [
    "PAPER_SIZES",
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
    source: Source, splits: dict[str, list[Unit]], want: dict, seed: int, warnings: list[str]
) -> tuple[list[Unit], list[Unit], list[Unit] | None, dict, int]:
    """Train pool, held-out pool (non-member candidates) and validation pool.

    The validation pool is None when validation is carved from held-out.
    Also returns a description for ``info["split"]`` and the number of
    repeated texts dropped when splits are merged into one pool.
    """
    n_repeats = 0
    split_info: dict[str, Any] = {
        "available_splits": sorted(splits),
        "grouped_by": source.grouped_by,
    }
    if source.grouped_by:
        split_info["groups"] = len({u.group for v in splits.values() for u in v})
    val_pool: list[Unit] | None = splits.get("validation")
    if "train" in splits and "test" in splits:
        train_pool, heldout = splits["train"], splits["test"]
        split_info["strategy"] = "given splits: train -> train/members, test -> non-members" + (
            ", validation -> validation"
            if val_pool
            else ", validation carved from test (disjoint from non-members)"
        )
    elif "train" in splits and "validation" in splits:
        train_pool, heldout, val_pool = splits["train"], splits["validation"], None
        split_info["strategy"] = (
            "no test split: non-members and validation both from the validation split (disjoint)"
        )
        warnings.append(
            "no test split found; non-members and validation are disjoint parts of the "
            "validation split"
        )
    else:
        units, dropped = dedupe(
            [u for k in ("all", "train", "validation", "test") for u in splits.get(k, [])]
        )
        n_repeats += dropped
        if source.grouped_by and len({u.group for u in units}) < 2:
            units = [Unit(u.text, f"unit:{k}") for k, u in enumerate(units)]
            warnings.append(f"only one {source.grouped_by} in the data; split by example instead")
        target = min(want["n_validation"] + want["n_nonmembers"], len(units) // 2)
        train_pool, heldout, held_groups = _split_by_group(units, target, seeded_rng(seed, 0))
        val_pool = None
        unit = source.grouped_by or "example"
        split_info["strategy"] = (
            f"single pool of {len(units)} examples split by {unit} (seeded): "
            f"{len(train_pool)} train-side, {len(heldout)} held-out "
            "(validation and non-members, disjoint)"
        )
        if source.grouped_by:
            split_info["heldout_groups"] = held_groups
        if source.name in PAPER_SIZES:
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


def _share_heldout(want: dict, soft: set[str], n_heldout: int) -> tuple[int, int]:
    """Non-member and validation counts when validation is carved from ``n_heldout`` units."""
    k_want, v_want = want["n_nonmembers"], want["n_validation"]
    if n_heldout < k_want + v_want:  # too little: share held-out
        if "n_validation" in soft:  # a default validation size takes what is left
            k_want = min(k_want, n_heldout)
        else:  # both requested: in proportion
            k_want = min(k_want, max(1, round(n_heldout * k_want / (k_want + v_want))))
        v_want = min(v_want, n_heldout - k_want)
    return k_want, v_want


def draw_train(train_pool: list[Unit], want: dict, seed: int) -> tuple[list[str], list[int]]:
    """The training texts, and which of them (by index) are members."""
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
) -> tuple[list[str], list[str], dict]:
    """Non-members and validation texts, none a duplicate of a training text; the overlap report."""
    if val_pool is None:
        k_want, v_want = _share_heldout(want, soft, len(heldout))
    else:
        k_want, v_want = want["n_nonmembers"], None
    candidates = sample(heldout, None, seeded_rng(seed, 3))
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
