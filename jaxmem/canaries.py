"""Canary exposure (Carlini et al., 2019, "The Secret Sharer: Evaluating and Testing Unintended
Memorization in Neural Networks", USENIX Security, sections 3-4).

A **canary** is a template with random slots, e.g. ``"my account number is {} {} {} {} {} {}"``
with each slot a symbol drawn uniformly from an alphabet (``"0123456789"``), so the randomness
space R holds |R| = |alphabet| ** slots secrets (10^6 here). Some canaries are inserted into the
fine-tuning set REPEATS times each (0 = never inserted: the control), and the trained model is
asked how far each one stands out among all secrets the template could hold.

**Log-perplexity** (bits) of a filled template s[r]:
Px(s[r]) = -sum_i log2 p(x_i | x_<i), summed over the tokens after the template's fixed
prefix (the secret and any template text after it). The prefix's tokens are the same for every
r, so leaving them out changes no rank; it is the paper's Px up to a constant.

**Exposure** (the paper's Definition 3):
exposure(s[r]) = log2 |R| - log2 rank(s[r]), with
rank(s[r]) = |{r' in R : Px(s[r']) <= Px(s[r])}| (rank 1 = the lowest log-perplexity; ties
count against the canary). Equivalently exposure = -log2 Pr_{t ~ U(R)}[Px(s[t]) <= Px(s[r])].
It lies in [0, log2 |R|]; log2 |R| means the canary is the model's most likely secret.
Three estimators:

* ``exact``: all of R enumerated (only for small spaces, ``exact_max``).
* ``sampled`` (section 4.3, "Efficient estimation"): m references t_1..t_m drawn uniformly from
  R (with replacement), k = |{j : Px(s[t_j]) <= Px(s[r])}|, and
  exposure = -log2((k + 1) / (m + 1)): the canary counts itself, so when the references are
  R minus the canary this is exactly the definition. It is at most log2(m + 1).
  (TensorFlow Privacy's ``compute_exposure_interpolation`` uses log2 m - log2(k + 1).)
* ``skewnorm`` (section 4.3, extrapolation): a skew-normal fitted to the references' Px
  (``scipy.stats.skewnorm.fit``, maximum likelihood) and exposure = -log2 CDF(Px(s[r])),
  which goes beyond log2 m (and may exceed log2 |R|, the paper notes).

Every Px comes from the project's one scoring pass, :func:`jaxmem.scoring.score_texts`.

Example:
    >>> from jaxmem import tiny_model
    >>> params, cfg, tok = tiny_model()
    >>> ccfg = CanaryConfig.from_spec("4:0,1,4", template="my pin is {} {} {}", n_samples=500)
    >>> texts, canaries = insert_canaries(["The cat sat.", "A dog ran far."], ccfg, seed=0)
    >>> len(texts), canaries.texts[0]  # 2 + 4 * (0 + 1 + 4)
    (22, 'my pin is 8 6 5')
    >>> _ = canaries.save("canaries.json")  # beside the run, as train() does
    >>> # ... fine-tune on ``texts`` (jaxmem.train); here the random model stands in ...
    >>> report = exposure_report(params, cfg, tok, canaries, block_size=32)
    >>> report["space_size"], report["estimators"]  # 10^3 secrets: the exact one too
    (1000, ['exact', 'sampled', 'skewnorm'])
    >>> sorted(report["by_repeats"]), report["by_repeats"]["4"]["n"]
    (['0', '1', '4'], 4)
    >>> 0 <= report["by_repeats"]["4"]["exact"] <= report["log2_space"]  # mean, in bits
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
import string
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxmem.config import check, check_positive_ints, dtype_name, field, is_int
from jaxmem.io import atomic_write
from jaxmem.models.config import ModelConfig
from jaxmem.scoring import score_texts

ESTIMATORS = ("exact", "sampled", "skewnorm")


@dataclasses.dataclass(frozen=True)
class CanarySpec:
    """Which canaries a fine-tuning set gets (``TrainConfig.canaries``): ``n`` canaries per
    repetition count in ``repeats`` (0: never-inserted controls). The command line and YAML
    spell it ``N:REPEATS`` (:func:`parse_canaries`); ``str()`` gives that spelling back.

    Example:
        >>> spec = parse_canaries("8:0,1,4,16")
        >>> spec.n, spec.repeats, str(spec)
        (8, (0, 1, 4, 16), '8:0,1,4,16')
    """

    n: int
    repeats: tuple
    # the string it was parsed from (parse_canaries), written back unchanged so that a run.json
    # or study.json recorded with it compares equal on resume; not part of the spec's value
    text: str | None = dataclasses.field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "repeats", tuple(self.repeats))
        check(self, "n", lambda v: is_int(v) and v >= 1, "a positive integer",
              "--canaries N:REPEATS")
        check(self, "repeats", lambda v: v and all(is_int(r) for r in v) and min(v) >= 0
              and len(set(v)) == len(v), "distinct non-negative integers, e.g. 0,1,4,16",
              "--canaries N:REPEATS")

    def __str__(self) -> str:
        return self.text if self.text is not None else \
            f"{self.n}:{','.join(map(str, self.repeats))}"


def parse_canaries(spec: "str | CanarySpec | None") -> CanarySpec | None:
    """``"N:R1,R2,..."`` -> :class:`CanarySpec`; None -> None; a :class:`CanarySpec` as it is.
    The one parser of the ``--canaries`` / ``train.canaries`` spelling.

    Raises:
      ValueError: not an ``N:REPEATS`` string (YAML reads an unquoted ``8:16`` as the base-60
        number 496, so that is refused too, with how to quote it), or bad numbers.
    """
    if spec is None or isinstance(spec, CanarySpec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"TrainConfig.canaries (--canaries) must be a string N:REPEATS, "
                         f"e.g. '8:0,1,4,16'; got {spec!r}. In YAML quote it "
                         "(canaries: '8:16'): unquoted, YAML reads 8:16 as a base-60 number.")
    n, sep, reps = spec.partition(":")
    try:
        n, reps = int(n), tuple(int(r) for r in reps.split(","))
    except ValueError:
        sep = ""
    if not sep:
        raise ValueError(f"Canary spec {spec!r} is not N:REPEATS; write e.g. 8:0,1,4,16 "
                         "(8 canaries per repetition count 0, 1, 4 and 16).")
    parsed = CanarySpec(n, reps)
    object.__setattr__(parsed, "text", spec)
    return parsed


@dataclasses.dataclass(frozen=True)
class CanaryConfig:
    """Which canaries are made and how their exposure is measured.

    ``n`` canaries per entry of ``repeats``; ``CanaryConfig.from_spec("8:1,4,16")`` spells it
    the command line's way.
    """

    n: int = field(8, help="canaries per repetition count")
    repeats: tuple = field((0, 1, 4, 16), help="times each canary is inserted (0: a control, "
                           "never inserted)")
    template: str = field("my account number is {} {} {} {} {} {}",
                          help="the canary text; each {} is one random symbol")
    alphabet: str = field(string.digits, help="the symbols a slot takes, one character each")
    n_samples: int = field(10_000, help="sampled estimator: random reference secrets scored")
    exact_max: int = field(10_000, help="enumerate the whole randomness space (the exact "
                           "exposure) when it holds at most this many secrets")
    batch_size: int = field(64, help="texts per scoring batch")
    dtype: str = field("float32", help="compute dtype of the scoring pass")

    def __post_init__(self):
        check_positive_ints(self, "n", "n_samples", "batch_size")
        try:  # the command line and JSON give strings / lists
            reps = tuple(int(r) for r in self.repeats)
        except (TypeError, ValueError):
            reps = ()
        object.__setattr__(self, "repeats", reps)
        check(self, "repeats", lambda v: v and min(v) >= 0 and len(set(v)) == len(v),
              "distinct non-negative integers, e.g. 0,1,4,16")
        check(self, "exact_max", lambda v: is_int(v) and v >= 0, "a non-negative integer")
        check(self, "alphabet", lambda v: isinstance(v, str) and len(set(v)) == len(v) >= 2,
              "at least 2 distinct characters")
        slots = _slots(self.template)
        if slots == 0:
            raise ValueError(f"CanaryConfig.template ({self.template!r}) has no {{}} slot; "
                             "write one {} per random symbol.")
        if not self.prefix:
            raise ValueError(f"CanaryConfig.template ({self.template!r}) must start with fixed "
                             "words before the first {}: the secret is scored given them.")
        object.__setattr__(self, "dtype", dtype_name(self.dtype))

    @classmethod
    def from_spec(cls, spec: "str | CanarySpec", **kw) -> "CanaryConfig":
        """``"N:R1,R2,..."`` (e.g. ``"8:0,1,4,16"``) or its :class:`CanarySpec`: N canaries
        inserted R1 times, N inserted R2 times, ...; ``kw`` sets the other fields."""
        spec = parse_canaries(spec)
        if spec is None:
            raise ValueError("No canary spec given; write N:REPEATS, e.g. 8:0,1,4,16.")
        return cls(n=spec.n, repeats=spec.repeats, **kw)

    @property
    def spec(self) -> str:
        return f"{self.n}:{','.join(map(str, self.repeats))}"

    @property
    def prefix(self) -> str:
        """The fixed text every secret is scored after: the template up to its first slot, cut
        back to a word boundary (``"my pin is {}"`` -> ``"my pin is"``, ``"user u{}"`` ->
        ``"user"``), so its tokens are the same alone and inside every filled template."""
        head = self.template.split("{}")[0]
        if head and not head[-1].isspace():  # the slot's word starts in the fixed text
            head = head.rsplit(None, 1)[0] if len(head.split()) > 1 else ""
        return head.rstrip()

    @property
    def slots(self) -> int:
        return _slots(self.template)

    @property
    def space_size(self) -> int:
        """|R| = |alphabet| ** slots."""
        return len(self.alphabet) ** self.slots

    def fill(self, secret: str) -> str:
        """The template with the secret's symbols in its slots."""
        return self.template.format(*secret)

    def secret_of(self, index: int) -> str:
        """The secret number ``index`` of R (base-|alphabet| digits, first slot most
        significant): ``secret_of(0)`` is the first symbol repeated."""
        a, out = len(self.alphabet), []
        for _ in range(self.slots):
            index, d = divmod(index, a)
            out.append(self.alphabet[d])
        return "".join(reversed(out))


