"""Runs the library (train, resume, load_checkpoint, score_texts) on several devices or processes.

Started as a subprocess by ``tests/test_distributed.py``, because a pytest process has already
started JAX with one CPU device. Two modes:

* ``mesh OUT``: one process with 8 forced CPU devices. Trains LoRA and full fine-tuning on a
  4 x 2 mesh, resumes a run stopped after epoch 1 on a 2 x 4 mesh, reloads checkpoints onto
  another mesh, and scores sharded.
* ``multihost OUT PROCESS_ID N_PROCESSES PORT``: one of N processes (2 CPU devices each) joined
  by ``jax.distributed`` over gloo. All processes train into the same run directory on a
  2 x 2 global mesh and score sharded; process 0 writes the files.

Each mode saves what the test compares into ``OUT`` as .npz / .json files.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from jaxmem import sharding as sh
from jaxmem.models import ModelConfig, init_params
from jaxmem.optim import OptimConfig
from jaxmem.scoring import score_texts
from jaxmem.trainer import TrainConfig, load_checkpoint, train
from jaxmem.tuning.partition import split

# Everything below is shared with the in-process single-device reference of the test.
CFG = ModelConfig(arch="llama", vocab_size=96, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                  d_ff=128, max_positions=64, tie_embeddings=False)
# eps = 1e-4: Adam's early updates g / (|g| + eps) would turn float32 summation-order noise in
# tiny gradients into visible weight differences with the default 1e-8 (see test_sharding).
TCFG = TrainConfig(epochs=2, batch_size=8, block_size=48, eval_batch_size=8,
                   optim=OptimConfig(lr=3e-3, eps=1e-4))


class CharTok:
    pad_token_id = 0

    def __call__(self, texts, **kw):
        return {"input_ids": [[1 + (ord(c) % 90) for c in t] for t in texts]}


def texts(n, seed):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("abcdefgh "), rng.integers(10, 40))) for _ in range(n)]


TRAIN, VAL, SCORE = texts(24, 0), texts(8, 1), texts(11, 2)
OUT = Path(".")


def base_params():
    return jax.tree.map(np.asarray, init_params(CFG, jax.random.PRNGKey(0)))


def trainable_arrays(params, labels) -> dict:
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(split(params, labels)[0]))
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def save(name: str, params=None, labels=None, history=None, stats=None) -> None:
    """Writes results into OUT for the test (process 0 only)."""
    if not sh.is_main_process():
        return
    if params is not None:
        np.savez(OUT / f"{name}_params.npz", **trainable_arrays(params, labels))
    if history is not None:
        (OUT / f"{name}_history.json").write_text(json.dumps(history))
    if stats is not None:
        np.savez(OUT / f"{name}_stats.npz", logp=stats.logp, mu=stats.mu, sigma=stats.sigma,
                 mask=stats.mask)


def main():
    global OUT
    mode, OUT = sys.argv[1], Path(sys.argv[2])
    if mode == "multihost":  # before anything starts a JAX backend
        sh.initialize_distributed(True, coordinator_address=f"localhost:{sys.argv[5]}",
                                  num_processes=int(sys.argv[4]), process_id=int(sys.argv[3]))
    base = base_params()
    info = {"devices": jax.device_count(), "processes": jax.process_count()}
    if mode == "mesh":
        assert jax.device_count() == 8, jax.devices()
        m42, m24 = sh.make_mesh(4, 2), sh.make_mesh(2, 4)
        for method in ("lora", "full"):
            r = train(base, CFG, CharTok(), method, TRAIN, VAL, OUT / f"{method}_4x2", TCFG,
                      progress=False, mesh=m42)
            save(f"{method}_4x2", r.params, r.labels, r.history)
            info[f"{method}_specs"] = sorted({str(x.sharding.spec)
                                              for x in jax.tree.leaves(r.params)})
        # killed after epoch 1 on 4 x 2, resumed on 2 x 4
        run = OUT / "lora_resumed"
        train(base, CFG, CharTok(), "lora", TRAIN, VAL, run, TCFG, progress=False, mesh=m42,
              stop_after_epoch=1)
        r = train(base, CFG, CharTok(), "lora", TRAIN, VAL, run, TCFG, progress=False, mesh=m24)
        save("lora_resumed", r.params, r.labels, r.history)
        # a checkpoint trained on 4 x 2, loaded onto 2 x 4 and onto one device
        for name, mesh in (("2x4", m24), ("single", None)):
            p, labels = load_checkpoint(OUT / "full_4x2", base, CFG, mesh=mesh)
            save(f"full_loaded_{name}", p, labels)
        stats = score_texts(base, CFG, CharTok(), SCORE, batch_size=3, block_size=48, mesh=m42)
        save("score_4x2", stats=stats)
        try:
            train(base, CFG, CharTok(), "lora", TRAIN, VAL, OUT / "bad", TrainConfig(
                batch_size=6, block_size=48), progress=False, mesh=m42)
        except ValueError as e:
            info["bad_batch_error"] = str(e)
    else:
        mesh = sh.make_mesh(2, 2)
        info["local_devices"] = jax.local_device_count()
        r = train(base, CFG, CharTok(), "lora", TRAIN, VAL, OUT / "lora_multihost", TCFG,
                  progress=False, mesh=mesh)
        save("lora_multihost", r.params, r.labels, r.history)
        stats = score_texts(base, CFG, CharTok(), SCORE, batch_size=4, block_size=48, mesh=mesh)
        save("score_multihost", stats=stats)
        # devices of the two processes interleaved along the batch (as a TPU torus or a GPU id
        # order may place them): each process's rows are not one contiguous block
        by_process = [[d for d in jax.devices() if d.process_index == p] for p in (0, 1)]
        mixed = sh.make_mesh(2, 2, devices=[d for pair in zip(*by_process) for d in pair])
        info["mixed_mesh_processes"] = [d.process_index for d in mixed.devices.flat]
        stats = score_texts(base, CFG, CharTok(), SCORE, batch_size=4, block_size=48,
                            mesh=mixed)
        save("score_multihost_mixed", stats=stats)
        # every process got every example's statistics, not only its own rows
        info[f"nll_sum_process_{jax.process_index()}"] = float(np.nansum(stats.nll()))
    if sh.is_main_process():
        (OUT / f"info_{mode}.json").write_text(json.dumps(info))
    else:
        (OUT / f"info_{mode}_{jax.process_index()}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
