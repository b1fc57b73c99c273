"""Full fine-tuning: every base weight is trainable."""

from __future__ import annotations

import dataclasses

from jaxmem.tuning.partition import TRAINABLE, label_all


@dataclasses.dataclass(frozen=True)
class FullConfig:
    name: str = "full"


def init(params, cfg, mcfg: FullConfig, key, tokenizer=None):
    return params, label_all(params, TRAINABLE)