def _slots(template: str) -> int:
    return template.count("{}")


@dataclasses.dataclass
class Canaries:
    """The canaries of one fine-tuning set: secret ``secrets[i]`` inserted ``repeats[i]`` times.

    What :func:`insert_canaries` returns and :func:`exposure_report` measures; ``save`` /
    ``load`` keep it as JSON beside a run.
    """

    config: CanaryConfig
    seed: int
    secrets: list[str]
    repeats: list[int]

    @property
    def texts(self) -> list[str]:
        return [self.config.fill(s) for s in self.secrets]

    def to_dict(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "seed": self.seed,
                "canaries": [{"secret": s, "text": t, "repeats": r}
                             for s, t, r in zip(self.secrets, self.texts, self.repeats)]}

    def save(self, path) -> Path:
        """Writes the record as JSON, atomically (:func:`jaxmem.io.atomic_write`)."""
        return atomic_write(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "Canaries":
        """Reads what :meth:`save` wrote.

        Raises:
          FileNotFoundError: no file at ``path``, with where records come from.
          ValueError: the file is not a canary record.
        """
        if not Path(path).is_file():
            raise FileNotFoundError(f"No canary record at {path}; a run trained with --canaries "
                                    "(train.canaries) writes RUN_DIR/canaries.json, and "
                                    "Canaries.save writes one.")
        try:
            d = json.loads(Path(path).read_text())
            rows = d["canaries"]
            return cls(CanaryConfig(**d["config"]), int(d["seed"]),
                       [r["secret"] for r in rows], [int(r["repeats"]) for r in rows])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a canary record (as Canaries.save writes: "
                             f"config, seed, canaries); {type(e).__name__}: {e}") from e


def insert_canaries(train_texts: Sequence[str], ccfg: CanaryConfig, seed: int = 0
                    ) -> tuple[list[str], Canaries]:
    """Draws ``ccfg.n`` distinct random secrets per repetition count and inserts each canary
    text into the fine-tuning set that many times.

    Deterministic in ``seed``. The copies go to random positions; the original texts keep their
    order.

    Args:
      train_texts: the fine-tuning set.
      ccfg: template, alphabet, counts.
      seed: seed of the secrets and of the positions.

    Returns:
      (the fine-tuning set with the canaries, :class:`Canaries`).

    Raises:
      ValueError: more canaries asked for than the randomness space holds.

    Example:
        >>> train = ["The cat sat.", "A dog ran far.", "Birds fly."]
        >>> texts, canaries = insert_canaries(train, CanaryConfig.from_spec("4:1,4,16"))
        >>> len(texts) - len(train)  # 4 * (1 + 4 + 16)
        84
        >>> texts.count(canaries.texts[-1]), canaries.repeats[-1]  # the last: 16 copies
        (16, 16)
    """
    total = ccfg.n * len(ccfg.repeats)
    if total > ccfg.space_size:
        raise ValueError(f"{total} distinct canaries asked for, but the template holds only "
                         f"{ccfg.space_size} secrets; lower n or add slots / symbols.")
    rng = np.random.default_rng(seed)
    secrets: list[str] = []
    while len(secrets) < total:  # distinct secrets; redraws are rare unless R is small
        s = "".join(rng.choice(list(ccfg.alphabet), ccfg.slots))
        if s not in secrets:
            secrets.append(s)
    repeats = [r for r in ccfg.repeats for _ in range(ccfg.n)]
    canaries = Canaries(ccfg, seed, secrets, repeats)
    copies = [t for t, r in zip(canaries.texts, repeats) for _ in range(r)]
    copies = [copies[i] for i in rng.permutation(len(copies))]
    out = list(train_texts) + copies
    slot = np.zeros(len(out), bool)
    slot[rng.choice(len(out), len(copies), replace=False)] = True
    originals, extra = iter(train_texts), iter(copies)
    return [next(extra) if c else next(originals) for c in slot], canaries


# ----------------------------------------------------------------------------- log-perplexity

def log_perplexities(params: dict, cfg: ModelConfig, tokenizer, ccfg: CanaryConfig,
                     secrets: Sequence[str], *, block_size: int | None = None,
                     progress: bool = False) -> np.ndarray:
    """Px (bits) of each secret in the template: minus the log2-probability of the tokens after
    the template's prefix, given the prefix (see the module docstring).

    The prefix is :attr:`CanaryConfig.prefix` (the template up to its first slot, cut back to
    a word boundary), so its tokens are the ones it has inside every filled template.

    Raises:
      ValueError: the filled templates do not start with the prefix's own tokens (the
        tokenizer merges the prefix's end with a symbol); end the prefix at a word boundary.
    """
    prefix = ccfg.prefix
    ids = list(tokenizer([prefix])["input_ids"][0])
    p = len(ids)
    texts = [ccfg.fill(s) for s in secrets]
    stats = score_texts(params, cfg, tokenizer, texts, batch_size=ccfg.batch_size,
                        block_size=block_size, dtype=ccfg.dtype, on_overflow="error",
                        progress=progress)
    # Column t scores token t + 1; the prefix holds tokens 0..p-1, so the secret starts at
    # column p - 1, and token_ids[:, :p-1] are the prefix's tokens 1..p-1.
    if not (stats.token_ids[:, :p - 1] == np.asarray(ids[1:], np.int64)).all():
        raise ValueError(f"The template's prefix {prefix!r} tokenizes differently inside the "
                         "filled template (the tokenizer merges it with what follows); put a "
                         "space before the first slot's word.")
    logp = np.where(stats.mask, stats.logp, 0.0)[:, p - 1:].astype(np.float64)
    return -logp.sum(-1) / math.log(2)


# ----------------------------------------------------------------------------- exposure

def exposure_exact(px_all: np.ndarray, px: np.ndarray) -> np.ndarray:
    """log2 |R| - log2 rank, rank = |{r' in R : Px(r') <= Px}|, from every secret's Px
    (``px_all``, the whole of R) and the canaries' Px (each one of ``px_all``'s values)."""
    px_all = np.sort(np.asarray(px_all, np.float64))
    rank = np.searchsorted(px_all, np.asarray(px, np.float64), side="right")
    return np.log2(len(px_all)) - np.log2(rank)


def exposure_sampled(px_ref: np.ndarray, px: np.ndarray) -> np.ndarray:
    """-log2((k + 1) / (m + 1)), k = |{j : Px(t_j) <= Px}| among m uniform references."""
    px_ref = np.sort(np.asarray(px_ref, np.float64))
    k = np.searchsorted(px_ref, np.asarray(px, np.float64), side="right")
    return -np.log2((k + 1) / (len(px_ref) + 1)) + 0.0  # + 0.0: no -0.0 in reports


def fit_skewnorm(px_ref: np.ndarray) -> tuple[float, float, float]:
    """(shape a, loc, scale) of the skew-normal fitted to the references' Px by maximum
    likelihood (``scipy.stats.skewnorm.fit``)."""
    from scipy import stats

    return tuple(float(v) for v in stats.skewnorm.fit(np.asarray(px_ref, np.float64)))


def exposure_skewnorm(params: tuple[float, float, float], px: np.ndarray) -> np.ndarray:
    """-log2 CDF(Px) under a fitted skew-normal (``logcdf``, so far tails stay finite)."""
    from scipy import stats

    return -stats.skewnorm.logcdf(np.asarray(px, np.float64), *params) / math.log(2)


def _finite(x) -> float | None:
    """A float for JSON: None for NaN or infinity."""
    x = float(x)
    return x if math.isfinite(x) else None


def exposure_report(params: dict, cfg: ModelConfig, tokenizer, canaries: Canaries, *,
                    seed: int = 0, block_size: int | None = None,
                    progress: bool = False) -> dict:
    """Every canary's log-perplexity and exposure by each estimator, and their means per
    repetition count.

    One set of references serves every canary: ``n_samples`` secrets drawn uniformly from R
    with ``seed`` (the sampled and skew-normal estimators), and all of R when
    |R| <= ``exact_max`` (the exact one).

    Args:
      params, cfg, tokenizer: the model (a tuning method's leaves included).
      canaries: what :func:`insert_canaries` returned (or :meth:`Canaries.load`).
      seed: seed of the reference secrets.
      block_size: tokens per text for scoring (default: the model's context up to 1024).

    Returns:
      ``{"space_size", "log2_space", "n_samples", "estimators", "skewnorm": [a, loc, scale],
      "canaries": [{"secret", "repeats", "log_perplexity", "exposure_<estimator>"...}],
      "by_repeats": {"R": {"n", "<estimator>": mean exposure}}}`` (JSON-ready; an infinite
      exposure is None). Where the skew-normal fit fails (scipy cannot fit the references,
      or the fit is not finite), ``"skewnorm"`` is None, the estimator is left out, ``"note"``
      says why and a warning is printed: the sampled estimate stands alone.

    Example:
        >>> from jaxmem import tiny_model
        >>> params, cfg, tok = tiny_model()
        >>> ccfg = CanaryConfig.from_spec("2:0,4", template="my pin is {} {} {}",
        ...                               n_samples=500)
        >>> _ = insert_canaries(["A text."], ccfg)[1].save("canaries.json")
        >>> rep = exposure_report(params, cfg, tok, Canaries.load("canaries.json"),
        ...                       block_size=32)
        >>> row = rep["canaries"][0]
        >>> row["secret"], row["repeats"], sorted(k for k in row if k.startswith("exposure"))
        ('865', 0, ['exposure_exact', 'exposure_sampled', 'exposure_skewnorm'])
    """
    ccfg = canaries.config
    px = log_perplexities(params, cfg, tokenizer, ccfg, canaries.secrets,
                          block_size=block_size, progress=progress)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ccfg.alphabet), (ccfg.n_samples, ccfg.slots))
    refs = ["".join(ccfg.alphabet[i] for i in row) for row in idx]
    px_ref = log_perplexities(params, cfg, tokenizer, ccfg, refs, block_size=block_size,
                              progress=progress)
    exp = {"sampled": exposure_sampled(px_ref, px)}
    sn, note = _skewnorm_or_note(px_ref, px)
    if note is None:
        exp["skewnorm"] = exposure_skewnorm(sn, px)
    else:  # the sampled (empirical rank) estimate stands alone, and the report says so
        print(f"warning: {note}", file=sys.stderr)
    if ccfg.space_size <= ccfg.exact_max:
        every = [ccfg.secret_of(i) for i in range(ccfg.space_size)]
        px_all = log_perplexities(params, cfg, tokenizer, ccfg, every, block_size=block_size,
                                  progress=progress)
        # the canaries' Px as scored among all of R, so each ties with itself exactly
        where = {s: i for i, s in enumerate(every)}
        exp["exact"] = exposure_exact(px_all, px_all[[where[s] for s in canaries.secrets]])
    estimators = [e for e in ESTIMATORS if e in exp]
    rows = [{"secret": s, "repeats": r, "log_perplexity": float(px[i]),
             **{f"exposure_{e}": _finite(exp[e][i]) for e in estimators}}
            for i, (s, r) in enumerate(zip(canaries.secrets, canaries.repeats))]
    reps = np.asarray(canaries.repeats)
    by = {str(r): {"n": int((reps == r).sum()),
                   **{e: _finite(exp[e][reps == r].mean()) for e in estimators}}
          for r in sorted(set(canaries.repeats))}
    out = {"space_size": ccfg.space_size, "log2_space": math.log2(ccfg.space_size),
           "n_samples": ccfg.n_samples, "estimators": estimators,
           "skewnorm": None if sn is None else list(sn), "canaries": rows, "by_repeats": by}
    if note is not None:
        out["note"] = note
    return out


def _skewnorm_or_note(px_ref: np.ndarray, px: np.ndarray):
    """(the skew-normal's parameters, None), or (None, why not) when the fit fails or gives
    non-finite parameters or exposures (scipy's maximum likelihood can fail on few or tied
    references): exposure then falls back to the sampled estimate alone."""
    try:
        sn = fit_skewnorm(px_ref)
        bad = not (np.isfinite(sn).all() and np.isfinite(exposure_skewnorm(sn, px)).all())
        why = "it gave non-finite values"
    except Exception as e:  # scipy's FitError, RuntimeError, ValueError, ... all mean the same
        bad, why = True, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    if not bad:
        return sn, None
    return None, (f"the skew-normal fit to the {len(px_ref)} reference secrets failed ({why}); "
                  "exposure falls back to the sampled estimate (the empirical rank among the "
                  "references), which cannot exceed log2(m + 1). The fit needs references that "
                  "are not all tied and not too few (--n-samples).")
