"""Text generation with a KV cache: greedy decoding and sampling, one jit call per batch.

Every model and tuning method the decoder runs can generate: LoRA and IA3 are just params,
prefix tuning's keys and values fill the first cache slots, and a soft prompt (prompt tuning,
P-tuning) is prepended to the prompt at the prefill (see :class:`~jaxmem.models.transformer.
Decoder` and :class:`~jaxmem.models.transformer.KVCache`).

One batch is one compiled call: the left-padded prompts are run once (the prefill), then a
``lax.while_loop`` appends one token per step to a preallocated cache [L, B, S, KV, Dh]
(``lax.dynamic_update_slice``), stopping after ``max_new_tokens`` or once every row has
emitted ``eos_id``. Left padding keeps every row's next token at the same slot; positions
count real tokens only, as Hugging Face's ``generate`` does (``attention_mask.cumsum(-1) - 1``
for GPT-2 and Llama alike), so a padded prompt continues exactly like the prompt alone.

Example:
    >>> from jaxmem import tiny_model
    >>> params, cfg, tok = tiny_model()  # or load_model("smollm2-135m")
    >>> prompts = tok(["The capital of France is", "Hi"])["input_ids"]
    >>> out = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=8))
    >>> out.shape, out.dtype  # [prompts, max_new_tokens]
    ((2, 8), dtype('int32'))
    >>> alone = generate(params, cfg, prompts[1:], GenerateConfig(max_new_tokens=8))
    >>> bool((alone[0] == out[1]).all())  # "Hi", left-padded in the batch, continues the same
    True
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import (check, check_positive_ints, dtype_name, field, is_int, is_number,
                           jnp_dtype)
from jaxmem.models.adapters import Adapters
from jaxmem.models.config import ModelConfig
from jaxmem.models.transformer import KVCache, cast_params, head_weight, hidden_states, project


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """How to continue prompts (hashable: one compiled decoder per config and prompt shape)."""

    max_new_tokens: int = field(32, help="tokens to generate per prompt")
    do_sample: bool = field(False, help="sample instead of greedy (argmax) decoding")
    temperature: float = field(1.0, help="sampling: logits are divided by this")
    top_k: int = field(0, help="sampling: keep the k most likely tokens (0: all)")
    top_p: float = field(1.0, help="sampling: keep the smallest set of tokens whose probability "
                                   "reaches top_p (1: all)")
    eos_id: int | None = field(None, help="stop a row after this token (later tokens: pad_id)")
    pad_id: int = field(0, help="left padding of prompts, and the filler after eos_id")
    batch_size: int = field(8, help="prompts per compiled call")
    dtype: str = field("float32", help="compute dtype (float32 or bfloat16)")

    def __post_init__(self):
        check_positive_ints(self, "max_new_tokens", "batch_size")
        check_sampling(self)
        object.__setattr__(self, "dtype", dtype_name(self.dtype))


def check_sampling(cfg) -> None:
    """Checks a config's sampling scheme (``temperature``, ``top_k``, ``top_p``): here and in
    :class:`jaxmem.extraction.ExtractionConfig`, whose (n, p) probabilities use the same one."""
    check(cfg, "temperature", lambda v: is_number(v) and v > 0, "a positive number")
    check(cfg, "top_k", lambda v: is_int(v) and v >= 0, "0 (off) or a positive integer")
    check(cfg, "top_p", lambda v: is_number(v) and 0 < v <= 1, "in (0, 1]")


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Sets the logits [B, V] of tokens outside the top-k / top-p (nucleus) set to -inf.

    top-k keeps the k largest logits (ties at the k-th value are kept). top-p (Holtzman et al.,
    2020) keeps the most likely tokens in order until their probability sum reaches ``top_p``
    (the token that crosses it included, so at least one), as transformers'
    ``TopPLogitsWarper``; it applies after top-k, on the renormalized distribution.
    """
    if top_k:
        kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # drop a token when the tokens before it already reach top_p
        drop_sorted = (cum - jax.nn.softmax(sorted_logits, axis=-1)) >= top_p
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(
            drop_sorted)
        logits = jnp.where(drop, -jnp.inf, logits)
    return logits


def _next_token(logits, key, gcfg: GenerateConfig):
    """The next token [B] from float32 logits [B, V]: argmax, or a sample."""
    if not gcfg.do_sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / gcfg.temperature, gcfg.top_k, gcfg.top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _last_logits(params, cfg, ids, mask, cache, continuing, dtype):
    """(float32 logits [B, V] of the last position, updated cache)."""
    h, cache = hidden_states(params, cfg, ids, mask, dtype=dtype, cache=cache,
                             continuing=continuing)
    return project(h[:, -1], *head_weight(params)).astype(jnp.float32), cache


