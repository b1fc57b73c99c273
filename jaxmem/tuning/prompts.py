"""Prompt-based methods in PEFT's conventions: prefix tuning, prompt tuning and P-tuning.

* Prefix tuning (Li & Liang, 2021): n virtual keys and values in every attention layer
  (``params["prefix"]``; KV heads under GQA). Without reparameterization (PEFT's default) they are
  one embedding [n, L*2*KV*Dh], N(0, 1); with it, an embedding [n, KV*Dh] through
  Linear -> tanh -> Linear (hidden size defaults to KV*Dh). ``init="activations"`` starts them
  at the base model's keys and values on real words instead (:class:`PrefixConfig`).
* Prompt tuning (Lester et al., 2021): n soft token embeddings before the input
  (``params["soft_prompt"]["embedding"]``), initialized N(0, 1) (PEFT's RANDOM), from randomly
  sampled vocabulary embeddings, or from a text's token embeddings (repeated/cut to n).
* P-tuning (Liu et al., 2021): soft embeddings through a prompt encoder, an MLP
  (Linear-ReLU-Linear-ReLU-Linear) or a 2-layer bidirectional LSTM with an MLP head.

The parameters are created by the decoder's ``SoftPrompt`` and ``Prefix`` modules
(:mod:`jaxmem.models.adapters`, which also holds their layouts); this module picks their
configuration and, for prompt tuning from vocabulary or text, their initial values.
Virtual-token positions are never scored (the decoder drops them).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import check_positive_ints
from jaxmem.models.adapters import (PREFIX, SOFT_PROMPT, Adapters, PrefixSpec, PromptSpec,
                                    prefix_rows)
from jaxmem.models.transformer import Decoder, cast_params, init_adapter_params
from jaxmem.tuning.partition import with_added


def _check_length(n, cfg, extra=0):
    if n + extra >= cfg.max_positions:
        raise ValueError(f"{n} virtual tokens leave no room in the model's context of "
                         f"{cfg.max_positions} positions; use fewer.")


# init="activations": the text whose keys and values the prefix starts at. Generic prose, never a
# corpus text: a training text would put one member's own words into every context (a false
# membership signal), a validation or non-member text would leak the held-out side.
DEFAULT_PREFIX_TEXT = (
    "The following is a passage of ordinary written English, taken from an article, a book, "
    "a report or a description of a person, a place, an event or an idea. It continues below "
    "in complete sentences, in the same style and on the same subject.")
PREFIX_INITS = ("peft", "activations")


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
    """Prefix tuning's options: PEFT's names, plus where the prefix starts.

    Attributes:
      num_virtual_tokens: prefix keys/values per layer (n).
      prefix_projection: PEFT's MLP reparameterization (Li & Liang's, Linear-tanh-Linear).
      encoder_hidden_size: that MLP's width (default KV heads x head dim, as PEFT).
      init: ``"peft"`` (PEFT's initialization: the raw prefix N(0, 1), the MLP at torch's
        default) or ``"activations"`` (Li & Liang 2021, "Initialization" in their section 7:
        a prefix initialized with the activations of real words trains much better than a
        random one, most of all with little data): the prefix starts as the keys and values the base model
        computes at the first n tokens of ``init_text``, so the tuned model starts out
        computing exactly what the base model computes on those tokens followed by the input.
      init_text: the real words for ``init="activations"``, tokenized as every text is (BOS
        where the model expects one) and repeated if shorter than n tokens.

    Example:
        >>> from jaxmem.tuning import method_config
        >>> mcfg = method_config("prefix:prefix_projection=true,init=activations")
        >>> mcfg.num_virtual_tokens, mcfg.prefix_projection, mcfg.init_text[:26]
        (20, True, 'The following is a passage')
    """

    name: str = "prefix"
    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    init: str = "peft"
    init_text: str = DEFAULT_PREFIX_TEXT

    def __post_init__(self):
        check_positive_ints(self, "num_virtual_tokens", method="prefix")
        if self.init not in PREFIX_INITS:
            raise ValueError(f"Unknown prefix init {self.init!r}; use peft (PEFT's random "
                             "initialization) or activations (the base model's keys and values "
                             "on real words).")


@functools.partial(jax.jit, static_argnames="cfg")
def base_keys_values(params: dict, cfg, ids: jax.Array) -> jax.Array:
    """The keys and values [L, 2, n, KV, Dh] every attention layer computes on the token ids
    [n] (RoPE applied: prefix keys are used as given, and the input's positions start at n, so
    the relative offsets match), i.e. the prefix under which the model computes what it
    computes after these tokens."""
    model = Decoder(cfg, Adapters.of(params))
    _, state = model.apply({"params": cast_params(params, jnp.float32)}, ids[None],
                           mutable=["intermediates"])
    k, v = state["intermediates"]["layers"]["attn"]["kv"][0]  # each [L, 1, n, KV, Dh]
    return jnp.stack([k[:, 0], v[:, 0]], axis=1)


def _min_norm_solve(h: jax.Array, y: jax.Array) -> jax.Array:
    """The minimum-norm W with h @ W = y for h [n, H] of rank n (lstsq, plus one step of
    iterative refinement: float32 residuals at the level of the inputs' rounding)."""
    w = jnp.linalg.lstsq(h, y)[0]
    return w + jnp.linalg.lstsq(h, y - h @ w)[0]


def _prefix_from_activations(added: dict, params, cfg, mcfg: PrefixConfig, tokenizer) -> dict:
    """Sets the ``prefix`` leaves so the prefix equals :func:`base_keys_values` on ``init_text``.

    Raw prefix: its embedding is those rows. With the MLP (E -> tanh(E W0 + b0) W2 + b2), its
    output bias cannot do it alone (one bias row is shared by all n virtual tokens), so E, W0,
    b0 keep PEFT's random init, b2 becomes the tokens' mean row and W2 the minimum-norm
    solution of tanh(E W0 + b0) W2 = rows - b2 (exact: the n x H hidden matrix has rank n when
    H >= n). W2 is not zero, so from the first step gradients reach E, W0 and b0 as well.
    """
    if tokenizer is None:
        raise ValueError("Prefix init='activations' tokenizes init_text: pass the model's "
                         "tokenizer, or use init='peft'.")
    n = mcfg.num_virtual_tokens
    ids = list(tokenizer([mcfg.init_text])["input_ids"][0])
    if not ids:
        raise ValueError("The prefix's init_text has no tokens; give it some words.")
    ids = (ids * math.ceil(n / len(ids)))[:n]
    rows = prefix_rows(base_keys_values(params, cfg, jnp.asarray(ids, jnp.int32)))
    p = added[PREFIX]
    if "transform" not in p:
        p["embedding"] = rows
        return added
    first, out = p["transform"]["0"], p["transform"]["2"]
    if first["kernel"].shape[-1] < n:
        raise ValueError(f"Prefix init='activations' with prefix_projection needs "
                         f"encoder_hidden_size >= num_virtual_tokens ({n}) to reproduce {n} "
                         f"tokens exactly; raise encoder_hidden_size or lower the tokens.")
    hidden = jnp.tanh(p["embedding"] @ first["kernel"] + first["bias"])
    out["bias"] = rows.mean(0)
    out["kernel"] = _min_norm_solve(hidden, rows - out["bias"])
    return added


def init_prefix(params, cfg, mcfg: PrefixConfig, key, tokenizer=None):
    _check_length(mcfg.num_virtual_tokens, cfg)
    width = cfg.n_kv_heads * cfg.head_dim
    hidden = (mcfg.encoder_hidden_size or width) if mcfg.prefix_projection else None
    adapters = Adapters(prefix=PrefixSpec(mcfg.num_virtual_tokens, hidden))
    added = init_adapter_params(cfg, adapters, key)
    if mcfg.init == "activations":
        added = _prefix_from_activations(added, params, cfg, mcfg, tokenizer)
    return with_added(params, added)


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    name: str = "prompt"
    num_virtual_tokens: int = 20
    init: str = "random"          # "random" (PEFT default), "sample_vocab" or "text"
    init_text: str | None = None

    def __post_init__(self):
        check_positive_ints(self, "num_virtual_tokens", method="prompt")


def _prompt_embedding(params, cfg, n, how, text, key, tokenizer):
    """Prompt tuning's initial embedding from the vocabulary (None: keep the module's N(0, 1))."""
    if how == "random":
        return None
    wte = np.asarray(params["wte"])
    if how == "sample_vocab":
        ids = np.asarray(jax.random.randint(key, (n,), 0, cfg.vocab_size))
        return jnp.asarray(wte[ids])
    if how == "text":
        if not text or tokenizer is None:
            raise ValueError("init='text' needs init_text and the model's tokenizer.")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = (ids * math.ceil(n / len(ids)))[:n]  # repeat or cut to n, as PEFT does
        return jnp.asarray(wte[np.asarray(ids)])
    raise ValueError(f"Unknown prompt init {how!r}; use random, sample_vocab or text.")


def init_prompt(params, cfg, mcfg: PromptConfig, key, tokenizer=None):
    n = mcfg.num_virtual_tokens
    _check_length(n, cfg)
    k_init, k_vocab = jax.random.split(key)
    emb = _prompt_embedding(params, cfg, n, mcfg.init, mcfg.init_text, k_vocab, tokenizer)
    added = init_adapter_params(cfg, Adapters(soft_prompt=PromptSpec(n)), k_init)
    if emb is not None:
        added[SOFT_PROMPT]["embedding"] = emb
    return with_added(params, added)


@dataclasses.dataclass(frozen=True)
class PTuningConfig:
    name: str = "ptuning"
    num_virtual_tokens: int = 20
    encoder: str = "mlp"                 # "mlp" (PEFT default) or "lstm"
    encoder_hidden_size: int | None = None  # default: d_model, as PEFT
    encoder_num_layers: int = 2

    def __post_init__(self):
        check_positive_ints(self, "num_virtual_tokens", method="ptuning")


def init_ptuning(params, cfg, mcfg: PTuningConfig, key, tokenizer=None):
    _check_length(mcfg.num_virtual_tokens, cfg)
    if mcfg.encoder not in ("mlp", "lstm"):
        raise ValueError(f"Unknown P-tuning encoder {mcfg.encoder!r}; use mlp or lstm.")
    spec = PromptSpec(mcfg.num_virtual_tokens, mcfg.encoder, mcfg.encoder_hidden_size,
                      mcfg.encoder_num_layers)
    return with_added(params, init_adapter_params(cfg, Adapters(soft_prompt=spec), key))
