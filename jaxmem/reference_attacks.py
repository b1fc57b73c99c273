"""Offline LiRA and RMIA as ordinary attacks (``lira``, ``rmia``): reference models trained
once, checkpointed, and reused across epochs and reruns.

**Specs** (read by :mod:`jaxmem.attack_options`). ``lira`` and ``rmia`` take options as
``name:key=value,key=value``:

* ``k``: the number of reference models K, even (complementary halves), default 4.
* ``pop``: the population size P (default: twice the target's training texts, so that each
  reference trains on as many texts as the target; each trains on P/2).
* lira ``variance``: ``global`` (default) or ``per_example``
  (:func:`jaxmem.references.lira_offline`).
* rmia ``a``: a number in [0, 1], or ``tune`` (default; :func:`jaxmem.references.tune_rmia_a`
  on the references alone, which needs k >= 4); ``gamma`` > 0, default 1.

``lira`` and ``rmia`` with the same ``k`` and ``pop`` share one set of references.

**Offline.** The references are the target's method trained with the target's training config
(reference k with seed ``train.seed + 1 + k``, :func:`jaxmem.references.train_references`) on
complementary random halves of a *population*: texts of the same dataset that the target never
trained on, validated on, or is audited on (members and non-members left out), drawn from both
sides of its train / held-out split in proportion to what is left there. So every audited text
is OUT for every reference, as in ``experiments/reference_attacks.py``. RMIA's z samples are the
population texts, each compared against the references that did not train on it.

**Epochs.** Each reference trains for the target's ``train.epochs`` (the same learning-rate
schedule) and the target at epoch e is compared with the references at epoch e. Epoch 0 (a
study's base model) compares the base model with K copies of itself: nothing was trained.

**Cache** (:class:`jaxmem.reference_models.ReferenceModels`). One folder per reference set,
``k<K>-pop<P>-<digest>``, under ``<study>/references/<model>/<dataset>/<method>/`` in a study
and ``<run>/references/`` for ``jaxmem attack --run-dir``: a checkpoint per epoch and the
log-likelihoods per (epoch, texts, scoring settings). A second attack, epoch or rerun reads
them; nothing is retrained.

**Cost.** K extra fine-tunes per (method, training seed) in one vmapped step (about K times the
target's training steps; full fine-tuning holds K copies of the model), plus K scoring passes of
the audited texts (and, for RMIA, of the population) per attacked epoch. Neither attack is in a
default attack list. One device only (no mesh), and no DP-SGD targets.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import numpy as np

from jaxmem import runs
from jaxmem.attack_options import reference_requests
from jaxmem.profiling import phase
from jaxmem.reference_models import (ReferenceModels, population_candidates, sample_population,
                                     texts_sha256)
from jaxmem.references import lira_offline, reference_splits, rmia_offline, tune_rmia_a
from jaxmem.scoring import score_texts
from jaxmem.trainer import TrainConfig
from jaxmem.tuning import method_config


# ----------------------------------------------------------------------------- the attacks

@dataclasses.dataclass
class ReferenceSignals:
    """What LiRA and RMIA read besides the target: K references' mean token log-likelihoods.

    Attributes:
      texts_ll: [K, N] of the audited texts (OUT for every reference).
      membership: bool [K, P], which population texts each reference trained on.
      population_ll: [K, P] of the population (RMIA); target_population_ll: [P], the target's.
      info: recorded in the attack's ``metrics.json`` (``info.references``): where the
        references live, RMIA's tuned ``a``.
    """

    texts_ll: np.ndarray
    membership: np.ndarray
    population_ll: np.ndarray | None = None
    target_population_ll: np.ndarray | None = None
    info: dict = dataclasses.field(default_factory=dict)


def _signals(inp, name: str, k: int, pop) -> ReferenceSignals:
    refs = getattr(inp, "references", None) or {}
    if (k, pop) not in refs:
        raise ValueError(f"The {name} attack needs {k} reference models' log-likelihoods "
                         f"(AttackInputs.references[{(k, pop)}]): run it in a study, with `jaxmem "
                         "attack --run-dir`, or through jaxmem.audit.run_attacks_on(..., "
                         "references=jaxmem.reference_attacks.reference_provider(...)).")
    return refs[(k, pop)]


def lira(inp, k: int = 4, pop=None, variance: str = "global") -> np.ndarray:
    """Offline LiRA of the target against its K references
    (:func:`jaxmem.references.lira_offline`, log Lambda; higher = member)."""
    r = _signals(inp, "lira", k, pop)
    target = -inp.target.nll()
    same = (r.texts_ll == r.texts_ll[:1]) | np.isnan(r.texts_ll)
    if same.all():  # K copies of one model (epoch 0): no spread to test against, no evidence
        return np.where(np.isnan(target), np.nan, np.log(0.5))
    return lira_offline(target, r.texts_ll, variance=variance)


def rmia(inp, k: int = 4, pop=None, a="tune", gamma: float = 1.0) -> np.ndarray:
    """Offline RMIA of the target against its K references, the population as z samples
    (:func:`jaxmem.references.rmia_offline`); ``a="tune"``: :func:`tune_rmia_a` on the
    references and population alone (recorded in ``info``)."""
    r = _signals(inp, "rmia", k, pop)
    if r.population_ll is None or r.target_population_ll is None:
        raise ValueError("The rmia attack needs the population's log-likelihoods under the "
                         "target and the references (ReferenceSignals.population_ll).")
    if a == "tune":
        a, aucs = tune_rmia_a(r.population_ll, r.membership, gamma=gamma)
        r.info[f"rmia_a(gamma={gamma:g})"] = {"a": a, "tuning_auc": aucs}
    return rmia_offline(-inp.target.nll(), r.texts_ll, r.target_population_ll, r.population_ll,
                        z_ref_out=~r.membership, a=a, gamma=gamma)


# ----------------------------------------------------------------------------- providers

def reference_provider(root, base, cfg, tokenizer, *, model_name: str, method, tcfg, epoch: int,
                       candidates: Callable[[], Sequence[str]], n_train: int,
                       epochs: Sequence[int] = (), progress: bool = False):
    """The ``references`` argument of :func:`jaxmem.audit.run_attacks_on` for a target that is
    ``method`` trained with ``tcfg`` on ``n_train`` texts, attacked at ``epoch`` (0: the base
    model, whose references are the base model). ``candidates()`` gives the texts a population
    is drawn from (:func:`population_candidates`); ``epochs``, the epochs attacked next.

    Returns:
      ``provide(params, texts, requests, **score_kw) -> {(k, pop): ReferenceSignals}``, with
      ``requests`` from :func:`reference_requests`.
    """
    def provide(params, texts, requests, **kw):
        out, target_pop = {}, {}
        for (k, pop), need_population in requests.items():
            population = sample_population(candidates(), pop or 2 * n_train, tcfg.seed)
            sets = [list(texts), population] if need_population else [list(texts)]
            info = {"k": k, "n_population": len(population), "epoch": epoch}
            if epoch == 0:  # nothing trained: every reference is the base model
                lls = [np.repeat(-score_texts(base, cfg, tokenizer, s, **kw).nll()[None], k, 0)
                       for s in sets]
            else:
                refs = ReferenceModels(root, base, cfg, tokenizer, model_name=model_name,
                                       method=method, tcfg=tcfg, population=population, k=k,
                                       progress=progress)
                lls = refs.log_likelihoods(sets, epoch, epochs=epochs, **kw)
                info["folder"] = str(refs.folder)
            sig = ReferenceSignals(lls[0], reference_splits(len(population), k, tcfg.seed),
                                   info=info)
            if need_population:
                h = texts_sha256(population)
                if h not in target_pop:
                    with phase("scoring"):
                        target_pop[h] = -score_texts(params, cfg, tokenizer, population,
                                                     **kw).nll()
                sig.population_ll, sig.target_population_ll = lls[1], target_pop[h]
            out[(k, pop)] = sig
        return out

    return provide


def _refuse(mesh, dp) -> None:
    if mesh is not None:
        raise ValueError("lira and rmia train their reference models on one device; drop them "
                         "from the attacks or run without a mesh.")
    if dp:
        raise ValueError("lira and rmia references are trained without DP-SGD, unlike this "
                         "DP-SGD target; drop them from the attacks.")


def study_references(out, model_name: str, dataset: str, corpus, base, cfg, tokenizer, scfg, *,
                     mesh=None, progress: bool = False):
    """For :func:`jaxmem.study.run_study`: ``for_cell(method, tcfg, epoch)`` -> the
    ``references`` of one attacked (method, epoch) (method None, epoch 0: the base model), or
    None when the study's attacks need no references. References live in
    ``runs.study_reference_dir(out, model, dataset, method)``."""
    if not reference_requests(scfg.audit.attacks):
        return lambda method, tcfg, epoch: None
    _refuse(mesh, scfg.train.dp)
    exclude = corpus.train + corpus.validation + corpus.members + corpus.nonmembers
    candidates = functools.cache(lambda: population_candidates(dataset, exclude))

    def for_cell(method, tcfg, epoch):
        return reference_provider(
            runs.study_reference_dir(out, model_name, dataset, method or "base"), base, cfg,
            tokenizer, model_name=model_name, method=method, tcfg=tcfg, epoch=epoch,
            candidates=candidates, n_train=len(corpus.train),
            epochs=scfg.attack_epochs or range(1, tcfg.epochs + 1), progress=progress)

    return for_cell


def check_run_attack(run_dir, *, streamed: bool, mesh) -> None:
    """``jaxmem attack`` with lira / rmia: refused, before any work, without a run to repeat
    (``--run-dir``), on streamed files, on a mesh, or for a DP-SGD run."""
    if not run_dir:
        raise ValueError("lira and rmia train reference models the way the target was trained, "
                         "so they need a jaxmem run: give --run-dir (a base model or --adapter "
                         "has no training to repeat), or drop them from --attacks.")
    if streamed:
        raise ValueError("lira and rmia are not streamed: attack the run's own corpus (drop "
                         "--members/--nonmembers) or drop them from --attacks.")
    _refuse(mesh, runs.read_run_spec(run_dir).get("train", {}).get("dp"))


def run_references(run_dir, base, cfg, tokenizer, corpus, *, dataset: str, epoch: int | None = None,
                   text_column: str = "text", progress: bool = False):
    """For ``jaxmem attack --run-dir``: the ``references`` of the run at ``epoch`` (default its
    last finished one), cached in ``<run_dir>/references/``; the population is drawn from
    ``dataset`` minus the corpus's training, validation, member and non-member texts."""
    spec = runs.read_run_spec(run_dir)
    tcfg = TrainConfig.from_dict(spec["train"])
    m = spec["method"]
    done = runs.finished_epochs(run_dir)
    epoch = epoch or (done[-1] if done else tcfg.epochs)
    exclude = corpus.train + corpus.validation + corpus.members + corpus.nonmembers
    return reference_provider(
        runs.run_reference_dir(run_dir), base, cfg, tokenizer, model_name=spec.get("model"),
        method=method_config(m["name"], **{k: v for k, v in m.items() if k != "name"}),
        tcfg=tcfg, epoch=epoch, n_train=len(corpus.train),
        candidates=functools.cache(lambda: population_candidates(dataset, exclude, text_column)),
        progress=progress)


__all__ = ["ReferenceSignals", "check_run_attack", "lira", "reference_provider", "rmia",
           "run_references", "study_references"]
