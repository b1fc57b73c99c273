"""Training-step throughput: jaxmem's jit-compiled train step vs transformers + PEFT (PyTorch).

Both sides train the same model on the same batch of real text, in one run, on one machine:
full fine-tuning, LoRA (PEFT's defaults: r=8, alpha=8, dropout 0, q_proj/v_proj) and prefix
tuning (20 virtual tokens, no reparameterization), each with AdamW (lr 1e-4, no weight decay,
gradient clipping at global norm 1.0; constant learning rate) on both sides. A step is forward +
backward + optimizer update; every step ends by reading the loss back to the host (as the trainer
does), warm-up steps are excluded, and the median step time is reported. The two sides take turns
of ``--block`` timed steps (default 3), each after an untimed settling step: a step right after
seconds of idle (the other side's turn) is slower than a training loop's, for jaxmem by up to 50%
on the 2-core development VM (``experiments/bench_idle.py``; ``--block 1`` alternates step by
step, as before 2026-12-07). jaxmem's worker runs with glibc's huge-page tunable, as the
``jaxmem`` command does (``--huge-pages``). jaxmem's compile time is
reported separately, next to PyTorch's first (warm-up) step.

FLOPs (model FLOPs: rematerialization is not counted) for a batch of B sequences of T tokens:

* forward F = B*T * (2 * P_matmul + 2 * P_head) + attention, where P_matmul are the block's
  linear weights (all layers), P_head = D*V the output projection, and attention is
  2 * 2 * S * D_q per query position and layer (QK^T and PV over S keys; S = T, or T + n with n
  prefix tokens; computed over the full square, as both implementations do);
* full fine-tuning: 3F (forward; backward = activation gradients F + weight gradients F);
* frozen-base methods (LoRA, prefix): 2F + 6 * P_trainable * B*T: no weight gradient for the
  base, but activation gradients through every layer (the adapters sit in every layer), plus the
  adapter's own forward and backward. For LoRA 6 * P_lora * B*T is exact; for prefix tuning it
  over-counts slightly (the prefix needs no matmul of its own), which is negligible.

The % of peak divides these FLOPs by the machine's float32 (or bfloat16) matmul peak, measured in
the same run as the faster of jax's and PyTorch's best n x n x n matmul (n = 2048 on CPU, 8192 on
a GPU). "first loss" is the loss of the first step: equal on both sides for full and LoRA (same
weights, LoRA B = 0); prefix tuning's virtual tokens are random on each side, so it differs.

    python experiments/bench_training.py                                  # CPU, embedded default
    python experiments/bench_training.py --batch-size 2 --seq-len 64 --steps 5 --methods lora
    python experiments/bench_training.py --batch-size 16 --seq-len 512 --dtype bfloat16   # GPU

On a GPU, jax uses its default backend and PyTorch uses CUDA when available; float32 matmuls run
in TF32 on both sides there (jax's default precision; ``torch.set_float32_matmul_precision
("high")``). ``--dtype bfloat16`` is mixed precision on both sides: float32 weights and optimizer
state, bfloat16 compute (jaxmem's ``dtype``; ``torch.autocast``). Prints a Markdown table last;
``--json`` also writes the figures to a file.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# jax must not grab most of a GPU's memory up front: PyTorch runs in the same process afterwards.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (Worker, matmul_peak, print_results,  # noqa: E402
                          real_batch, time_interleaved, torch_matmul_peak, torch_reference)

METHODS = ("full", "lora", "prefix")
N_VIRTUAL = 20


def train_flops(cfg, method: str, batch: int, seq_len: int, n_trainable: int) -> float:
    """Model FLOPs of one training step (see the module docstring; counted by
    :func:`jaxmem.capacity.train_flops`, which ``jaxmem plan`` uses too)."""
    from jaxmem.capacity import train_flops as count_flops

    return count_flops(cfg, method, batch, seq_len, n_trainable, N_VIRTUAL)


def jaxmem_step(model, method: str, ids: np.ndarray, args):
    """(step function returning the host loss, trainable count, compile seconds, temp bytes)."""
    import jax
    import jax.numpy as jnp

    from jaxmem.optim import OptimConfig, make_optimizer
    from jaxmem.train_step import make_train_step
    from jaxmem.tuning import count, init_method, method_config

    params, cfg, tok = model
    cfg = dataclasses.replace(cfg, remat=args.remat)
    mcfg = method_config(method, num_virtual_tokens=N_VIRTUAL) if method == "prefix" else \
        method_config(method)
    params, labels = init_method(mcfg, params, cfg, jax.random.PRNGKey(0), tok)
    params = jax.device_put(jax.tree.map(jnp.array, params))
    tx = make_optimizer(OptimConfig(lr=args.lr, schedule="constant", grad_clip=1.0), labels, 1)
    opt_state = tx.init(params)
    x = jax.device_put(jnp.asarray(ids)[None])  # one micro-batch [1, B, T]
    mask = jnp.ones_like(x)
    rng = jax.random.PRNGKey(0)
    t = time.perf_counter()
    compiled = make_train_step(cfg, tx, labels, dtype=args.dtype).lower(
        params, opt_state, x, mask, rng).compile()
    compile_s = time.perf_counter() - t
    temp = getattr(compiled.memory_analysis(), "temp_size_in_bytes", None)
    state = {"params": params, "opt": opt_state}

    def step():
        state["params"], state["opt"], loss = compiled(state["params"], state["opt"], x, mask,
                                                       rng)
        return float(loss)

    return step, count(params, labels), compile_s, temp


def torch_step(base, method: str, ids: np.ndarray, args, device: str):
    """(step function returning the host loss, trainable count): transformers + PEFT, AdamW."""
    import peft
    import torch

    # eval mode: no dropout (GPT-2's config has 0.1), as in jaxmem's step; gradients still flow
    model = copy.deepcopy(base).to(device).eval()
    if method == "lora":  # target_modules=None: PEFT's defaults (Llama q/v_proj, GPT-2 c_attn)
        model = peft.get_peft_model(model, peft.LoraConfig(
            task_type="CAUSAL_LM", r=8, lora_alpha=8, lora_dropout=0.0))
    elif method == "prefix":
        model = peft.get_peft_model(model, peft.PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=N_VIRTUAL))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    x = torch.tensor(ids, dtype=torch.long, device=device)
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16,
                         enabled=args.dtype == "bfloat16")

    def step():
        with amp:
            loss = model(input_ids=x, labels=x).loss  # mean NLL over the B*(T-1) targets
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.item())

    return step, sum(p.numel() for p in params)


def _worker_argv(side: str, method: str, args) -> list[str]:
    return [__file__, "--worker", side, "--methods", method, "--model", args.model,
            "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
            "--dtype", args.dtype, "--lr", str(args.lr), "--remat", args.remat]


def _worker_env(side: str, args) -> dict:
    """The worker's environment: this one, plus glibc's huge-page tunable where asked. XLA's
    step allocates and zero-fills ~1.7 GB of temporaries per full-fine-tuning step; with the
    tunable they come in 2 MB pages (the ``jaxmem`` command restarts itself with it)."""
    env = dict(os.environ)
    if args.huge_pages == "both" or args.huge_pages == side:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"),
                                                       "glibc.malloc.hugetlb=1"]))
    return env


def worker(args) -> None:
    """``--worker jaxmem|torch``: one side, one method, stepped by the parent (bench_common)."""
    from bench_common import serve

    from jaxmem.models import load_model

    model = load_model(args.model)
    ids, _ = real_batch(model.tokenizer, args.batch_size, args.seq_len)
    method = args.methods
    if args.worker == "jaxmem":
        fn, n, compile_s, temp = jaxmem_step(model, method, ids, args)
        serve(fn, {"trainable": n, "compile_s": compile_s,
                   "jax_temp_mib": None if temp is None else temp / 2**20})
    else:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count() or 1)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            torch.set_float32_matmul_precision("high")
        fn, n = torch_step(torch_reference(args.model), method, ids, args, device)
        serve(fn, {"trainable": n, "compile_s": None})


def run_method(method: str, model, base, ids: np.ndarray, args, device) -> dict:
    """Warm-up, then measured steps with the two sides interleaved (jaxmem, PyTorch, jaxmem, ...)
    so that both see the same load on a shared machine. Each side runs in its own process
    (bench_common.Worker) unless ``--same-process``."""
    sides = {}
    print(f"{method}: compiling the jaxmem step ...", file=sys.stderr, flush=True)
    workers = []
    if args.same_process:
        fn, n, compile_s, temp = jaxmem_step(model, method, ids, args)
        sides["jaxmem"] = {"step": fn, "trainable": n, "compile_s": compile_s,
                           "jax_temp_mib": None if temp is None else temp / 2**20}
    else:
        workers.append(Worker(_worker_argv("jaxmem", method, args),
                              _worker_env("jaxmem", args)))
        sides["jaxmem"] = {"step": workers[-1].step, **workers[-1].info}
    if not args.skip_torch and args.same_process:
        fn, n = torch_step(base, method, ids, args, device)
        sides["torch"] = {"step": fn, "trainable": n, "compile_s": None}
    elif not args.skip_torch:
        workers.append(Worker(_worker_argv("torch", method, args),
                              _worker_env("torch", args)))
        sides["torch"] = {"step": workers[-1].step, **workers[-1].info}
    print(f"{method}: {args.warmup} warm-up + {args.steps} measured steps per side ...",
          file=sys.stderr, flush=True)
    time_interleaved(sides, args.warmup, args.steps, block=args.block)
    for w in workers:
        w.close()
    out = {}
    for name, side in sides.items():
        if not np.isfinite(side["last_loss"]):
            raise FloatingPointError(f"{name} {method}: the loss became {side['last_loss']}")
        side.pop("step")
        times = side.pop("times")
        out[name] = {**side, "median_s": statistics.median(times),
                     "mean_s": statistics.fmean(times), "min_s": min(times)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="measured steps per method and side")
    ap.add_argument("--warmup", type=int, default=2, help="steps run first and not measured")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated, from {', '.join(METHODS)}")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--remat", default="none", choices=["none", "dots", "full"],
                    help="jaxmem's rematerialization (ModelConfig.remat; PyTorch side unchanged)")
    ap.add_argument("--block", type=int, default=3,
                    help="timed steps per turn when the sides alternate, each turn after one "
                         "untimed settling step (1: strict step-by-step alternation, no "
                         "settling step; see bench_common.time_interleaved)")
    ap.add_argument("--huge-pages", choices=["jaxmem", "both", "none"], default="jaxmem",
                    help="which workers run with glibc's glibc.malloc.hugetlb=1 tunable "
                         "(default: jaxmem's, as the jaxmem command sets it for itself; "
                         "PyTorch's full step was slower with it: 151 vs 165 tokens/s)")
    ap.add_argument("--same-process", action="store_true",
                    help="run both sides in this process (they slow each other down)")
    ap.add_argument("--worker", choices=["jaxmem", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if bad := [m for m in methods if m not in METHODS]:
        ap.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if args.steps < 1 or args.warmup < 1 or args.block < 1:
        ap.error("--steps, --warmup and --block must be at least 1")

    import jax

    from jaxmem.models import load_model

    model = load_model(args.model)
    cfg = model.config
    if args.seq_len + N_VIRTUAL > cfg.max_positions:
        ap.error(f"--seq-len {args.seq_len} too long for the model ({cfg.max_positions})")
    ids, source = real_batch(model.tokenizer, args.batch_size, args.seq_len)
    tokens = args.batch_size * args.seq_len

    n_peak = 2048 if jax.default_backend() == "cpu" else 8192  # big enough to saturate a GPU
    device, base, peaks = None, None, {"jax": matmul_peak(args.dtype, n_peak)}
    if not args.skip_torch:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count() or 1)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32, as jax's default on GPUs
        peaks["torch"] = torch_matmul_peak(args.dtype, device, n_peak)
        if args.same_process:
            base = torch_reference(args.model)
    peak = max(peaks.values())  # the machine's: the faster of the two frameworks' matmuls

    results: dict[tuple[str, str], dict] = {}
    for method in methods:
        for side, r in run_method(method, model, base, ids, args, device).items():
            results[method, side] = r

    rows = []
    for (method, side), r in results.items():
        flops = train_flops(cfg, method, args.batch_size, args.seq_len, r["trainable"])
        ours = results[method, "jaxmem"]["median_s"]
        rows.append({
            "method": method,
            "implementation": "jaxmem (jit)" if side == "jaxmem" else "transformers + PEFT",
            "trainable_params": r["trainable"], "tokens_per_s": tokens / r["median_s"],
            "steps_per_s": 1 / r["median_s"], "median_step_s": r["median_s"],
            "mean_step_s": r["mean_s"], "jaxmem_speedup": r["median_s"] / ours,
            "pct_matmul_peak": 100 * flops / r["median_s"] / peak,
            "step_gflop": flops / 1e9, "compile_s": r["compile_s"],
            "first_step_s": r["first_step_s"], "first_loss": r["first_loss"],
            "jax_temp_mib": r.get("jax_temp_mib")})

    meta = {"date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, jax backend "
                       f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
                       + (f", PyTorch on {device}" if device else ""),
            "model": args.model, "dtype": args.dtype,
            "batch": f"{args.batch_size} x {args.seq_len} tokens ({source})",
            "steps": f"{args.warmup} warm-up + {args.steps} measured (median reported), "
                     + ("alternating step by step" if args.block == 1 else
                        f"alternating in turns of {args.block} after a settling step"),
            "huge_pages": args.huge_pages, "jaxmem_remat": args.remat,
            "optimizer": f"AdamW lr {args.lr:g}, no weight decay, clip 1.0",
            "matmul_peak_gflops": peak / 1e9,
            **{f"{k}_matmul_gflops": v / 1e9 for k, v in peaks.items()},
            "command": "python " + " ".join(sys.argv)}
    print_results(meta, [
        {"method": r["method"], "implementation": r["implementation"],
         "trainable params": f"{r['trainable_params']:,}", "tokens/s": f"{r['tokens_per_s']:.0f}",
         "steps/s": f"{r['steps_per_s']:.2f}", "jaxmem speed-up": f"{r['jaxmem_speedup']:.2f}x",
         "% of matmul peak": f"{r['pct_matmul_peak']:.0f}%",
         "compile (s)": "—" if r["compile_s"] is None else f"{r['compile_s']:.1f}",
         "first step (s)": f"{r['first_step_s']:.2f}", "first loss": f"{r['first_loss']:.3f}"}
        for r in sorted(rows, key=lambda r: (methods.index(r["method"]), r["implementation"]))],
        json_path=args.json, rows=rows)


if __name__ == "__main__":
    main()
