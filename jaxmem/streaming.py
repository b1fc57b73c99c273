"""Scoring and attacks at corpus scale: texts streamed in, rows written out in chunks, resumable.

``jaxmem score`` and ``jaxmem attack --members M --nonmembers N`` run through here, whatever the
size of their files, in host and device memory that does not grow with the number of texts:

1. :func:`scan_input` reads the input once (a checksum and a count of the texts, which also runs
   every check of :func:`jaxmem.data.read_text_file` before any model is loaded);
2. :func:`jaxmem.data.files.iter_text_file` streams the texts, and
   :func:`jaxmem.chunked.chunked` groups them;
3. each chunk is tokenized and scored by the one scoring pass (:func:`jaxmem.scoring.score_texts`:
   length-sorted batches, the jitted ``token_stats``) and reduced to one row per text at once,
   so the largest array is a chunk's [chunk, longest] statistics;
4. :class:`jaxmem.chunked.ChunkedTable` appends the rows to the output (``.csv``, ``.jsonl``,
   ``.json`` and ``.md`` to ``<out>.partial``, ``.parquet`` as part files in ``<out>.parts/``),
   makes them durable, then records how many texts are done in ``<out>.progress.json``. The finished
   output is renamed (or merged) into place at the end, so ``<out>`` exists only whole.

A rerun of the same command resumes after the last recorded chunk: rows written past the marker
are cut off and the texts already done are skipped, not rescored. Chunk boundaries fall at the
same texts in every run, so a resumed output equals an uninterrupted one. A marker written for
another input (checksum) or other settings is refused, naming what differs (``--overwrite``
starts over). The marker is written before the first row, so a ``<out>.partial`` or
``<out>.parts`` without one is not jaxmem's: it is refused, never truncated.

Only per-example scalars are ever held for the whole input, and only where the end needs them:
an attack's metrics, ROC and histograms read its per-example scores back (O(N) floats), and its
member / non-member overlap check keeps one 16-byte hash per member text. An attack's inputs
are built per chunk by the same calls as in memory (:mod:`jaxmem.attack_inputs`).

Example:
    >>> import json, jaxmem
    >>> params, cfg, tok = jaxmem.tiny_model()
    >>> with open("candidates.jsonl", "w") as f:
    ...     for i in range(10):
    ...         print(json.dumps({"text": f"Candidate text number {i}."}), file=f)
    >>> inp = scan_input("candidates.jsonl")
    >>> inp.n_texts
    10
    >>> settings = score_settings(inp, model="tiny", batch_size=4, chunk_size=4)
    >>> summary = score_file(params, cfg, tok, inp, settings, out="scores.csv", batch_size=4,
    ...                      chunk_size=4)
    >>> summary["n_texts"], summary["n_tokens"], summary["resumed_from"]
    (10, 230, 0)
    >>> open("scores.csv").readline().strip()     # one row per text follows
    'index,n_tokens,truncated,nll,ppl,min_k20_logp,mean_mu,mean_sigma,text'
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from jaxmem import attacks as A
from jaxmem import audit, locks, runs
from jaxmem.attack_inputs import prepare_inputs, score_pass, select_attacks, shared_inputs
from jaxmem.batching import truncate_texts
from jaxmem.bootstrap import summarize
from jaxmem.chunked import ChunkedTable, chunked
from jaxmem.config import dtype_name
from jaxmem.data.files import iter_text_file
from jaxmem.data.overlap import text_key
from jaxmem.scoring import prefix_ids
from jaxmem.sharding import is_main_process

CHUNK_SIZE = 2048  # texts per chunk: a few MB of statistics, and progress written that often
HEAD_ROWS = 100    # first rows kept in the marker, so a resumed `jaxmem score` can print them


# ----------------------------------------------------------------------------- input

@dataclasses.dataclass(frozen=True)
class InputFile:
    """One input file as scanned: where it is, what it holds (checksum), how many texts."""

    path: str
    size: int
    sha256: str
    n_texts: int
    text_column: str = "text"
    strict: bool = False

    def texts(self) -> Iterator[str]:
        """The file's texts, one at a time (:func:`jaxmem.data.files.iter_text_file`)."""
        return iter_text_file(self.path, text_column=self.text_column, strict=self.strict)

    def identity(self) -> dict:
        """What a resumed run must find unchanged."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "text_column": self.text_column, "strict": self.strict}


def scan_input(path: str | os.PathLike, *, text_column: str = "text",
               strict: bool = False) -> InputFile:
    """Checksums a file and counts its texts, in constant memory.

    The counting pass parses the whole file, so every error :func:`read_text_file` would raise
    (no such file, bad suffix or column, a bad JSON line far down, no text at all) is raised
    here, before any model is loaded, with the same message.
    """
    path = Path(path).expanduser()
    n = sum(1 for _ in iter_text_file(path, text_column=text_column, strict=strict))
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return InputFile(str(path.resolve()), path.stat().st_size, digest.hexdigest(), n,
                     text_column, strict)


# ----------------------------------------------------------------------------- scoring

def _warn_truncated(n: int, total: int, block_size: int) -> None:
    if n:
        warnings.warn(f"{n} of {total} texts are longer than {block_size} tokens; they are "
                      f"truncated to their first {block_size} tokens.", stacklevel=3)


def score_rows(stats, texts: Sequence[str], start: int = 0) -> list[dict]:
    """The rows ``jaxmem score`` prints and writes: one per text, numbered from ``start``."""
    n = stats.n_tokens
    nll = stats.nll()
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(stats.mask, stats.mu, 0).sum(-1) / n
        sigma = np.where(stats.mask, stats.sigma, 0).sum(-1) / n
    mink = A.min_k(A.AttackInputs(stats, texts), k=0.2)
    return [{"index": start + i, "n_tokens": int(n[i]), "truncated": bool(stats.truncated[i]),
             "nll": float(nll[i]), "ppl": float(np.exp(nll[i])),
             "min_k20_logp": float(mink[i]), "mean_mu": float(mu[i]),
             "mean_sigma": float(sigma[i]),
             "text": texts[i][:48].replace("\n", " ").replace("|", "/")}
            for i in range(len(texts))]


def score_settings(inp: InputFile, *, block_size: int | None = None, batch_size: int = 8,
                   dtype: str = "float32", chunk_size: int = CHUNK_SIZE, **extra) -> dict:
    """What a ``jaxmem score`` output is: its input, scoring settings and ``extra`` (the model
    name, the tokenizer). A resumed run must match it (:func:`resume_point`)."""
    return {"kind": "score", "input": inp.identity(), "block_size": block_size,
            "batch_size": batch_size, "dtype": dtype_name(dtype), "chunk_size": chunk_size,
            **extra}


def _progress_bar(total: int, initial: int, desc: str):
    return tqdm(total=total, initial=initial, desc=desc, unit="text", dynamic_ncols=True,
                disable=not is_main_process())


@locks.locked("out", "output", file=True)  # one writer per output file
def score_file(params, cfg, tokenizer, inp: InputFile, settings: dict, *,
               out: str | os.PathLike | None = None, batch_size: int = 8,
               block_size: int | None = None, dtype: str = "float32",
               chunk_size: int = CHUNK_SIZE, overwrite: bool = False, mesh=None,
               on_rows: Callable[[list[dict]], None] | None = None,
               after_chunk: Callable[[int], None] | None = None,
               head_rows: int = HEAD_ROWS) -> dict:
    """Scores every text of a file chunk by chunk; rows to ``out`` (resumable) and ``on_rows``.

    Args:
      params, cfg, tokenizer: the model.
      inp: the scanned input (:func:`scan_input`).
      settings: the run's identity (:func:`score_settings`), recorded in the marker.
      out: the output table (``.csv``, ``.jsonl``, ``.json``, ``.md``, ``.parquet``); None:
        rows go to ``on_rows`` only and nothing is resumable.
      batch_size, block_size, dtype, mesh: as :func:`jaxmem.scoring.score_texts`.
      chunk_size: texts per chunk.
      overwrite: start over even if ``out`` has a matching interrupted run.
      on_rows: called with each chunk's rows (the CLI prints them).
      after_chunk: called with the number of texts done after each chunk is recorded (tests
        interrupt a run here).
      head_rows: how many of the first rows to keep (and record) for printing.

    Returns:
      {"n_texts", "n_tokens", "corpus_ppl", "n_truncated", "head" (the first rows),
      "resumed_from" (texts done before this session), "session_tokens", "seconds",
      "tokens_per_s" (this session's)}.
    """
    block_size = block_size or min(cfg.max_positions, 1024)
    kw = dict(batch_size=batch_size, block_size=block_size, dtype=dtype, mesh=mesh)
    table = ChunkedTable(out, settings, overwrite=overwrite) if out is not None else None
    done = start = table.done if table else 0
    state = (table.state if table and table.state
             else {"n_tokens": 0, "nll_sum": 0.0, "n_truncated": 0, "head": []})
    bar = _progress_bar(inp.n_texts, done, "scoring")
    t0, session_tokens = time.perf_counter(), 0
    texts = itertools.islice(inp.texts(), done, None)  # the texts already written: not rescored
    for chunk in chunked(texts, chunk_size):
        stats = score_pass(params, cfg, tokenizer, chunk, quiet=True, **kw)
        rows = score_rows(stats, chunk, start=done)
        n, nll = stats.n_tokens, stats.nll()
        state = {"n_tokens": state["n_tokens"] + int(n.sum()),
                 "nll_sum": state["nll_sum"] + float(np.nansum(nll * n)),
                 "n_truncated": state["n_truncated"] + int(stats.truncated.sum()),
                 "head": (state["head"] + rows[:head_rows])[:head_rows]}
        if table:
            table.append(rows, len(chunk), state)
        done += len(chunk)
        session_tokens += int(n.sum())
        rate = session_tokens / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
        bar.update(len(chunk))
        if on_rows:
            on_rows(rows)
        if after_chunk:
            after_chunk(done)
    bar.close()
    if table:
        table.finish()
    dt = time.perf_counter() - t0
    _warn_truncated(state["n_truncated"], inp.n_texts, block_size)
    total = state["n_tokens"]
    return {"n_texts": done, "n_tokens": total,
            "corpus_ppl": float(np.exp(state["nll_sum"] / total)) if total else float("nan"),
            "n_truncated": state["n_truncated"], "head": state["head"],
            "resumed_from": start,
            "session_tokens": session_tokens, "seconds": dt,
            "tokens_per_s": session_tokens / dt if dt > 0 else float("nan")}


# ----------------------------------------------------------------------------- attacks

def _warn_prefix_cut(prefix: str | None, cfg, tokenizer, block_size: int) -> None:
    """ReCaLL's prefix-cut warning, once for the whole input (the chunks hold theirs back)."""
    if prefix is not None:
        prefix_ids(tokenizer, prefix, cfg.max_positions - block_size)

def attack_settings(members: InputFile, nonmembers: InputFile, acfg, *,
                    chunk_size: int = CHUNK_SIZE, **extra) -> dict:
    """What a streamed attack's per-example scores are: both inputs, the attacks, the scoring
    settings and ``extra`` (model, run, reference). The bootstrap settings are left out: the
    metrics are computed from the scores at the end, so they may change on a resume."""
    inputs = A.needs(acfg.attacks)  # the settings of DC-PDD and ReCaLL, only where they are used
    own = ({"dcpdd_corpus": acfg.dcpdd_corpus} if "frequencies" in inputs else {}) | (
        {"recall_prefix": acfg.recall_prefix, "recall_shots": acfg.recall_shots}
        if "recall" in inputs else {})
    return {"kind": "attack", "members": members.identity(), "nonmembers": nonmembers.identity(),
            "attacks": list(acfg.attacks), "block_size": acfg.block_size,
            "batch_size": acfg.batch_size, "dtype": acfg.dtype, "chunk_size": chunk_size,
            **own, **extra}


def _kept_nonmembers(members: InputFile, nonmembers: InputFile) -> np.ndarray:
    """:func:`jaxmem.audit.check_member_sets` on streams: which non-members are kept (those
    that are no exact copy of a member), with its warning and refusals."""
    taken = {text_key(t) for t in members.texts()}
    keep = np.fromiter((text_key(t) not in taken for t in nonmembers.texts()), bool,
                       count=nonmembers.n_texts)
    if not keep.any():
        raise ValueError("Every non-member is also a member: the two sets are identical, so no "
                         "attack can tell them apart. Draw non-members from held-out data.")
    if not keep.all():
        warnings.warn(f"Dropped {int((~keep).sum())} non-members that are exact copies "
                      "of members.", stacklevel=3)
    return keep


@locks.locked("out_dir", "attack")  # one writer per attack folder
def attack_files(params, cfg, tokenizer, members: InputFile, nonmembers: InputFile, acfg, *,
                 out_dir: str | os.PathLike, settings: dict, reference_params=None,
                 overwrite: bool = False, title: str = "", mesh=None,
                 chunk_size: int = CHUNK_SIZE, prefix_texts: Sequence[str] | None = None,
                 after_chunk: Callable[[int], None] | None = None) -> dict:
    """:func:`jaxmem.audit.run_attacks_on` for two files of any size, resumable.

    Members, then the non-members that copy no member, form one stream of texts; each chunk of
    it gets the target's scoring pass (plus the reference's for Ref and EZ-MIA, the lowercased
    texts' for Lowercase, and the texts' after the non-member prefix for ReCaLL), every attack's
    per-example score, and its rows in ``scores.parquet``'s parts. DC-PDD's frequency table is
    built once before the first chunk (its corpus minus the texts of both files, streamed). At
    the end the metrics come from the score columns read back, and the attack folder holds what
    :func:`run_attacks_on` writes. With no more texts than ``chunk_size``, the scores are
    bit-identical to :func:`run_attacks_on`'s (one chunk, the same batches).

    Args:
      members, nonmembers: the scanned inputs (:func:`scan_input`).
      acfg: an :class:`jaxmem.audit.AuditConfig`.
      out_dir: the attack folder, claimed by the caller (:func:`jaxmem.runs.claim_attack_dir`).
      settings: the run's identity (:func:`attack_settings`).
      reference_params: the reference of Ref and EZ-MIA; they are skipped (with a warning)
        without one.
      prefix_texts: ReCaLL's held-out prefix texts, when ``acfg.recall_prefix`` names no file.
      overwrite, mesh, chunk_size, after_chunk: as :func:`score_file`.

    Returns:
      {"metrics", "scores", "labels", "info"}, as :func:`run_attacks_on` (no token stats).
    """
    if acfg.block_size > cfg.max_positions:
        raise ValueError(f"block_size {acfg.block_size} exceeds the model's context "
                         f"({cfg.max_positions} positions); lower it.")
    keep = _kept_nonmembers(members, nonmembers)
    specs, extra = select_attacks(acfg, reference_params is not None)
    if any(x.startswith("gradients:") for x in extra):
        raise ValueError("The gradient-norm attacks (grad_norm, grad_norm_all) are not streamed; "
                         "attack a corpus in memory (jaxmem attack --corpus) or drop them.")
    names = [A.parse_attack(s)[0] for s in specs]

    def audited():  # both files again, one text at a time (only hashes are kept)
        return itertools.chain(members.texts(), nonmembers.texts())

    prefix, frequencies = shared_inputs(acfg, cfg, tokenizer, extra, audited, prefix_texts)
    table = ChunkedTable(Path(out_dir) / runs.SCORES, settings, overwrite=overwrite)
    n_total = members.n_texts + int(keep.sum())
    stream = itertools.chain(
        ((t, True) for t in members.texts()),
        ((t, False) for t, k in zip(nonmembers.texts(), keep) if k))
    state = table.state or {"n_truncated": 0}
    bar = _progress_bar(n_total, table.done, "attacking")
    t0, tokens = time.perf_counter(), 0
    for chunk in chunked(itertools.islice(stream, table.done, None), chunk_size):
        texts = [t for t, _ in chunk]
        inputs = prepare_inputs(params, cfg, tokenizer, texts, extra, acfg, mesh=mesh,
                                reference_params=reference_params, prefix=prefix,
                                frequencies=frequencies, quiet=True)
        scores = A.run_attacks(specs, inputs)
        target = inputs.target
        n_tok = target.n_tokens
        rows = [{"index": table.done + i, "member": member, "n_tokens": int(n_tok[i]),
                 **{k: float(v[i]) for k, v in scores.items()}, "text": text[:200]}
                for i, (text, member) in enumerate(chunk)]
        state = {"n_truncated": state["n_truncated"] + int(target.truncated.sum())}
        table.append(rows, len(chunk), state)
        tokens += int(n_tok.sum())
        bar.set_postfix_str(f"{tokens / max(time.perf_counter() - t0, 1e-9):,.0f} tok/s",
                            refresh=False)
        bar.update(len(chunk))
        if after_chunk:
            after_chunk(table.done)
    bar.close()
    _warn_truncated(state["n_truncated"], n_total, acfg.block_size)
    _warn_prefix_cut(prefix, cfg, tokenizer, acfg.block_size)
    cols = table.read_columns(["member", *names])
    labels = cols.pop("member").astype(bool)
    metrics = {name: summarize(A.as_ranks(s), labels, n_boot=acfg.n_boot, seed=acfg.seed,
                               nan_policy=acfg.nan_policy) for name, s in cols.items()}
    info = {"n_members": members.n_texts, "n_nonmembers": int(keep.sum()),
            "block_size": acfg.block_size, "n_truncated": state["n_truncated"],
            "dtype": acfg.dtype, "attacks": names}
    if acfg.blind:  # the split check, on the texts run_attacks_on would read
        info["blind"] = _blind_baseline(members, nonmembers, keep, tokenizer, acfg)
    result = {"metrics": metrics, "scores": cols, "labels": labels, "info": info,
              "blind": info.get("blind")}
    table.finish(cleanup=False)
    if table.writer:
        # metrics.json last: it marks the folder done
        audit.write_summary(Path(out_dir), result, title)
    table.cleanup()
    return result


def _blind_baseline(members: InputFile, nonmembers: InputFile, keep: np.ndarray, tokenizer,
                    acfg) -> dict:
    """:func:`jaxmem.audit.blind_check` of a streamed attack: both files streamed once more,
    keeping only the texts :func:`jaxmem.audit.blind_picks` picks (all of them up to
    ``BLIND_MAX_TEXTS`` per side; the non-members among those kept), cut as scored. The same
    texts, so the same result, as :func:`jaxmem.audit.run_attacks_on` on these files."""
    kept = np.flatnonzero(keep)
    pick_m = set(audit.blind_picks(members.n_texts, acfg.seed).tolist())
    pick_n = set(kept[audit.blind_picks(kept.size, acfg.seed, 1)].tolist())
    m = [t for i, t in enumerate(members.texts()) if i in pick_m]
    n = [t for i, t in enumerate(nonmembers.texts()) if i in pick_n]
    return audit.blind_check(truncate_texts(tokenizer, m, acfg.block_size),
                             truncate_texts(tokenizer, n, acfg.block_size), acfg)
