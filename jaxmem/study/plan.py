"""A study's plan, shown before any model loads: the cells, the texts, the attacks, what a
rerun skips, and an estimated time from this machine's measured speed.

The grid is cut into units, one per attacked (cell, epoch) plus the base model per (model,
dataset); each unit's work is its estimated FLOPs (:mod:`jaxmem.progress`): the training
epochs that lead to it, their validation passes, and its attack's scoring passes. The study's
bar (:class:`jaxmem.progress.WorkBar`) counts finished units by their work, so its ETA weighs
a training epoch against an attack; :meth:`StudyPlan.refine` corrects a (model, dataset)'s
work once the model's size and the corpus's real sizes are known.

Example:
    >>> from jaxmem.study import StudyConfig
    >>> cfg = StudyConfig.from_dict({"methods": ["lora", "full"], "seeds": [0, 1],
    ...                              "train": {"epochs": 2}, "n_train": 64, "n_members": 32,
    ...                              "n_nonmembers": 32, "n_validation": 8})
    >>> plan = StudyPlan(cfg, "results/none", n_params={"smollm2-135m": 134_515_008},
    ...                  flops=1e11)
    >>> len(plan.units), plan.n_done  # the base model + 2 methods x 2 seeds x 2 epochs
    (9, 0)
    >>> print(plan.lines()[0])
    study 'study': 1 model x 1 dataset x 2 methods x 2 seeds, 2 epochs each: 9 cells (the base model and 8 (method, seed, epoch))
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxmem.attacks import needs
from jaxmem.data.sources import ALIASES as CORPUS_ALIASES
from jaxmem.data.split import requested_sizes
from jaxmem.progress import UTILIZATION, count_params, duration, measure_flops
from jaxmem.study.config import StudyConfig
from jaxmem.study.folders import cell_done, study_attack_dir

SIZES = ("n_train", "n_validation", "n_members", "n_nonmembers")
# a corpus whose default fine-tuning set is "all of it" (a local file): counted as this many
# texts until it loads
UNKNOWN_TRAIN = 1_000


@dataclasses.dataclass
class Unit:
    """One attacked (cell, epoch), or the base model (method "base", epoch 0)."""

    model: str
    dataset: str
    method: str
    seed: int | None
    epoch: int
    trains: int          # training epochs that lead to it (the last unit of a run: the rest)
    done: bool
    work: float = 0.0    # estimated FLOPs

    @property
    def label(self) -> str:
        return self.method if self.seed is None else f"{self.method} seed {self.seed}"


class StudyPlan:
    """The units of a study and their estimated work.

    Args:
      scfg: the study.
      out: its folder (finished units are read there: :func:`jaxmem.study.folders.cell_done`).
      n_params: model -> parameter count (default: :func:`jaxmem.progress.count_params`).
      flops: the machine's FLOP/s (default: :func:`jaxmem.progress.measure_flops`).
    """

    def __init__(self, scfg: StudyConfig, out, *, n_params: dict | None = None,
                 flops: float | None = None):
        self.scfg, self.out = scfg, Path(out)
        self.n_params = {m: (n_params or {}).get(m) or count_params(m) for m in scfg.models}
        self.flops = flops if flops is not None else measure_flops()
        self.sizes = {d: self._default_sizes(d) for d in scfg.datasets}
        self.units: list[Unit] = []
        for model in scfg.models:
            for dataset in scfg.datasets:
                self.units.append(Unit(model, dataset, "base", None, 0, 0, cell_done(
                    study_attack_dir(out, model, dataset, "base", 0))))
                for method in scfg.methods:
                    for seed in scfg.run_seeds():
                        self.units += self._run_units(model, dataset, method, seed)
        for u in self.units:
            u.work = self._work(u)

    def _default_sizes(self, dataset: str) -> dict:
        given = {k: getattr(self.scfg, k) for k in SIZES}
        want = requested_sizes(CORPUS_ALIASES.get(dataset, dataset), given)[0]
        return {k: UNKNOWN_TRAIN if v is None else v for k, v in want.items()}

    def _run_units(self, model, dataset, method, seed) -> list[Unit]:
        tcfg = self.scfg.train_config(method, seed)
        epochs = sorted(self.scfg.attack_epochs or range(1, tcfg.epochs + 1))
        units, prev = [], 0
        for i, e in enumerate(epochs):
            last = i == len(epochs) - 1
            trains = (tcfg.epochs if last else e) - prev
            units.append(Unit(model, dataset, method, seed, e, trains, cell_done(
                study_attack_dir(self.out, model, dataset, method, e, seed))))
            prev = e
        return units

    def passes(self, base: bool) -> int:
        """Scoring passes of one attack: the target's, the lowercased texts', ReCaLL's, and
        about 3 per gradient-norm variant (a forward and a backward); the reference's is the
        base model's pass, scored once per dataset."""
        extra = needs(self.scfg.audit.attacks)
        n = 1 + ("lowercase" in extra) + ("recall" in extra)
        return n + 3 * sum(x.startswith("gradients:") for x in extra)

    def _work(self, u: Unit) -> float:
        p = self.n_params.get(u.model) or 0
        s = self.sizes[u.dataset]
        tb = self.scfg.train.block_size
        ab = self.scfg.audit.block_size or tb
        score = 2 * p * (s["n_members"] + s["n_nonmembers"]) * ab * self.passes(u.epoch == 0)
        validate = 2 * p * s["n_validation"] * tb
        if u.epoch == 0:
            return score + validate
        per_token = 6 if u.method.partition(":")[0] == "full" else 4
        return u.trains * (per_token * p * s["n_train"] * tb + validate) + score

    def refine(self, model: str, dataset: str, *, n_params: int | None = None,
               sizes: dict | None = None) -> float:
        """Corrects the estimate once the model's real size or the corpus's real sizes are
        known; returns the change of the total work (for :meth:`WorkBar.grow`)."""
        if n_params is not None:
            self.n_params[model] = n_params
        if sizes is not None:
            self.sizes[dataset] = {k: sizes[k] for k in SIZES}
        change = 0.0
        for u in self.units:
            if u.model == model and (sizes is None or u.dataset == dataset) and not u.done:
                w = self._work(u)
                change, u.work = change + w - u.work, w
        return change

    def find(self, model, dataset, method, seed, epoch) -> Unit:
        return next(u for u in self.units if (u.model, u.dataset, u.method, u.seed, u.epoch)
                    == (model, dataset, method, seed, epoch))

    @property
    def n_done(self) -> int:
        return sum(u.done for u in self.units)

    @property
    def total(self) -> float:
        return sum(u.work for u in self.units)

    @property
    def done_work(self) -> float:
        return sum(u.work for u in self.units if u.done)

    @property
    def rate(self) -> float:
        """Estimated work per second: :data:`jaxmem.progress.UTILIZATION` of the measured speed."""
        return UTILIZATION * self.flops

    def lines(self) -> list[str]:
        """The plan as the study prints it."""
        c = self.scfg
        seeds = c.run_seeds()
        epochs = sorted({e for u in self.units for e in [u.epoch] if e})

        def n(k, word):
            return f"{k} {word}{'' if k == 1 else 'es' if word.endswith('s') else 's'}"

        grid = " x ".join([n(len(c.models), "model"), n(len(c.datasets), "dataset"),
                           n(len(c.methods), "method")]
                          + ([n(len(seeds), "seed")] if seeds != (None,) else []))
        attacked = ("every epoch" if not c.attack_epochs
                    else f"epochs {', '.join(map(str, epochs))} attacked")
        out = [f"study {c.name!r}: {grid}, {c.train.epochs} epochs each: {len(self.units)} "
               f"cells (the base model and {len(self.units) - len(c.models) * len(c.datasets)}"
               f" (method, seed, epoch))" + ("" if not c.attack_epochs else f"; {attacked}")]
        for d, s in self.sizes.items():
            given = all(getattr(c, k) is not None for k in SIZES)
            out.append(f"texts ({d}): {s['n_train']} train, {s['n_validation']} validation, "
                       f"{s['n_members']} members + {s['n_nonmembers']} non-members"
                       + ("" if given else " (corpus defaults, as requested)")
                       + f"; {c.train.block_size} tokens to train, "
                       f"{c.audit.block_size or c.train.block_size} to attack")
        out.append(f"attacks: {', '.join(c.audit.attacks)} ({n(self.passes(False), 'scoring pass')}"
                   " per cell)")
        for m, p in self.n_params.items():
            out.append(f"model {m}: " + (f"{p / 1e6:.1f}M parameters" if p and p >= 1e5
                                         else f"{p} parameters" if p
                                         else "size unknown until it loads"))
        skipped = [x for x in ("references", "extraction", "exposure")
                   if x == "references" and "references" in needs(c.audit.attacks)
                   or x == "extraction" and c.extraction is not None
                   or x == "exposure" and c.train.canaries is not None]
        left = (self.total - self.done_work) / self.rate if self.rate else None
        if left is not None and all(self.n_params.values()):
            out.append(
                f"estimated time: {duration(left)} (an estimate: 6 x params x tokens to train, "
                f"2 x params x tokens to score, at {UTILIZATION:.0%} of this machine's measured "
                f"{self.flops / 1e9:.0f} GFLOP/s, compiling not counted; the bar's ETA follows "
                "the measured time once a cell finishes"
                + (f"; {', '.join(skipped)} not counted" if skipped else "") + ")")
        if self.n_done:
            out.append(f"skipping {self.n_done} finished cells of {len(self.units)} "
                       f"(results in {self.out})")
        return out


__all__ = ["StudyPlan", "Unit"]
