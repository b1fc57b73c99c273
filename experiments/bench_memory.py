"""Per-device memory of one training step: each method, on one device and on a data x fsdp mesh.

Nothing is trained: every step is compiled from abstract inputs and measured with XLA's
``memory_analysis()``, so a model far larger than this machine's memory can be measured too. The
params and optimizer-state columns are exact bytes per device, computed from each leaf's shard
shape. The question it answers: does a frozen-base method (LoRA, prefix, ...) keep any optimizer
state for the frozen weights, on one device and sharded, and how much does FSDP save?

    python experiments/bench_memory.py                         # SmolLM2-135M, 8 CPU devices, 4x2
    python experiments/bench_memory.py --model gpt2 --mesh 2x4 --seq-len 512
    # Llama-2-7B from its config alone (no weights): full and LoRA, two meshes, with/without remat
    python experiments/bench_memory.py --config llama-2-7b --methods full,lora --mesh x8,4x2 \
        --remat none,full --batch-size 16 --seq-len 2048 --no-single

The CPU stands in for accelerators: ``--devices`` forced host devices (set before JAX starts).
Its compiler schedules and fuses differently from a GPU's or TPU's, so temporaries are an
approximation of accelerator memory; params, gradients and optimizer state are exact.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--config", default=None,
                    help="a config.json or a name in jaxmem.capacity.KNOWN_CONFIGS: shapes only")
    ap.add_argument("--methods", default="full,lora,prefix,prompt")
    ap.add_argument("--mesh", default="4x2", help="DATAxFSDP or xFSDP; several joined by commas")
    ap.add_argument("--remat", default="none", help="none, full or dots; several by commas")
    ap.add_argument("--no-single", action="store_true", help="skip the 1-device layout")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--devices", type=int, default=8, help="forced host devices on the CPU")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "device_count" not in flags:
            os.environ["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count="
                                       f"{args.devices}").strip()
    import jax

    from jaxmem.capacity import KNOWN_CONFIGS
    from jaxmem.io import markdown_table
    from jaxmem.models import ModelConfig, load_model
    from jaxmem.step_memory import step_memory

    if args.config:
        hf = KNOWN_CONFIGS.get(args.config) or json.loads(open(args.config).read())
        cfg = ModelConfig.from_hf(hf)
        args.model = args.config
    else:
        cfg = load_model(args.model).config
    gib = lambda b: round(b / 2**30, 2)  # noqa: E731
    layouts = ([] if args.no_single else ["1 device"]) + args.mesh.split(",")
    rows = []
    for method in args.methods.split(","):
        for remat in args.remat.split(","):
            for layout in layouts:  # the compile-only pass lives in jaxmem.step_memory
                m = step_memory(cfg, method, batch=args.batch_size, seq_len=args.seq_len,
                                layout=layout, remat=remat, dtype=args.dtype)
                rows.append({
                    "method": method, "layout": layout, "remat": remat,
                    "trainable": f"{m['trainable']:,}",
                    "params / device (GiB)": gib(m["params"]),
                    "optimizer state / device (GiB)": gib(m["optimizer"]),
                    "gradients / device (GiB)": gib(m["gradients"]),
                    "step temporaries (GiB)": gib(m["temporaries"]),
                    "total / device (GiB)": gib(m["total"]),
                    "fits 80 GiB": "yes" if m["total"] < 80 * 2**30 else "no",
                    "compile (s)": m["compile_s"]})
                print(rows[-1], flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"\n{args.model}, {args.dtype} compute, float32 weights and Adam moments, batch "
          f"{args.batch_size} x {args.seq_len} tokens, {jax.device_count()} CPU devices\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
