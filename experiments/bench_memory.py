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
import time

# Hugging Face config.json of meta-llama/Llama-2-7b-hf (the hub is not needed for shapes).
CONFIGS = {"llama-2-7b": {
    "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--config", default=None,
                    help=f"a config.json or one of {list(CONFIGS)}: shapes only, no weights")
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
    import dataclasses

    import flax.linen as nn
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

    from jaxmem import sharding as sh
    from jaxmem.io import markdown_table
    from jaxmem.models import ModelConfig, abstract_params, load_model
    from jaxmem.optim import OptimConfig, make_optimizer
    from jaxmem.train_step import make_train_step
    from jaxmem.tuning import init_method
    from jaxmem.tuning.partition import count

    if args.config:
        hf = CONFIGS.get(args.config) or json.loads(open(args.config).read())
        cfg, tok = ModelConfig.from_hf(hf), None
        base = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            nn.unbox(abstract_params(cfg)))
        args.model = args.config
    else:
        base, cfg, tok = load_model(args.model)
    gib = lambda b: round(b / 2**30, 2)  # noqa: E731

    def per_device(tree, shardings) -> int:
        return sum(int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
                   for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))

    def abstract(tree, shardings):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            tree, shardings)

    def trainable_of(shardings):  # (trainable leaves, their shardings): a gradient's layout
        pairs = [(x, s) for x, s, lab in zip(jax.tree.leaves(params), jax.tree.leaves(shardings),
                                               jax.tree.leaves(labels)) if lab == "trainable"]
        return [x for x, _ in pairs], [s for _, s in pairs]

    layouts = ([] if args.no_single else ["1 device"]) + args.mesh.split(",")
    rows = []
    for method in args.methods.split(","):
        params, labels = init_method(method, base, cfg, jax.random.PRNGKey(0), tok)
        params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params)
        tx = make_optimizer(OptimConfig(), labels, 100)
        opt = jax.eval_shape(tx.init, params)
        batch = (1, args.batch_size, args.seq_len)
        for remat in args.remat.split(","):
            rcfg = dataclasses.replace(cfg, remat=remat)
            step = make_train_step(rcfg, tx, labels, dtype=args.dtype)
            for layout in layouts:
                if layout == "1 device":
                    one = SingleDeviceSharding(jax.devices()[0])
                    p_sh, o_sh = (jax.tree.map(lambda _: one, t) for t in (params, opt))
                    b_sh, fn = one, step
                else:
                    mesh = sh.parse_mesh(layout)
                    p_sh = sh.param_shardings(params, mesh, cfg)
                    o_sh = sh.opt_state_shardings(opt, p_sh)
                    b_sh = NamedSharding(mesh, P(None, sh.BATCH_AXES, None))
                    fn = sh.shard_step(step, p_sh, o_sh, mesh)
                ids = jax.ShapeDtypeStruct(batch, np.int32, sharding=b_sh)
                t0 = time.perf_counter()
                compiled = fn.lower(abstract(params, p_sh), abstract(opt, o_sh), ids, ids,
                                    jax.random.PRNGKey(0)).compile()
                m = compiled.memory_analysis()
                total = m.argument_size_in_bytes + m.temp_size_in_bytes  # outputs alias inputs
                rows.append({
                    "method": method, "layout": layout, "remat": remat,
                    "trainable": f"{count(params, labels):,}",
                    "params / device (GiB)": gib(per_device(params, p_sh)),
                    "optimizer state / device (GiB)": gib(per_device(opt, o_sh)),
                    "gradients / device (GiB)": gib(per_device(*trainable_of(p_sh))),
                    "step temporaries (GiB)": gib(m.temp_size_in_bytes),
                    "total / device (GiB)": gib(total),
                    "fits 80 GiB": "yes" if total < 80 * 2**30 else "no",
                    "compile (s)": round(time.perf_counter() - t0, 1)})
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
