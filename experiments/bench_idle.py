"""Does a training step slow down after the machine sat idle? One side of bench_training.py
(jaxmem or PyTorch, in its own worker process), stepped after each pause in turn.

Why it exists: alternating the two frameworks step by step leaves each one idle for the other's
step, and on the 2-core development VM jaxmem's full-fine-tuning step took 2.6-2.8 s after a
3.5 s pause against 1.8 s after 0.5 s, while PyTorch's did not change (2026-12-07,
docs/benchmarks.md). bench_training.py therefore alternates in turns after a settling step.

    python experiments/bench_idle.py                                  # jaxmem, full, 0.5 and 3.5 s
    python experiments/bench_idle.py --side torch
    python experiments/bench_idle.py --tunables glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training as bt  # noqa: E402
from bench_common import Worker  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=["jaxmem", "torch"], default="jaxmem")
    ap.add_argument("--method", choices=bt.METHODS, default="full")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--pauses", default="0.5,3.5,0.5", help="seconds idle before each step, "
                    "one group of --steps per value")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tunables", default=None,
                    help="GLIBC_TUNABLES for the worker (default: the huge-page tunable for "
                         "jaxmem, none for PyTorch, as bench_training.py)")
    args = ap.parse_args()
    args.dtype, args.lr, args.remat = "float32", 1e-4, "none"
    env = dict(os.environ)
    tunables = args.tunables
    if tunables is None:
        tunables = "glibc.malloc.hugetlb=1" if args.side == "jaxmem" else ""
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    args.methods = args.method
    w = Worker(bt._worker_argv(args.side, args.method, args), env)
    for _ in range(2):  # warm-up
        w.step()
    print(f"{args.side} {args.method}, {args.batch_size} x {args.seq_len}, GLIBC_TUNABLES="
          f"{tunables or '(none)'}, load {os.getloadavg()[0]:.2f}")
    for pause in (float(p) for p in args.pauses.split(",")):
        times = []
        for _ in range(args.steps):
            time.sleep(pause)
            w.step()
            times.append(w.last_seconds)
        print(f"after {pause:4.1f} s idle: median {statistics.median(times):.2f} s  "
              f"({', '.join(f'{t:.2f}' for t in times)})")
    w.close()


if __name__ == "__main__":
    main()
