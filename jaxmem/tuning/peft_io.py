"""Adapters in PEFT's on-disk format: export jaxmem adapters, import PEFT's.

A PEFT adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors``; this
module writes and reads exactly what ``PeftModel.save_pretrained`` writes and
``PeftModel.from_pretrained`` reads, for a causal LM (``task_type="CAUSAL_LM"``):

* LoRA: per layer and targeted module ``base_model.model.<module>.lora_A.weight`` [r, in] and
  ``...lora_B.weight`` [out, r] (torch ``Linear`` layout, also for GPT-2's ``Conv1D`` layers);
  ``<module>`` is e.g. ``model.layers.0.self_attn.q_proj`` (Llama) or
  ``transformer.h.0.attn.c_attn`` (GPT-2). Our ``lora_a`` [in, r] and ``lora_b`` [r, out] are
  the transposes. Per-module ranks or scales that differ from the method config are written as
  PEFT's ``rank_pattern`` / ``alpha_pattern``.
* IA3: ``base_model.model.<module>.ia3_l``, [out, 1] for output scaling and [1, in] for
  feed-forward (input-scaling) modules.
* Prompt learning (prefix tuning, prompt tuning, P-tuning): a single tensor
  ``prompt_embeddings``. PEFT saves the *computed* prompt, not the encoder that produced it:
  prompt tuning [n, D] (the embedding itself), P-tuning [n, D] (the MLP / LSTM encoder's
  output), prefix tuning [n, L*2*KV*Dh] (the flat keys/values, after the optional projection).
  ``from_pretrained`` loads it in inference mode, where that tensor *is* the prompt. So exporting
  a P-tuning or projected-prefix adapter is exact for the model's outputs but drops the encoder,
  and importing one gives params holding the computed prompt directly (no encoder).

Example:
    >>> from jaxmem import tiny_model
    >>> from jaxmem.tuning import init_method
    >>> from jaxmem.tuning.peft_import import import_adapter
    >>> base, cfg, tok = tiny_model()
    >>> params, _ = init_method(method_config("lora:r=8,target=attention"), base, cfg)
    >>> out = export_adapter(params, cfg, "lora:r=8,target=attention", "out/adapter",
    ...                      base_model_name_or_path="my-org/tiny-llama")
    >>> sorted(p.name for p in out.iterdir())
    ['adapter_config.json', 'adapter_model.safetensors']
    >>> again, labels, mcfg = import_adapter(base, cfg, "out/adapter")  # peft_import
    >>> mcfg.r, mcfg.target
    (8, ('self_attn.k_proj', 'self_attn.o_proj', 'self_attn.q_proj', 'self_attn.v_proj'))
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np

from jaxmem.models import adapters
from jaxmem.models.adapters import IA3_IN, IA3_OUT, LORA_A, LORA_B, LORA_SCALE, PREFIX, SOFT_PROMPT
from jaxmem.models.config import ModelConfig
from jaxmem.tuning import lora, method_config

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_TYPES = {"lora": "LORA", "ia3": "IA3", "prefix": "PREFIX_TUNING",
              "prompt": "PROMPT_TUNING", "ptuning": "P_TUNING"}
PEFT_PREFIX = "base_model.model."  # PEFT's key prefix for tuner layers inside the wrapped model
LAYER_PATH = {"gpt2": "transformer.h", "llama": "model.layers"}


# ----------------------------------------------------------------------------- helpers

def module_key(cfg: ModelConfig, layer: int, name: str) -> str:
    """PEFT's name of a block's linear layer, e.g. ``model.layers.0.self_attn.q_proj``."""
    return f"{LAYER_PATH[cfg.arch]}.{layer}.{name}"


def _number(x: float):
    """An int when integral (as PEFT configs usually hold ``lora_alpha``), else a float."""
    x = float(x)
    return int(x) if x.is_integer() else x


def _adapted_modules(params: dict, cfg: ModelConfig, leaves: tuple) -> list[tuple[str, dict]]:
    """(name, layer dict) of the block's linear layers that carry any of ``leaves``, by name."""
    out = []
    for name, (section, key) in sorted(lora.module_names(params, cfg).items()):
        layer = params["layers"][section][key]
        if any(leaf in layer for leaf in leaves):
            out.append((name, layer))
    return out


