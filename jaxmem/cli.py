"""The ``jaxmem`` command: a thin layer over the library.

    jaxmem score FILE [--model smollm2-135m] [--out scores.csv]
    jaxmem attack --members M --nonmembers N [--model ...] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _write_table(rows: list[dict], path: Path) -> None:
    """Writes rows as .csv, .jsonl or .parquet by the file's suffix (atomically)."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    os.close(fd)
    if path.suffix == ".jsonl":
        with open(tmp, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    elif path.suffix == ".csv":
        import csv
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        os.unlink(tmp)
        raise SystemExit(f"error: unknown output format {path.suffix!r}; use .csv, .jsonl or .parquet")
    os.replace(tmp, path)


def markdown_table(rows: list[dict], floatfmt: str = ".4g") -> str:
    """A list of dicts as a GitHub Markdown table."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    fmt = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _read_texts(path: str, text_column: str) -> list[str]:
    from jaxmem.data import read_text_file

    return read_text_file(path, text_column=text_column)


def cmd_score(args) -> int:
    from jaxmem.attacks import AttackInputs, min_k
    from jaxmem.models import load_model
    from jaxmem.scoring import score_texts

    texts = _read_texts(args.file, args.text_column)
    t0 = time.perf_counter()
    params, cfg, tok = load_model(args.model)
    print(f"loaded {args.model} ({cfg.arch}, {cfg.n_layers} layers, d={cfg.d_model}) "
          f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    t0 = time.perf_counter()
    stats = score_texts(params, cfg, tok, texts, batch_size=args.batch_size,
                        max_length=args.max_length, dtype=args.dtype, progress=True)
    dt = time.perf_counter() - t0
    n = stats.n_tokens
    nll = stats.nll()
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(stats.mask, stats.mu, 0).sum(-1) / n
        sigma = np.where(stats.mask, stats.sigma, 0).sum(-1) / n
    mink = min_k(AttackInputs(stats, texts), k=0.2)
    rows = [{"index": i, "n_tokens": int(n[i]), "truncated": bool(stats.truncated[i]),
             "nll": float(nll[i]), "ppl": float(np.exp(nll[i])), "min_k20_logp": float(mink[i]),
             "mean_mu": float(mu[i]), "mean_sigma": float(sigma[i]),
             "text": texts[i][:48].replace("\n", " ").replace("|", "/")}
            for i in range(len(texts))]
    print(markdown_table(rows[:args.show] if args.show else rows))
    if args.show and len(rows) > args.show:
        print(f"... {len(rows) - args.show} more rows (use --out to save all)")
    total = int(n.sum())
    corpus_ppl = float(np.exp(np.nansum(nll * n) / total))
    print(f"\n{len(texts)} texts, {total} scored tokens, corpus perplexity {corpus_ppl:.3f}, "
          f"{total / dt:.0f} tokens/s ({dt:.1f}s incl. compile)")
    if args.out:
        _write_table(rows, Path(args.out))
        print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from jaxmem.models import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="jaxmem", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="per-example log-likelihood statistics of a text file")
    s.add_argument("file", help=".txt (paragraphs split on blank lines), .jsonl, .json, .csv or .parquet")
    s.add_argument("--model", default=DEFAULT_MODEL,
                   help="alias, hub id, HF directory or .gguf file (default: %(default)s)")
    s.add_argument("--text-column", default="text")
    s.add_argument("--max-length", type=int, default=None,
                   help="block size in tokens; longer texts are truncated with a warning")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    s.add_argument("--show", type=int, default=20, help="rows to print (0 = all)")
    s.add_argument("--out", help="write every row to .csv / .jsonl / .parquet")
    s.set_defaults(func=cmd_score)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
