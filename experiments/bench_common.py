"""What the benchmarks under ``experiments/`` share: bench texts and token batches, matmul
peaks (jax and PyTorch), model FLOPs, interleaved timing, the reference PyTorch model, and the
results printer. ``bench_scoring``, ``bench_training`` and ``bench_gpu`` import it; it imports
none of them.
"""

from __future__ import annotations

import json
import os
import sys
import platform
import time
from pathlib import Path

import numpy as np

# model FLOPs as every benchmark and `jaxmem plan` count them: one definition, in the library
from jaxmem.capacity import forward_flops  # noqa: F401

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


def machine() -> str:
    import jax

    return (f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} backend "
            f"{jax.default_backend()} ({jax.devices()[0].device_kind})")


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


def print_results(meta: dict, table: list[dict], *more_tables: list[dict], json_path=None,
                  rows=None, meta_fmt: str = ".1f") -> None:
    """Prints a run's facts as a list, then each table (rows of formatted cells) in Markdown.

    With ``json_path``, ``{"meta": meta, "rows": rows}`` (the unformatted figures) goes there.
    Shared by every benchmark under ``experiments/``.
    """
    from jaxmem.io import markdown_table

    print("\n".join(f"- {k}: {v:{meta_fmt}}" if isinstance(v, float) else f"- {k}: {v}"
                    for k, v in meta.items()))
    for t in (table, *more_tables):
        print()
        print(markdown_table(t))
    if json_path:
        from jaxmem.io import atomic_write

        atomic_write(json_path, json.dumps({"meta": meta, "rows": rows}, indent=2))


def real_batch(tok, batch: int, seq_len: int) -> tuple[np.ndarray, str]:
    """batch x seq_len token ids: the first seq_len tokens of texts at least that long."""
    n = 4 * batch
    while True:
        texts, source = texts_for_bench(n)
        seqs = [s[:seq_len] for s in tok(texts)["input_ids"] if len(s) >= seq_len]
        if len(seqs) >= batch:
            return np.asarray(seqs[:batch], np.int32), source
        if len(texts) < n:
            raise SystemExit(f"Only {len(seqs)} texts of the bench data reach {seq_len} tokens; "
                             f"lower --seq-len or --batch-size.")
        n *= 4


def torch_matmul_peak(dtype: str, device: str, n: int = 2048, reps: int = 10) -> float:
    """Best FLOP/s of an n x n x n matmul under PyTorch (its own BLAS / cuBLAS)."""
    import torch

    dt = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    a = torch.randn(n, n, dtype=dt, device=device)
    b = torch.randn(n, n, dtype=dt, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    (a @ b).sum().item()
    best = float("inf")
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def time_interleaved(sides: dict, warmup: int, steps: int, pause: float = 0.5,
                     block: int = 1) -> None:
    """Times each side's ``step()`` (which returns the loss) in place.

    ``pause`` seconds pass before each timed step: PyTorch's OpenMP workers and XLA's
    thread pool both spin for a while after their last task, and a step started at once
    would share the cores with the other framework's spinning threads.

    ``warmup`` steps per side come first; the first is timed and its loss kept (``first_step_s``,
    ``first_loss``). Then the sides take turns so that both see the same machine load: with
    ``block=1`` one timed step each per round (``steps`` rounds); with ``block=k > 1`` each turn
    is one untimed settling step and then ``k`` timed steps, until each side has ``steps``. The
    settling step is there because a step right after the *other* framework's step is slower
    than a training loop's steady state, even in separate processes and after the pause
    (2026-12-07, full fine-tuning of SmolLM2-135M on 2 cores: jaxmem 2.1 s alone, 3.3-3.6 s
    right after a PyTorch step, 2.5 s the step after that; docs/benchmarks.md). Per-step
    seconds go to ``times`` and the final loss to ``last_loss``.
    """
    for side in sides.values():
        side["times"] = []
        for i in range(max(warmup, 1)):
            t = time.perf_counter()
            loss = side["step"]()
            worker = getattr(side["step"], "__self__", None)
            if i == 0:
                side["first_step_s"] = (worker.last_seconds if isinstance(worker, Worker)
                                        else time.perf_counter() - t)
                side["first_loss"] = loss

    def timed(side) -> None:
        time.sleep(pause)
        t = time.perf_counter()
        side["last_loss"] = side["step"]()
        worker = getattr(side["step"], "__self__", None)  # a Worker's own timing, if any
        side["times"].append(worker.last_seconds if isinstance(worker, Worker)
                             else time.perf_counter() - t)

    while any(len(side["times"]) < steps for side in sides.values()):
        for side in sides.values():
            todo = min(block, steps - len(side["times"]))
            if todo and block > 1 and len(sides) > 1:
                time.sleep(pause)
                side["step"]()  # settling step after the other side's turn (not timed)
            for _ in range(todo):
                timed(side)


class Worker:
    """One side of a benchmark in its own process, stepped over a pipe.

    jax and PyTorch in one process slow each other down: after PyTorch's first training step
    in the process, jaxmem's full fine-tuning step took 7.2 s instead of 5.2 s (2026-12-01).
    So each side runs in a child process (``python SCRIPT --worker SIDE ...``) that prints one
    JSON line when ready and one per ``step`` command; the parent interleaves the steps so that
    both sides still see the same machine load.
    """

    def __init__(self, argv: list[str], env: dict | None = None):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        import json

        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark worker {self.proc.args} exited "
                                   f"({self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def step(self) -> float:
        """Runs one step in the worker; returns its loss (the worker times itself)."""
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        out = self._read()
        self.last_seconds = out["seconds"]
        return out["loss"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def serve(step, info: dict) -> None:
    """The worker's side of :class:`Worker`: announce ``info``, then time ``step()`` per line."""
    import json

    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() == "step":
            t = time.perf_counter()
            loss = step()
            print(json.dumps({"seconds": time.perf_counter() - t, "loss": loss}), flush=True)
