"""``jaxmem plan``: what a study costs on an accelerator, worked out without one.

For a study config (:class:`jaxmem.study.StudyConfig`) and a device and mesh: the cells (from
:class:`jaxmem.study.plan.StudyPlan`, the plan a study prints), tokens per epoch, model FLOPs
per step (counted as the benchmarks count them: :func:`forward_flops`, :func:`train_flops`,
equal to ``experiments/bench_common.py`` and ``bench_training.py``), the memory per device of
each (model, method)'s train step with and without remat (:mod:`jaxmem.step_memory`, a
compile-only pass over abstract parameters), and hours per cell and in total from the device's
published dense bf16 peak at an assumed utilization. A cell whose step does not fit is marked,
with the remat or mesh that would fit.

Example:
    >>> DEVICES["h100"].peak_tflops, DEVICES["tpu-v5e"].memory_gib
    (989.0, 16.0)
    >>> round(forward_flops(model_config_for("gpt2"), 512, 512) / 1e12, 3)
    0.136
"""

from __future__ import annotations

import dataclasses
import math

# Published dense (no sparsity) bf16 peaks and memory per device. Sources: NVIDIA's H100
# datasheet (SXM: 989 TFLOP/s, 80 GB), H200 product page (989, 141 GB), A100 datasheet (312,
# 80 GB); Google Cloud TPU system-architecture pages (v5e 197, 16 GiB HBM; v5p 459, 95 GiB;
# v4 275, 32 GiB). GPU "GB" are GiB of HBM as the driver reports them, less a little.


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    peak_tflops: float   # dense bf16
    memory_gib: float


DEVICES = {
    "h100": Device("NVIDIA H100 SXM", 989.0, 80.0),
    "h200": Device("NVIDIA H200 SXM", 989.0, 141.0),
    "a100": Device("NVIDIA A100 SXM 80GB", 312.0, 80.0),
    "tpu-v5e": Device("Google TPU v5e", 197.0, 16.0),
    "tpu-v5p": Device("Google TPU v5p", 459.0, 95.0),
    "tpu-v4": Device("Google TPU v4", 275.0, 32.0),
}
UTILIZATION = 0.4   # assumed model-FLOPs utilization; replace with a measured one
HEADROOM = 0.9      # a step fits when it needs at most this share of the device's memory

