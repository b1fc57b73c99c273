"""Canary exposure of one fine-tune: insert canaries, train, measure (jaxmem.canaries).

The base model is measured too (the baseline: the canaries are random to it). Writes, under
``--out-dir``: ``canaries.json`` (the record), ``run/`` (the jaxmem train run), ``exposure.json``
({"base": report, METHOD: report, "wall_s": {phase: seconds}, "settings": {...}}) and
``exposure.png``. The trained run can be measured again with
``jaxmem canaries --run-dir OUT/run --canaries-json OUT/canaries.json``.

Example (the measurement in the canary commit; CPU, 2 cores):
    python experiments/canary_exposure.py --out-dir /tmp/canary --canaries 4:0,1,4,16 \\
        --n-train 64 --epochs 2 --block-size 32 --n-samples 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jaxmem import load_corpus, load_model
from jaxmem.canaries import CanaryConfig, exposure_report, insert_canaries
from jaxmem.figures import plot_exposure
from jaxmem.io import atomic_write
from jaxmem.optim import OptimConfig
from jaxmem.trainer import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--corpus", default="default")
    p.add_argument("--method", default="lora")
    p.add_argument("--canaries", default="4:0,1,4,16", help="N:REPEATS")
    p.add_argument("--n-train", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wall, t = {}, time.perf_counter()

    def lap(name):
        nonlocal t
        wall[name] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        print(f"{name}: {wall[name]} s", flush=True)

    ccfg = CanaryConfig.from_spec(a.canaries, n_samples=a.n_samples)
    corpus = load_corpus(a.corpus, n_train=a.n_train, n_validation=16, n_members=16,
                         n_nonmembers=16, seed=a.seed)
    texts, canaries = insert_canaries(corpus.train, ccfg, seed=a.seed)
    canaries.save(out / "canaries.json")
    params, cfg, tok = load_model(a.model)
    lap("load")
    reports = {"base": exposure_report(params, cfg, tok, canaries, seed=a.seed,
                                       block_size=a.block_size)}
    lap("exposure_base")
    tcfg = TrainConfig(epochs=a.epochs, batch_size=8, block_size=a.block_size, seed=a.seed,
                       optim=OptimConfig(lr=a.lr))
    res = train(params, cfg, tok, a.method, texts, corpus.validation, out / "run", tcfg,
                model_name=a.model, overwrite=True)
    lap("train")
    reports[a.method] = exposure_report(res.params, cfg, tok, canaries, seed=a.seed,
                                        block_size=a.block_size)
    lap("exposure_trained")
    settings = {**vars(a), "n_texts": len(texts), "history": res.history}
    atomic_write(out / "exposure.json", {**reports, "wall_s": wall, "settings": settings})
    plot_exposure(reports, out / "exposure.png",
                  title=f"{a.model}, {a.epochs} epochs, canaries {ccfg.spec}")
    for name, rep in reports.items():
        print(name, json.dumps(rep["by_repeats"]))


if __name__ == "__main__":
    main()
