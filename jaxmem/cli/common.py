"""What several ``jaxmem`` subcommands share: devices, the output lock, the corpus, following a
run's settings, loading the model, and writing an output file.

Imported only once a command runs (never to build the parser), so it imports the library at the
top.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import jax

from jaxmem import identity, locks, sharding as sh
from jaxmem.data import load_corpus
from jaxmem.io import atomic_write, check_writable
from jaxmem.models import load_model
from jaxmem.runs import read_corpus_record, read_run_spec


def main_process() -> bool:
    return sh.is_main_process()


def setup_devices(args) -> None:
    """Multi-host start-up (before any other JAX call), then ``args.mesh`` as a Mesh or None."""
    if args.distributed:
        env = {k: os.environ[v] for k, v in (("coordinator_address", "JAX_COORDINATOR_ADDRESS"),
                                              ("num_processes", "JAX_NUM_PROCESSES"),
                                              ("process_id", "JAX_PROCESS_ID"))
               if v in os.environ}
        for k in ("num_processes", "process_id"):
            if k in env:
                env[k] = int(env[k])
        raw = os.environ.get("JAXMEM_COORDINATOR_TIMEOUT", "120")
        if not raw.strip().isdigit() or int(raw) <= 0:
            raise ValueError(f"JAXMEM_COORDINATOR_TIMEOUT must be a positive number of seconds; "
                             f"got {raw!r}.")
        timeout = int(raw)
        sh.initialize_distributed(True, timeout=timeout, **env)
    # a study's own config may name the mesh; for the other commands --distributed means auto
    if args.mesh is None and args.distributed and args.command != "study":
        args.mesh = "auto"
    args.mesh = sh.parse_mesh(args.mesh)
    if args.mesh is not None and sh.is_main_process():
        print(f"mesh: {dict(args.mesh.shape)} over {jax.device_count()} devices "
              f"({jax.process_count()} process(es))", file=sys.stderr)


def output_lock(args):
    """The lock (jaxmem.locks) of the folder or file this command writes, taken before any
    model is loaded, so a second writer is refused at once (the library takes it again: a
    count, not a second lock)."""
    where = {"train": ("run_dir", "run"), "study": ("out_dir", "study"),
             "frontier": ("out_dir", "frontier"), "attack": ("out_dir", "attack"),
             "score": ("out", "output")}.get(args.command)
    target = getattr(args, where[0], None) if where else None
    if not target:
        return contextlib.nullcontext()
    is_file = args.command == "score"
    option = "--" + where[0].replace("_", "-")
    check_writable(os.path.dirname(os.path.abspath(target)) if is_file else target, option)
    return locks.hold(target, where[1], file=is_file)


def load(args, name):
    """load_model, with the attention kernel chosen by --attention (and remat by --remat,
    where the command has it)."""
    tokenizer = getattr(args, "tokenizer", None) if name == getattr(args, "model", None) else None
    params, cfg, tok = load_model(name, tokenizer=tokenizer)
    return params, dataclasses.replace(cfg, attention_impl=args.attention,
                                       remat=getattr(args, "remat", cfg.remat)), tok


def check_chunk_size(args) -> None:
    if args.chunk_size <= 0:
        raise ValueError(f"--chunk-size must be a positive number of texts, got "
                         f"{args.chunk_size}.")


def corpus(args):
    """The corpus the flags name (its warnings and description printed); with ``--run-dir``,
    checked to be the texts the run was trained on."""
    c = load_corpus(args.corpus, seed=args.data_seed, split=args.split, n_train=args.n_train,
                    n_validation=args.n_validation, n_members=args.n_members,
                    n_nonmembers=args.n_nonmembers, text_column=args.text_column)
    for w in c.info.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"corpus {c.describe()}", file=sys.stderr)
    if getattr(args, "run_identity", None):  # --run-dir: the texts it was trained on
        identity.verify_texts(args.run_dir, args.run_identity, c, corpus=args.corpus)
    return c


def follow_run(args) -> None:
    """``--run-dir``: the base model, data (corpus, data seed, split, sizes) and block size are
    the run's; a flag given with another value is refused, since the members would not be the
    texts the model was trained on."""
    spec = read_run_spec(args.run_dir)
    record = read_corpus_record(args.run_dir)
    run = {"model": spec.get("model") or None,
           "block_size": spec.get("train", {}).get("block_size")}
    if record is not None and not args.members:
        run.update(dataclasses.asdict(record))
    for name, value in run.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if name in args.given and getattr(args, name) != value:
            raise ValueError(
                f"{args.run_dir} was trained with {flag} {value}, but {flag} "
                f"{getattr(args, name)} was given: the members would not be its training texts. "
                f"Omit {flag} (the run's value is used).")
        setattr(args, name, value)
    follow_identity(args, spec, corpus=not args.members)


def follow_identity(args, spec: dict, *, corpus: bool) -> None:
    """``--run-dir``: the run's recorded absolute paths replace the flags' (never this folder's
    ``./model`` or ``./corpus.txt``), and the base weights and tokenizer found there must be
    the ones it was trained on (:mod:`jaxmem.identity`); with ``corpus``, the texts drawn are
    checked in :func:`corpus`."""
    ident = spec.get(identity.KEY)
    args.run_identity = ident if corpus else None
    if ident is None:
        if main_process():
            print(f"note: {args.run_dir} records no content digests (trained before jaxmem "
                  "kept them): its base model and corpus files are not verified.",
                  file=sys.stderr)
        return
    m, t, c = ident.get("model"), ident.get("tokenizer") or {}, ident.get("corpus")
    if m and m.get("local"):
        args.model = m["path"]
    if t.get("name") is not None and "tokenizer" not in args.given:
        args.tokenizer = t["path"] if t.get("local") else t["name"]
    if corpus and c:
        args.corpus = c["name"]
    if m:  # before any model is loaded
        identity.verify_run(args.run_dir, ident, model=args.model, tokenizer=args.tokenizer,
                            corpus=args.corpus if corpus else None)


def write_output(path, data) -> None:
    """An output file (checked before any work), whole or not at all; its folder made."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


def rounded(row: dict, digits: int = 4) -> dict:
    """A table row with its floats rounded for printing."""
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in row.items()}
