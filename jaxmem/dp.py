"""Differentially private fine-tuning (DP-SGD) for every tuning method, and its accounting.

DP-SGD (Abadi et al., 2016, "Deep Learning with Differential Privacy") replaces the batch
gradient by

    g_i   = grad_theta l(x_i)                        per example, over the TRAINABLE leaves only
    g~_i  = g_i * min(1, C / ||g_i||_2)              (one global L2 norm over those leaves)
    g     = (sum_i g~_i + N(0, sigma^2 C^2 I)) / B   B = batch_size * grad_accum (fixed)

where ``l(x_i)`` is the example's **mean** token NLL (sum over its scored tokens divided by
their count; an empty filler row contributes nothing), the convention of MIMIR's gradient norm
(:mod:`jaxmem.gradnorm`), Opacus and HF. Dividing by the fixed B (not by the number of real
rows or tokens) keeps the sensitivity C / B. Without DP the trainer weights tokens (sum of all
token NLLs / token count); the two agree when every example has the same number of tokens
(full blocks), which the tests use. Since every method trains through the same step
(:func:`jaxmem.train_step.make_train_step`), this one implementation serves full, head, LoRA,
IA3, prefix, prompt and P-tuning: the per-example gradients are ``vmap(grad)`` over the
trainable subtree (``tuning.partition.split``), so a LoRA step never builds a per-example
gradient of the frozen base.

Per-example clipping is ``jax_privacy.clipped_grad`` (vmap over examples, clip, sum; filler
rows marked as padding). The noise is ``optax.tree.random_like`` keyed by the step's own key
(``fold_in(seed, step)``), so a killed run resumes bit-identically; jax-privacy's
``gaussian_privatizer`` would keep its key in the optimizer state instead.

**Accounting.** ``sigma`` for a target (epsilon, delta) comes from jax-privacy's
``calibrate_noise_multiplier`` over its ``DpsgdTrainingAccountant`` with dp-accounting's RDP
accountant: ``steps`` compositions of ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))``,
``q = B / n_train``, add-or-remove-one neighbours, at the orders of :func:`rdp_orders`. Caveat (the standard one): the trainer
draws shuffled fixed-size batches (each example once per epoch), while the accountant assumes
Poisson sampling; the reported epsilon is what a Poisson-sampled run would get.

Empirical epsilon (:func:`empirical_epsilon`) turns an attack's ROC into a lower bound on the
epsilon a run can have (Jagielski et al., 2020; Nasr et al., 2021).

Example:
    >>> dp = parse_dp("epsilon=8,delta=1e-5,clip=1.0")
    >>> sigma = noise_multiplier(dp, n_train=1000, batch=8, steps=375)
    >>> round(sigma, 3)
    0.533
    >>> round(epsilon_spent(sigma, n_train=1000, batch=8, steps=375, delta=1e-5), 2)  # <= 8
    8.0
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmem.config import check, is_number

KEYS = ("epsilon", "delta", "clip", "noise_multiplier")


@dataclasses.dataclass(frozen=True)
class DPConfig:
    """The privacy target and clip norm of a DP-SGD run (``TrainConfig.dp``).

    ``noise_multiplier`` (sigma) is chosen by the accountant for ``epsilon`` unless given; given,
    it is used as is (0 turns the noise off: clipping only, epsilon infinite) and ``epsilon``
    may be left out. The command line and YAML spell it ``epsilon=8,delta=1e-5,clip=1.0``
    (:func:`parse_dp`); ``str()`` gives that spelling back (:attr:`spec`).

    Example:
        >>> dp = DPConfig(epsilon=8, delta=1e-5)
        >>> str(dp), parse_dp(str(dp)) == dp
        ('epsilon=8,delta=1e-05,clip=1', True)
    """

    epsilon: float | None = None
    delta: float = 1e-5
    clip: float = 1.0
    noise_multiplier: float | None = None
    # the string it was parsed from (parse_dp), written back unchanged so that a run.json or
    # study.json recorded with it compares equal on resume; not part of the config's value
    text: str | None = dataclasses.field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self):
        check(self, "epsilon", lambda v: v is None or is_number(v) and v > 0,
              "a finite number > 0", "--dp epsilon=")
        check(self, "delta", lambda v: is_number(v) and 0 < v < 1,
              "in (0, 1), usually below 1/n_train", "--dp delta=")
        check(self, "clip", lambda v: is_number(v) and v > 0, "a finite number > 0",
              "--dp clip=")
        check(self, "noise_multiplier", lambda v: v is None or is_number(v) and v >= 0,
              "a finite number >= 0", "--dp noise_multiplier=")
        if self.epsilon is None and self.noise_multiplier is None:
            raise ValueError("DP needs a target epsilon (epsilon=8) or a fixed noise_multiplier.")

    @property
    def spec(self) -> str:
        """The ``key=value,...`` spelling: the string parsed, else every set key in
        :data:`KEYS` order (numbers as ``%g`` where that reads back exactly)."""
        if self.text is not None:
            return self.text
        shown = [(k, getattr(self, k)) for k in KEYS if getattr(self, k) is not None]
        return ",".join(f"{k}={_number(v)}" for k, v in shown)

    def __str__(self) -> str:
        return self.spec


def _number(v: float) -> str:
    short = f"{v:g}"
    return short if float(short) == v else repr(float(v))


def parse_dp(spec: str | DPConfig | None) -> DPConfig | None:
    """``"epsilon=8,delta=1e-5,clip=1.0"`` -> :class:`DPConfig`; None or "" -> None; a
    :class:`DPConfig` as it is. The one parser of the ``--dp`` / ``train.dp`` spelling.

    Raises:
      ValueError: an unknown key, a value that is not a number, or an invalid value.

    Example:
        >>> parse_dp("epsilon=8, clip=0.5")
        DPConfig(epsilon=8.0, delta=1e-05, clip=0.5, noise_multiplier=None)
    """
    if spec is None or isinstance(spec, DPConfig):
        return spec
    if not str(spec).strip():
        return None
    values = {}
    for part in str(spec).split(","):
        key, eq, value = (s.strip() for s in part.partition("="))
        if key not in KEYS or not eq:
            raise ValueError(f"Unknown DP setting {part.strip()!r} in {spec!r}; write "
                             f"key=value with keys {', '.join(KEYS)} "
                             "(e.g. --dp epsilon=8,delta=1e-5,clip=1.0).")
        try:
            values[key] = float(value)
        except ValueError:
            raise ValueError(f"DP setting {key}={value!r} is not a number.") from None
    dp = DPConfig(**values)
    object.__setattr__(dp, "text", str(spec))
    return dp


def check_delta(delta: float, n_train: int) -> None:
    """Refuses a delta of at least 1/n_train, which voids the guarantee: a mechanism that
    publishes one training example whole, picked at random, is (0, 1/n)-DP.

    Raises:
      ValueError: naming delta, 1/n and the usual choice (delta << 1/n).
    """
    if n_train >= 1 and delta >= 1 / n_train:
        raise ValueError(
            f"--dp delta={delta:g} is at least 1/n = 1/{n_train} = {1 / n_train:.3g} (n: the "
            f"{n_train} training examples); with delta >= 1/n DP-SGD guarantees nothing (a run "
            "that leaked one whole example would meet it). Use delta << 1/n, e.g. 1/(10 n) = "
            f"{1 / (10 * n_train):.3g} or 1e-5.")


def steps_and_rate(n_train: int, batch: int, epochs: int) -> tuple[int, float]:
    """(optimizer steps of the run, sampling rate q = batch / n_train, capped at 1)."""
    return epochs * math.ceil(n_train / batch), min(batch / n_train, 1.0)


def _dp_params(sigma, n_train, batch, delta):
    from jax_privacy.accounting import analysis
    return analysis.DpParams(noise_multipliers=sigma, num_samples=n_train, delta=delta,
                             batch_size=min(batch, n_train))


def rdp_orders() -> np.ndarray:
    """The RDP orders: dp-accounting's defaults from 2 up (2 ... 256).

    The orders below 2 matter only for very large epsilons (> ~20), and at large sampling
    rates their series often fails to converge (dp-accounting then drops them with a warning,
    after 1000 terms each: seconds per calibration). Fewer orders can only loosen the bound.
    """
    from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS
    return np.array([o for o in DEFAULT_RDP_ORDERS if o >= 2], np.float64)


def _accountant():
    from jax_privacy.accounting import accountants, analysis
    return analysis.DpsgdTrainingAccountant(accountants.RdpAccountantConfig(orders=rdp_orders()))


def epsilon_spent(sigma: float, *, n_train: int, batch: int, steps: int, delta: float) -> float:
    """Epsilon (at ``delta``) of ``steps`` Poisson-subsampled Gaussian steps (RDP accountant).

    ``sigma`` = 0 gives infinity.
    """
    if sigma <= 0:
        return math.inf
    return float(_accountant().compute_epsilon(steps, _dp_params(sigma, n_train, batch, delta)))


def noise_multiplier(dp: DPConfig, *, n_train: int, batch: int, steps: int) -> float:
    """The smallest sigma (to 1e-3) whose epsilon after ``steps`` is at most ``dp.epsilon``;
    ``dp.noise_multiplier`` when given."""
    if dp.noise_multiplier is not None:
        return float(dp.noise_multiplier)
    from jax_privacy.accounting import calibrate
    return float(calibrate.calibrate_noise_multiplier(
        target_epsilon=dp.epsilon, accountant=_accountant(), batch_sizes=min(batch, n_train),
        num_updates=steps, num_samples=n_train, target_delta=dp.delta, tol=1e-3))


@dataclasses.dataclass(frozen=True)
class DPStep:
    """What the train step needs: clip norm C, noise multiplier sigma, the fixed batch B."""

    clip: float
    sigma: float
    batch: int


# Per-example gradients of one microbatch are held at once: on CPU, vmapping a whole batch of
# full fine-tuning gradients (8 x 540 MB for a 135M model) ran 2x slower than one example at a
# time, while small trainable sets (LoRA, prompts) are fastest vmapped whole. Accelerators keep
# the whole batch (their memory bandwidth makes the big vmap cheap, and a data-parallel mesh
# needs the batch axis); this budget is CPU-only, chosen per platform when the step is lowered
# (so a step exported for TPU from a CPU host keeps the whole batch).
PER_EXAMPLE_GRADS_BYTES = 256 * 2**20


def microbatch_size(trainable, batch: int) -> int | None:
    """Examples whose gradients a CPU computes together (vmapped): the largest divisor of
    ``batch`` whose per-example gradients fit :data:`PER_EXAMPLE_GRADS_BYTES`, at least 1;
    None (the whole batch) when all fit. Accelerators always take the whole batch
    (:func:`clipped_grad_sum`)."""
    per_example = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(trainable))
    fit = max(1, PER_EXAMPLE_GRADS_BYTES // max(per_example, 1))
    if fit >= batch:
        return None
    return max(d for d in range(1, fit + 1) if batch % d == 0)


def clipped_grad_sum(loss, trainable, ids, mask, keys, clip: float):
    """(sum over examples of clipped per-example gradients, per-example losses).

    ``loss(trainable, ids, mask, key)`` is one example's loss on [1, T] rows; ``ids``, ``mask``
    [B, T], ``keys`` [B] (dropout). Rows without a scored token count as padding (zero).
    Examples are processed :func:`microbatch_size` at a time.
    """
    from jax_privacy.clipping import clipped_grad

    def run(size, trainable, ids, mask, keys):
        fn = clipped_grad(lambda tr, i, m, k: loss(tr, i, m, k[0]), l2_clip_norm=clip,
                          batch_argnums=(1, 2, 3), return_values=True, microbatch_size=size)
        padding = jnp.sum(mask, axis=-1) < 2
        g, aux = fn(trainable, ids, mask, keys, is_padding_example=padding)
        return g, aux.values

    size = microbatch_size(trainable, ids.shape[0])
    if size is None:
        return run(None, trainable, ids, mask, keys)
    # the CPU budget applies only where the step runs on a CPU
    return jax.lax.platform_dependent(trainable, ids, mask, keys,
                                      cpu=functools.partial(run, size),
                                      default=functools.partial(run, None))


def add_noise(grad_sum, key, dp: DPStep):
    """(sum of clipped gradients + N(0, sigma^2 C^2 I)) / B, leaf by leaf."""
    noise = optax.tree.random_like(key, grad_sum, jax.random.normal)
    return jax.tree.map(lambda g, z: (g + (dp.sigma * dp.clip) * z) / dp.batch, grad_sum, noise)


# ----------------------------------------------------------------------------- empirical epsilon

def empirical_epsilon(scores, labels, delta: float = 0.0, alpha: float = 0.05) -> float:
    """Lower bound on a run's epsilon implied by an attack's ROC (DP auditing).

    An (epsilon, delta)-DP mechanism forces every membership test to satisfy
    TPR <= e^eps FPR + delta and 1 - FPR <= e^eps (1 - TPR) + delta (Kairouz et al., 2015).
    With Clopper-Pearson intervals at level ``alpha`` (two-sided; each bound one-sided at
    alpha/2) on TPR (members) and FPR (non-members) at every threshold "score >= s"
    (Jagielski et al., 2020, "Auditing Differentially Private Machine Learning"; Nasr et al.,
    2021, "Adversary Instantiation"):

        eps_lb = max over thresholds of max( log((TPR_lo - delta) / FPR_hi),
                                             log((1 - FPR_hi - delta) / (1 - TPR_lo)) )

    with the bound 0 where no threshold gives a positive value. Holds with confidence
    1 - alpha per threshold (no correction for the maximum, as in those papers).

    Args:
      scores: one score per example, higher = member.
      labels: 1 for members, 0 for non-members.
      delta: the run's delta.
      alpha: the Clopper-Pearson intervals' total miss probability.

    Returns:
      The lower bound, a float >= 0.

    Example:
        >>> labels = np.r_[np.ones(200), np.zeros(200)]
        >>> round(empirical_epsilon(labels, labels, delta=1e-5), 2)  # a perfect attack, 400 texts
        3.98
        >>> round(empirical_epsilon(np.zeros(400), labels, delta=1e-5), 2)  # a blind one
        0.0
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be 1-D of one length.")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold NaN or inf; drop those examples first.")
    if not set(np.unique(y)) <= {0, 1} or y.min() == y.max():
        raise ValueError("labels must be 0/1 with both classes present.")
    if not (0 <= delta < 1 and 0 < alpha < 1):
        raise ValueError(f"need 0 <= delta < 1 and 0 < alpha < 1, got {delta}, {alpha}.")
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    # every distinct score is a threshold: "member when score >= t"
    t = np.unique(s)
    tp = len(pos) - np.searchsorted(pos, t, "left")
    fp = len(neg) - np.searchsorted(neg, t, "left")
    # each bound one-sided at alpha / 2
    tpr_lo = clopper_pearson(tp, len(pos), alpha)[0]
    fpr_hi = clopper_pearson(fp, len(neg), alpha)[1]
    with np.errstate(divide="ignore"):
        one = np.log(np.maximum(tpr_lo - delta, 0) / fpr_hi)
        two = np.log(np.maximum(1 - fpr_hi - delta, 0) / (1 - tpr_lo))
    return float(max(np.max(one), np.max(two), 0.0))


