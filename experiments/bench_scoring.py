"""Scoring throughput: jaxmem vs transformers (PyTorch) batched vs a per-example loop.

All three compute the same thing on the same model, texts and machine, in one run: per scored
token, log p of the actual next token plus the mean and std of log p under the model's
distribution (what Min-K%++ needs). The per-example loop is how existing MIA toolkits score
(one text per forward pass, as in the Min-K% reference code). A float32 matmul peak is measured in
the same run so throughput can be read as a fraction of what the machine can do.

    python experiments/bench_scoring.py                       # embedded default, CPU
    python experiments/bench_scoring.py --model gpt2 --dtype bfloat16 --batch-size 64   # GPU

Prints a Markdown table; ``--json`` also writes the figures to a file.
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def texts_for_bench(n: int) -> tuple[list[str], str]:
    wiki = SHARED / "wikitext-2-raw" / "wiki.test.raw"
    if wiki.exists():
        paras = [ln.strip() for ln in wiki.read_text().splitlines()
                 if len(ln.strip()) > 600 and not ln.strip().startswith("=")]
        return paras[:n], "WikiText-2 test paragraphs"
    from jaxmem.data import load_corpus
    return load_corpus("default", seed=0).train[:n], "embedded default corpus"


def matmul_peak(dtype: str, n: int = 2048, reps: int = 10) -> float:
    """Best FLOP/s of an n x n x n matmul under jax (the same XLA backend scoring uses)."""
    import jax
    import jax.numpy as jnp

    dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dt)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dt)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def scoring_flops(cfg, n_tokens_padded: int, seq_len: int) -> float:
    """Forward FLOPs for n padded token positions: 2 x (block + head params) + attention."""
    d, f, L = cfg.d_model, cfg.d_ff, cfg.n_layers
    dq, dkv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    mlp = (3 if cfg.arch != "gpt2" else 2) * d * f
    per_layer = d * dq + 2 * d * dkv + dq * d + mlp
    attn = 2 * 2 * seq_len * dq  # QK^T and PV per query position (full square, as computed)
    return n_tokens_padded * (2 * L * per_layer + L * attn + 2 * d * cfg.vocab_size)


def torch_reference(model_name: str):
    """The same weights as a transformers PyTorch model (GGUF loader or HF directory)."""
    import torch
    import transformers

    from jaxmem.models.checkpoints import ALIASES, EMBEDDED

    if model_name in EMBEDDED:
        path = EMBEDDED[model_name]()
        return transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    return transformers.AutoModelForCausalLM.from_pretrained(
        ALIASES.get(model_name, model_name), dtype=torch.float32).eval()


def torch_stats(logits, ids):
    import torch

    logq = torch.log_softmax(logits[:, :-1].float(), -1)
    q = logq.exp()
    mu = (q * logq).sum(-1)
    sigma = (q * (logq - mu[..., None]) ** 2).sum(-1).sqrt()
    logp = logq.gather(-1, ids[:, 1:, None])[..., 0]
    return logp, mu, sigma


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
    args = ap.parse_args()

    import jax

    from jaxmem.models import load_model
    from jaxmem.scoring import encode_texts, score_sequences

    params, cfg, tok = load_model(args.model)
    params = jax.device_put(params)
    texts, source = texts_for_bench(args.n_texts)
    seqs, _ = encode_texts(tok, texts, args.seq_len)
    seqs = [s for s in seqs if len(s) == args.seq_len][: args.n_texts]  # equal lengths: fair
    n = len(seqs)
    tokens = n * (args.seq_len - 1)
    peak = matmul_peak(args.dtype)
    flops = scoring_flops(cfg, n * args.seq_len, args.seq_len)
    results = {}

    t = time.perf_counter()
    score_sequences(params, cfg, seqs[: args.batch_size], batch_size=args.batch_size,
                    max_length=args.seq_len, dtype=args.dtype)
    compile_s = time.perf_counter() - t
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        score_sequences(params, cfg, seqs, batch_size=args.batch_size, max_length=args.seq_len,
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
    import jax as _jax
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} cores, jax backend {_jax.default_backend()} "
            f"({_jax.devices()[0].device_kind})", "model": args.model, "dtype": args.dtype,
            "texts": f"{n} x {args.seq_len} tokens ({source})", "batch_size": args.batch_size,
            "matmul_peak_gflops": peak / 1e9, "jaxmem_compile_s": compile_s,
            "command": "python " + " ".join(sys.argv)}
    print("\n".join(f"- {k}: {v:.1f}" if isinstance(v, float) else f"- {k}: {v}"
                    for k, v in meta.items()))
    print()
    print("| implementation | tokens/s | jaxmem speed-up | % of matmul peak |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['implementation']} | {r['tokens/s']:.0f} | {r['jaxmem speed-up']:.2f}x | "
              f"{r['% of matmul peak']:.0f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
