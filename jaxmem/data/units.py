"""What every source yields: examples tagged with their group, and where they came from.

A :class:`Unit` is one example; its ``group`` (an article, a triple set, a
document) keeps related examples on one side of a train / held-out split. A
:class:`Source` is a whole dataset as read, before any filtering or sampling.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

__all__ = ["Unit", "Source"]


class Unit(NamedTuple):
    text: str
    group: str  # units of one group (an article, a triple set) are never split apart


@dataclasses.dataclass
class Source:
    name: str
    origin: str
    format: str
    splits: dict[str, list[Unit]]  # keys: train / validation / test, or "all"
    grouped_by: str | None = None  # "article", "triple set", ... or None
    warnings: list[str] = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)
