"""What the decoder reads from tuning methods' parameters, in PEFT's layouts.

The methods in :mod:`jaxmem.tuning` add these subtrees to the params; the decoder calls the
functions here where they are present:

* ``params["soft_prompt"]``: prompt tuning ``{"embedding": [n, D]}``; P-tuning adds an encoder,
  ``{"mlp": ...}`` or ``{"lstm": ..., "mlp": ...}``. :func:`soft_prompt` gives the [n, D] virtual
  token embeddings placed before the input embeddings.
* ``params["prefix"]``: prefix tuning ``{"embedding": [n, L*2*KV*Dh]}``, or with PEFT's
  reparameterization ``{"embedding": [n, KV*Dh], "transform": {"0": dense, "2": dense}}``.
  :func:`prefix_kv` gives per-layer keys and values [L, 2, n, KV, Dh].
* LoRA (``lora_a``, ``lora_b``, ``lora_scale``) and IA3 (``ia3_out``, ``ia3_in``) leaves live
  inside the linear layers they modify and are applied by ``transformer.dense``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _dense(p, x):
    return x @ p["kernel"].astype(x.dtype) + p["bias"].astype(x.dtype)


def _lstm_direction(p: dict, x: jax.Array, reverse: bool) -> jax.Array:
    """One direction of a torch.nn.LSTM layer over x [n, in]; torch's gate order (i, f, g, o)."""
    hdim = p["w_hh"].shape[0]
    xw = x @ p["w_ih"] + p["b_ih"] + p["b_hh"]  # input projections for all steps at once

    def step(carry, xt):
        h, c = carry
        g = xt + h @ p["w_hh"]
        i, f, gg, o = jnp.split(g, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((hdim,), x.dtype)
    _, hs = jax.lax.scan(step, (zeros, zeros), xw, reverse=reverse)
    return hs


def soft_prompt(p: dict) -> jax.Array:
    """Virtual token embeddings [n, D]: the raw embedding (prompt tuning) or its encoding
    through P-tuning's MLP (Linear-ReLU-Linear-ReLU-Linear) or bidirectional-LSTM + MLP head."""
    x = p["embedding"]
    if "lstm" in p:
        for layer in p["lstm"]:  # a list of {"fwd": ..., "bwd": ...}, one per LSTM layer
            x = jnp.concatenate([_lstm_direction(layer["fwd"], x, False),
                                 _lstm_direction(layer["bwd"], x, True)], axis=-1)
        return _dense(p["mlp"]["2"], jax.nn.relu(_dense(p["mlp"]["0"], x)))
    if "mlp" in p:
        m = p["mlp"]
        x = jax.nn.relu(_dense(m["0"], x))
        x = jax.nn.relu(_dense(m["2"], x))
        return _dense(m["4"], x)
    return x


def prefix_kv(p: dict, n_layers: int, n_kv_heads: int, head_dim: int) -> jax.Array:
    """Per-layer prefix keys and values [L, 2, n, KV, Dh] from PEFT's flat layout.

    PEFT views the encoder output [n, L*2*KV*Dh] as [n, L*2, KV, Dh]; entry 2l is layer l's
    key, 2l+1 its value. Prefix keys are used as given (never rotated by RoPE).
    """
    x = p["embedding"]
    if "transform" in p:
        x = _dense(p["transform"]["2"], jnp.tanh(_dense(p["transform"]["0"], x)))
    n = x.shape[0]
    return x.reshape(n, n_layers, 2, n_kv_heads, head_dim).transpose(1, 2, 0, 3, 4)
