"""What the attacks read, prepared in one place for the in-memory audit and the streamed one.

:func:`jaxmem.audit.run_attacks_on` (every text in memory) and
:func:`jaxmem.streaming.attack_files` (files of any size, chunk by chunk) build their
:class:`jaxmem.attacks.AttackInputs` with the same three calls:

1. :func:`select_attacks`: the attack specs to run and the extra inputs they need
   (:func:`jaxmem.attacks.needs`); without a reference model, those that need one are dropped
   with a warning;
2. :func:`shared_inputs`: what every text's attack shares, built once per audit: ReCaLL's
   non-member prefix (:func:`recall_prefix`) and DC-PDD's token frequencies
   (:func:`dcpdd_frequencies`);
3. :func:`prepare_inputs`: the inputs of a list of texts (all of them, or one chunk): the
   texts as scored, the target's scoring pass and, where needed, the reference's, the
   lowercased texts' and the texts' after the prefix.

Example:
    >>> from jaxmem import tiny_model
    >>> from jaxmem.attacks import run_attacks
    >>> from jaxmem.audit import AuditConfig
    >>> params, cfg, tok = tiny_model()
    >>> texts = ["the cat sat on the mat", "a dog ran far", "birds fly high"]
    >>> acfg = AuditConfig(attacks=("loss", "zlib", "lowercase", "recall"), block_size=32)
    >>> specs, extra = select_attacks(acfg, has_reference=False)
    >>> prefix, freqs = shared_inputs(acfg, cfg, tok, extra, lambda: texts,
    ...                               prefix_texts=["held-out text one", "and two"])
    >>> inputs = prepare_inputs(params, cfg, tok, texts, extra, acfg, prefix=prefix,
    ...                         frequencies=freqs)
    >>> {name: s.shape for name, s in run_attacks(specs, inputs).items()}
    {'loss': (3,), 'zlib': (3,), 'lowercase': (3,), 'recall': (3,)}
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from jaxmem import attacks as A
from jaxmem.batching import truncate_texts
from jaxmem.data import read_text_file
from jaxmem.data.embedded import cache_dir
from jaxmem.data.overlap import text_key
from jaxmem.data.sources import resolve
from jaxmem.io import atomic_write
from jaxmem.profiling import phase
from jaxmem.scoring import TokenStats, score_after_prefix, score_texts


def select_attacks(acfg, has_reference: bool) -> tuple[list[str], set[str]]:
    """The specs of ``acfg.attacks`` to run and what they need besides the target's pass
    (:func:`jaxmem.attacks.needs`); without a reference (``has_reference`` False) the attacks
    that need one are skipped, with a warning (:func:`skip_reference_attacks`).

    Example:
        >>> from jaxmem.audit import AuditConfig
        >>> select_attacks(AuditConfig(attacks=("loss", "lowercase")), has_reference=False)
        (['loss', 'lowercase'], {'lowercase'})
    """
    specs = list(acfg.attacks)
    extra = A.needs(specs)
    if "reference" in extra and not has_reference:
        specs, extra = skip_reference_attacks(specs)
    return specs, extra


def skip_reference_attacks(specs: list[str]) -> tuple[list[str], set[str]]:
    """Without a reference model: the specs minus those that need one (with a warning), and
    what the rest need."""
    skipped = [s for s in specs if "reference" in A.needs([s])]
    warnings.warn(f"No reference model given: {', '.join(skipped)} skipped.", stacklevel=4)
    specs = [s for s in specs if s not in skipped]
    return specs, A.needs(specs)


def shared_inputs(acfg, cfg, tokenizer, extra: set[str], audited: Callable[[], Iterable[str]],
                  prefix_texts: Sequence[str] | None = None
                  ) -> tuple[str | None, np.ndarray | None]:
    """What every text's attack shares, built once per audit: ``(prefix, frequencies)``,
    ReCaLL's prefix (:func:`recall_prefix`) where ``extra`` holds "recall" and DC-PDD's
    frequencies (:func:`dcpdd_frequencies`) where it holds "frequencies", else None.

    Args:
      audited: gives the audited texts (members and non-members) each time it is called: a
        list in memory, both files streamed again; none of them may be in the prefix, and
        they are left out of DC-PDD's corpus.
    """
    prefix = recall_prefix(acfg, prefix_texts, audited()) if "recall" in extra else None
    frequencies = (dcpdd_frequencies(tokenizer, cfg.vocab_size, acfg.dcpdd_corpus, audited())
                   if "frequencies" in extra else None)
    return prefix, frequencies


def score_pass(params, cfg, tokenizer, texts: Sequence[str], *, prefix: str | None = None,
               quiet: bool = False, **kw) -> TokenStats:
    """One scoring pass of ``texts`` (after ``prefix``, if given: ReCaLL's pass;
    :func:`jaxmem.scoring.score_texts` / :func:`~jaxmem.scoring.score_after_prefix`);
    ``quiet``: their truncation warnings held back (a streamed caller warns once for the whole
    input)."""
    if not quiet:
        if prefix is not None:
            return score_after_prefix(params, cfg, tokenizer, prefix, texts, **kw)
        return score_texts(params, cfg, tokenizer, texts, **kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* texts are longer than")
        warnings.filterwarnings("ignore", message=r"The prefix has .* tokens")
        return score_pass(params, cfg, tokenizer, texts, prefix=prefix, **kw)


def prepare_inputs(params, cfg, tokenizer, texts: Sequence[str], extra: set[str], acfg, *,
                   mesh=None, reference_params=None, prefix: str | None = None,
                   frequencies: np.ndarray | None = None, target: TokenStats | None = None,
                   reference: TokenStats | None = None, quiet: bool = False,
                   progress: bool = False) -> A.AttackInputs:
    """The :class:`jaxmem.attacks.AttackInputs` of ``texts`` (all audited texts, or one chunk).

    ``texts`` as scored (cut to their first ``acfg.block_size`` tokens: what Zlib compresses
    and Lowercase lowercases, so they describe the block the likelihoods are measured on), the
    target's scoring pass, and where ``extra`` needs them: the reference's pass (the target's
    own where the reference is the target itself: the base model attacked against itself),
    the lowercased texts' pass and the pass after ReCaLL's ``prefix``.

    Args:
      target, reference: passes already scored (a study scores the base model once for all
        methods); None: scored here.
      quiet: hold back truncation warnings (:func:`score_pass`).
      progress: a bar per scoring pass, labelled with what it scores.
    """
    kw = dict(batch_size=acfg.batch_size, block_size=acfg.block_size, dtype=acfg.dtype,
              mesh=mesh, quiet=quiet)

    def label(what: str) -> dict:  # score_texts' progress: False, or the bar's label
        return {"progress": progress and f"scoring {what}"}

    scored = truncate_texts(tokenizer, texts, acfg.block_size)
    if target is None:
        target = score_pass(params, cfg, tokenizer, texts, **kw, **label("target"))
    if "reference" not in extra:
        reference = None
    elif reference is None:
        reference = (target if reference_params is params
                     else score_pass(reference_params, cfg, tokenizer, texts, **kw,
                                     **label("reference")))
    return A.AttackInputs(
        target=target, texts=scored, reference=reference,
        lowercase=(score_pass(params, cfg, tokenizer, [t.lower() for t in scored], **kw,
                              **label("lowercased texts")) if "lowercase" in extra else None),
        recall=(score_pass(params, cfg, tokenizer, texts, prefix=prefix, **kw,
                           **label("after ReCaLL's prefix")) if prefix is not None else None),
        frequencies=frequencies)


def recall_prefix(acfg, prefix_texts: Sequence[str] | None = None,
                  audited: Iterable[str] = ()) -> str:
    """ReCaLL's non-member prefix P: the first ``acfg.recall_shots`` texts of
    ``acfg.recall_prefix`` (a file) or else of ``prefix_texts``, joined by blank lines (the
    ReCaLL code joins its shots with no separator).

    Raises:
      ValueError: no source, or a prefix text that is one of the ``audited`` texts (a member
        in P would be no non-member context; a non-member would be scored after itself).
    """
    if acfg.recall_prefix:
        texts = read_text_file(acfg.recall_prefix)
    elif prefix_texts:
        texts = list(prefix_texts)
    else:
        raise ValueError("The recall attack needs non-member texts for its prefix: set "
                         "AuditConfig.recall_prefix (--recall-prefix FILE) or pass "
                         "prefix_texts (held-out texts that are not audited).")
    texts = texts[:acfg.recall_shots]
    keys = {text_key(t) for t in texts}
    if any(text_key(t) in keys for t in audited):
        raise ValueError("A ReCaLL prefix text is also one of the audited texts; draw the prefix "
                         "from held-out texts that are neither members nor non-members.")
    return "\n\n".join(texts)


def _cache_key(tokenizer, texts: list[str], vocab_size: int) -> str | None:
    """A key for a frequency table: the tokenizer's full definition and the texts (None for a
    tokenizer that cannot describe itself: no caching)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    h = hashlib.sha256(backend.to_str().encode())
    h.update(f"{vocab_size}\0{len(texts)}".encode())
    for t in texts:
        h.update(t.encode() + b"\0")
    return h.hexdigest()[:32]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a handle: np.save would add ".npy" to the temporary name
        np.save(fh, array)


