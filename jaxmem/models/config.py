"""One configuration dataclass for every decoder jaxmem runs (GPT-2 and Llama families)."""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from typing import Any, Optional

SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "mistral")
# How attention is computed (see transformer.attention); an execution choice, not architecture.
ATTENTION_IMPLS = ("einsum", "xla", "cudnn", "auto")
# Rematerialization of each block in the backward pass (see transformer.REMAT_POLICIES):
# "none" keeps every activation, "full" recomputes the block, "dots" keeps matmul outputs.
REMAT_MODES = ("none", "full", "dots")
# Fields that choose how the model runs, not what it computes: left out of to_dict().
EXECUTION_FIELDS = ("attention_impl", "remat", "scan_unroll")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters of a causal decoder.

    ``arch`` selects the block flavour: ``"gpt2"`` (learned positions, LayerNorm, GELU, fused
    ``c_attn``, biases) or ``"llama"`` (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases).

    ``attention_impl`` is an execution choice, not architecture (see
    :func:`jaxmem.models.transformer.attention`): ``"einsum"`` (default, jaxmem's own
    grouped-query attention), ``"xla"`` (``jax.nn.dot_product_attention`` with
    ``implementation="xla"``), ``"cudnn"`` (cuDNN flash attention: CUDA only, bfloat16/float16
    compute, no prefix tuning, right padding only) or ``"auto"`` (cuDNN where the program runs
    on CUDA and cuDNN can express the call, ``"xla"`` elsewhere, chosen per platform when the
    step is lowered). It is left out of :meth:`to_dict`, so a run
    resumed with another kernel is the same run. Select it on a loaded config with
    ``dataclasses.replace(cfg, attention_impl="cudnn")``. ``remat`` ("none", "full" or "dots")
    trades compute for activation memory in training; it is an execution choice too.

    Example:
        >>> cfg = ModelConfig.from_hf({"model_type": "gpt2", "n_embd": 64, "n_layer": 2,
        ...                            "n_head": 4, "vocab_size": 100, "n_positions": 32})
        >>> cfg.head_dim
        16
    """

    arch: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    max_positions: int
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    head_dim_override: Optional[int] = None
    rope_theta: float = 10000.0
    # Llama-3 rope scaling as ((name, value), ...) pairs from HF's {"rope_type": "llama3", ...}.
    rope_scaling: Optional[tuple] = None
    attention_bias: bool = False
    mlp_bias: bool = False
    activation: str = "silu"
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    attention_impl: str = "einsum"
    remat: str = "none"
    scan_unroll: int = 1

    def __post_init__(self):
        if not (isinstance(self.scan_unroll, int) and self.scan_unroll >= 1):
            raise ValueError(f"scan_unroll must be a positive int (layers per scan iteration); "
                             f"got {self.scan_unroll!r}.")
        if self.remat not in REMAT_MODES:
            raise ValueError(f"remat must be one of {', '.join(map(repr, REMAT_MODES))}; got "
                             f"{self.remat!r}.")
        if self.attention_impl not in ATTENTION_IMPLS:
            allowed = ", ".join(map(repr, ATTENTION_IMPLS))
            raise ValueError(f"attention_impl must be one of {allowed}; got "
                             f"{self.attention_impl!r}.")

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.d_model // self.n_heads

    def to_dict(self) -> dict:
        """The architecture as a JSON-able dict (execution choices such as ``attention_impl``
        are left out: run records compare these dicts)."""
        d = dataclasses.asdict(self)
        for name in EXECUTION_FIELDS:
            d.pop(name)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of :meth:`to_dict` (JSON turns tuples into lists; this turns them back).
        Execution fields absent from ``d`` take their defaults."""
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        if kw.get("rope_scaling") is not None:
            kw["rope_scaling"] = tuple(tuple(kv) for kv in kw["rope_scaling"])
        return cls(**kw)

    @classmethod
    def from_hf(cls, hf: dict | Any) -> "ModelConfig":
        """Builds a config from a Hugging Face ``config.json`` dict (or a ``PretrainedConfig``)."""
        if not isinstance(hf, dict):
            hf = hf.to_dict()
        model_type = hf.get("model_type")
        if model_type == "gpt2":
            _check_sizes(hf, ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions"),
                         ("n_inner",), d_model="n_embd", heads="n_head")
            d = hf["n_embd"]
            act = hf.get("activation_function", "gelu_new")
            if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
                raise ValueError(f"GPT-2 activation {act!r} is not supported (use gelu_new).")
            return cls(
                arch="gpt2", vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["n_layer"],
                n_heads=hf["n_head"], n_kv_heads=hf["n_head"], d_ff=hf.get("n_inner") or 4 * d,
                max_positions=hf["n_positions"], norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                tie_embeddings=hf.get("tie_word_embeddings", True), attention_bias=True,
                mlp_bias=True, activation="gelu_exact" if act == "gelu" else "gelu_tanh",
                bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"),
            )
        if model_type in ("llama", "mistral"):
            _check_sizes(hf, ("vocab_size", "hidden_size", "num_hidden_layers",
                              "num_attention_heads", "intermediate_size"),
                         ("num_key_value_heads", "max_position_embeddings", "head_dim"),
                         d_model="hidden_size", heads="num_attention_heads",
                         kv_heads="num_key_value_heads")
            if hf.get("hidden_act", "silu") != "silu":
                raise ValueError(f"hidden_act {hf.get('hidden_act')!r} is not supported (silu only).")
            if model_type == "mistral" and hf.get("sliding_window"):
                raise ValueError("Mistral sliding-window attention is not supported.")
            eos = hf.get("eos_token_id")
            rope_scaling = hf.get("rope_scaling") or hf.get("rope_parameters")
            rope_theta = hf.get("rope_theta")
            if isinstance(rope_scaling, dict):
                rope_theta = rope_theta or rope_scaling.get("rope_theta")
                rtype = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
                if rtype == "default":
                    rope_scaling = None
                elif rtype != "llama3":
                    raise ValueError(f"rope_scaling type {rtype!r} is not supported (llama3 only).")
                else:
                    # A tuple keeps the config hashable (it is a static argument of jit).
                    rope_scaling = tuple((k, float(rope_scaling[k])) for k in
                                         ("factor", "low_freq_factor", "high_freq_factor",
                                          "original_max_position_embeddings"))
            return cls(
                arch="llama", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
                n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"],
                n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
                d_ff=hf["intermediate_size"], max_positions=hf.get("max_position_embeddings", 2048),
                norm_eps=hf.get("rms_norm_eps", 1e-6),
                tie_embeddings=hf.get("tie_word_embeddings", False),
                head_dim_override=hf.get("head_dim"), rope_theta=float(rope_theta or 10000.0),
                rope_scaling=rope_scaling,
                attention_bias=hf.get("attention_bias", False),
                mlp_bias=hf.get("mlp_bias", False), activation="silu",
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=eos[0] if isinstance(eos, list) else eos,
            )
        raise ValueError(
            f"Unsupported architecture model_type={model_type!r}; jaxmem runs "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} checkpoints.")

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "ModelConfig":
        try:
            with open(path) as f:
                hf = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON ({e}); it is truncated or corrupt.") from None
        if not isinstance(hf, dict):
            raise ValueError(f"{path} holds a {type(hf).__name__}, not a model config object.")
        try:
            return cls.from_hf(hf)
        except KeyError as e:
            raise ValueError(f"{path} lacks the field {e} that a {hf.get('model_type')} config "
                             "needs; it is incomplete.") from None
        except ValueError as e:  # a bad size or an unsupported setting: name the file
            raise ValueError(f"{path}: {e}") from None


def _check_sizes(hf: dict, required, optional, *, d_model: str, heads: str,
                 kv_heads: str | None = None) -> None:
    """Refuses a Hugging Face config whose sizes cannot describe a model, naming the key: each
    a positive integer (``optional`` ones may be missing or null), the model width a multiple
    of the head count (unless ``head_dim`` is given), the heads a multiple of the KV heads.
    A missing required key is left to the caller (KeyError: "lacks the field").

    Raises:
      ValueError: naming the key, its value and the rule.
    """
    for key in (*required, *optional):
        v = hf.get(key)
        if key not in hf or (v is None and key in optional):
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{key} = {v!r} must be a positive integer; the config is corrupt "
                             "or was edited.")
    if (not hf.get("head_dim") and d_model in hf and heads in hf
            and hf[d_model] % hf[heads]):
        raise ValueError(f"{d_model} = {hf[d_model]} is not a multiple of {heads} = "
                         f"{hf[heads]}; the config is corrupt or was edited.")
    if kv_heads and hf.get(kv_heads) and heads in hf and hf[heads] % hf[kv_heads]:
        raise ValueError(f"{heads} = {hf[heads]} is not a multiple of {kv_heads} = "
                         f"{hf[kv_heads]}; the config is corrupt or was edited.")
