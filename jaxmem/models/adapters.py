"""What tuning methods add to the decoder: one static description and the modules it asks for.

A tuning method is a set of parameters that the decoder's modules create when asked to:

* LoRA and IA3 live inside the linear layers they modify: :class:`jaxmem.models.transformer.Dense`
  creates ``lora_a`` [in, r], ``lora_b`` [r, out] and ``lora_scale`` (alpha / r), or
  ``ia3_in`` [in] / ``ia3_out`` [out];
* the soft prompt (prompt tuning, P-tuning) and the prefix (prefix tuning) belong to the
  :class:`~jaxmem.models.transformer.Decoder`, built by :class:`SoftPrompt` and :class:`Prefix`
  in PEFT's layouts.

:class:`Adapters` says which of these a model has. It is static (hashable, a module attribute),
and :meth:`Adapters.of` reads it off a params tree, so the params alone decide what runs. The leaf
names below are the only place these names are spelled; a method's label tree is derived from the
paths its parameters add (:func:`jaxmem.tuning.partition.with_added`), never from a list.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

LORA_A, LORA_B, LORA_SCALE = "lora_a", "lora_b", "lora_scale"
IA3_IN, IA3_OUT = "ia3_in", "ia3_out"
PREFIX, SOFT_PROMPT = "prefix", "soft_prompt"
# Leaves a method adds that never train: LoRA's alpha / r, a per-layer constant.
CONSTANTS = frozenset({LORA_SCALE})
# The logical axes of a method's own leaves, (rows, columns) (replicated on a mesh: they are
# tiny, and their gradients are all-reduced every step anyway).
ADAPTER_AXES = ("adapter", "adapter_out")


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """A soft prompt of ``n`` virtual tokens; ``encoder`` None (prompt tuning), "mlp" or "lstm"
    (P-tuning, with ``hidden`` units, default d_model, and ``lstm_layers`` bidirectional layers)."""

    n: int
    encoder: str | None = None
    hidden: int | None = None
    lstm_layers: int = 2


@dataclasses.dataclass(frozen=True)
class PrefixSpec:
    """``n`` prefix keys/values per layer; ``hidden``: the width of PEFT's reparameterization
    MLP (``prefix_projection``), or None for the raw prefix (PEFT's default)."""

    n: int
    hidden: int | None = None


@dataclasses.dataclass(frozen=True)
class Adapters:
    """Which tuning parameters the decoder's modules create.

    Attributes:
      lora: ``((module, rank), ...)`` with module a block path such as ``"attn.q_proj"``.
      lora_init_scale: the value ``lora_scale`` starts at (alpha / r); used by ``init`` only.
      ia3: ``((module, "in" | "out"), ...)``: scale the layer's input (feed-forward) or output.
      prefix: prefix tuning, or None.
      soft_prompt: prompt tuning / P-tuning, or None.
      untied_head: an ``lm_head`` for a model whose head is tied (head-only tuning's copy).

    Example:
        >>> ad = Adapters(lora=(("attn.q_proj", 8), ("attn.v_proj", 8)), lora_init_scale=2.0)
        >>> ad.lora_rank("attn.v_proj"), ad.lora_rank("mlp.up_proj")  # 0: no LoRA there
        (8, 0)
    """

    lora: tuple = ()
    lora_init_scale: float = 1.0
    ia3: tuple = ()
    prefix: PrefixSpec | None = None
    soft_prompt: PromptSpec | None = None
    untied_head: bool = False

    def lora_rank(self, module: str) -> int:
        return dict(self.lora).get(module, 0)

    def ia3_mode(self, module: str) -> str | None:
        return dict(self.ia3).get(module)

    @classmethod
    def of(cls, params: dict) -> "Adapters":
        """The adapters a params tree carries (from its structure and shapes; works on traced
        and abstract trees)."""
        lora, ia3 = [], []
        for section, modules in params.get("layers", {}).items():
            for name, leaves in modules.items():
                if not isinstance(leaves, dict):  # a norm's scale / bias
                    continue
                module = f"{section}.{name}"
                if LORA_A in leaves:
                    lora.append((module, int(leaves[LORA_A].shape[-1])))
                for mode, leaf in (("in", IA3_IN), ("out", IA3_OUT)):
                    if leaf in leaves:
                        ia3.append((module, mode))
        prefix = soft = None
        if PREFIX in params:
            p = params[PREFIX]
            hidden = p["transform"]["0"]["kernel"].shape[-1] if "transform" in p else None
            prefix = PrefixSpec(int(p["embedding"].shape[0]), hidden)
        if SOFT_PROMPT in params:
            p = params[SOFT_PROMPT]
            n = int(p["embedding"].shape[0])
            if "lstm" in p:
                soft = PromptSpec(n, "lstm", int(p["lstm"]["0"]["fwd"]["w_hh"].shape[0]),
                                  len(p["lstm"]))
            elif "mlp" in p:
                soft = PromptSpec(n, "mlp", int(p["mlp"]["0"]["kernel"].shape[-1]))
            else:
                soft = PromptSpec(n)
        return cls(lora=tuple(lora), ia3=tuple(ia3), prefix=prefix, soft_prompt=soft,
                   untied_head="lm_head" in params)


def _replicated(init):
    return lambda ndim: nn.with_logical_partitioning(init, ADAPTER_AXES[:ndim])


def torch_uniform(fan_in: int):
    """torch's default init for Linear and LSTM weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                    bound)


class TorchLinear(nn.Module):
    """torch.nn.Linear as PEFT's encoders use it: ``{"kernel" [in, out], "bias"}``, torch init."""

    features: int

    @nn.compact
    def __call__(self, x):
        init = torch_uniform(x.shape[-1])
        w = self.param("kernel", _replicated(init)(2), (x.shape[-1], self.features))
        b = self.param("bias", _replicated(init)(1), (self.features,))
        return x @ w.astype(x.dtype) + b.astype(x.dtype)


class LSTMDirection(nn.Module):
    """One direction of a torch.nn.LSTM layer over x [n, in]; torch's gate order (i, f, g, o)."""

    hidden: int
    reverse: bool = False

    @nn.compact
    def __call__(self, x):
        h, init = self.hidden, torch_uniform(self.hidden)
        w_ih = self.param("w_ih", _replicated(init)(2), (x.shape[-1], 4 * h))
        w_hh = self.param("w_hh", _replicated(init)(2), (h, 4 * h))
        b_ih = self.param("b_ih", _replicated(init)(1), (4 * h,))
        b_hh = self.param("b_hh", _replicated(init)(1), (4 * h,))
        xw = x @ w_ih + b_ih + b_hh  # input projections for all steps at once

        def step(carry, xt):
            hc, c = carry
            i, f, g, o = jnp.split(xt + hc @ w_hh, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            hc = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (hc, c), hc

        zeros = jnp.zeros((h,), x.dtype)
        return jax.lax.scan(step, (zeros, zeros), xw, reverse=self.reverse)[1]


class BiLSTMLayer(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        return jnp.concatenate([LSTMDirection(self.hidden, name="fwd")(x),
                                LSTMDirection(self.hidden, reverse=True, name="bwd")(x)], -1)


class Sequential(nn.Module):
    """Linear layers with an activation between them, named by their torch.nn.Sequential index
    (0, 2, 4, ...), so the params read like PEFT's state dict."""

    widths: tuple
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[self.activation]
        for i, width in enumerate(self.widths):
            x = TorchLinear(width, name=str(2 * i))(act(x) if i else x)
        return x


class LSTM(nn.Module):
    """Stacked bidirectional LSTM layers (params "0", "1", ... each with "fwd" and "bwd")."""

    hidden: int
    layers: int

    @nn.compact
    def __call__(self, x):
        for i in range(self.layers):
            x = BiLSTMLayer(self.hidden, name=str(i))(x)
        return x


class SoftPrompt(nn.Module):
    """Virtual token embeddings [n, D] (params ``soft_prompt``).

    Prompt tuning (Lester et al., 2021): the raw embedding, N(0, 1) (PEFT's RANDOM). P-tuning
    (Liu et al., 2021): that embedding through a prompt encoder, an MLP
    (Linear-ReLU-Linear-ReLU-Linear) or a bidirectional LSTM with an MLP head.
    """

    spec: PromptSpec
    d_model: int

    @nn.compact
    def __call__(self):
        s, d = self.spec, self.d_model
        h = s.hidden or d
        x = self.param("embedding", _replicated(nn.initializers.normal(1.0))(2), (s.n, d))
        if s.encoder == "mlp":
            return Sequential((h, h, d), name="mlp")(x)
        if s.encoder == "lstm":
            x = LSTM(h, s.lstm_layers, name="lstm")(x)
            return Sequential((2 * h, d), name="mlp")(x)
        if s.encoder is not None:
            raise ValueError(f"Unknown P-tuning encoder {s.encoder!r}; use mlp or lstm.")
        return x


class Prefix(nn.Module):
    """Prefix tuning (Li & Liang, 2021) in PEFT's layout (params ``prefix``): per-layer keys and
    values [L, 2, n, KV, Dh].

    Without reparameterization (PEFT's default) the prefix is one embedding [n, L*2*KV*Dh],
    N(0, 1); with it, an embedding [n, KV*Dh] through Linear -> tanh -> Linear (``transform``).
    PEFT views the result [n, L*2*KV*Dh] as [n, L*2, KV, Dh]: entry 2l is layer l's key, 2l+1
    its value. Prefix keys are used as given (never rotated by RoPE).
    """

    spec: PrefixSpec
    n_layers: int
    n_kv_heads: int
    head_dim: int

    @nn.compact
    def __call__(self):
        s = self.spec
        width = self.n_kv_heads * self.head_dim
        flat = 2 * self.n_layers * width
        init = _replicated(nn.initializers.normal(1.0))(2)
        if s.hidden:
            x = self.param("embedding", init, (s.n, width))
            x = Sequential((s.hidden, flat), activation="tanh", name="transform")(x)
        else:
            x = self.param("embedding", init, (s.n, flat))
        x = x.reshape(s.n, self.n_layers, 2, self.n_kv_heads, self.head_dim)
        return x.transpose(1, 2, 0, 3, 4)


def prefix_rows(kv: jax.Array) -> jax.Array:
    """The inverse of :class:`Prefix`'s view: keys and values [L, 2, n, KV, Dh] -> the
    [n, L*2*KV*Dh] rows its embedding (or its MLP's output) holds."""
    n = kv.shape[2]
    return kv.transpose(2, 0, 1, 3, 4).reshape(n, -1)


def soft_prompt(p: dict, d_model: int) -> jax.Array:
    """The [n, D] virtual token embeddings of a ``soft_prompt`` subtree."""
    spec = Adapters.of({SOFT_PROMPT: p}).soft_prompt
    return SoftPrompt(spec, d_model).apply({"params": p})


def prefix_kv(p: dict, n_layers: int, n_kv_heads: int, head_dim: int) -> jax.Array:
    """The per-layer keys and values [L, 2, n, KV, Dh] of a ``prefix`` subtree."""
    spec = Adapters.of({PREFIX: p}).prefix
    return Prefix(spec, n_layers, n_kv_heads, head_dim).apply({"params": p})
