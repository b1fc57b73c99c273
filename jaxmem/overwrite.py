"""Removing only what jaxmem wrote from a folder (``--overwrite``): its files go, the user's stay.

The rules say which names are jaxmem's: a name test per folder name (``checkpoints`` holds
``epoch_NNN``, ...; a folder not listed inherits its parent's test), and the spec files that
make a folder inside another a jaxmem folder of its own (``run.json``: a run, emptied of a
run's outputs). :mod:`jaxmem.runs` holds jaxmem's rules; this module only applies them.

Example:
    >>> from pathlib import Path
    >>> d = Path("run"); d.mkdir()
    >>> (d / "log.jsonl").write_text(""), (d / "notes.txt").write_text("mine")
    (0, 4)
    >>> remove_outputs(d, ["log.jsonl", "figures"], rules={}, specs=()), sorted(
    ...     p.name for p in d.iterdir())
    ([], ['notes.txt'])
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path
from typing import Callable, Mapping, Sequence

from jaxmem import locks

__all__ = ["is_lock_name", "leftover", "remove_outputs"]

#: A name test per folder name: which entries of such a folder jaxmem wrote.
Rules = Mapping[str, Callable[[Path], bool]]
#: ``(spec file, outputs)``: a folder holding the spec file is a jaxmem folder of its own.
Specs = Sequence[tuple[str, Sequence[str]]]

_TMP = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # an atomic_write cut short


def is_lock_name(name: str) -> bool:
    """Whether ``name`` is one of :mod:`jaxmem.locks`' files (``.jaxmem.lock``,
    ``.<file>.jaxmem.lock``)."""
    return name.endswith(".jaxmem.lock")


def leftover(p: Path) -> bool:
    """A file a killed jaxmem process left: an atomic write's temporary file, a stale lock."""
    return p.is_file() and (_TMP.fullmatch(p.name) is not None
                            or is_lock_name(p.name) and locks.is_stale(p))


def _spec_outputs(d: Path, specs: Specs) -> Sequence[str] | None:
    """The outputs of a jaxmem folder found inside another (by its spec file), else None."""
    for spec, outputs in specs:
        if (d / spec).is_file():
            return outputs
    return None


def _prune(d: Path, ours: Callable[[Path], bool], rules: Rules, specs: Specs) -> list[Path]:
    """Removes what jaxmem wrote under the folder ``d``; returns what it kept (not jaxmem's)."""
    inner = _spec_outputs(d, specs)
    if inner is not None:  # a jaxmem folder of its own: what is left after its outputs is kept
        remove_outputs(d, inner, rules=rules, specs=specs)
        for p in d.iterdir():
            if leftover(p):
                p.unlink()
        kept = sorted(p for p in d.rglob("*") if not p.is_dir() or p.is_symlink())
        if not kept:
            shutil.rmtree(d)  # empty folders only
        return kept
    kept = []
    for p in sorted(d.iterdir()):
        if p.is_dir() and not p.is_symlink():
            if ours(p):  # an orbax checkpoint: all of it is orbax's
                shutil.rmtree(p)
            else:
                kept += _prune(p, rules.get(p.name, ours), rules, specs)
        elif ours(p) or leftover(p):
            p.unlink()
        else:
            kept.append(p)
    if not kept:
        with contextlib.suppress(OSError):
            d.rmdir()
    return kept


def remove_outputs(folder: Path, outputs: Sequence[str], *, rules: Rules,
                   specs: Specs) -> list[Path]:
    """Removes the ``outputs`` jaxmem wrote in ``folder``, and nothing else.

    A file named in ``outputs`` goes. In a folder named there only what ``rules`` call
    jaxmem's goes; a folder found inside holding a spec file of ``specs`` loses its own
    outputs; anything else stays, with the folders that hold it.

    Returns:
      The paths kept (files jaxmem did not write).
    """
    kept = []
    for entry in outputs:
        p = Path(folder) / entry
        if p.is_dir() and not p.is_symlink():
            kept += _prune(p, rules.get(entry, lambda q: False), rules, specs)
        elif p.exists() or p.is_symlink():
            p.unlink()
    return kept
