"""Run membership inference attacks on a model and write what a reader needs.

One scoring pass of the target over members + non-members (plus one of the reference model for
Ref and EZ-MIA, one of the lowercased texts for Lowercase, one of the texts after a non-member
prefix for ReCaLL, and a token frequency table for DC-PDD), every attack as a reduction of it,
metrics with bootstrap CIs, then files: per-example scores, ``metrics.json``, a log-log ROC plot
and member vs non-member histograms.

Example:
    >>> import jaxmem, os
    >>> params, cfg, tok = jaxmem.tiny_model()              # the target
    >>> base = jaxmem.tiny_model(seed=1).params              # the reference (Ref attack)
    >>> members = [f"The cat {i} sat on the mat." for i in range(8)]
    >>> nonmembers = [f"A dog {i} ran in the park." for i in range(8)]
    >>> acfg = AuditConfig(attacks=("loss", "ref"), block_size=32, n_boot=100, blind=False)
    >>> res = run_attacks_on(params, cfg, tok, members, nonmembers, acfg,
    ...                      reference_params=base, out_dir="results/attack")
    >>> sorted(res["metrics"]), res["scores"]["loss"].shape
    (['loss', 'ref'], (16,))
    >>> sorted(os.listdir("results/attack"))
    ['histograms.png', 'metrics.json', 'roc.png', 'scores.parquet']
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxmem import attacks as A
from jaxmem import locks, runs
from jaxmem.attack_inputs import prepare_inputs, select_attacks, shared_inputs
from jaxmem.attack_options import reference_requests
from jaxmem.blind import blind_baseline
from jaxmem.bootstrap import summarize
from jaxmem.config import DTYPES, check, check_positive_ints, dtype_name, field, is_int
from jaxmem.data.overlap import drop_exact_copies
from jaxmem.figures import plot_histograms, plot_roc
from jaxmem.gradnorm import grad_norm_scores
from jaxmem.io import write_table
from jaxmem.metrics import TPR_KEYS, roc_curve, strongest_attack
from jaxmem.profiling import phase
from jaxmem.sharding import is_main_process, sync
from jaxmem.provenance import KEY as PROVENANCE
from jaxmem.provenance import provenance


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """How to attack: which attacks, how to score, how to bootstrap. ``dtype`` takes a name or a
    jax dtype (stored as its name, see :func:`jaxmem.config.dtype_name`)."""

    attacks: tuple = field(A.DEFAULT_ATTACKS, help="attack specs, comma-separated "
                           f"({A.SPECS_HELP})")
    block_size: int = field(128, help="tokens per text; longer texts are truncated")
    batch_size: int = field(16, help="texts per scoring batch")
    dtype: str = field("float32", choices=DTYPES, help="compute dtype of the scoring passes")
    n_boot: int = field(1000, help="bootstrap resamples for the confidence intervals")
    seed: int = field(0, help="seed of the bootstrap (jaxmem attack: also of the corpus split)")
    nan_policy: str = field("raise", choices=("raise", "drop"),
                            help="NaN scores: raise, or drop them and count them")
    dcpdd_corpus: str = field("default", help="dc_pdd: the reference corpus its token "
                              "frequencies are counted on (a corpus name or path, as for "
                              "--corpus); the audited texts are left out")
    recall_prefix: str | None = field(None, help="recall: a file of non-member texts (.txt, "
                                      ".jsonl, .csv, ...) whose first recall_shots texts form the "
                                      "prefix (default: held-out texts the caller passes; a "
                                      "study: its validation texts)")
    recall_shots: int = field(12, help="recall: how many non-member texts make the prefix")
    blind: bool = field(True, help="the blind baseline: members told from non-members by their "
                        "scored texts alone (n-gram classifiers, no model; jaxmem.blind), a "
                        "check of the split reported next to the attacks")

    def __post_init__(self):
        check(self, "attacks", lambda v: isinstance(v, str) or (
            isinstance(v, (list, tuple)) and all(isinstance(a, str) for a in v)),
            "a list of attack specs, e.g. [loss, zlib] (or one comma-separated string)")
        if isinstance(self.attacks, (list, tuple, str)):  # "rmia:k=4", "a=0.3": one spec
            object.__setattr__(self, "attacks", A.join_specs(
                [self.attacks] if isinstance(self.attacks, str) else self.attacks))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        check_positive_ints(self, "block_size", allow_none=True)
        check_positive_ints(self, "batch_size")
        check(self, "n_boot", lambda v: is_int(v) and v >= 0, "an integer >= 0 (0: no CIs)")
        check(self, "seed", lambda v: is_int(v) and 0 <= v < 2**32,
              "an integer between 0 and 2**32 - 1")
        check_positive_ints(self, "recall_shots")
        check(self, "blind", lambda v: isinstance(v, bool), "True or False")
        check(self, "nan_policy", lambda v: v in ("raise", "drop"), "raise or drop")
        check(self, "dcpdd_corpus", lambda v: isinstance(v, str) and v != "", "a corpus name "
              "or path")
        check(self, "recall_prefix", lambda v: v is None or Path(v).expanduser().is_file(),
              "an existing file of non-member texts (or None)")
        for spec in self.attacks:  # an unknown attack fails here, before any scoring
            A.parse_attack(spec)


def check_member_sets(members: Sequence[str], nonmembers: Sequence[str]) -> tuple[list, list]:
    """Refuses empty sets; drops non-members that are exact copies of members (with a warning);
    refuses sets that are identical."""
    if not members or not nonmembers:
        raise ValueError(f"Need both members and non-members (got {len(members)} and "
                         f"{len(nonmembers)}).")
    keep = drop_exact_copies(nonmembers, members)
    if not keep:
        raise ValueError("Every non-member is also a member: the two sets are identical, so no "
                         "attack can tell them apart. Draw non-members from held-out data.")
    if len(keep) < len(nonmembers):
        warnings.warn(f"Dropped {len(nonmembers) - len(keep)} non-members that are exact copies "
                      "of members.", stacklevel=2)
    return list(members), keep


@locks.locked("out_dir", "attack")  # one writer per attack folder (jaxmem.locks)
def run_attacks_on(params, cfg, tokenizer, members: Sequence[str], nonmembers: Sequence[str],
                   acfg: AuditConfig = AuditConfig(), *, reference_params=None,
                   out_dir: str | os.PathLike | None = None, overwrite: bool = False,
                   title: str = "", target_stats=None, reference_stats=None,
                   prefix_texts: Sequence[str] | None = None, param_labels=None,
                   mesh=None, references=None, progress: bool = False) -> dict:
    """Scores members and non-members, runs the attacks, computes metrics, writes files.

    Args:
      params, cfg, tokenizer: the target model (base, fine-tuned, or base + adapter).
      members, nonmembers: texts; exact copies across the sets are dropped from non-members.
      reference_params: the Ref attack's reference (same architecture and tokenizer), usually
        the base model before fine-tuning. Ref is skipped (with a warning) without one.
      out_dir: where to write ``scores.parquet``, ``metrics.json``, ``roc.png``,
        ``histograms.png``. An existing ``metrics.json`` is refused unless ``overwrite``.
      target_stats, reference_stats: precomputed :class:`TokenStats` of members + non-members
        under the target / the reference (a study scores the base model once for all methods).
      prefix_texts: held-out non-member texts, neither members nor non-members, for ReCaLL's
        prefix when ``acfg.recall_prefix`` names no file (:func:`recall_prefix`).
      param_labels: the method's label tree, for ``grad_norm`` over its trainable leaves;
        None (the base model, no method) counts every leaf as trainable.
      mesh: score with every batch split over this mesh (:func:`jaxmem.scoring.score_sequences`).
        With several processes each one computes the same results and process 0 writes them.
      references: for ``lira`` / ``rmia``, their K reference models:
        ``references(params, texts, requests, batch_size=, block_size=, dtype=)`` ->
        ``{(k, pop): ReferenceSignals}``, made by
        :func:`jaxmem.reference_attacks.reference_provider` (trained once, cached); without
        it those attacks are refused before any scoring.
      progress: a bar per scoring pass (and gradient-norm pass) on stderr; quiet by default.

    Returns:
      {"metrics": {attack: summary}, "scores": {attack: array}, "labels": array, "info": {...}}.

    Example:
        A tiny model fine-tuned on the members for 3 epochs, then attacked:

        >>> import jaxmem
        >>> base, cfg, tok = jaxmem.tiny_model()
        >>> c = jaxmem.load_corpus("default", n_members=16, n_nonmembers=16, n_validation=4)
        >>> tcfg = jaxmem.TrainConfig(epochs=3, block_size=32, batch_size=4, optim={"lr": 3e-2})
        >>> run = jaxmem.train(base, cfg, tok, "full", c.members, c.validation, "runs/full",
        ...                    tcfg, progress=False)
        >>> res = jaxmem.run_attacks(run.params, cfg, tok, c.members, c.nonmembers,
        ...                          jaxmem.AuditConfig(attacks=("loss", "ref"), block_size=32,
        ...                                             n_boot=100),
        ...                          reference_params=base, out_dir="results/full")
        >>> res["metrics"]["ref"]["auc"] > 0.5        # members fit better than non-members
        True
        >>> res["info"]["n_members"], res["info"]["blind"]["shifted"]
        (16, False)
    """
    if acfg.block_size > cfg.max_positions:
        raise ValueError(f"block_size {acfg.block_size} exceeds the model's context "
                         f"({cfg.max_positions} positions); lower it.")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:  # before any scoring: a refusal costs nothing
        runs.claim_attack_dir(out, overwrite=overwrite)
    members, nonmembers = check_member_sets(members, nonmembers)
    texts = list(members) + list(nonmembers)
    labels = np.array([1] * len(members) + [0] * len(nonmembers), bool)
    specs, extra = select_attacks(acfg, reference_params is not None
                                  or reference_stats is not None)
    grads = sorted(x.partition(":")[2] for x in extra if x.startswith("gradients:"))
    if grads and mesh is not None:  # before any scoring: a refusal costs nothing
        raise ValueError("The gradient-norm attacks run on one device; drop them or --mesh.")
    if "references" in extra and (references is None or mesh is not None):  # before scoring
        raise ValueError("lira and rmia need reference models trained like the target, on one "
                         "device: run them in a study or `jaxmem attack --run-dir` (in Python, "
                         "pass references=jaxmem.reference_attacks.reference_provider(...)) "
                         "without a mesh, or drop them.")
    prefix, frequencies = shared_inputs(acfg, cfg, tokenizer, extra, lambda: texts,
                                        prefix_texts)
    with phase("scoring"):
        inputs = prepare_inputs(params, cfg, tokenizer, texts, extra, acfg, mesh=mesh,
                                reference_params=reference_params, prefix=prefix,
                                frequencies=frequencies, target=target_stats,
                                reference=reference_stats, progress=progress)
    target, scored = inputs.target, inputs.texts
    if grads:
        with phase("gradient norms"):
            # without a method every leaf is trainable: "trainable" and "all" are one pass
            which = {w: "all" if param_labels is None else w for w in grads}
            norms = {v: grad_norm_scores(params, cfg, param_labels, tokenizer, texts, which=v,
                                         batch_size=acfg.batch_size,
                                         block_size=acfg.block_size, dtype=acfg.dtype,
                                         progress=progress)
                     for v in set(which.values())}
            inputs.grad_norms = {w: norms[v] for w, v in which.items()}
    if "references" in extra:
        with phase("reference models"):
            inputs.references = references(params, texts, reference_requests(specs),
                                           batch_size=acfg.batch_size,
                                           block_size=acfg.block_size, dtype=acfg.dtype)
    with phase("attacks + bootstrap"):
        scores = A.run_attacks(specs, inputs)
        metrics = {name: summarize(A.as_ranks(s), labels, n_boot=acfg.n_boot, seed=acfg.seed,
                                   nan_policy=acfg.nan_policy) for name, s in scores.items()}
    info = {"n_members": len(members), "n_nonmembers": len(nonmembers),
            "block_size": acfg.block_size, "n_truncated": int(target.truncated.sum()),
            "dtype": acfg.dtype, "attacks": list(scores)}
    if inputs.references:  # where LiRA's / RMIA's references live; RMIA's tuned a
        info["references"] = {f"k={k},pop={p or 'auto'}": r.info
                              for (k, p), r in inputs.references.items()}
    blind = None
    if acfg.blind:  # the split check: members vs non-members by their scored texts alone
        n = len(members)
        pick_m, pick_n = blind_picks(n, acfg.seed), blind_picks(len(nonmembers), acfg.seed, 1)
        with phase("blind baseline"):
            blind = info["blind"] = blind_check([scored[i] for i in pick_m],
                                                [scored[n + i] for i in pick_n], acfg)
    result = {"metrics": metrics, "scores": scores, "labels": labels, "info": info,
              "target_stats": target, "blind": blind}
    if out is not None:
        if is_main_process():
            with phase("attack files + figures"):
                write_results(out, result, texts, title)
        sync("jaxmem-attack-written")
    return result


#: The blind baseline reads at most this many texts per side (a seeded random sample beyond).
BLIND_MAX_TEXTS = 2_000


def blind_picks(n: int, seed: int, side: int = 0) -> np.ndarray:
    """Which of a side's ``n`` texts the blind baseline reads (``side`` 0: members, 1:
    non-members): all of them, or beyond :data:`BLIND_MAX_TEXTS` a random sample seeded by
    ``seed``, in their order. The same in memory and streamed (:mod:`jaxmem.streaming`)."""
    if n <= BLIND_MAX_TEXTS:
        return np.arange(n)
    rng = np.random.default_rng([seed, side, 0xB11D])
    return np.sort(rng.choice(n, BLIND_MAX_TEXTS, replace=False))


def blind_check(members: Sequence[str], nonmembers: Sequence[str], acfg: AuditConfig) -> dict:
    """:func:`jaxmem.blind.blind_baseline` of the scored texts (cut to ``acfg.block_size``
    tokens) with the audit's seed and bootstrap size (1000 resamples where ``n_boot`` is 0);
    warns when members and non-members can be told apart without the model."""
    blind = blind_baseline(members, nonmembers, seed=acfg.seed, n_boot=acfg.n_boot or 1000)
    if blind["shifted"]:
        warnings.warn("Split check: " + blind["warning"], stacklevel=3)
    return blind


def write_results(out: Path, result: dict, texts: Sequence[str], title: str = "") -> None:
    """Writes an attack folder (see :mod:`jaxmem.runs`): scores, plots, then ``metrics.json``.
    Until then ``runs.WRITING`` marks the folder jaxmem's, so a kill in between leaves a folder
    the rerun may write over (and no other one)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / runs.WRITING).touch()
    scores, labels = result["scores"], result["labels"]
    n_tok = result["target_stats"].n_tokens
    rows = [{"index": i, "member": bool(labels[i]), "n_tokens": int(n_tok[i]),
             **{k: float(v[i]) for k, v in scores.items()}, "text": texts[i][:200]}
            for i in range(len(texts))]
    write_table(rows, out / runs.SCORES)
    write_summary(out, result, title)
    (out / runs.WRITING).unlink(missing_ok=True)


