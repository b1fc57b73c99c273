"""Importing PEFT adapters: ``PeftModel.save_pretrained``'s directory onto jaxmem params.

The format (tensor names, shapes, config fields) is described in :mod:`jaxmem.tuning.peft_io`,
which writes it; this module reads it back, refusing with a message naming the mismatch any
adapter made for another architecture or model size, or using an option jaxmem does not run.

Example:
    >>> from jaxmem import tiny_model
    >>> from jaxmem.tuning import init_method, method_config
    >>> from jaxmem.tuning.peft_io import export_adapter
    >>> base, cfg, tok = tiny_model()
    >>> tuned, _ = init_method(method_config("ia3"), base, cfg)  # stands in for a trained IA3
    >>> _ = export_adapter(tuned, cfg, "ia3", "out/adapter")     # PEFT's files
    >>> params, labels, mcfg = import_adapter(base, cfg, "out/adapter")
    >>> mcfg.name, mcfg.feedforward
    ('ia3', ('mlp.down_proj',))
    >>> small, small_cfg, _ = tiny_model(n_layers=1)
    >>> import_adapter(small, small_cfg, "out/adapter")
    Traceback (most recent call last):
    ValueError: Adapter tensor '...layers.1.mlp.down_proj.ia3_l' is for layer 1, but the model has 1 layers; it was made for a different model.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
from flax import traverse_util

from jaxmem.models.adapters import (IA3_IN, IA3_OUT, LORA_A, LORA_B, LORA_SCALE, PREFIX,
                                    SOFT_PROMPT, Adapters)
from jaxmem.models.config import ModelConfig
from jaxmem.tuning import ia3, lora, prompts
from jaxmem.tuning.partition import with_added
from jaxmem.tuning.peft_io import (CONFIG_NAME, LAYER_PATH, PEFT_PREFIX, PEFT_TYPES, WEIGHTS_NAME,
                                   module_key, pattern_value)


def _read_adapter(adapter_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    if not adapter_dir.is_dir():
        raise FileNotFoundError(f"No such adapter directory: {adapter_dir}")
    cfg_file, weights = adapter_dir / CONFIG_NAME, adapter_dir / WEIGHTS_NAME
    if not cfg_file.exists():
        subdirs = sorted(p.name for p in adapter_dir.iterdir() if (p / CONFIG_NAME).exists())
        hint = (f" It has adapters in subdirectories {subdirs} (PEFT saves non-default adapter "
                "names there); pass one of those." if subdirs else "")
        raise FileNotFoundError(f"{adapter_dir} has no {CONFIG_NAME}; is it a PEFT adapter "
                                f"directory (written by save_pretrained)?{hint}")
    if not weights.exists():
        if (adapter_dir / "adapter_model.bin").exists():
            raise FileNotFoundError(
                f"{adapter_dir} has adapter_model.bin but no {WEIGHTS_NAME}; jaxmem reads "
                "safetensors only. Re-save with save_pretrained(..., safe_serialization=True).")
        found = sorted(p.name for p in adapter_dir.iterdir())
        raise FileNotFoundError(f"{adapter_dir} has no {WEIGHTS_NAME} (found {found}).")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file} is not valid JSON: {e}") from None
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(weights), framework="numpy") as f:
        for k in f.keys():
            try:
                tensors[k] = np.asarray(f.get_tensor(k), dtype=np.float32)
            except (TypeError, ValueError):  # bfloat16, which numpy lacks: read through JAX
                with safe_open(str(weights), framework="flax") as g:
                    tensors[k] = np.asarray(g.get_tensor(k), dtype=np.float32)
    return config, tensors


def _other_arch_hint(key: str, cfg: ModelConfig) -> str:
    for arch, path in LAYER_PATH.items():
        if arch != cfg.arch and key.startswith(PEFT_PREFIX + path + "."):
            return (f" The adapter was made for a {arch}-architecture model ({key!r}), but this "
                    f"model is {cfg.arch}.")
    return ""


def _layer_tensors(tensors: dict, cfg: ModelConfig, suffix: str) -> dict:
    """{(module name, layer): tensor} for keys ``base_model.model.<layers>.<i>.<name>.<suffix>``;
    raises on any key that is not one of those or names a module this model lacks."""
    pattern = re.compile(rf"^{re.escape(PEFT_PREFIX + LAYER_PATH[cfg.arch])}\.(\d+)\.(.+)\."
                         rf"{re.escape(suffix)}$")
    out = {}
    for key, value in tensors.items():
        m = pattern.match(key)
        if not m:
            raise ValueError(f"Unexpected tensor {key!r} in the adapter; jaxmem reads only "
                             f"'{PEFT_PREFIX}{LAYER_PATH[cfg.arch]}.<i>.<module>.{suffix}' tensors "
                             f"for this {cfg.arch} model (no modules_to_save, biases or "
                             f"embeddings).{_other_arch_hint(key, cfg)}")
        i = int(m.group(1))
        if i >= cfg.n_layers:
            raise ValueError(f"Adapter tensor {key!r} is for layer {i}, but the model has "
                             f"{cfg.n_layers} layers; it was made for a different model.")
        out[(m.group(2), i)] = value
    return out


def _check_module(name: str, names: dict, cfg: ModelConfig, per_layer: set) -> None:
    if name not in names:
        raise ValueError(f"The adapter modifies {name!r}, which a layer of this {cfg.arch} model "
                         f"does not have (its linear layers: {sorted(names)}).")
    missing = sorted(set(range(cfg.n_layers)) - per_layer)
    if missing:
        raise ValueError(f"The adapter modifies {name!r} in only some layers (missing {missing}); "
                         "jaxmem applies an adapter to a module in every layer.")


def _import_lora(params, cfg, config, tensors):
    if config.get("use_dora"):
        raise ValueError("DoRA adapters (use_dora=true) are not supported; jaxmem reads plain "
                         "LoRA.")
    if config.get("lora_bias"):
        raise ValueError("LoRA adapters with a trainable bias (lora_bias=true) are not supported.")
    a_keys = {k: v for k, v in tensors.items() if k.endswith(".lora_A.weight")}
    b_keys = {k: v for k, v in tensors.items() if k not in a_keys}
    A = _layer_tensors(a_keys, cfg, "lora_A.weight")
    B = _layer_tensors(b_keys, cfg, "lora_B.weight")
    if set(A) != set(B):
        odd = sorted(set(A) ^ set(B))[:3]
        raise ValueError(f"The adapter's lora_A and lora_B tensors do not pair up (e.g. {odd}).")
    if not A:
        raise ValueError("The LoRA adapter has no lora_A / lora_B tensors.")
    names = lora.module_names(params, cfg)
    r_default, alpha_default = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora", False))
    added = {}
    modules = sorted({name for name, _ in A})
    for name in modules:
        _check_module(name, names, cfg, {i for n, i in A if n == name})
        section, mod = names[name]
        _, din, dout = np.shape(params["layers"][section][mod]["kernel"])
        a_list, b_list, scales = [], [], []
        for i in range(cfg.n_layers):
            a, b = A[(name, i)], B[(name, i)]
            key = module_key(cfg, i, name)
            r = a.shape[0]
            if a.ndim != 2 or a.shape[1] != din or b.shape != (dout, r):
                raise ValueError(
                    f"Adapter tensors for {key} have shapes lora_A {list(a.shape)}, lora_B "
                    f"{list(b.shape)}, but this model's {name} needs [r, {din}] and [{dout}, r]; "
                    "the adapter was made for a model of another size.")
            r_cfg = int(pattern_value(rank_pattern, key, r_default))
            if r_cfg != r:
                raise ValueError(f"Adapter config says rank {r_cfg} for {key}, but its tensors "
                                 f"have rank {r}.")
            if a_list and r != a_list[0].shape[1]:
                raise ValueError(f"The adapter's rank for {name} differs between layers; jaxmem "
                                 "needs one rank per module.")
            alpha = float(pattern_value(alpha_pattern, key, alpha_default))
            a_list.append(a.T)
            b_list.append(b.T)
            scales.append(alpha / (math.sqrt(r) if rslora else r))
        added[("layers", section, mod, LORA_A)] = np.stack(a_list)
        added[("layers", section, mod, LORA_B)] = np.stack(b_list)
        added[("layers", section, mod, LORA_SCALE)] = np.asarray(scales, np.float32)
    mcfg = lora.LoraConfig(r=r_default, alpha=alpha_default,
                           dropout=float(config.get("lora_dropout", 0.0) or 0.0),
                           use_rslora=rslora, target=tuple(modules))
    return (*with_added(params, traverse_util.unflatten_dict(added)), mcfg)


def _import_ia3(params, cfg, config, tensors):
    vecs = _layer_tensors(tensors, cfg, "ia3_l")
    if not vecs:
        raise ValueError("The IA3 adapter has no ia3_l tensors.")
    names = lora.module_names(params, cfg)
    added = {}
    modules = sorted({name for name, _ in vecs})
    feedforward = []
    for name in modules:
        _check_module(name, names, cfg, {i for n, i in vecs if n == name})
        section, mod = names[name]
        _, din, dout = np.shape(params["layers"][section][mod]["kernel"])
        rows = []
        for i in range(cfg.n_layers):
            v = vecs[(name, i)]
            if v.shape == (1, din):
                ff = True
            elif v.shape == (dout, 1):
                ff = False
            else:
                raise ValueError(f"Adapter tensor for {module_key(cfg, i, name)}.ia3_l has shape "
                                 f"{list(v.shape)}, but this model's {name} needs [{dout}, 1] "
                                 f"(output scaling) or [1, {din}] (feed-forward); the adapter "
                                 "was made for a model of another size.")
            if rows and ff != rows[0][0]:
                raise ValueError(f"The IA3 adapter treats {name} as feed-forward in some layers "
                                 "only.")
            rows.append((ff, v.reshape(-1)))
        ff = rows[0][0]
        added[("layers", section, mod, IA3_IN if ff else IA3_OUT)] = np.stack([v for _, v in rows])
        if ff:
            feedforward.append(name)
    mcfg = ia3.IA3Config(target=tuple(modules), feedforward=tuple(feedforward) or None)
    return (*with_added(params, traverse_util.unflatten_dict(added)), mcfg)


def _prompt_tensor(config, tensors, cfg, width, heads, what):
    if set(tensors) != {"prompt_embeddings"}:
        raise ValueError(f"A {config['peft_type']} adapter should hold only 'prompt_embeddings'; "
                         f"found {sorted(tensors)[:5]}.")
    if (config.get("num_transformer_submodules") or 1) != 1:
        raise ValueError("The adapter has num_transformer_submodules="
                         f"{config['num_transformer_submodules']} (an encoder-decoder adapter); "
                         "jaxmem runs decoder-only models.")
    emb = tensors["prompt_embeddings"]
    n = config.get("num_virtual_tokens") or emb.shape[0]
    expected = {"num_layers": cfg.n_layers, "token_dim": width, "num_attention_heads": heads}
    for field, ours in expected.items():
        theirs = config.get(field)
        if theirs is not None and theirs != ours:
            raise ValueError(f"The adapter was made for a model with {field}={theirs}, but this "
                             f"{cfg.arch} model has {field}={ours} ({what}); it does not fit.")
    size = width * (2 * cfg.n_layers if config["peft_type"] == "PREFIX_TUNING" else 1)
    if emb.shape != (n, size):
        raise ValueError(f"prompt_embeddings has shape {list(emb.shape)}, but this model needs "
                         f"[{n}, {size}] ({what}); the adapter was made for another model.")
    if n >= cfg.max_positions:
        raise ValueError(f"{n} virtual tokens leave no room in the model's context of "
                         f"{cfg.max_positions} positions.")
    return emb, n


def _import_prompt_learning(params, cfg, config, tensors):
    peft_type = config["peft_type"]
    if peft_type == "PREFIX_TUNING":
        width = cfg.n_kv_heads * cfg.head_dim
        emb, n = _prompt_tensor(config, tensors, cfg, width, cfg.n_kv_heads,
                                "prefix width = KV heads x head dim")
        key, sub = PREFIX, {"embedding": emb}
        mcfg = prompts.PrefixConfig(num_virtual_tokens=n,
                                    prefix_projection=bool(config.get("prefix_projection")),
                                    encoder_hidden_size=config.get("encoder_hidden_size"))
    else:
        emb, n = _prompt_tensor(config, tensors, cfg, cfg.d_model, cfg.n_heads, "hidden size")
        key, sub = SOFT_PROMPT, {"embedding": emb}
        if peft_type == "PROMPT_TUNING":
            init = str(config.get("prompt_tuning_init") or "RANDOM").lower()
            mcfg = prompts.PromptConfig(num_virtual_tokens=n, init=init,
                                        init_text=config.get("prompt_tuning_init_text"))
        else:
            mcfg = prompts.PTuningConfig(
                num_virtual_tokens=n,
                encoder=str(config.get("encoder_reparameterization_type") or "MLP").lower(),
                encoder_hidden_size=config.get("encoder_hidden_size"),
                encoder_num_layers=int(config.get("encoder_num_layers") or 2))
    return (*with_added(params, {key: sub}), mcfg)


def _check_base(params: dict) -> None:
    found = Adapters.of(params)
    if found.prefix or found.soft_prompt:
        raise ValueError(f"The params already carry a prompt adapter ('{PREFIX}' / "
                         f"'{SOFT_PROMPT}'); pass the base model's params.")
    if found.lora or found.ia3:
        raise ValueError("The params already carry LoRA or IA3 leaves; pass the base "
                         "model's params.")


def import_adapter(params: dict, cfg: ModelConfig, adapter_dir: str | os.PathLike):
    """Reads a PEFT adapter directory (as written by ``save_pretrained``) onto base params.

    Args:
      params: the base model's params (no adapter yet), e.g. from ``load_model``.
      cfg: the base model's architecture.
      adapter_dir: a directory with ``adapter_config.json`` and ``adapter_model.safetensors``.

    Returns:
      ``(params, labels, mcfg)``: params with the adapter's subtrees / leaves added, a label tree
      marking the adapter's weights trainable (as the method's ``init`` does), and the method
      config read from ``adapter_config.json``. LoRA targets are the adapted module names; per-
      module ranks and ``alpha_pattern`` scales are kept in the params. For P-tuning and
      projected prefix tuning the file holds the computed prompt only, so the params hold that
      prompt with no encoder (the outputs are the same).

    Raises:
      FileNotFoundError: the directory or one of its files is missing.
      ValueError: an unsupported ``peft_type`` or option (DoRA, LoRA bias, modules_to_save, some
        layers only), or an adapter made for another architecture or model size (the message
        names the mismatch).
    """
    adapter_dir = Path(adapter_dir)
    config, tensors = _read_adapter(adapter_dir)
    peft_type = str(config.get("peft_type", "")).upper()
    supported = {v: k for k, v in PEFT_TYPES.items()}
    if peft_type not in supported:
        raise ValueError(f"{adapter_dir}: PEFT adapter type {config.get('peft_type')!r} is not "
                         f"supported; jaxmem reads {', '.join(supported)}.")
    _check_base(params)
    config = dict(config, peft_type=peft_type)
    if peft_type == "LORA":
        return _import_lora(params, cfg, config, tensors)
    if peft_type == "IA3":
        return _import_ia3(params, cfg, config, tensors)
    return _import_prompt_learning(params, cfg, config, tensors)


__all__ = ["import_adapter"]
