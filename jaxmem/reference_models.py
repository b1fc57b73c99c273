"""K reference fine-tunes of a target, trained once and cached: :class:`ReferenceModels`, and
the population they train on (:func:`population_candidates`, :func:`sample_population`).

One folder per reference set, ``<root>/k<K>-pop<P>-<digest>/``, the digest that of its
``references.json`` (model, method, training config, population texts, K, split seed): so a
set is trained once per (base model, method, method settings, training settings, population,
K, seed). It holds an orbax checkpoint per epoch (stacked trainable leaves and optimizer state,
:func:`jaxmem.runs.save_epoch`; an interrupted training resumes after the last one) and the
references' mean token log-likelihoods per (epoch, texts, scoring settings) in ``loglik/``
(atomic ``.npy``), so a later epoch, attack or rerun reads them instead of training or
scoring again. The attacks that use them: :mod:`jaxmem.reference_attacks`.

Example:
    A population drawn from the embedded corpus, disjoint from every text of the target:

    >>> from jaxmem.data import load_corpus
    >>> c = load_corpus("default", n_train=16, n_members=16, n_nonmembers=16, n_validation=4)
    >>> candidates = population_candidates("default", c.train + c.validation + c.members
    ...                                    + c.nonmembers)
    >>> pop = sample_population(candidates, 8, seed=0)
    >>> len(pop), set(pop).isdisjoint(c.members + c.nonmembers)
    (8, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxmem import runs
from jaxmem.data import clean_splits, embedded
from jaxmem.data.overlap import text_key
from jaxmem.data.sources import resolve
from jaxmem.io import atomic_write
from jaxmem.profiling import phase
from jaxmem.references import (References, init_references, reference_log_likelihoods,
                               reference_splits, train_references)
from jaxmem.tuning import method_config
from jaxmem.tuning.partition import merge, split

SPEC = "references.json"
LOGLIK = "loglik"
OUTPUTS = (SPEC, runs.CHECKPOINTS, LOGLIK)


# ----------------------------------------------------------------------------- population

def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 over the texts in order, each followed by a NUL (and their count first): names a
    reference set's folder and its cached log-likelihoods."""
    h = hashlib.sha256(f"{len(texts)}\0".encode())
    for t in texts:
        h.update(t.encode() + b"\0")
    return h.hexdigest()


def population_candidates(dataset: str, exclude: Sequence[str],
                          text_column: str = "text") -> list[str]:
    """Every text of ``dataset`` (cleaned as :func:`jaxmem.data.load_corpus` cleans it) but
    those in ``exclude`` (matched as the audit matches texts): what a population is drawn
    from. Pass the target's training, validation, member and non-member texts."""
    source = resolve(os.fspath(dataset), text_column)
    splits, _ = clean_splits(source, embedded.MIN_CHARS if source.name == "wiki-gensim" else 1,
                       text_column)
    seen = {text_key(t) for t in exclude}
    out = []
    for units in splits.values():
        for u in units:
            key = text_key(u.text)
            if key not in seen:
                seen.add(key)
                out.append(u.text)
    return out


