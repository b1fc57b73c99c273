"""Which model an audit attacks, and against which reference: :func:`load_target`.

A membership audit attacks one *target*: the base model itself, a jaxmem run's checkpoint
(``run_dir``, an epoch of it) or a PEFT adapter directory applied to the base model
(``adapter``); the Ref attack compares it with a *reference* model (default: the base model),
which must share the target's vocabulary. ``jaxmem attack``, ``extract`` and ``canaries`` choose
through this one function, and so can a Python user.

Example:
    >>> from jaxmem.targets import load_target
    >>> t = load_target("smollm2-135m")  # the base model itself (embedded: offline, ~3 s)
    >>> t.description, t.labels is None, t.reference is t.base  # the Ref attack's reference
    ('base model smollm2-135m', True, True)

    A run's checkpoint is ``load_target("smollm2-135m", run_dir="runs/lora", epoch=2)``
    (described as ``'runs/lora (epoch 2)'``); the audit then takes what it needs::

        run_attacks_on(t.params, t.cfg, t.tokenizer, members, nonmembers, acfg,
                       reference_params=t.reference, param_labels=t.labels)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from jaxmem.models import load_model
from jaxmem.models.config import ModelConfig
from jaxmem.trainer import load_checkpoint
from jaxmem.tuning.peft_import import import_adapter


@dataclasses.dataclass
class Target:
    """A model to audit.

    Attributes:
      params: the target's params (base + the run's checkpoint or the adapter).
      cfg: its architecture (the base model's).
      tokenizer: the base model's tokenizer.
      labels: the method's label tree (``trainable`` / ``frozen``); None for the base model.
      base: the base model's params (what a run or adapter started from).
      reference: the reference model's params (the base model's unless another was named).
      description: one line naming the target, for messages and report titles.
    """

    params: Any
    cfg: ModelConfig
    tokenizer: Any
    labels: Any
    base: Any
    reference: Any
    description: str


def load_target(model: str, *, run_dir: str | os.PathLike | None = None,
                epoch: int | None = None, adapter: str | os.PathLike | None = None,
                reference: str | None = None, tokenizer: str | None = None,
                attention_impl: str | None = None, mesh=None) -> Target:
    """Loads the base model, the target made from it and the reference model.

    Args:
      model: the base model (alias, hub id, HF directory or .gguf file); for ``run_dir`` the
        one the run started from.
      run_dir: a jaxmem run: the target is its checkpoint (:func:`jaxmem.trainer.load_checkpoint`).
      epoch: which of the run's finished epochs (default: the last).
      adapter: a PEFT adapter directory applied to ``model`` (not with ``run_dir``).
      reference: the reference model for the Ref attack (default: ``model``, the base params
        themselves, so no second copy is loaded).
      tokenizer: a tokenizer for ``model`` when its directory has none.
      attention_impl: the attention kernel (``ModelConfig.attention_impl``); None keeps the
        model's.
      mesh: lay the run's checkpoint out on this mesh (:mod:`jaxmem.sharding`).

    Returns:
      The :class:`Target`.

    Raises:
      ValueError: both ``run_dir`` and ``adapter``, or a reference with another vocabulary.
      jaxmem.checkpointing.CheckpointError: the run has no such finished epoch.

    Example:
        >>> load_target("smollm2-135m", run_dir="runs/lora", adapter="out/adapter")
        Traceback (most recent call last):
        ValueError: Give a run (--run-dir) or an adapter (--adapter), not both: ...

        A PEFT adapter alone, ``load_target("smollm2-135m", adapter="out/adapter")``, is
        described as ``'smollm2-135m + adapter out/adapter'``.
    """
    if run_dir and adapter:
        raise ValueError("Give a run (--run-dir) or an adapter (--adapter), not both: a run's "
                         "checkpoint already holds its adapter.")
    base, cfg, tok = _load(model, tokenizer, attention_impl)
    params, labels, what = base, None, f"base model {model}"
    if run_dir:
        params, labels = load_checkpoint(run_dir, base, cfg, tok, epoch=epoch, mesh=mesh)
        what = f"{run_dir} (epoch {epoch or 'last'})"
    elif adapter:
        params, labels, _ = import_adapter(base, cfg, adapter)
        what = f"{model} + adapter {adapter}"
    ref = base
    if reference and reference != model:
        ref, rcfg, _ = _load(reference, None, attention_impl)
        if rcfg.vocab_size != cfg.vocab_size:
            raise ValueError("The reference model must share the target's tokenizer/vocabulary.")
    return Target(params=params, cfg=cfg, tokenizer=tok, labels=labels, base=base,
                  reference=ref, description=what)


def _load(name: str, tokenizer: str | None, attention_impl: str | None):
    params, cfg, tok = load_model(name, tokenizer=tokenizer)
    if attention_impl is not None:
        cfg = dataclasses.replace(cfg, attention_impl=attention_impl)
    return params, cfg, tok


__all__ = ["Target", "load_target"]
