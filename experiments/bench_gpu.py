"""One-GPU benchmark: jaxmem vs transformers/PEFT (PyTorch), GPT-2 124M and SmolLM2-135M, bf16.

One command measures, in one process and on one device, for each model:

* scoring: per-token log p, mu and sigma (what every attack needs) for a set of full-length
  sequences; jaxmem's ``score_sequences`` vs a batched transformers forward + the same statistics
  (``bench_scoring.torch_stats``); best of a few repeats;
* training: full fine-tuning and LoRA (PEFT's defaults: r=8, alpha=8, no dropout, PEFT's default
  targets, which jaxmem's ``"peft"`` preset mirrors), AdamW (lr 1e-4, clip 1.0); jaxmem's jitted
  step vs transformers + PEFT under ``torch.autocast``; median of interleaved steps.

jaxmem's main row uses its default attention (``attention_impl="einsum"``). On a GPU with bf16 or
fp16 compute, every workload also gets a row "jaxmem (jit, cuDNN attention)": the same code with
``dataclasses.replace(cfg, attention_impl="cudnn")`` (cuDNN flash attention through
``jax.nn.dot_product_attention``), so one run tells whether cuDNN attention pays; its results are
checked against the main row's (first training loss, scored log-probs) and a mismatch is logged.
``--no-cudnn`` drops that row; on a CPU it is skipped with a note.

Both sides run the same weights: each model is built once as a transformers model and mapped onto
jaxmem's params (``params_from_hf_state_dict``). SmolLM2-135M is the embedded default (GGUF, read
by transformers); GPT-2 comes from the hub when it is reachable, else it is GPT-2 124M's
architecture (768 wide, 12 layers, 12 heads, vocabulary 50257) with random weights, which time
the same. Inputs are random token ids (throughput does not depend on them), every sequence
``--seq-len`` long, so nothing is padded. Mixed precision on both sides: float32 weights and
optimizer state, bfloat16 compute (scoring: bfloat16 weights on the PyTorch side, as usual).

% of peak divides model FLOPs (``bench_common.forward_flops``, ``bench_training.train_flops``)
by the best bf16 n x n x n matmul measured in the same run (the faster of jax and PyTorch).
Parts that would start after ``--budget-s`` seconds are skipped and listed, so the whole run stays
within about five minutes on a GPU (model loading and compilation included).

    python experiments/bench_gpu.py                 # one GPU: prints a Markdown table last
    python experiments/bench_gpu.py --quick         # CPU smoke test: tiny models and batches
    python experiments/bench_gpu.py --json out.json --models smollm2-135m --methods lora
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

# jax must not take most of the GPU up front: PyTorch runs in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, str(Path(__file__).parent))
from bench_common import (forward_flops, matmul_peak, print_results,  # noqa: E402
                          time_interleaved, torch_matmul_peak, torch_reference)
from bench_scoring import torch_stats  # noqa: E402
from bench_training import jaxmem_step, torch_step, train_flops  # noqa: E402

MODELS = ("gpt2", "smollm2-135m")
METHODS = ("full", "lora")
# benchmark sides: jaxmem's default attention, jaxmem with cuDNN attention, PyTorch
LABELS = {"jaxmem": "jaxmem (jit)", "jaxmem-cudnn": "jaxmem (jit, cuDNN attention)"}
# full run (a GPU) and --quick (the CPU smoke test); any of them can be overridden on the CLI
SIZES = {
    "full": dict(seq_len=512, score_batch=32, score_texts=256, train_batch=16, steps=10,
                 warmup=2, repeats=3, peak_n=8192),
    "quick": dict(seq_len=32, score_batch=4, score_texts=8, train_batch=2, steps=2, warmup=1,
                  repeats=1, peak_n=256),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """A quick TCP probe; transformers alone retries for about a minute before giving up."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def tiny_model(name: str):
    """A 2-layer random-weight model of the same architecture (for --quick on a CPU)."""
    import torch
    import transformers

    torch.manual_seed(0)
    if name.startswith("gpt2"):
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=512))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(  # GQA and a tied head
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=True))


