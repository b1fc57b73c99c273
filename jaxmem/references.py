"""Reference models and the attacks that need them: offline LiRA and offline RMIA.

**Reference models.** K runs of the *same* method on random halves of a population set: texts
disjoint from the audited members and non-members, so the references are OUT for every audited
text (the *offline* setting; they never train on what is audited). The halves come in
complementary pairs (reference 2j trains on a random half, 2j+1 on the other half, as in
ml_privacy_meter), so every population text is IN for exactly K/2 references and OUT for the
other K/2, and every reference trains on the same number of texts.

For a method whose trainable leaves are few (LoRA, IA3, prefix, prompt, P-tuning, head), the K
references train in **one** compiled step: the trainer's own step
(:func:`jaxmem.train_step.make_train_step`) under ``jax.vmap`` over the trainable subtree, the
optimizer state, the batches and the dropout keys, with the frozen base passed unbatched
(``in_axes=None``), so the base weights exist once and each matrix product runs over K stacked
adapters. Reference k is what :func:`jaxmem.trainer.train` would give with seed ``seed + 1 + k``
on its half (same init key, data order and dropout keys), up to float rounding. Full fine-tuning
works too but holds K copies of the model.

**Signals.** Both attacks read one number per (model, text): the mean token log-likelihood
``ll = -(1/N) sum_t NLL_t`` (the LOSS attack's score; :meth:`TokenStats.nll`). Its exponential
``exp(ll)`` is the geometric-mean token probability, a probability in (0, 1] that plays the
part of the classifier's "confidence in the true label" (ml_privacy_meter's LM signal,
``get_signals.get_softmax``).

Example:
    Which population texts each of K = 4 references trains on (complementary pairs):

    >>> import numpy as np
    >>> reference_splits(6, n_refs=4).astype(int)
    array([[1, 0, 0, 0, 1, 1],
           [0, 1, 1, 1, 0, 0],
           [1, 0, 0, 1, 1, 0],
           [0, 1, 1, 0, 0, 1]])

    Offline LiRA on the mean token log-likelihoods of two audited texts, under the target
    ([N]) and under the references ([K, N], :func:`reference_log_likelihoods`):

    >>> target_ll = np.array([-2.0, -3.0])
    >>> ref_ll = np.array([[-3.0, -3.1], [-3.2, -2.9], [-2.9, -3.0], [-3.1, -3.0]])
    >>> scores = lira_offline(target_ll, ref_ll)
    >>> bool(scores[0] > scores[1])    # text 0 fits the target far better than the references
    True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.batching import encode_texts
from jaxmem.metrics import roc_auc
from jaxmem.optim import make_optimizer
from jaxmem.scoring import score_texts
from jaxmem.train_step import epoch_batches, make_train_step
from jaxmem.trainer import TrainConfig
from jaxmem.tuning import init_method, method_config
from jaxmem.tuning.partition import TRAINABLE


# ----------------------------------------------------------------------------- reference models

def reference_splits(n_population: int, n_refs: int, seed: int = 0) -> np.ndarray:
    """bool [K, P]: which population texts each reference trains on.

    Complementary pairs: row 2j is a random half (``P // 2`` texts), row 2j+1 the other half
    (an odd P leaves one text out of every reference).

    Raises:
      ValueError: ``n_refs`` not a positive even number, or fewer than 2 population texts.
    """
    if not isinstance(n_refs, int) or n_refs < 2 or n_refs % 2:
        raise ValueError(f"n_refs must be an even number >= 2 (complementary halves), got "
                         f"{n_refs!r}.")
    if n_population < 2:
        raise ValueError(f"The population has {n_population} texts; references need at least 2 "
                         "(give more population texts).")
    rng = np.random.default_rng([seed, 7])
    half = n_population // 2
    out = np.zeros((n_refs, n_population), bool)
    for j in range(n_refs // 2):
        perm = rng.permutation(n_population)
        out[2 * j, perm[:half]] = True
        out[2 * j + 1, perm[half:2 * half]] = True
    return out


def param_axes(labels):
    """vmap axes of a reference params tree: 0 on trainable leaves (one per reference), None on
    frozen ones (the shared base)."""
    return jax.tree.map(lambda l: 0 if l == TRAINABLE else None, labels)


def stack_references(trees: Sequence[dict], labels) -> dict:
    """K params trees -> one: trainable leaves stacked on a new leading axis, frozen leaves taken
    from the first tree (they are the same base)."""
    return jax.tree.map(lambda l, *xs: jnp.stack(xs) if l == TRAINABLE else xs[0], labels, *trees)


def reference_params(stacked: dict, labels, k: int) -> dict:
    """The params of reference ``k`` (an ordinary tree) from a stacked one."""
    return jax.tree.map(lambda l, x: x[k] if l == TRAINABLE else x, labels, stacked)


def make_reference_step(cfg, tx, labels, *, dtype: str = "float32", lora_dropout: float = 0.0):
    """The trainer's step vmapped over K references, jit-compiled.

    Takes (stacked params, stacked opt_state, ids/mask [K, A, B, T], keys [K, 2]) and returns
    (params, opt_state, losses [K]). Frozen leaves are not batched (``in_axes=None``).
    """
    step = make_train_step(cfg, tx, labels, dtype=dtype, lora_dropout=lora_dropout, jit=False)
    axes = param_axes(labels)
    return jax.jit(jax.vmap(step, in_axes=(axes, 0, 0, 0, 0), out_axes=(axes, 0, 0)),
                   donate_argnums=(0, 1))


@dataclasses.dataclass
class References:
    """K reference models of one method over a shared frozen base.

    Attributes:
      params: trainable leaves stacked [K, ...], frozen leaves shared
        (:func:`reference_params` takes one out).
      labels: the method's label tree.
      membership: bool [K, P], which population texts each reference trained on.
      train_loss: [epochs, K] mean training loss per epoch.
    """

    params: dict
    labels: dict
    membership: np.ndarray
    train_loss: np.ndarray

    @property
    def n_refs(self) -> int:
        return self.membership.shape[0]


def _pad_to(x: np.ndarray, length: int, value: int) -> np.ndarray:
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])], constant_values=value)


def init_references(params, cfg, tokenizer, mcfg, tcfg: TrainConfig, n_refs: int):
    """(stacked params, labels): reference k initialized as :func:`jaxmem.trainer.train` would
    with seed ``tcfg.seed + 1 + k``. The frozen base is one copy of ``params``' leaves (the
    training step donates its buffers, so the caller's arrays stay usable)."""
    mcfg = method_config(mcfg)
    inits = [init_method(mcfg, params, cfg, jax.random.fold_in(jax.random.PRNGKey(s), 1),
                         tokenizer) for s in range(tcfg.seed + 1, tcfg.seed + 1 + n_refs)]
    labels = inits[0][1]
    stacked = jax.tree.map(lambda l, *xs: jnp.stack([jnp.asarray(x) for x in xs])
                           if l == TRAINABLE else jnp.array(xs[0]), labels, *[p for p, _ in inits])
    return stacked, labels


def train_references(params, cfg, tokenizer, mcfg, population: Sequence[str],
                     tcfg: TrainConfig = TrainConfig(), *, n_refs: int = 4,
                     split_seed: int | None = None, progress: bool = False,
                     until: int | None = None, resume=None, on_epoch=None) -> References:
    """Trains K references of one method on complementary random halves of ``population``.

    Args:
      params, cfg, tokenizer: the base model.
      mcfg: the method (name, spec string or config), the target's.
      population: texts disjoint from the audited members and non-members.
      tcfg: the target's training config; reference k uses seed ``tcfg.seed + 1 + k`` for its
        init, data order and dropout, as :func:`jaxmem.trainer.train` would.
      n_refs: K, an even number.
      split_seed: seed of the halves (default ``tcfg.seed``).
      until: the last epoch to train (default ``tcfg.epochs``); the learning-rate schedule
        still spans ``tcfg.epochs``, so epoch e is the same whatever ``until`` is.
      resume: ``resume(stacked, opt_state, labels) -> (epoch, stacked, opt_state, history)``,
        given the fresh state (a layout to restore into): where to go on from (a checkpoint,
        :mod:`jaxmem.reference_attacks`); history is the per-epoch losses so far.
      on_epoch: called as ``on_epoch(epoch, References, opt_state)`` after every epoch trained.

    Returns:
      :class:`References`.

    Raises:
      ValueError: bad ``n_refs``, ``until`` or population; FloatingPointError: a NaN/inf loss.

    Example:
        >>> import jaxmem
        >>> base, cfg, tok = jaxmem.tiny_model()
        >>> population = [f"Population text {i:02d}." for i in range(16)]
        >>> refs = train_references(base, cfg, tok, "lora:r=4", population,
        ...                         TrainConfig(epochs=1, block_size=32, batch_size=4), n_refs=4)
        >>> refs.params["layers"]["attn"]["q_proj"]["lora_a"].shape   # [K, L, d, r]
        (4, 2, 32, 4)
        >>> reference_log_likelihoods(refs, cfg, tok, ["The cat sat."], block_size=32).shape
        (4, 1)
    """
    mcfg = method_config(mcfg)
    if tcfg.block_size > cfg.max_positions:
        raise ValueError(f"block_size {tcfg.block_size} exceeds the model's context "
                         f"({cfg.max_positions}); lower it.")
    until = tcfg.epochs if until is None else until
    if not 0 <= until <= tcfg.epochs:
        raise ValueError(f"until must be an epoch between 0 and {tcfg.epochs}, got {until}.")
    membership = reference_splits(len(population), n_refs,
                                  tcfg.seed if split_seed is None else split_seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    seqs, _ = encode_texts(tokenizer, population, tcfg.block_size)
    seeds = [tcfg.seed + 1 + k for k in range(n_refs)]
    stacked, labels = init_references(params, cfg, tokenizer, mcfg, tcfg, n_refs)
    ref_seqs = [[seqs[i] for i in np.flatnonzero(row)] for row in membership]
    steps_per_epoch = math.ceil(len(ref_seqs[0]) / (tcfg.batch_size * tcfg.grad_accum))
    tx = make_optimizer(tcfg.optim, labels, steps_per_epoch * tcfg.epochs)
    axes = param_axes(labels)
    opt_state = jax.vmap(tx.init, in_axes=(axes,))(stacked)
    start, history = 0, []
    if resume is not None:
        start, stacked, opt_state, history = resume(stacked, opt_state, labels)
        history = list(history)
    lora_dropout = getattr(mcfg, "dropout", 0.0) if mcfg.name == "lora" else 0.0
    step = make_reference_step(cfg, tx, labels, dtype=tcfg.dtype, lora_dropout=lora_dropout)
    keys = [jax.random.PRNGKey(s) for s in seeds]
    for epoch in range(start + 1, until + 1):
        batches = [epoch_batches(ref_seqs[k], dataclasses.replace(tcfg, seed=seeds[k]), epoch,
                                  pad_id) for k in range(n_refs)]
        losses = []
        for s, per_ref in enumerate(zip(*batches)):
            # one step of every reference; their length buckets may differ: pad to the longest
            t = max(ids.shape[-1] for ids, _ in per_ref)
            ids = np.stack([_pad_to(i, t, pad_id) for i, _ in per_ref])
            mask = np.stack([_pad_to(m, t, 0) for _, m in per_ref])
            global_step = (epoch - 1) * steps_per_epoch + s
            rngs = jnp.stack([jax.random.fold_in(k, 1_000_000 + global_step) for k in keys])
            stacked, opt_state, loss = step(stacked, opt_state, jnp.asarray(ids),
                                            jnp.asarray(mask), rngs)
            loss = np.asarray(loss)
            if not np.all(np.isfinite(loss)):
                raise FloatingPointError(
                    f"Reference loss became {loss.tolist()} at epoch {epoch}, step {s + 1}; "
                    "lower the learning rate (optim.lr) or enable gradient clipping.")
            losses.append(loss)
            if progress:
                print(f"references epoch {epoch} step {s + 1}/{steps_per_epoch}: loss "
                      + " ".join(f"{x:.3f}" for x in loss), flush=True)
        history.append(np.mean(losses, axis=0))
        if on_epoch is not None:
            on_epoch(epoch, References(stacked, labels, membership, np.array(history)),
                     opt_state)
    return References(stacked, labels, membership, np.array(history))


def reference_log_likelihoods(refs: References, cfg, tokenizer, texts: Sequence[str],
                              **score_kw) -> np.ndarray:
    """[K, N] mean token log-likelihood of each text under each reference (one scoring pass
    per reference, :func:`jaxmem.scoring.score_texts` with ``score_kw``)."""
    return np.stack([-score_texts(reference_params(refs.params, refs.labels, k), cfg, tokenizer,
                                  texts, **score_kw).nll() for k in range(refs.n_refs)])


# ----------------------------------------------------------------------------- attacks

def _check_signals(target, refs, what: str) -> tuple[np.ndarray, np.ndarray]:
    target, refs = np.asarray(target, np.float64), np.asarray(refs, np.float64)
    if target.ndim != 1 or refs.ndim != 2 or refs.shape[1] != target.shape[0]:
        raise ValueError(f"{what}: need target [N] and reference [K, N] log-likelihoods, got "
                         f"shapes {target.shape} and {refs.shape}.")
    if (target > 0).any() or (refs > 0).any():
        raise ValueError(f"{what}: positive values; pass mean token log-likelihoods (-nll, "
                         "always <= 0), not losses.")
    return target, refs


def logit_confidence(ll) -> np.ndarray:
    """LiRA's logit scaling phi = log(p / (1 - p)) of p = exp(ll), the geometric-mean token
    probability; computed as ll - log(-expm1(ll)) so that p near 1 keeps its precision."""
    ll = np.asarray(ll, np.float64)
    with np.errstate(divide="ignore"):
        return ll - np.log(-np.expm1(ll))


def lira_offline(target_ll, ref_ll, *, variance: str = "global") -> np.ndarray:
    """Offline LiRA (Carlini et al., 2022, "Membership Inference Attacks From First
    Principles", Algorithm 1 without IN models).

    With phi = :func:`logit_confidence` of each model's mean token log-likelihood, fit a
    Gaussian N(mu_out, sigma_out^2) to the K reference (OUT) values of each text and take the
    one-sided test of the paper's offline variant, Lambda = 1 - Pr[Z > phi_target] =
    Phi((phi_target - mu_out) / sigma_out): high when the target fits the text better than
    models that never saw it. Returned as log Lambda (``scipy.special.log_ndtr``), which orders
    the texts as Lambda does but does not saturate at 1 for strongly memorized texts.

    mu_out is the mean over the K references; sigma_out^2 their variance (ddof 0, as
    ``np.std`` in the paper's code), per text (``variance="per_example"``) or, as the paper
    advises for few reference models, one ``"global"`` value: the mean over texts of the
    per-text variances (the pooled within-text variance; the paper's code instead takes
    ``np.std`` of all OUT values, which also counts the spread of mu_out across texts).

    Args:
      target_ll: [N] mean token log-likelihoods under the target.
      ref_ll: [K, N] the same under K references that never trained on these texts.
      variance: "global" or "per_example".

    Returns:
      float64 [N], higher means member.
    """
    target, refs = _check_signals(target_ll, ref_ll, "lira_offline")
    if refs.shape[0] < 2:
        raise ValueError("lira_offline needs at least 2 reference models to estimate a variance.")
    if variance not in ("global", "per_example"):
        raise ValueError(f"variance must be 'global' or 'per_example', got {variance!r}.")
    from scipy.special import log_ndtr

    phi = logit_confidence(refs)
    mu = phi.mean(0)
    var = phi.var(0)
    if variance == "global":
        var = np.full_like(var, var.mean())
    sigma = np.sqrt(var) + 1e-30  # the paper's code guards a zero spread the same way
    return log_ndtr((logit_confidence(target) - mu) / sigma)


def rmia_offline(target_ll, ref_ll, z_target_ll, z_ref_ll, *, ref_out=None, z_ref_out=None,
                 a: float = 0.3, gamma: float = 1.0) -> np.ndarray:
    """Offline RMIA (Zarifzadeh et al., 2024, "Low-Cost High-Power Membership Inference
    Attacks"), as ml_privacy_meter's ``run_rmia``.

    With Pr(x | theta) = exp(mean token log-likelihood) (ml_privacy_meter's LM signal):

        Pr(x)  = (1 + a)/2 * mean_k Pr(x | theta_k^OUT) + (1 - a)/2     (offline approximation)
        LR(x)  = Pr(x | theta) / Pr(x),   and the same for each population sample z
        score(x) = (1/|Z|) sum_z 1[ LR(x) / LR(z) > gamma ]

    The mean runs over the references that did not train on the text (``ref_out`` /
    ``z_ref_out``; audited texts are OUT for every reference in the offline setting, the
    default). ``a`` stands for how much an IN model would raise Pr(x) over the OUT average:
    0.3 is the reference code's default, which also tunes it on a reference model
    (:func:`tune_rmia_a`). For a language model Pr(x | theta) is small (a geometric-mean token
    probability of a few percent), so with a small ``a`` the constant (1 - a)/2 dominates Pr(x)
    and RMIA ranks texts as LOSS does; tuning matters. ``gamma`` = 1 as in the reference code.

    Args:
      target_ll: [N] mean token log-likelihoods of the audited texts under the target.
      ref_ll: [K, N] the same under the references.
      z_target_ll: [M] population samples under the target (which never trained on them).
      z_ref_ll: [K, M] population samples under the references.
      ref_out, z_ref_out: bool [K, N] / [K, M], True where reference k did not train on the
        text (default: all True).
      a: in [0, 1].
      gamma: > 0.

    Returns:
      float64 [N] in [0, 1], higher means member.
    """
    target, refs = _check_signals(target_ll, ref_ll, "rmia_offline")
    z_target, z_refs = _check_signals(z_target_ll, z_ref_ll, "rmia_offline population")
    if z_refs.shape[0] != refs.shape[0]:
        raise ValueError(f"rmia_offline: {refs.shape[0]} references for the texts but "
                         f"{z_refs.shape[0]} for the population.")
    if not 0 <= a <= 1:
        raise ValueError(f"a must be in [0, 1], got {a}.")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}.")

    def p_marginal(ll, out, what):
        out = np.ones_like(ll, bool) if out is None else np.asarray(out, bool)
        if out.shape != ll.shape:
            raise ValueError(f"The OUT mask of the {what} has shape {out.shape}; it must match "
                             f"their log-likelihoods {ll.shape}.")
        if not out.any(0).all():
            raise ValueError(f"{int((~out.any(0)).sum())} {what} are IN for every reference, "
                             "so nothing estimates their Pr(x); drop them.")
        p_out = (np.exp(ll) * out).sum(0) / out.sum(0)
        return (1 + a) / 2 * p_out + (1 - a) / 2

    ratio_x = np.exp(target) / p_marginal(refs, ref_out, "texts")
    ratio_z = np.exp(z_target) / p_marginal(z_refs, z_ref_out, "population samples")
    return (ratio_x[:, None] / ratio_z[None, :] > gamma).mean(1)


A_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def tune_rmia_a(pop_ref_ll, membership, *, gamma: float = 1.0,
                grid: Sequence[float] = A_GRID) -> tuple[float, dict]:
    """RMIA's offline ``a`` chosen without the target, as ml_privacy_meter's ``tune_offline_a``:
    attack each reference in turn with the others and keep the ``a`` of the best mean AUC.

    Reference k plays the target, the population texts are its members (IN for k) and
    non-members, the other references (each only where OUT) estimate Pr(x), and k's
    non-members are the z samples. Only population texts are read, so the audit stays offline.

    Args:
      pop_ref_ll: [K, P] mean token log-likelihoods of the population under the references.
      membership: bool [K, P] (:attr:`References.membership`).

    Returns:
      (best a, {a: mean AUC over the K pseudo-targets}); ties go to the smaller a.
    """
    ll, member = np.asarray(pop_ref_ll, np.float64), np.asarray(membership, bool)
    if ll.shape != member.shape or ll.shape[0] < 4:
        raise ValueError(f"tune_rmia_a needs log-likelihoods and membership of one shape with "
                         f"at least 4 references (got {ll.shape} and {member.shape}); with 2, a "
                         "non-member of one is a member of the other, so nothing is OUT for it.")
    aucs = {}
    for a in grid:
        per_k = []
        for k in range(ll.shape[0]):
            others = [j for j in range(ll.shape[0]) if j != k]
            z = ~member[k]
            s = rmia_offline(ll[k], ll[others], ll[k, z], ll[others][:, z],
                             ref_out=~member[others], z_ref_out=~member[others][:, z], a=a,
                             gamma=gamma)
            per_k.append(roc_auc(s, member[k]))
        aucs[float(a)] = float(np.mean(per_k))
    best = max(aucs, key=lambda a: (aucs[a], -a))
    return best, aucs


__all__ = ["References", "init_references", "lira_offline", "logit_confidence",
           "make_reference_step", "param_axes", "reference_log_likelihoods", "reference_params",
           "reference_splits", "rmia_offline", "stack_references", "train_references",
           "tune_rmia_a"]