# config.json of the hub models the paper configs name (shapes only), so a plan works
# offline and without access to gated repositories.
KNOWN_CONFIGS = {
    "gpt2": {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12,
             "n_head": 12, "n_positions": 1024},
    "gpt2-medium": {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 1024, "n_layer": 24,
                    "n_head": 16, "n_positions": 1024},
    "gpt2-large": {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 1280, "n_layer": 36,
                   "n_head": 20, "n_positions": 1024},
    "gpt2-xl": {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 1600, "n_layer": 48,
                "n_head": 25, "n_positions": 1024},
    "llama-3.2-1b": {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048,
        "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
    "llama-2-7b": {
        "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False},
    "smollm2-135m": {
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0, "tie_word_embeddings": True},
}


def model_config_for(name: str):
    """A model's :class:`~jaxmem.models.ModelConfig` from its config.json alone: the table
    above for the paper's models, else :func:`jaxmem.models.checkpoints.model_config`."""
    from jaxmem.models import ModelConfig
    from jaxmem.models.checkpoints import model_config

    if name in KNOWN_CONFIGS:
        return ModelConfig.from_hf(KNOWN_CONFIGS[name])
    cfg = model_config(name)
    if cfg is None:
        raise ValueError(f"No config.json for {name!r} (a GGUF file): plan takes a hub alias, "
                         "a hub id or an HF directory.")
    return cfg


def forward_flops(cfg, n_tokens: int, n_keys: int) -> float:
    """Forward FLOPs for ``n_tokens`` positions each attending to ``n_keys`` keys: 2 x (block +
    head params) per token, plus QK^T and PV over the full square (as computed)."""
    d, f, L = cfg.d_model, cfg.d_ff, cfg.n_layers
    dq, dkv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    mlp = (3 if cfg.arch != "gpt2" else 2) * d * f
    per_layer = d * dq + 2 * d * dkv + dq * d + mlp
    attn = 2 * 2 * n_keys * dq
    return n_tokens * (2 * L * per_layer + L * attn + 2 * d * cfg.vocab_size)


def train_flops(cfg, method: str, batch: int, seq_len: int, n_trainable: int,
                n_virtual: int = 20) -> float:
    """Model FLOPs of one training step: 3F for full fine-tuning; F + 2 x trainable x tokens
    for head-only tuning (the head's weight gradient; nothing flows back into the frozen
    decoder, and reverse-mode differentiation of the trainable leaves alone computes none of
    it); 2F + 6 x trainable x tokens for the other frozen-base methods (activation gradients
    through every layer, no weight gradients for the base). Prefix tuning adds ``n_virtual``
    keys; prompt tuning and P-tuning ``n_virtual`` positions."""
    name = method.partition(":")[0]
    if name == "full":
        return 3 * forward_flops(cfg, batch * seq_len, seq_len)
    if name == "head":
        return forward_flops(cfg, batch * seq_len, seq_len) + 2 * n_trainable * batch * seq_len
    keys = seq_len + (n_virtual if name in ("prefix", "prompt", "ptuning") else 0)
    tokens = batch * (seq_len + (n_virtual if name in ("prompt", "ptuning") else 0))
    return 2 * forward_flops(cfg, tokens, keys) + 6 * n_trainable * batch * seq_len


def _n_virtual(method: str) -> int:
    from jaxmem.tuning import method_config

    return int(getattr(method_config(method), "num_virtual_tokens", 0) or 0)


def fits(total_bytes: float, device: Device) -> bool:
    return total_bytes <= HEADROOM * device.memory_gib * 2 ** 30


def plan_rows(scfg, device: str = "h100", layout: str = "1", *, remat=("none", "full"),
              utilization: float = UTILIZATION, memory: str = "slice",
              alternatives=("x8", "x16", "x32", "x64")) -> list[dict]:
    """One row per (model, dataset, method) of ``scfg``; see the module docstring.

    ``memory``: ``"slice"`` (2- and 4-layer compiles, extrapolated: :mod:`jaxmem.step_memory`),
    ``"full"`` (the whole model compiled) or ``"none"`` (no memory column)."""
    from jaxmem.step_memory import measure, mesh_devices
    from jaxmem.study.plan import StudyPlan

    if not 0 < utilization <= 1:  # a fraction of the peak; 0 would divide by zero below
        raise ValueError(f"--utilization must be a fraction of the peak in (0, 1], e.g. 0.4; "
                         f"got {utilization}.")
    dev = DEVICES[device]
    n_dev = mesh_devices(layout)
    cfgs = {m: model_config_for(m) for m in scfg.models}
    plan = StudyPlan(scfg, "/nonexistent/jaxmem-plan",
                     n_params={m: 1 for m in scfg.models}, flops=1.0)
    tb, batch = scfg.train.block_size, scfg.train.batch_size * scfg.train.grad_accum
    ab = scfg.audit.block_size or tb
    dtype = scfg.train.dtype
    mem = {}
    if memory != "none":
        jobs = [dict(cfg=cfgs[m], method=meth, batch=scfg.train.batch_size, seq_len=tb,
                     layout=layout, remat=r, dtype=dtype, slice=memory == "slice")
                for m in scfg.models for meth in scfg.methods for r in remat]
        keys = [(m, meth, r) for m in scfg.models for meth in scfg.methods for r in remat]
        mem = dict(zip(keys, measure(jobs)))
    rate = dev.peak_tflops * 1e12 * utilization * n_dev
    rows = []
    for m in scfg.models:
        cfg = cfgs[m]
        for d in scfg.datasets:
            s = plan.sizes[d]
            score = plan.passes(False) * forward_flops(cfg, (s["n_members"] + s["n_nonmembers"])
                                                       * ab, ab)
            validate = forward_flops(cfg, s["n_validation"] * tb, tb)
            for meth in scfg.methods:
                steps = math.ceil(s["n_train"] / batch)
                m0 = mem.get((m, meth, remat[0]))
                trainable = m0["trainable"] if m0 else 0
                step = train_flops(cfg, meth, batch, tb, trainable, _n_virtual(meth))
                units = [u for u in plan.units if (u.model, u.dataset, u.method) == (m, d, meth)]
                seeds = len({u.seed for u in units})
                run = (scfg.train.epochs * (steps * step + validate)
                       + len(units) / max(seeds, 1) * score)
                row = {"model": m, "dataset": d, "method": meth, "seeds": seeds,
                       "cells": len(units), "tokens / epoch": s["n_train"] * tb,
                       "steps / epoch": steps, "TFLOPs / step": round(step / 1e12, 2)}
                for r in remat:
                    x = mem.get((m, meth, r))
                    if x:
                        row[f"GiB / device, remat {r}"] = round(x["total"] / 2 ** 30, 2)
                row["fits"] = _fits_text(mem, m, meth, remat, dev)
                row["hours / run"] = round(run / rate / 3600, 2)
                row["hours"] = round(seeds * run / rate / 3600, 2)
                rows.append(row)
    return rows


def _fits_text(mem: dict, model, method, remat, dev) -> str:
    ok = [r for r in remat if (model, method, r) in mem
          and fits(mem[(model, method, r)]["total"], dev)]
    if not any((model, method, r) in mem for r in remat):
        return "not measured"
    if not ok:
        return "NO: try a larger fsdp mesh (--mesh xN)"
    return "yes" if remat[0] in ok else f"only with --remat {ok[0]}"


def plan_lines(scfg, rows: list[dict], device: str, layout: str, utilization: float,
               memory: str) -> list[str]:
    """The header lines ``jaxmem plan`` prints above its table."""
    from jaxmem.step_memory import SLICE_DEPTHS, mesh_devices

    dev = DEVICES[device]
    n = mesh_devices(layout)
    total = sum(r["hours"] for r in rows)
    how = {"slice": f"compile-only pass of {SLICE_DEPTHS[0]}- and {SLICE_DEPTHS[1]}-layer "
                    "copies, extrapolated per layer",
           "full": "compile-only pass of the whole model", "none": "not measured"}[memory]
    return [
        f"plan of study {scfg.name!r} on {n} x {dev.name} (mesh {layout}; dense bf16 peak "
        f"{dev.peak_tflops:.0f} TFLOP/s, {dev.memory_gib:.0f} GiB per device)",
        f"assumption: {utilization:.0%} of the bf16 peak (model FLOPs utilization); replace it "
        "with a measured one once a device run exists",
        f"memory per device: {how}, on forced CPU devices (params, gradients and Adam state "
        f"exact; temporaries are the CPU compiler's, an approximation); fits = at most "
        f"{HEADROOM:.0%} of the device's memory",
        f"batch {scfg.train.batch_size} x {scfg.train.grad_accum} accumulated x "
        f"{scfg.train.block_size} tokens, {scfg.train.epochs} epochs, {scfg.train.dtype} compute",
        f"hours: training + validation + the attacks' scoring passes; total {total:,.1f} hours "
        f"({total * n:,.1f} device-hours)"]


__all__ = ["DEVICES", "Device", "HEADROOM", "KNOWN_CONFIGS", "UTILIZATION", "fits",
           "forward_flops", "model_config_for", "plan_lines", "plan_rows", "train_flops"]