def load_pair(name: str, allow_hub: bool, tiny: bool = False):
    """(transformers model in float32 on the CPU, jaxmem params, ModelConfig, source).

    Both sides hold the same weights: jaxmem's params are mapped from the transformers model.
    """
    import torch
    import transformers

    from jaxmem.models import ModelConfig
    from jaxmem.models.checkpoints import params_from_hf_state_dict

    source = name
    if tiny:
        model = tiny_model(name)
        source = f"tiny random {model.config.model_type} (2 layers, width 64)"
    elif name == "gpt2":
        model = None
        try:  # a cached copy, then the hub
            model = transformers.GPT2LMHeadModel.from_pretrained(
                "openai-community/gpt2", local_files_only=True, dtype=torch.float32)
            source = "gpt2 (hub weights, cached)"
        except OSError:
            if allow_hub and hub_reachable():
                model = transformers.GPT2LMHeadModel.from_pretrained("openai-community/gpt2",
                                                                     dtype=torch.float32)
                source = "gpt2 (hub weights)"
        if model is None:
            torch.manual_seed(0)
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config())  # 124M, random
            source = "gpt2 124M architecture, random weights (hub unreachable)"
    else:
        model = torch_reference(name)
    model = model.eval()  # float32 (a GGUF-loaded model refuses .float())
    cfg = ModelConfig.from_hf(model.config)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return model, params_from_hf_state_dict(state, cfg), cfg, source


def jax_sides(cfg, args) -> dict:
    """{side: ModelConfig} for the jaxmem rows: the default attention, plus cuDNN's when
    ``args.cudnn`` (a GPU with bf16/fp16 compute and no ``--no-cudnn``)."""
    sides = {"jaxmem": cfg}
    if args.cudnn:
        sides["jaxmem-cudnn"] = dataclasses.replace(cfg, attention_impl="cudnn")
    return sides