def sample_population(candidates: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` of the candidates, a seeded random draw.

    Raises:
      ValueError: fewer candidates than ``n``, naming the fix.
    """
    if len(candidates) < n:
        raise ValueError(f"The references need a population of {n} texts that the target "
                         f"neither trained on nor is audited on, but the dataset has only "
                         f"{len(candidates)} left; give a smaller population (e.g. lira:k=4,pop="
                         f"{max(len(candidates) // 2 * 2, 2)}), fewer training texts, or a "
                         "larger dataset.")
    idx = np.random.default_rng([seed, 11]).permutation(len(candidates))[:n]
    return [candidates[i] for i in idx]


# ----------------------------------------------------------------------------- the cache

def _save_npy(array):
    def write(tmp):
        with open(tmp, "wb") as fh:  # a handle: np.save would add ".npy" to the temporary name
            np.save(fh, array)
    return write


class ReferenceModels:
    """K references of one target's method and training on one population, trained once in
    ``root/k<K>-pop<P>-<digest>/`` (see the module docstring) and read back from there.

    Example:
        >>> import jaxmem, os
        >>> base, cfg, tok = jaxmem.tiny_model()
        >>> pop = [f"Population text {i:02d}." for i in range(8)]
        >>> tcfg = jaxmem.TrainConfig(epochs=1, block_size=32, batch_size=4)
        >>> refs = ReferenceModels("refs", base, cfg, tok, model_name="tiny", method="lora:r=4",
        ...                        tcfg=tcfg, population=pop, k=2)
        >>> texts_ll, = refs.log_likelihoods([["The cat sat.", "A dog ran."]], epoch=1,
        ...                                  block_size=32)     # trains, then scores: [K, N]
        >>> texts_ll.shape
        (2, 2)
        >>> os.listdir("refs")             # k<K>-pop<P>-<digest>; a second call reads it back
        ['k2-pop8-...']
    """

    def __init__(self, root, base, cfg, tokenizer, *, model_name: str, method, tcfg,
                 population: Sequence[str], k: int, progress: bool = False):
        self.base, self.cfg, self.tok, self.tcfg, self.k = base, cfg, tokenizer, tcfg, k
        self.mcfg, self.progress = method_config(method), progress
        self.population = list(population)
        self.membership = reference_splits(len(self.population), k, tcfg.seed)
        self.spec = json.loads(json.dumps({
            "model": str(model_name), "model_config": cfg.to_dict(),
            "method": dataclasses.asdict(self.mcfg), "train": tcfg.to_dict(), "k": k,
            "split_seed": tcfg.seed, "n_population": len(self.population),
            "population_sha256": texts_sha256(self.population)}))
        digest = texts_sha256([json.dumps(self.spec, sort_keys=True)])[:12]
        self.folder = Path(root) / f"k{k}-pop{len(self.population)}-{digest}"

    def _path(self, epoch: int, texts: Sequence[str], kw: dict) -> Path:
        key = texts_sha256([json.dumps(kw, sort_keys=True), *texts])[:20]
        return self.folder / LOGLIK / f"epoch_{epoch:03d}-{key}.npy"

    def _score(self, refs, epoch: int, text_sets, kw: dict) -> None:
        for texts in text_sets:
            path = self._path(epoch, texts, kw)
            if not path.exists():
                with phase("reference models: scoring"):
                    ll = reference_log_likelihoods(refs, self.cfg, self.tok, texts, **kw)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, _save_npy(ll))

    def _restore(self, epoch: int, stacked=None, labels=None, opt_state=None):
        """(stacked params, labels, opt_state) of a finished epoch, laid out as ``stacked``
        (default: fresh references); the optimizer state only when its layout is given."""
        if stacked is None:
            stacked, labels = init_references(self.base, self.cfg, self.tok, self.mcfg,
                                              self.tcfg, self.k)
        trainable, frozen = split(stacked, labels)
        like = {"params": trainable} if opt_state is None else {"params": trainable,
                                                                  "opt_state": opt_state}
        state = runs.restore_epoch(self.folder, epoch, like, partial=opt_state is None)
        return merge(state["params"], frozen), labels, state.get("opt_state")

    def log_likelihoods(self, text_sets: Sequence[Sequence[str]], epoch: int, *,
                        epochs: Sequence[int] = (), **score_kw) -> list[np.ndarray]:
        """[K, len(texts)] mean token log-likelihoods of each text set under the references at
        ``epoch``, from the cache, else from the epoch's checkpoint, else by training (resumed
        after the last finished epoch) through ``max(epoch, *epochs)``, scoring the sets at
        ``epoch`` and each later epoch of ``epochs`` on the way (the ones a study will ask
        for next). ``score_kw``: :func:`jaxmem.scoring.score_texts`'s batch_size, block_size,
        dtype.

        Raises:
          FileExistsError: the folder holds something else (not jaxmem's, or another spec).
        """
        if not 1 <= epoch <= self.tcfg.epochs:
            raise ValueError(f"The references train for {self.tcfg.epochs} epochs like the "
                             f"target; epoch {epoch} does not exist.")
        runs.claim_dir(self.folder, SPEC, self.spec, overwrite=False, what="reference-model set",
                       outputs=OUTPUTS, error=FileExistsError)
        paths = [self._path(epoch, t, score_kw) for t in text_sets]
        done = runs.finished_epochs(self.folder)
        if not all(p.exists() for p in paths) and epoch in done:
            stacked, labels, _ = self._restore(epoch)
            self._score(References(stacked, labels, self.membership, np.zeros(0)), epoch,
                        text_sets, score_kw)
        elif not all(p.exists() for p in paths):
            score_at = {epoch} | {e for e in epochs if epoch < e <= self.tcfg.epochs}
            last = done[-1] if done else 0

            def resume(stacked, opt_state, labels):
                params, _, opt_state = self._restore(last, stacked, labels, opt_state)
                return last, params, opt_state, [runs.epoch_record(self.folder, e)["train_loss"]
                                                 for e in range(1, last + 1)]

            def on_epoch(e, refs, opt_state):
                with phase("reference models: checkpoint"):
                    runs.save_epoch(self.folder, e, {"params": split(refs.params, refs.labels)[0],
                                                     "opt_state": opt_state},
                                    {"epoch": e, "train_loss": refs.train_loss[-1].tolist()})
                if self.progress:
                    print(f"{self.k} references ({self.mcfg.name}) epoch {e}: train loss "
                          + " ".join(f"{x:.3f}" for x in refs.train_loss[-1]), flush=True)
                if e in score_at:
                    self._score(refs, e, text_sets, score_kw)

            with phase("reference models: training"):
                train_references(self.base, self.cfg, self.tok, self.mcfg, self.population,
                                 self.tcfg, n_refs=self.k, until=max(score_at),
                                 resume=resume if last else None, on_epoch=on_epoch)
        return [np.load(p) for p in paths]


__all__ = ["LOGLIK", "OUTPUTS", "ReferenceModels", "SPEC", "population_candidates",
           "sample_population"]
