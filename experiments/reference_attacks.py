"""Attacks that need reference fine-tunes: LOSS, Ref, offline LiRA and offline RMIA side by side.

One target fine-tune on the members, K references of the same method on complementary random
halves of a population set (:func:`jaxmem.references.train_references`: one vmapped step for
all K over the shared frozen base), then every attack on the same members and non-members, with
the usual metrics (AUC, TPR at low FPR, bootstrap CIs).

Data (one :func:`jaxmem.load_corpus` draw): the members are the target's whole training set;
the non-members come from held-out articles. The population is half train-side texts the target
never trained on (``corpus.train`` minus the members) and half held-out texts beyond the
non-members, so the references see the members' articles and the non-members' articles alike
(a population from held-out articles alone would make non-members look familiar to the
references and flatter every reference attack). No population text is audited: offline.

Attacks (higher = member): ``loss`` (target mean token log-likelihood), ``ref`` (minus the base
model's), ``ref_mean_k`` (minus the mean over the K references'), ``lira_offline:global`` and
``lira_offline:per_example`` (the two variance options), ``rmia_offline:a=A``
(:mod:`jaxmem.references`; the population is RMIA's z set, each z compared against the
references that did not train on it; ``rmia_a: tune`` picks A with
:func:`jaxmem.references.tune_rmia_a` on the references alone), and ``grad_norm`` (MIMIR,
:mod:`jaxmem.gradnorm`, over the method's trainable leaves) when ``grad_norm: true``.

Outputs in ``--out-dir`` (every file atomic; a folder holding another config is refused unless
``--overwrite``; the target's run folder resumes)::

    experiment.json   the config (the folder's identity)
    runs/target/      the target's run folder (jaxmem.trainer.train)
    scores.parquet    per-example scores of every attack
    results.md        the Markdown table; results.json: metrics, info and timings

    python experiments/reference_attacks.py experiments/cpu/reference_attacks.yaml \\
        --out-dir results/cpu-reference-attacks
    python experiments/reference_attacks.py experiments/cpu/reference_attacks.yaml \\
        --out-dir /tmp/ref-tiny --set n_members=32 n_nonmembers=32 n_population=64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from jaxmem import runs
from jaxmem.audit import AuditConfig, metrics_table
from jaxmem.config import load_yaml, replace_nested
from jaxmem.io import atomic_write, read_json, write_table
from jaxmem.trainer import TrainConfig

SPEC = "experiment.json"
OUTPUTS = (SPEC, "runs", runs.SCORES, "results.md", "results.json")


@dataclasses.dataclass(frozen=True)
class ReferenceExperiment:
    """One target, K references, every attack. ``train`` is the target's and the references'
    training config (references use seeds ``train.seed + 1 + k``); ``audit`` gives the scoring
    batch/block size, dtype, bootstrap and seed (its ``attacks`` are not read)."""

    model: str = "smollm2-135m"
    dataset: str = "default"
    method: str = "lora"
    n_members: int = 32
    n_nonmembers: int = 32
    n_population: int = 64
    n_validation: int = 16
    n_refs: int = 4
    rmia_a: float | str = "tune"
    rmia_gamma: float = 1.0
    grad_norm: bool = True
    train: TrainConfig = TrainConfig(epochs=1, block_size=32)
    audit: AuditConfig = AuditConfig(block_size=32, n_boot=200)

    def __post_init__(self):
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        if isinstance(self.audit, dict):
            object.__setattr__(self, "audit", AuditConfig(**self.audit))
        for name in ("n_members", "n_nonmembers", "n_population", "n_validation"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {v!r}.")
        from jaxmem.references import reference_splits
        from jaxmem.tuning import method_config

        method_config(self.method)  # an unknown method fails before any work
        if self.rmia_a != "tune" and not (isinstance(self.rmia_a, (int, float))
                                          and 0 <= self.rmia_a <= 1):
            raise ValueError(f"rmia_a must be 'tune' or a number in [0, 1], got "
                             f"{self.rmia_a!r}.")
        reference_splits(self.n_population, self.n_refs)  # so does a bad n_refs

    @classmethod
    def from_yaml(cls, path, overrides=()) -> "ReferenceExperiment":
        """A config from YAML, then ``key=value`` overrides (dotted for nested: train.epochs=2)."""
        d = load_yaml(Path(path).read_text()) if path else {}
        exp = cls(**(d or {}))
        values = {}
        for item in overrides:
            k, sep, v = item.partition("=")
            if not sep:
                raise ValueError(f"Override {item!r} is not key=value.")
            values[k.strip()] = load_yaml(v)
        return replace_nested(exp, values)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def draw_texts(exp: ReferenceExperiment):
    """(members, non-members, population, validation) from one corpus draw (see the module
    docstring); the population is disjoint from both audited sets."""
    from jaxmem.data import load_corpus

    half = exp.n_population // 2
    corpus = load_corpus(exp.dataset, seed=exp.train.seed, n_members=exp.n_members,
                         n_train=exp.n_members + half, n_validation=exp.n_validation,
                         n_nonmembers=exp.n_nonmembers + exp.n_population - half, strict=True)
    member_set = set(corpus.members)
    train_side = [t for t in corpus.train if t not in member_set]
    members, held = corpus.members, corpus.nonmembers
    nonmembers, population = held[:exp.n_nonmembers], train_side + held[exp.n_nonmembers:]
    assert not (set(population) & (member_set | set(nonmembers)))
    return members, nonmembers, population, corpus.validation


def run(exp: ReferenceExperiment, out_dir, *, overwrite: bool = False,
        progress: bool = True) -> dict:
    """Runs the experiment into ``out_dir``; returns results.json's content."""
    from jaxmem import attacks as A
    from jaxmem.audit import check_member_sets
    from jaxmem.bootstrap import summarize
    from jaxmem.gradnorm import grad_norm_scores
    from jaxmem.models import load_model
    from jaxmem.profiling import Profile, phase
    from jaxmem.references import (lira_offline, reference_log_likelihoods, rmia_offline,
                                   train_references, tune_rmia_a)
    from jaxmem.scoring import score_texts
    from jaxmem.trainer import train

    out = Path(out_dir)
    runs.claim_dir(out, SPEC, exp.to_dict(), overwrite=overwrite, what="reference-attack "
                   "experiment", outputs=OUTPUTS, error=FileExistsError)
    if (out / "results.json").exists():
        print(f"{out} is done; its table:\n{(out / 'results.md').read_text()}")
        return read_json(out / "results.json")
    t0 = time.perf_counter()
    with Profile() as prof:
        with phase("load model + corpus"):
            base, cfg, tok = load_model(exp.model)
            members, nonmembers, population, validation = draw_texts(exp)
            members, nonmembers = check_member_sets(members, nonmembers)
        texts = members + nonmembers
        labels = np.array([1] * len(members) + [0] * len(nonmembers), bool)
        with phase("train target"):
            res = train(base, cfg, tok, exp.method, members, validation, out / "runs" / "target",
                        exp.train, model_name=exp.model, progress=progress)
        with phase("train references (vmapped)"):
            refs = train_references(base, cfg, tok, exp.method, population, exp.train,
                                    n_refs=exp.n_refs, progress=progress)
        kw = dict(batch_size=exp.audit.batch_size, block_size=exp.audit.block_size,
                  dtype=exp.audit.dtype)
        n = len(texts)
        with phase("scoring"):
            target = score_texts(res.params, cfg, tok, texts + population, **kw)
            base_stats = score_texts(base, cfg, tok, texts, **kw)
            ref_ll = reference_log_likelihoods(refs, cfg, tok, texts + population, **kw)
        target_ll = -target.nll()
        stats = dataclasses.replace(target, **{f: getattr(target, f)[:n] for f in
                                               ("logp", "mu", "sigma", "mask", "token_ids",
                                                "truncated")})
        inputs = A.AttackInputs(target=stats, texts=texts, reference=base_stats)
        a, a_aucs = exp.rmia_a, None
        if a == "tune":  # on the references and the population only: still offline
            a, a_aucs = tune_rmia_a(ref_ll[:, n:], refs.membership, gamma=exp.rmia_gamma)
        scores = {"loss": A.loss(inputs), "ref": A.ref(inputs),
                  "ref_mean_k": target_ll[:n] - ref_ll[:, :n].mean(0),
                  **{f"lira_offline:{v}": lira_offline(target_ll[:n], ref_ll[:, :n], variance=v)
                     for v in ("global", "per_example")},
                  f"rmia_offline:a={a:g}": rmia_offline(
                      target_ll[:n], ref_ll[:, :n], target_ll[n:], ref_ll[:, n:],
                      z_ref_out=~refs.membership, a=a, gamma=exp.rmia_gamma)}
        if exp.grad_norm:
            with phase("gradient norms"):
                scores["grad_norm"] = grad_norm_scores(res.params, cfg, res.labels, tok, texts,
                                                       which="trainable", **kw)
        with phase("metrics + bootstrap"):
            metrics = {k: summarize(v, labels, n_boot=exp.audit.n_boot, seed=exp.audit.seed,
                                    nan_policy=exp.audit.nan_policy) for k, v in scores.items()}
    info = {"n_members": len(members), "n_nonmembers": len(nonmembers),
            "n_population": len(population), "n_refs": exp.n_refs,
            "target_val_loss": res.history[-1]["val_loss"],
            "reference_train_loss": refs.train_loss[-1].tolist(),
            "rmia_a": a, "rmia_a_tuning_auc": a_aucs,
            "wall_seconds": round(time.perf_counter() - t0, 1)}
    rows = [{"index": i, "member": bool(labels[i]), "text": texts[i][:200],
             **{k: float(v[i]) for k, v in scores.items()}} for i in range(n)]
    write_table(rows, out / runs.SCORES)
    table = metrics_table(metrics)
    write_table(table, out / "results.md")
    result = {"metrics": metrics, "info": info, "timings": prof.table(), "table": table}
    atomic_write(out / "results.json", json.dumps(result, indent=1))  # last: marks done
    if progress:
        from jaxmem.io import markdown_table

        print(markdown_table(table))
        print(json.dumps(info))
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="YAML file (experiments/cpu/reference_attacks.yaml)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides, dotted for nested fields (train.epochs=2)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace a folder that holds another experiment's outputs")
    args = ap.parse_args(argv)
    run(ReferenceExperiment.from_yaml(args.config, args.set), args.out_dir,
        overwrite=args.overwrite)


if __name__ == "__main__":
    main()