def bench_scoring(model, params, cfg, ids: np.ndarray, args, device) -> dict:
    """Best-of-repeats seconds to score all rows of ids, per side (+ jaxmem's compile time)."""
    import jax

    from jaxmem.scoring import score_sequences

    seqs = list(ids)
    on_device = jax.device_put(params)
    out, first = {}, {}
    for side, c in jax_sides(cfg, args).items():
        run = lambda s, c=c: score_sequences(  # noqa: E731
            on_device, c, s, batch_size=args.score_batch, block_size=ids.shape[1],
            dtype=args.dtype)
        t = time.perf_counter()
        first[side] = run(seqs[:args.score_batch])
        out[side] = {"compile_s": time.perf_counter() - t}
        out[side]["s"] = min(_timed(lambda: run(seqs)) for _ in range(args.repeats))
    if "jaxmem-cudnn" in first:
        a, b = first["jaxmem"], first["jaxmem-cudnn"]
        diff = float(np.abs(a.logp - b.logp)[a.mask].max())
        out["jaxmem-cudnn"]["max_logp_diff"] = diff
        log(f"scoring: cuDNN attention vs default, max |log p| difference {diff:.3g}"
            + ("" if diff < 0.1 else "  <-- MISMATCH, check the cudnn path"))
    if model is not None:
        import torch

        tm = copy.deepcopy(model).to(device, torch.bfloat16 if args.dtype == "bfloat16"
                                     else torch.float32)
        x = torch.tensor(ids, dtype=torch.long, device=device)

        def torch_run(n):
            with torch.inference_mode():
                for i in range(0, n, args.score_batch):
                    b = x[i:i + args.score_batch]
                    [o.cpu() for o in torch_stats(tm(b).logits, b)]

        t = time.perf_counter()
        torch_run(args.score_batch)
        out["torch"] = {"compile_s": None, "first_s": time.perf_counter() - t}
        out["torch"]["s"] = min(_timed(lambda: torch_run(len(ids))) for _ in range(args.repeats))
        del tm
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_training(model, params, cfg, method: str, ids: np.ndarray, args, device) -> dict:
    """Warm-up, then measured steps with the sides interleaved; median seconds per step."""
    ns = SimpleNamespace(lr=args.lr, dtype=args.dtype)
    sides = {}
    for side, c in jax_sides(cfg, args).items():
        fn, n, compile_s, _ = jaxmem_step((params, c, None), method, ids, ns)
        sides[side] = {"step": fn, "trainable": n, "compile_s": compile_s}
    if model is not None:
        fn, n = torch_step(model, method, ids, args, device)
        sides["torch"] = {"step": fn, "trainable": n, "compile_s": None}
    time_interleaved(sides, args.warmup, args.steps)
    for side in sides.values():
        side["first_s"] = side["first_step_s"]
    if "jaxmem-cudnn" in sides:
        a, b = sides["jaxmem"]["first_loss"], sides["jaxmem-cudnn"]["first_loss"]
        log(f"train {method}: first loss {a:.4f} (default attention), {b:.4f} (cuDNN)"
            + ("" if abs(a - b) <= 0.02 * abs(a) else "  <-- MISMATCH, check the cudnn path"))
    out = {}
    for name, side in sides.items():
        if not np.isfinite(side["last_loss"]):
            raise FloatingPointError(f"{name} {method}: the loss became {side['last_loss']}")
        out[name] = {k: side[k] for k in ("trainable", "compile_s", "first_s", "first_loss")}
        out[name]["s"] = statistics.median(side["times"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="the CPU smoke test: tiny batches and 2-layer random models")
    ap.add_argument("--full-models", action="store_true",
                    help="with --quick: the real models all the same (slow on a CPU)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default=",".join(METHODS), help="training: full, lora")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    for k, v in SIZES["full"].items():
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=None,
                        help=f"default {v} ({SIZES['quick'][k]} with --quick)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--budget-s", type=float, default=270.0,
                    help="skip the parts that would start after this many seconds")
    ap.add_argument("--no-hub", action="store_true", help="GPT-2 with random weights, no hub")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--no-cudnn", action="store_true",
                    help="no extra jaxmem row with cuDNN attention (attention_impl='cudnn')")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    for k, v in SIZES["quick" if args.quick else "full"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if bad := [m for m in methods if m not in METHODS]:
        ap.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if args.score_texts % args.score_batch:
        ap.error("--score-texts must be a multiple of --score-batch")
    t0 = time.perf_counter()

    import jax

    device = None
    peaks = {"jax": matmul_peak(args.dtype, args.peak_n)}
    if not args.skip_torch:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count() or 1)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            torch.set_float32_matmul_precision("high")
        peaks["torch"] = torch_matmul_peak(args.dtype, device, args.peak_n)
    peak = max(peaks.values())
    log(f"{args.dtype} matmul peak {peak / 1e12:.1f} TFLOP/s; backend {jax.default_backend()}")
    args.cudnn = False
    if args.no_cudnn:
        cudnn_note = "off (--no-cudnn)"
    elif jax.default_backend() != "gpu":
        cudnn_note = f"skipped: needs a GPU (backend {jax.default_backend()})"
    elif args.dtype == "float32":
        cudnn_note = "skipped: cuDNN attention needs bf16 or fp16 compute"
    else:
        args.cudnn, cudnn_note = True, "extra jaxmem row (attention_impl='cudnn')"
    log(f"cuDNN attention row: {cudnn_note}")

    rows, skipped, sources = [], [], {}
    rng = np.random.default_rng(0)
    for name in models:
        if time.perf_counter() - t0 > args.budget_s:
            skipped.append(f"{name} (all)")
            continue
        log(f"{name}: loading")
        tiny = args.quick and not args.full_models
        model, params, cfg, sources[name] = load_pair(name, not args.no_hub, tiny)
        label = name + " (tiny)" if tiny else name
        if args.seq_len > cfg.max_positions:
            raise SystemExit(f"--seq-len {args.seq_len} exceeds {name}'s context "
                             f"({cfg.max_positions}).")
        torch_model = None if args.skip_torch else model
        ids = rng.integers(0, cfg.vocab_size, (args.score_texts, args.seq_len)).astype(np.int32)
        parts = [("scoring", None)] + [(f"train {m}", m) for m in methods]
        for part, method in parts:
            if time.perf_counter() - t0 > args.budget_s:
                skipped.append(f"{name} {part}")
                continue
            log(f"{name}: {part}")
            if method is None:
                res = bench_scoring(torch_model, params, cfg, ids, args, device)
                tokens = args.score_texts * (args.seq_len - 1)
                flops = {k: forward_flops(cfg, args.score_texts * args.seq_len, args.seq_len)
                         for k in res}
            else:
                batch = ids[:args.train_batch]
                res = bench_training(torch_model, params, cfg, method, batch, args, device)
                tokens = args.train_batch * args.seq_len
                flops = {k: train_flops(cfg, method, args.train_batch, args.seq_len,
                                        r["trainable"]) for k, r in res.items()}
            for side, r in res.items():
                rows.append({"model": label, "workload": part,
                             "implementation": LABELS.get(side) or
                             "transformers" + (" + PEFT" if method == "lora" else ""),
                             "tokens_per_s": tokens / r["s"], "seconds": r["s"],
                             "speedup": r["s"] / res["jaxmem"]["s"],
                             "pct_peak": 100 * flops[side] / r["s"] / peak,
                             "compile_s": r.get("compile_s"), "first_s": r.get("first_s"),
                             "first_loss": r.get("first_loss"),
                             "trainable": r.get("trainable")})
        del model, torch_model, params
        if device == "cuda":
            import torch
            torch.cuda.empty_cache()

    meta = {"date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, jax "
                       f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
                       + (f", PyTorch on {device}" if device else ""),
            "models": "; ".join(f"{k}: {v}" for k, v in sources.items()),
            "dtype": args.dtype,
            "scoring": f"{args.score_texts} x {args.seq_len} random tokens, batch "
                       f"{args.score_batch}, best of {args.repeats}",
            "training": f"batch {args.train_batch} x {args.seq_len}, {args.warmup} warm-up + "
                        f"{args.steps} measured steps (median), AdamW lr {args.lr:g}, clip 1.0",
            "cudnn_attention": cudnn_note,
            "matmul_peak_tflops": peak / 1e12,
            **{f"{k}_matmul_tflops": v / 1e12 for k, v in peaks.items()},
            "skipped (time budget)": ", ".join(skipped) or "none",
            "total_s": time.perf_counter() - t0,
            "command": "python " + " ".join(sys.argv)}
    fmt = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
    keys = lambda r: {k: r[k] for k in ("model", "workload", "implementation")}  # noqa: E731
    # speed-up: seconds of the row / seconds of the main jaxmem row (below 1: the row is faster)
    print_results(
        meta,
        [{**keys(r), "trainable": fmt(r["trainable"], ","),
          "compile (s)": fmt(r["compile_s"], ".1f"), "first step/batch (s)": fmt(r["first_s"], ".2f"),
          "first loss": fmt(r["first_loss"], ".4f")} for r in rows],
        [{**keys(r), "tokens/s": f"{r['tokens_per_s']:,.0f}",
          "jaxmem speed-up": f"{r['speedup']:.2f}x",
          f"% of {args.dtype} matmul peak": f"{r['pct_peak']:.1f}%"} for r in rows],
        json_path=args.json, rows=rows, meta_fmt=".3g")

if __name__ == "__main__":
    main()
