"""The paper's claims as data: each claim judged once into a :class:`Claim`, grouped by the
report section that shows it (:class:`ClaimSection`), written as a study's ``claims.json``.

:mod:`jaxmem.study.claims`, :mod:`jaxmem.study.claim4` and :mod:`jaxmem.study.claim5` judge
the claims; :mod:`jaxmem.study.claim_text` renders the report's lines from these records, so
the report and ``claims.json`` say the same thing, and a script can read a verdict without
parsing prose.

Example:
    >>> c = Claim("1", "every parameter-based method memorizes more than every prompt-based "
    ...           "one", "m", ("d",), "loss", "inconclusive", reason="no per-example scores")
    >>> claims_json([ClaimSection("claims 1-2", "m", "d", (c,))])["claims"][0]["verdict"]
    'inconclusive'
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from jaxmem.io import atomic_write
from jaxmem.paired import ClaimTest, Estimate

__all__ = ["VERDICTS", "Claim", "ClaimSection", "claims_json", "write_claims"]

#: A claim's verdicts: judged on every pair (:func:`jaxmem.paired.judge_pairs`: IUT, Holm),
#: by equivalence (:func:`jaxmem.paired.judge_equivalence`: TOST; never ``mixed``), or not
#: judged at all (no comparable method on one side).
VERDICTS = ("reproduced", "mixed", "contradicted", "inconclusive", "not judged")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper judged on one study's numbers.

    Attributes:
      claim: which claim: ``"1"``, ``"2"``, ``"2 near chance"`` (claim 2's prompt-based
        side), ``"4"``, ``"5"``, ``"5 size"`` (claim 5 at a similar parameter count).
      statement: the claim as the paper states it.
      model, datasets: where it was judged (claim 4: the structured, then the free-text
        dataset; a claim 4 not judged: the datasets left without a comparable method).
      attack: the attack it was read under (:data:`jaxmem.study.claims.PRIMARY_ATTACKS`).
      verdict: one of :data:`VERDICTS`.
      test: the test behind the verdict (None when nothing could be tested; ``reason`` says
        why). Its pairs' keys: ``(method, method)`` for claims 1 and 5 (the first minus the
        second), ``method`` for claims 2 (last minus first epoch) and 4 (structured minus
        free text), ``(method, epoch)`` for the near-chance test.
      test_name: ``"IUT"`` (:func:`jaxmem.paired.judge_pairs`: intersection-union headline,
        Holm per pair) or ``"TOST"`` (:func:`jaxmem.paired.judge_equivalence`; its pairs'
        ``p_above`` is the TOST p-value, ``p_below`` the two-sided "outside" one).
      reason: why no test was made (scores missing, texts not paired, ...), else empty.
      attack_note: set when the primary attack was not run and another was read.
      epochs: the epochs compared (claim 2: last, first; claim 4: one per dataset; the
        near-chance test: every attacked epoch, in its pairs' keys).
      methods: the methods compared, by role (``"parameter"``, ``"prompt"``, ``"lora"``).
      secondary: secondary estimates by name (means over the pairs).
      by_attack: claim 1 under every attack: ``{attack: (test, mean difference)}``.
      aucs: claim 5: each compared method's AUC.
      base_auc: the base model's AUC by dataset, where the text cites it.
      n_boot, boot_seeds: the bootstrap's resamples and seeds (claim 4: one per dataset).
      n_seeds: the distinct numbers of training seeds per method behind the intervals.
    """

    claim: str
    statement: str
    model: str
    datasets: tuple
    attack: str
    verdict: str
    test: ClaimTest | None = None
    test_name: str = ""
    reason: str = ""
    attack_note: str = ""
    epochs: tuple = ()
    methods: dict = dataclasses.field(default_factory=dict)
    secondary: dict = dataclasses.field(default_factory=dict)
    by_attack: dict = dataclasses.field(default_factory=dict)
    aucs: dict = dataclasses.field(default_factory=dict)
    base_auc: dict = dataclasses.field(default_factory=dict)
    n_boot: int = 0
    boot_seeds: tuple = ()
    n_seeds: tuple = ()

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")

    def to_json(self) -> dict:
        """The claim as plain JSON values (NaN and infinities as null)."""
        return {"claim": self.claim, "statement": self.statement, "model": self.model,
                "datasets": list(self.datasets), "attack": self.attack,
                "verdict": self.verdict, "test": self.test_name or None,
                "reason": self.reason or None, "attack_note": self.attack_note.strip() or None,
                "epochs": list(self.epochs),
                "methods": {k: list(v) for k, v in self.methods.items()},
                **(_test_json(self.test) if self.test is not None else {"pairs": []}),
                "secondary": {k: _estimate_json(e) for k, e in self.secondary.items()},
                "by_attack": {a: {**_test_json(t), "mean": _estimate_json(e)}
                              for a, (t, e) in self.by_attack.items()},
                "aucs": {k: _num(v) for k, v in self.aucs.items()},
                "base_auc": {k: _num(v) for k, v in self.base_auc.items()},
                "n_boot": self.n_boot, "boot_seeds": list(self.boot_seeds),
                "training_seeds": list(self.n_seeds)}


@dataclasses.dataclass(frozen=True)
class ClaimSection:
    """The claims one section of the report shows: claims 1 and 2 of a (model, dataset)
    (``"claims 1-2"``), claim 5 of it (``"claim 5"``), or claim 4 of a model (``"claim 4"``,
    ``dataset`` None).

    Attributes:
      primary: ``{claim number: attack}`` read (the section's opening names them).
      min_effect, chance_margin: the margins the claims were judged with.
      n_seeds: training seeds per method behind the intervals (None: nothing bootstrapped).
      left_out: methods not at comparable utility, left out of the claims.
      left_out_note: the sentence saying why (:func:`jaxmem.study.utility.utility_note`).
      no_family: the families left without a method once those are left out.
    """

    section: str
    model: str
    dataset: str | None
    claims: tuple = ()
    primary: dict = dataclasses.field(default_factory=dict)
    min_effect: float = 0.05
    chance_margin: float = 0.05
    n_seeds: tuple | None = None
    left_out: tuple = ()
    left_out_note: str = ""
    no_family: tuple = ()


def _num(x):
    return None if x is None or not math.isfinite(x) else float(x)


def _estimate_json(e: Estimate) -> dict:
    return {"value": _num(e.value), "low": _num(e.low), "high": _num(e.high), "level": e.level}


def _key_json(k):
    return list(k) if isinstance(k, tuple) else k


def _test_json(t: ClaimTest) -> dict:
    return {"margin": t.margin, "alpha": t.alpha, "pairs": [
        {"key": _key_json(k), "estimate": _estimate_json(p.estimate), "verdict": p.verdict,
         "p_above": _num(p.p_above), "p_below": _num(p.p_below),
         "p_above_holm": _num(p.p_above_holm), "p_below_holm": _num(p.p_below_holm)}
        for k, p in t.pairs.items()]}


def claims_json(sections) -> dict:
    """``{"claims": [...], "left_out": [...]}``: every judged claim (:meth:`Claim.to_json`), in
    the report's order, and the methods each section left out; None sections are skipped."""
    sections = [s for s in sections if s is not None]
    return {"claims": [c.to_json() for s in sections for c in s.claims],
            "left_out": [{"model": s.model, "dataset": s.dataset, "methods": list(s.left_out),
                          "note": s.left_out_note} for s in sections if s.left_out]}


def write_claims(path, sections) -> Path:
    """Writes :func:`claims_json` of ``sections`` to ``path`` (a study's ``claims.json``)."""
    return atomic_write(Path(path), claims_json(sections))
