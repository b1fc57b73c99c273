"""Scoring throughput: jaxmem vs transformers (PyTorch) batched vs a per-example loop.

All three compute the same thing on the same model, texts and machine, in one run: per scored
token, log p of the actual next token plus the mean and std of log p under the model's
distribution (what Min-K%++ needs). The per-example loop is how existing MIA toolkits score
(one text per forward pass, as in the Min-K% reference code). A float32 matmul peak is measured in
the same run so throughput can be read as a fraction of what the machine can do.

    python experiments/bench_scoring.py                       # embedded default, CPU
    python experiments/bench_scoring.py --model gpt2 --dtype bfloat16 --batch-size 64   # GPU
    python experiments/bench_scoring.py --sweep       # jaxmem only: batch size x sequence length

Prints a Markdown table; ``--json`` also writes the figures to a file.

``--sweep`` times the jitted scoring pass (``jaxmem.scoring.token_stats``) alone, for every
(batch size, sequence length) in ``--batch-sizes`` x ``--seq-lens``, on real token ids (random ids
when no text is long enough). Every shape is compiled first (timed alone); then ``--reps`` rounds
each visit every shape in turn (so all shapes see the same machine load), one measurement running
enough calls to cover ``--min-tokens`` tokens; the median per shape counts. It reports tokens/s
(median and best), ms per batch, % of the matmul peak (measured before and after; the better one)
and compile seconds; a Markdown table last, plus CSV, JSON and a PNG figure (tokens/s
against batch size, one line per sequence length, the peak-equivalent rate dashed) in
``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (forward_flops, machine, matmul_peak, print_results,  # noqa: E402
                          real_batch, texts_for_bench, time_interleaved, torch_reference)


def load_bench_model(name: str):
    """(params on the default device, cfg, tokenizer) of a model name or alias."""
    import jax

    from jaxmem.models import load_model

    params, cfg, tok = load_model(name)
    return jax.device_put(params), cfg, tok


def torch_stats(logits, ids):
    import torch

    logq = torch.log_softmax(logits[:, :-1].float(), -1)
    q = logq.exp()
    mu = (q * logq).sum(-1)
    sigma = (q * (logq - mu[..., None]) ** 2).sum(-1).sqrt()
    logp = logq.gather(-1, ids[:, 1:, None])[..., 0]
    return logp, mu, sigma


def bench_ids(tok, vocab_size: int, batch: int, seq_len: int) -> tuple[np.ndarray, str]:
    """batch x seq_len real token ids (``bench_common.real_batch``), random ids if too few."""
    try:
        return real_batch(tok, batch, seq_len)
    except SystemExit:
        ids = np.random.default_rng(0).integers(0, vocab_size, (batch, seq_len), np.int32)
        return ids, "random token ids"


def compiled_token_stats(params, cfg, ids: np.ndarray, dtype: str, min_tokens: int):
    """A timed step for ``bench_common.time_interleaved`` over the jitted scoring pass on ids.

    Lowers and compiles ``token_stats`` ahead of time, so compile time is measured alone. One step
    runs ``calls`` back-to-back calls, enough to cover ``min_tokens`` tokens.

    Returns:
      (step, calls, compile seconds).
    """
    import jax
    import jax.numpy as jnp

    from jaxmem.scoring import token_stats

    x = jnp.asarray(ids, jnp.int32)
    mask = jnp.ones_like(x)
    t = time.perf_counter()
    compiled = token_stats.lower(params, cfg, x, mask, dtype=dtype).compile()
    compile_s = time.perf_counter() - t
    calls = max(1, -(-min_tokens // ids.size))

    def step() -> float:
        for _ in range(calls):
            out = jax.block_until_ready(compiled(params, x, mask))
        return float(out.logp[0, 0])

    return step, calls, compile_s


def plot_sweep(rows: list[dict], peak_tps: dict[int, float], path: Path, title: str) -> None:
    """tokens/s against batch size (log 2), one line per sequence length, peak-equivalent dashed."""
    from jaxmem.figures import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (seq_len, peak) in enumerate(peak_tps.items()):
        r = [x for x in rows if x["seq_len"] == seq_len]
        color = f"C{i}"
        ax.plot([x["batch"] for x in r], [x["tokens_per_s"] for x in r], "o-", color=color,
                label=f"{seq_len} tokens")
        ax.axhline(peak, color=color, ls="--", lw=0.9, alpha=0.7)
    ax.plot([], [], "k--", lw=0.9, alpha=0.7, label="at 100% of matmul peak")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.1 * max([*peak_tps.values(), *(x["tokens_per_s"] for x in rows)]))
    batches = sorted({x["batch"] for x in rows})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size (sequences per call)")
    ax.set_ylabel("scored tokens / s")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, title="sequence length", title_fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    save(fig, path, dpi=120)


def run_sweep(args) -> None:
    """jaxmem's scoring pass over --batch-sizes x --seq-lens: table, CSV, JSON and PNG."""
    batch_sizes = sorted(int(b) for b in args.batch_sizes.split(","))
    seq_lens = sorted(int(t) for t in args.seq_lens.split(","))
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    params, cfg, tok = load_bench_model(args.model)
    if max(seq_lens) > cfg.max_positions:
        raise SystemExit(f"--seq-lens up to {max(seq_lens)} exceeds the model's context "
                         f"({cfg.max_positions}).")
    ids, source = bench_ids(tok, cfg.vocab_size, max(batch_sizes), max(seq_lens))
    peaks = [matmul_peak(args.dtype)]  # measured again at the end; the better one is the peak

    sides = {}
    for seq_len in seq_lens:
        for batch in batch_sizes:
            step, calls, compile_s = compiled_token_stats(params, cfg, ids[:batch, :seq_len],
                                                          args.dtype, args.min_tokens)
            sides[seq_len, batch] = {"step": step, "calls": calls, "compile_s": compile_s}
    print(f"compiled {len(sides)} shapes; timing {args.reps} interleaved rounds ...",
          file=sys.stderr, flush=True)
    time_interleaved(sides, warmup=1, steps=args.reps)  # each round visits every shape
    rows = []
    for (seq_len, batch), side in sides.items():
        per_call = [t / side["calls"] for t in side["times"]]
        secs = float(np.median(per_call))
        flops = forward_flops(cfg, batch * seq_len, seq_len)
        rows.append({"seq_len": seq_len, "batch": batch, "tokens_per_call": batch * (seq_len - 1),
                     "ms_per_batch": 1e3 * secs, "tokens_per_s": batch * (seq_len - 1) / secs,
                     "best_tokens_per_s": batch * (seq_len - 1) / min(per_call),
                     "pct_of_peak": 100 * flops / secs / peaks[0],
                     "compile_s": side["compile_s"], "calls_per_rep": side["calls"],
                     "rep_spread": (max(per_call) - min(per_call)) / secs})
    peaks.append(matmul_peak(args.dtype))
    peak = max(peaks)
    for r in rows:
        r["pct_of_peak"] *= peaks[0] / peak
    # scored tokens/s if every FLOP ran at the measured matmul peak
    peak_tps = {t: peak / forward_flops(cfg, t, t) * (t - 1) for t in seq_lens}
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "model": args.model,
            "dtype": args.dtype, "tokens": source, "matmul_peak_gflops": peak / 1e9,
            "matmul_peak_gflops_start_end": [round(p / 1e9, 1) for p in peaks],
            "reps": args.reps, "min_tokens_per_rep": args.min_tokens,
            "load_avg_1m_start": load_start[0], "load_avg_1m_end": os.getloadavg()[0],
            "wall_s": time.perf_counter() - t_start,
            "peak_equivalent_tokens_per_s": {str(t): v for t, v in peak_tps.items()},
            "command": "python " + " ".join(sys.argv)}
    from jaxmem.io import atomic_write, write_table

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_table(rows, out / "bench_scoring_sweep.csv")
    atomic_write(out / "bench_scoring_sweep.json", json.dumps({"meta": meta, "rows": rows},
                                                              indent=2))
    plot_sweep(rows, peak_tps, out / "bench_scoring_sweep.png",
               f"jaxmem scoring, {args.model} {args.dtype}, {platform.machine()} "
               f"{os.cpu_count()} cores ({meta['matmul_peak_gflops']:.0f} GFLOP/s peak)")
    print_results({**{k: v for k, v in meta.items() if k != "peak_equivalent_tokens_per_s"},
                   "files": f"{out}/bench_scoring_sweep.{{csv,json,png}}"},
                  [{"seq len": r["seq_len"], "batch": r["batch"],
                    "tokens/call": r["tokens_per_call"], "ms/batch": f"{r['ms_per_batch']:.0f}",
                    "tokens/s": f"{r['tokens_per_s']:.0f}",
                    "best tokens/s": f"{r['best_tokens_per_s']:.0f}",
                    "% of matmul peak": f"{r['pct_of_peak']:.0f}%",
                    "compile (s)": f"{r['compile_s']:.1f}"} for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-texts", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--loop-texts", type=int, default=16, help="texts for the per-example loop")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    sweep = ap.add_argument_group("sweep (jaxmem's jitted scoring pass alone)")
    sweep.add_argument("--sweep", action="store_true",
                       help="tokens/s against batch size and sequence length")
    sweep.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    sweep.add_argument("--seq-lens", default="64,128,256")
    sweep.add_argument("--reps", type=int, default=3, help="timed measurements (median)")
    sweep.add_argument("--min-tokens", type=int, default=1024,
                       help="tokens per measurement (small batches repeat calls to reach it)")
    sweep.add_argument("--out-dir", default="results/bench_scoring_sweep",
                       help="CSV, JSON and PNG go here")
    args = ap.parse_args()
    if args.sweep:
        return run_sweep(args)

    from jaxmem.batching import encode_texts
    from jaxmem.scoring import score_sequences

    params, cfg, tok = load_bench_model(args.model)
    texts, source = texts_for_bench(args.n_texts)
    seqs, _ = encode_texts(tok, texts, args.seq_len)
    seqs = [s for s in seqs if len(s) == args.seq_len][: args.n_texts]  # equal lengths: fair
    n = len(seqs)
    tokens = n * (args.seq_len - 1)
    peak = matmul_peak(args.dtype)
    flops = forward_flops(cfg, n * args.seq_len, args.seq_len)
    results = {}

    t = time.perf_counter()
    score_sequences(params, cfg, seqs[: args.batch_size], batch_size=args.batch_size,
                    block_size=args.seq_len, dtype=args.dtype)
    compile_s = time.perf_counter() - t
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        score_sequences(params, cfg, seqs, batch_size=args.batch_size, block_size=args.seq_len,
                        dtype=args.dtype)
        best = min(best, time.perf_counter() - t)
    results["jaxmem (jit, batched)"] = best

    if not args.skip_torch:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = torch_reference(args.model).to(device)
        if args.dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        ids = torch.tensor(np.array(seqs), device=device)
        with torch.inference_mode():
            torch_stats(model(ids[: args.batch_size]).logits, ids[: args.batch_size])  # warm-up
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                for i in range(0, n, args.batch_size):
                    out = torch_stats(model(ids[i:i + args.batch_size]).logits,
                                      ids[i:i + args.batch_size])
                    out[0].cpu()
                best = min(best, time.perf_counter() - t)
            results["transformers (PyTorch, batched)"] = best
            m = min(args.loop_texts, n)
            t = time.perf_counter()
            for i in range(m):  # one text per forward, as existing MIA toolkits do
                x = ids[i:i + 1]
                out = torch_stats(model(x, labels=x).logits, x)
                [o.cpu() for o in out]
            results["per-example loop (PyTorch)"] = (time.perf_counter() - t) * n / m

    ours = results["jaxmem (jit, batched)"]
    rows = []
    for name, secs in results.items():
        achieved = flops / secs
        rows.append({"implementation": name, "tokens/s": tokens / secs,
                     "jaxmem speed-up": secs / ours, "% of matmul peak": 100 * achieved / peak})
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "model": args.model,
            "dtype": args.dtype,
            "texts": f"{n} x {args.seq_len} tokens ({source})", "batch_size": args.batch_size,
            "matmul_peak_gflops": peak / 1e9, "jaxmem_compile_s": compile_s,
            "command": "python " + " ".join(sys.argv)}
    print_results(meta, [{"implementation": r["implementation"],
                          "tokens/s": f"{r['tokens/s']:.0f}",
                          "jaxmem speed-up": f"{r['jaxmem speed-up']:.2f}x",
                          "% of matmul peak": f"{r['% of matmul peak']:.0f}%"} for r in rows],
                  json_path=args.json, rows=rows)


if __name__ == "__main__":
    main()