@functools.partial(jax.jit, static_argnames=("cfg", "gcfg", "return_logits"))
def generate_batch(params: dict, cfg: ModelConfig, input_ids: jax.Array,
                   attention_mask: jax.Array, key: jax.Array, gcfg: GenerateConfig,
                   return_logits: bool = False):
    """Continues one batch of left-padded prompts (jit-compiled; the building block of
    :func:`generate`).

    Args:
      params: the params tree, with any tuning method's leaves.
      cfg: the architecture.
      input_ids: int32 [B, T], left-padded; attention_mask: [B, T], 1 for real tokens.
      key: a PRNG key (used only when sampling; step i samples with ``fold_in(key, i)``).
      gcfg: what to generate.
      return_logits: also return every step's float32 logits [B, N, V] (for tests: memory
        grows with the vocabulary).

    Returns:
      int32 tokens [B, N] (N = ``max_new_tokens``; ``pad_id`` after a row's ``eos_id``), and
      with ``return_logits`` the logits each token was chosen from.
    """
    dtype = jnp_dtype(gcfg.dtype)
    if cfg.attention_impl == "cudnn":  # cuDNN's call cannot take a cache's [B, T, S] mask
        cfg = dataclasses.replace(cfg, attention_impl="xla")
    params = cast_params(params, dtype)  # once, not at every step
    b, t = input_ids.shape
    n = gcfg.max_new_tokens
    ad = Adapters.of(params)
    extra = (ad.prefix.n if ad.prefix else 0) + (ad.soft_prompt.n if ad.soft_prompt else 0)
    cache = KVCache.empty(cfg, b, extra + t + n - 1, dtype)
    logits, cache = _last_logits(params, cfg, input_ids, attention_mask, cache, False, dtype)
    out = jnp.full((b, n), gcfg.pad_id, jnp.int32)
    scores = jnp.zeros((b, n, logits.shape[-1]) if return_logits else (0,), jnp.float32)

    def emit(step, logits, out, scores, done):
        tok = jnp.where(done, gcfg.pad_id, _next_token(logits, jax.random.fold_in(key, step),
                                                       gcfg))
        if return_logits:
            scores = scores.at[:, step].set(logits)
        if gcfg.eos_id is not None:
            done = done | (tok == gcfg.eos_id)
        return out.at[:, step].set(tok), scores, done

    out, scores, done = emit(0, logits, out, scores, jnp.zeros(b, bool))

    def cond(state):
        step, _, _, _, done = state
        return (step < n) & ~done.all()

    def body(state):
        step, out, scores, cache, done = state
        prev = jax.lax.dynamic_slice_in_dim(out, step - 1, 1, axis=1)
        logits, cache = _last_logits(params, cfg, prev, jnp.ones_like(prev), cache, True, dtype)
        out, scores, done = emit(step, logits, out, scores, done)
        return step + 1, out, scores, cache, done

    _, out, scores, _, _ = jax.lax.while_loop(cond, body, (1, out, scores, cache, done))
    return (out, scores) if return_logits else out


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids int32 [N, length], attention_mask int32 [N, length]) with every prompt
    right-aligned (left padding), as decoding needs."""
    ids = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    for row, p in enumerate(prompts):
        if len(p):
            ids[row, -len(p):] = p
            mask[row, -len(p):] = 1
    return ids, mask


def generate(params: dict, cfg: ModelConfig, prompts: Sequence[Sequence[int]],
             gcfg: GenerateConfig = GenerateConfig(), key: jax.Array | None = None, *,
             progress: bool = False) -> np.ndarray:
    """Continues many tokenized prompts, ``gcfg.batch_size`` at a time.

    Every batch is left-padded to the longest prompt of all, and the last batch is filled with
    empty rows, so the decoder compiles once; memory is one batch's cache, whatever the
    number of prompts.

    Args:
      params, cfg: the model (any tuning method's leaves included).
      prompts: token id lists (at least one token each; a Llama tokenizer's BOS included).
      gcfg: what to generate (:class:`GenerateConfig`).
      key: PRNG key for sampling (default ``PRNGKey(0)``); batch i uses ``fold_in(key, i)``.
      progress: show a progress bar over batches.

    Returns:
      int32 [N, max_new_tokens]: the new tokens of each prompt (``pad_id`` after ``eos_id``).

    Raises:
      ValueError: no prompts, an empty prompt, or prompts plus new tokens (plus virtual or
        prefix tokens) past the model's context.
    """
    if len(prompts) == 0:
        raise ValueError("Nothing to generate from: the list of prompts is empty.")
    if min(len(p) for p in prompts) == 0:
        raise ValueError("A prompt is empty; give every prompt at least one token "
                         "(e.g. the tokenizer's BOS).")
    longest = max(len(p) for p in prompts)
    ad = Adapters.of(params)
    virtual = (ad.prefix.n if ad.prefix else 0) + (ad.soft_prompt.n if ad.soft_prompt else 0)
    if virtual + longest + gcfg.max_new_tokens > cfg.max_positions:
        raise ValueError(
            f"{virtual} virtual + {longest} prompt + {gcfg.max_new_tokens} new tokens exceed "
            f"the model's context ({cfg.max_positions} positions); shorten the prompts or "
            "lower max_new_tokens.")
    key = jax.random.PRNGKey(0) if key is None else key
    bs = min(gcfg.batch_size, len(prompts))
    out = np.zeros((len(prompts), gcfg.max_new_tokens), np.int32)
    starts = range(0, len(prompts), bs)
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm
        starts = tqdm(starts, total=math.ceil(len(prompts) / bs), desc="generating",
                      unit="batch")
    for i, start in enumerate(starts):
        chunk = list(prompts[start:start + bs])
        ids, mask = left_pad(chunk + [[]] * (bs - len(chunk)), longest, gcfg.pad_id)
        res = generate_batch(params, cfg, jnp.asarray(ids), jnp.asarray(mask),
                             jax.random.fold_in(key, i), gcfg)
        out[start:start + len(chunk)] = np.asarray(res)[:len(chunk)]
    return out