def write_summary(out: Path, result: dict, title: str = "") -> None:
    """The rest of an attack folder once its scores are written: ROC and histogram figures,
    then ``metrics.json`` (last: it marks the folder done). Needs only ``result``'s scores,
    labels, metrics and info, so a streamed attack (:mod:`jaxmem.streaming`) writes it too."""
    scores, labels = result["scores"], result["labels"]
    curves = {}
    for name, s in scores.items():
        s = A.as_ranks(s)  # an infinite score (EZ-MIA) is an extreme rank, not missing
        ok = np.isfinite(s)
        fpr, tpr, _ = roc_curve(s[ok], labels[ok])
        curves[name] = (fpr, tpr, result["metrics"][name]["auc"])
    plot_roc(curves, out / runs.ROC, title)
    plot_histograms(scores, labels, out / runs.HISTOGRAMS, title)
    # what produced it (versions, commit, host, device, command line): never part of a resume
    runs.write_attack_metrics(out, result["metrics"],
                              {**result["info"], PROVENANCE: provenance()})


def _tpr_cell(m: dict, key: str):
    """A TPR rounded for a table, or why it is not reported (``summarize``'s ``tpr_na``)."""
    return m.get("tpr_na", {}).get(key) or round(m[key], 4)


def metrics_table(metrics: dict, blind: dict | None = None) -> list[dict]:
    """Rows for a Markdown table: attack, AUC [CI], TPR at 10/1/0.1% FPR, and which attack is
    the strongest (:func:`jaxmem.metrics.strongest_attack`: highest TPR at the lowest FPR the
    non-members support). Given the audit's blind baseline (``info["blind"]``), a last row
    "blind baseline (no model)" with its AUC: what the texts alone give, to read the attacks
    against."""
    best = strongest_attack(metrics)
    rows = []
    for name, m in metrics.items():
        ci = m.get("auc_ci")
        rows.append({"attack": name, "AUC": round(m["auc"], 4),
                     "AUC 95% CI": f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "",
                     **{key.upper(): _tpr_cell(m, key) for key in TPR_KEYS},
                     "strongest": (f"yes (TPR at {best['fpr'] * 100:g}% FPR)"
                                   if best and best["attack"] == name else "")})
    if blind:
        ci = blind.get("auc_ci")
        rows.append({"attack": "blind baseline (no model)",
                     "AUC": round(blind["auc"], 4) if blind.get("auc") is not None else "n/a",
                     "AUC 95% CI": f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "",
                     **{key.upper(): "" for key in TPR_KEYS},
                     "strongest": ("SHIFTED: told apart without the model" if blind["shifted"]
                                   else "")})
    return rows