def pattern_value(patterns: dict, key: str, default):
    """PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup (peft.utils.other.get_pattern_key)."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", key):
            return value
    return default


def _common_config(peft_type: str, base_model_name_or_path: str) -> dict:
    return {"peft_type": peft_type, "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model_name_or_path or None, "revision": None,
            "inference_mode": True}


def _prompt_learning_config(peft_type: str, base: str, n: int, token_dim: int, heads: int,
                            cfg: ModelConfig) -> dict:
    return {**_common_config(peft_type, base), "num_virtual_tokens": n, "token_dim": token_dim,
            "num_transformer_submodules": 1, "num_attention_heads": heads,
            "num_layers": cfg.n_layers, "modules_to_save": None}


# ----------------------------------------------------------------------------- export

def _export_lora(params, cfg, mcfg, base):
    found = _adapted_modules(params, cfg, (LORA_A,))
    if not found:
        raise ValueError("The params carry no LoRA weights (lora_a / lora_b); initialize or "
                         "train a LoRA adapter first.")
    tensors, rank_pattern, alpha_pattern = {}, {}, {}
    for name, layer in found:
        a, b = np.asarray(layer[LORA_A], np.float32), np.asarray(layer[LORA_B], np.float32)
        scale = np.asarray(layer[LORA_SCALE], np.float64)
        r = a.shape[-1]
        if not np.allclose(scale, scale[0], rtol=1e-6, atol=0):
            raise ValueError(f"LoRA on {name} has different scales per layer ({scale.tolist()}); "
                             "PEFT's config cannot express that.")
        alpha = float(scale[0]) * (math.sqrt(r) if mcfg.use_rslora else r)
        if r != mcfg.r:
            rank_pattern[name] = r
        if not math.isclose(alpha, mcfg.alpha, rel_tol=1e-5):
            alpha_pattern[name] = _number(round(alpha, 6))
        for i in range(cfg.n_layers):
            key = PEFT_PREFIX + module_key(cfg, i, name)
            tensors[f"{key}.lora_A.weight"] = a[i].T
            tensors[f"{key}.lora_B.weight"] = b[i].T
    config = {
        **_common_config("LORA", base), "r": mcfg.r, "lora_alpha": _number(mcfg.alpha),
        "lora_dropout": mcfg.dropout, "use_rslora": mcfg.use_rslora,
        "target_modules": [name for name, _ in found], "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern, "fan_in_fan_out": cfg.arch == "gpt2", "bias": "none",
        "lora_bias": False, "use_dora": False, "init_lora_weights": True,
        "layers_to_transform": None, "layers_pattern": None, "modules_to_save": None,
        "exclude_modules": None,
    }
    return config, tensors


def _export_ia3(params, cfg, mcfg, base):
    found = _adapted_modules(params, cfg, (IA3_IN, IA3_OUT))
    if not found:
        raise ValueError("The params carry no IA3 vectors (ia3_in / ia3_out); initialize or "
                         "train an IA3 adapter first.")
    tensors, feedforward = {}, []
    for name, layer in found:
        if IA3_IN in layer and IA3_OUT in layer:
            raise ValueError(f"{name} scales both its input and its output; PEFT's IA3 does one.")
        ff = IA3_IN in layer
        v = np.asarray(layer[IA3_IN if ff else IA3_OUT], np.float32)
        if ff:
            feedforward.append(name)
        for i in range(cfg.n_layers):
            tensors[f"{PEFT_PREFIX}{module_key(cfg, i, name)}.ia3_l"] = (
                v[i][None, :] if ff else v[i][:, None])
    config = {**_common_config("IA3", base), "target_modules": [name for name, _ in found],
              "feedforward_modules": feedforward, "fan_in_fan_out": cfg.arch == "gpt2",
              "init_ia3_weights": True, "modules_to_save": None, "exclude_modules": None}
    return config, tensors


def _subtree(params, key, method):
    if key not in params:
        raise ValueError(f"The params carry no {key!r} subtree, so there is no {method} adapter "
                         "to export; initialize or train one first.")
    return params[key]


def _export_prefix(params, cfg, mcfg, base):
    p = _subtree(params, PREFIX, "prefix-tuning")
    prefix_kv = jax.jit(adapters.prefix_kv, static_argnums=(1, 2, 3))  # one compile, not many
    kv = np.asarray(prefix_kv(p, cfg.n_layers, cfg.n_kv_heads, cfg.head_dim), np.float32)
    n = kv.shape[2]
    flat = adapters.prefix_rows(kv)  # inverse of prefix_kv: [n, L*2*KV*Dh]
    token_dim = cfg.n_kv_heads * cfg.head_dim
    hidden = (p["transform"]["0"]["kernel"].shape[1] if "transform" in p
              else mcfg.encoder_hidden_size or token_dim)
    config = {**_prompt_learning_config("PREFIX_TUNING", base, n, token_dim, cfg.n_kv_heads, cfg),
              "encoder_hidden_size": int(hidden),
              "prefix_projection": bool(mcfg.prefix_projection or "transform" in p),
              "init_weights": None}
    return config, {"prompt_embeddings": flat}


def _export_soft_prompt(params, cfg, mcfg, base):
    p = _subtree(params, SOFT_PROMPT, "soft-prompt")
    emb = np.asarray(jax.jit(adapters.soft_prompt, static_argnums=1)(p, cfg.d_model), np.float32)
    n = emb.shape[0]
    if mcfg.name == "prompt":
        init = {"random": "RANDOM", "sample_vocab": "SAMPLE_VOCAB", "text": "TEXT"}.get(
            mcfg.init, "RANDOM")
        if init == "TEXT" and not (base and mcfg.init_text):
            init = "RANDOM"  # PEFT's config requires a tokenizer path and text for TEXT
        config = {**_prompt_learning_config("PROMPT_TUNING", base, n, cfg.d_model, cfg.n_heads,
                                            cfg),
                  "prompt_tuning_init": init,
                  "prompt_tuning_init_text": mcfg.init_text if init == "TEXT" else None,
                  "tokenizer_name_or_path": base if init == "TEXT" else None,
                  "tokenizer_kwargs": None}
    else:
        if "lstm" in p:
            hidden = p["lstm"]["0"]["fwd"]["w_hh"].shape[0]
        elif "mlp" in p:
            hidden = p["mlp"]["0"]["kernel"].shape[1]
        else:
            hidden = mcfg.encoder_hidden_size or cfg.d_model
        config = {**_prompt_learning_config("P_TUNING", base, n, cfg.d_model, cfg.n_heads, cfg),
                  "encoder_reparameterization_type": mcfg.encoder.upper(),
                  "encoder_hidden_size": int(hidden),
                  "encoder_num_layers": len(p["lstm"]) if "lstm" in p else mcfg.encoder_num_layers,
                  "encoder_dropout": 0.0}
    return config, {"prompt_embeddings": emb}


_EXPORTERS = {"lora": _export_lora, "ia3": _export_ia3, "prefix": _export_prefix,
              "prompt": _export_soft_prompt, "ptuning": _export_soft_prompt}


def _write_adapter(out_dir: Path, config: dict, tensors: dict) -> None:
    """Writes both files into a fresh temporary directory, then moves them into place with
    ``os.replace``: a new ``out_dir`` appears whole; in an existing one each file is replaced
    atomically (other files there are left alone)."""
    from safetensors.numpy import save_file

    out_dir = out_dir.absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a directory.")
    exists = out_dir.exists()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-",
                                dir=out_dir if exists else out_dir.parent))
    try:
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in sorted(tensors.items())},
                  str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a new out_dir should not be
        if exists:  # weights first, so a config never describes weights not yet in place
            for name in (WEIGHTS_NAME, CONFIG_NAME):
                os.replace(tmp / name, out_dir / name)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_adapter(params: dict, cfg: ModelConfig, mcfg, out_dir: str | os.PathLike,
                   base_model_name_or_path: str = "") -> Path:
    """Writes a tuned model's adapter as a PEFT adapter directory.

    The result loads with ``PeftModel.from_pretrained(base_model, out_dir)`` and gives the same
    outputs as jaxmem with ``params``; the tensor names and shapes are exactly those of
    ``save_pretrained`` for the equivalent PEFT model. P-tuning and projected prefix tuning are
    saved, as PEFT saves them, as their computed prompt (see the module docstring).

    Args:
      params: base params plus the method's subtrees or leaves (as trained).
      cfg: the model's architecture.
      mcfg: the method config (or a spec such as ``"lora:r=16"``); one of lora, ia3, prefix,
        prompt, ptuning. Its hyper-parameters go to ``adapter_config.json``; shapes, ranks and
        LoRA scales are taken from ``params``.
      out_dir: the adapter directory (created if missing; files there are replaced atomically).
      base_model_name_or_path: recorded in the config as PEFT does (hub id or path).

    Returns:
      The adapter directory.

    Raises:
      ValueError: the method has no PEFT adapter format (full, head) or params lack its weights.
    """
    mcfg = method_config(mcfg)
    if mcfg.name not in _EXPORTERS:
        raise ValueError(f"Method {mcfg.name!r} changes base weights and has no PEFT adapter "
                         f"format; PEFT adapters exist for {', '.join(_EXPORTERS)}. Save the full "
                         "params instead.")
    config, tensors = _EXPORTERS[mcfg.name](params, cfg, mcfg, base_model_name_or_path)
    out_dir = Path(out_dir)
    _write_adapter(out_dir, config, tensors)
    return out_dir


__all__ = ["CONFIG_NAME", "LAYER_PATH", "PEFT_PREFIX", "PEFT_TYPES", "WEIGHTS_NAME",
           "export_adapter", "module_key", "pattern_value"]
