"""``jaxmem score`` (per-text likelihoods of a file of any size) and ``jaxmem info`` (a model's
parameter table)."""

from __future__ import annotations

import sys
import time

import flax.linen as nn
import jax

from jaxmem import streaming as S
from jaxmem.audit import AuditConfig
from jaxmem.chunked import resume_point
from jaxmem.cli.common import check_chunk_size, load, main_process
from jaxmem.io import check_table_path, markdown_table
from jaxmem.models import abstract_params, load_model
from jaxmem.models.checkpoints import model_config
from jaxmem.models.summary import format_param_table, param_table
from jaxmem.tuning import init_method


def cmd_score(args) -> int:
    # before any work: bad numbers, a bad output name, an existing file, a bad input file or an
    # interrupted run with other settings cost nothing
    AuditConfig(block_size=args.block_size, batch_size=args.batch_size, dtype=args.dtype)
    check_chunk_size(args)
    if args.show < 0:
        raise ValueError(f"--show must be 0 (every row) or a number of rows to print, got "
                         f"{args.show}.")
    if args.out:  # a known format, not an existing file, in a folder that can be written
        check_table_path(args.out, overwrite=args.overwrite)
    inp = S.scan_input(args.file, text_column=args.text_column, strict=args.strict)
    settings = S.score_settings(inp, block_size=args.block_size, batch_size=args.batch_size,
                                dtype=args.dtype, chunk_size=args.chunk_size, model=args.model,
                                tokenizer=args.tokenizer)
    done = resume_point(args.out, settings, overwrite=args.overwrite) if args.out else 0
    t0 = time.perf_counter()
    params, cfg, tok = load(args, args.model)
    main = main_process()
    if main:
        print(f"loaded {args.model} ({cfg.arch}, {cfg.n_layers} layers, d={cfg.d_model}) "
              f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        if done:
            print(f"resuming {args.out}: {done} of {inp.n_texts} texts already scored",
                  file=sys.stderr)
    printed = []

    def print_rows(rows):  # --show 0: every row, as each chunk is scored
        if main and not args.show:
            lines = markdown_table(rows).split("\n")
            print("\n".join(lines if not printed else lines[2:]), flush=True)
            printed.append(len(rows))

    res = S.score_file(params, cfg, tok, inp, settings, out=args.out, batch_size=args.batch_size,
                       block_size=args.block_size, dtype=args.dtype, chunk_size=args.chunk_size,
                       overwrite=args.overwrite, mesh=args.mesh, on_rows=print_rows,
                       head_rows=max(args.show, S.HEAD_ROWS))
    if not main:
        return 0
    if args.show:
        print(markdown_table(res["head"][:args.show]))
        if inp.n_texts > args.show:
            print(f"... {inp.n_texts - args.show} more rows (use --out to save all)")
    dt = res["seconds"]
    resumed = f", resumed after {res['resumed_from']}" if res["resumed_from"] else ""
    print(f"\n{inp.n_texts} texts, {res['n_tokens']} scored tokens, corpus perplexity "
          f"{res['corpus_ppl']:.3f}, {res['tokens_per_s']:.0f} tokens/s ({dt:.1f}s incl. "
          f"compile{resumed})")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_info(args) -> int:
    """Prints the parameter table; from the config alone (no weights) where the model has one."""
    cfg = model_config(args.model)
    if cfg is None:  # a GGUF file: its weights hold the config
        params, cfg, tok = load_model(args.model, tokenizer=args.tokenizer)
        params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    else:
        params, tok = nn.unbox(abstract_params(cfg)), None
    labels = None
    if args.method:
        found = {}

        def add(p):  # traced abstractly: shapes only, however large the model
            p, found["labels"] = init_method(args.method, p, cfg, jax.random.PRNGKey(0), tok)
            return p

        params = jax.eval_shape(add, params)
        labels = found["labels"]
    print(f"{args.model}: {cfg.arch}, {cfg.n_layers} layers, d_model {cfg.d_model}, "
          f"{cfg.n_heads} heads ({cfg.n_kv_heads} KV), vocabulary {cfg.vocab_size}\n")
    print(format_param_table(param_table(params, cfg, labels)))
    return 0
