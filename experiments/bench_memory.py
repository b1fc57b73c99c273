"""Per-device memory of one training step: each method, on one device and on a data x fsdp mesh.

Nothing is trained: every step is compiled from abstract inputs and measured with XLA's
``memory_analysis()``, so a model far larger than this machine's memory can be measured too. The
params and optimizer-state columns are exact bytes per device, computed from each leaf's shard
shape. The question it answers: does a frozen-base method (LoRA, prefix, ...) keep any optimizer
state for the frozen weights, on one device and sharded, and how much does FSDP save?

    python experiments/bench_memory.py                         # SmolLM2-135M, 8 CPU devices, 4x2
    python experiments/bench_memory.py --model gpt2 --mesh 2x4 --seq-len 512

The CPU stands in for accelerators: ``--devices`` forced host devices (set before JAX starts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--methods", default="full,lora,prefix,prompt")
    ap.add_argument("--mesh", default="4x2", help="DATAxFSDP")
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
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

    from jaxmem import sharding as sh
    from jaxmem.models import load_model
    from jaxmem.report import markdown_table
    from jaxmem.train import make_train_step
    from jaxmem.tuning import OptimConfig, init_method, make_optimizer
    from jaxmem.tuning.partition import count

    mesh = sh.parse_mesh(args.mesh)
    base, cfg, tok = load_model(args.model)
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731

    def per_device(tree, shardings) -> int:
        return sum(int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
                   for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))

    def abstract(tree, shardings):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            tree, shardings)

    rows = []
    for method in args.methods.split(","):
        params, labels = init_method(method, base, cfg, jax.random.PRNGKey(0), tok)
        params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                              params)
        tx = make_optimizer(OptimConfig(), labels, 100)
        opt = jax.eval_shape(tx.init, params)
        step = make_train_step(cfg, tx, labels, dtype=args.dtype)
        batch = (1, args.batch_size, args.seq_len)
        for layout in ("1 device", f"{args.mesh} mesh"):
            if layout == "1 device":
                one = SingleDeviceSharding(jax.devices()[0])
                p_sh, o_sh = (jax.tree.map(lambda _: one, t) for t in (params, opt))
                b_sh, fn = one, step
            else:
                p_sh = sh.param_shardings(params, mesh, labels)
                o_sh = sh.opt_state_shardings(opt, p_sh)
                b_sh = NamedSharding(mesh, P(None, sh.BATCH_AXES, None))
                fn = sh.shard_step(step, p_sh, o_sh, mesh)
            ids = jax.ShapeDtypeStruct(batch, np.int32, sharding=b_sh)
            t0 = time.perf_counter()
            compiled = fn.lower(abstract(params, p_sh), abstract(opt, o_sh), ids, ids,
                                jax.random.PRNGKey(0)).compile()
            m = compiled.memory_analysis()
            rows.append({"method": method, "layout": layout,
                         "trainable": f"{count(params, labels):,}",
                         "params / device (MiB)": mib(per_device(params, p_sh)),
                         "optimizer state / device (MiB)": mib(per_device(opt, o_sh)),
                         "step temp (MiB)": mib(m.temp_size_in_bytes),
                         "step arguments (MiB)": mib(m.argument_size_in_bytes),
                         "compile (s)": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    print(f"\n{args.model}, {args.dtype} compute, float32 weights and Adam moments, batch "
          f"{args.batch_size} x {args.seq_len} tokens, {jax.device_count()} CPU devices\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