def clopper_pearson(k, n, alpha: float = 0.05):
    """Clopper-Pearson (exact binomial) interval of a proportion ``k / n``, two-sided at
    ``alpha`` (each bound one-sided at ``alpha / 2``); ``k`` may be an array.

    ``low = Beta(alpha/2; k, n - k + 1)`` (0 when k = 0), ``high = Beta(1 - alpha/2; k + 1,
    n - k)`` (1 when k = n): the interval of ``scipy.stats.binomtest(k, n)
    .proportion_ci(1 - alpha, method="exact")``.

    Example:
        >>> [round(float(v), 4) for v in clopper_pearson(1, 128)]
        [0.0002, 0.0428]
    """
    from scipy.stats import beta

    k = np.asarray(k)
    a = alpha / 2
    low = np.where(k == 0, 0.0, beta.ppf(a, np.maximum(k, 1), n - k + 1))
    high = np.where(k == n, 1.0, beta.ppf(1 - a, k + 1, np.maximum(n - k, 1)))
    return low, high


def empirical_epsilon_cap(n_members: int, n_nonmembers: int, delta: float = 0.0,
                          alpha: float = 0.05) -> float:
    """The most :func:`empirical_epsilon` can show with this many examples: its value for
    scores that separate members from non-members perfectly (TPR 1 at FPR 0).

    Example:
        >>> round(empirical_epsilon_cap(128, 128), 2)
        3.53
    """
    labels = np.r_[np.ones(n_members, int), np.zeros(n_nonmembers, int)]
    return empirical_epsilon(labels.astype(float), labels, delta=delta, alpha=alpha)


__all__ = ["DPConfig", "DPStep", "parse_dp", "steps_and_rate", "epsilon_spent",
           "noise_multiplier", "rdp_orders", "microbatch_size", "clipped_grad_sum", "add_noise", "empirical_epsilon",
           "empirical_epsilon_cap", "clopper_pearson"]