def dcpdd_frequencies(tokenizer, vocab_size: int, corpus: str = "default",
                      exclude: Iterable[str] = ()) -> np.ndarray:
    """DC-PDD's smoothed token frequencies [vocab_size] over every text of ``corpus`` but the
    audited ones (``exclude``, matched as :mod:`jaxmem.data.overlap` normalizes texts).

    Audited texts are left out so that the calibration knows nothing of them: with the default
    corpus, the members and non-members come from the same corpus. The counts of the whole
    corpus are cached in ``$JAXMEM_CACHE/dcpdd/`` (default ``~/.cache/jaxmem``), keyed by the
    tokenizer and the texts; the left-out texts' counts are subtracted afterwards.

    Example:
        >>> from jaxmem import tiny_model
        >>> _, cfg, tok = tiny_model()
        >>> _ = open("corpus.txt", "w").write("one text\\nanother text\\nthe audited one\\n")
        >>> f = dcpdd_frequencies(tok, cfg.vocab_size, "corpus.txt", exclude=["the audited one"])
        >>> f.shape, round(float(f.sum()), 6)
        ((99,), 1.0)
    """
    texts = [u.text for units in resolve(os.fspath(corpus), "text").splits.values()
             for u in units]
    key = _cache_key(tokenizer, texts, vocab_size)
    path = cache_dir() / "dcpdd" / f"{key}.npy" if key else None
    if path is not None and path.exists():
        counts = np.load(path)
    else:
        with phase("dc-pdd frequencies"):
            counts = A.token_frequencies(tokenizer, texts, vocab_size)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: _save_npy(tmp, counts))
    where = {}
    for i, t in enumerate(texts):
        where.setdefault(text_key(t), []).append(i)
    drop = sorted({i for t in exclude for i in where.pop(text_key(t), ())})
    if len(drop) == len(texts):
        raise ValueError(f"Every text of the DC-PDD corpus {corpus!r} is audited, so no "
                         "frequencies are left; name another corpus (dcpdd_corpus).")
    if drop:
        counts = counts - A.token_frequencies(tokenizer, [texts[i] for i in drop], vocab_size)
    return A.smoothed(counts)


__all__ = ["dcpdd_frequencies", "prepare_inputs", "recall_prefix", "score_pass",
           "select_attacks", "shared_inputs", "skip_reference_attacks"]
