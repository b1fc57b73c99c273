"""Generation with a KV cache: token-for-token parity with transformers' generate, cached
logits equal to a full forward pass, every tuning method, sampling."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import rel_err, tiny_hf_model, to_jaxmem
from jaxmem.generate import GenerateConfig, filter_logits, generate, generate_batch, left_pad
from jaxmem.models import logits
from jaxmem.tuning import init_method

# Tiny random models with tied heads repeat the last token (its logit is the embedding's
# norm); the untied ones continue with varied tokens, so a cache bug cannot hide there.
CASES = {
    "gpt2-untied": ("gpt2", {"tie_word_embeddings": False, "initializer_range": 0.2}),
    "gpt2": ("gpt2", {}),
    "llama-gqa": ("llama", {"num_key_value_heads": 2}),
    "llama-tied-mqa": ("llama", {"num_key_value_heads": 1, "tie_word_embeddings": True}),
}
LENGTHS = (5, 9, 3, 7)  # prompts of different lengths: left padding inside a batch


def _prompts(vocab, lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(1, vocab, n)] for n in lengths]


def _hf_generate(model, prompts, n):
    ids, mask = left_pad(prompts, max(map(len, prompts)))
    with torch.no_grad():
        out = model.generate(torch.tensor(ids, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long),
                             do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0,
                             eos_token_id=None)
    return out.numpy()[:, ids.shape[1]:]


@pytest.mark.parametrize("case", sorted(CASES))
def test_greedy_matches_transformers_generate(case):
    kind, overrides = CASES[case]
    model = tiny_hf_model(kind, **overrides)
    params, cfg = to_jaxmem(model)
    prompts = _prompts(cfg.vocab_size)
    # batch_size 3: two batches, the second filled with an empty row
    ours = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=12, batch_size=3))
    ref = _hf_generate(model, prompts, 12)
    np.testing.assert_array_equal(ours, ref)
    if not cfg.tie_embeddings:  # a test that could tell a cache bug from a repeated token
        assert len(np.unique(ref)) > 4


def _uncached_greedy(params, cfg, prompts, n):
    """The reference: the full forward pass (no cache) over the whole sequence at every step.
    The sequence sits in one fixed buffer, right-padded (one compile): causal attention keeps
    the padding after position t from changing position t's logits."""
    ids, mask = left_pad(prompts, max(map(len, prompts)))
    t = ids.shape[1]
    ids = np.pad(ids, ((0, 0), (0, n)))
    mask = np.pad(mask, ((0, 0), (0, n)))
    steps = []
    for i in range(n):
        z = np.asarray(logits(params, cfg, jnp.asarray(ids), jnp.asarray(mask)))[:, t - 1 + i]
        steps.append(z)
        ids[:, t + i], mask[:, t + i] = z.argmax(-1), 1
    return ids[:, t:], np.stack(steps, axis=1)


def _cached(params, cfg, prompts, n):
    ids, mask = left_pad(prompts, max(map(len, prompts)))
    out, z = generate_batch(params, cfg, jnp.asarray(ids), jnp.asarray(mask),
                            jax.random.PRNGKey(0), GenerateConfig(max_new_tokens=n),
                            return_logits=True)
    return np.asarray(out), np.asarray(z)


@pytest.mark.parametrize("case", ["gpt2-untied", "llama-gqa"])
def test_cached_logits_equal_full_forward(case):
    kind, overrides = CASES[case]
    params, cfg = to_jaxmem(tiny_hf_model(kind, **overrides))
    prompts = _prompts(cfg.vocab_size, seed=1)
    ref_tokens, ref_logits = _uncached_greedy(params, cfg, prompts, 8)
    tokens, z = _cached(params, cfg, prompts, 8)
    np.testing.assert_array_equal(tokens, ref_tokens)
    assert rel_err(z, ref_logits) < 1e-5


@pytest.mark.parametrize("method", ["lora:target=all", "ia3", "prefix",
                                    "prefix:prefix_projection=true", "prompt",
                                    "ptuning:encoder=mlp"])
def test_every_method_decodes_like_the_full_forward(method):
    """LoRA / IA3 are params; the prefix fills the first cache slots (shifting positions), a
    soft prompt goes in at the prefill. Adapter leaves are randomized so each one matters."""
    model = tiny_hf_model("llama", num_key_value_heads=2)
    base, cfg = to_jaxmem(model)
    params, labels = init_method(method, base, cfg, jax.random.PRNGKey(1))
    rng = np.random.default_rng(2)
    params = jax.tree.map(
        lambda p, lab: p + 0.3 * rng.standard_normal(p.shape).astype(p.dtype)
        if lab == "trainable" else p, params, labels)
    prompts = _prompts(cfg.vocab_size, lengths=(4, 7, 2), seed=3)
    ref_tokens, ref_logits = _uncached_greedy(params, cfg, prompts, 6)
    tokens, z = _cached(params, cfg, prompts, 6)
    np.testing.assert_array_equal(tokens, ref_tokens)
    assert rel_err(z, ref_logits) < 1e-5
    base_tokens, _ = _uncached_greedy(base, cfg, prompts, 6)
    assert (base_tokens != ref_tokens).any()  # the method changed what is generated


@pytest.fixture(scope="module")
def llama():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


def test_top_k_1_sampling_is_greedy(llama):
    params, cfg = llama
    prompts = _prompts(cfg.vocab_size)
    greedy = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=8))
    sampled = generate(params, cfg, prompts, GenerateConfig(
        max_new_tokens=8, do_sample=True, top_k=1, temperature=0.7), jax.random.PRNGKey(5))
    np.testing.assert_array_equal(sampled, greedy)


def test_sampling_is_reproducible_with_a_key(llama):
    params, cfg = llama
    prompts = _prompts(cfg.vocab_size)
    g = GenerateConfig(max_new_tokens=10, do_sample=True, top_p=0.9, batch_size=2)
    a = generate(params, cfg, prompts, g, jax.random.PRNGKey(1))
    b = generate(params, cfg, prompts, g, jax.random.PRNGKey(1))
    c = generate(params, cfg, prompts, g, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    greedy = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=10))
    assert (a != greedy).any()


def test_filter_logits_matches_a_numpy_loop():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 30)).astype(np.float32)
    for top_k, top_p in [(0, 0.5), (5, 1.0), (7, 0.8), (0, 0.05)]:
        got = np.asarray(filter_logits(jnp.asarray(z), top_k, top_p))
        for row, g in zip(z.astype(np.float64), got):
            keep = np.ones(len(row), bool)
            if top_k:
                keep &= row >= np.sort(row)[-top_k]
            p = np.where(keep, np.exp(row - row.max()), 0.0)
            p /= p.sum()
            mass = 0.0
            for i in np.argsort(-p, kind="stable"):  # nucleus: add tokens until top_p
                if mass >= top_p:
                    keep[i] = False
                mass += p[i]
            np.testing.assert_array_equal(np.isfinite(g), keep)
            np.testing.assert_array_equal(g[keep], row[keep].astype(np.float32))


def test_eos_stops_a_row_and_pads_after_it(llama):
    params, cfg = llama
    prompts = _prompts(cfg.vocab_size)
    free = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=10))
    eos = int(free[0, 3])
    out = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=10, eos_id=eos,
                                                        pad_id=-1))
    for row, ref in zip(out, free):
        hit = np.flatnonzero(ref == eos)
        stop = hit[0] + 1 if len(hit) else len(ref)
        np.testing.assert_array_equal(row[:stop], ref[:stop])
        assert (row[stop:] == -1).all()


def test_bad_input_is_refused(llama):
    params, cfg = llama
    with pytest.raises(ValueError, match="exceed the model's context"):
        generate(params, cfg, [[1] * 100], GenerateConfig(max_new_tokens=40))
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(params, cfg, [[1, 2], []])
    with pytest.raises(ValueError, match="list of prompts is empty"):
        generate(params, cfg, [])
    with pytest.raises(ValueError, match="top_p"):
        GenerateConfig(top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerateConfig(max_new_tokens=0)


@pytest.mark.slow
def test_default_model_greedy_matches_transformers(smollm2):
    """The embedded smollm2-135m against transformers' own GGUF loader of the same file."""
    import transformers

    from jaxmem.models.checkpoints import _embedded_smollm2

    params, cfg, tok = smollm2
    path = _embedded_smollm2()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    prompts = tok(["The Eiffel Tower is located in", "def fibonacci(n):"])["input_ids"]
    ours = generate(params, cfg, prompts, GenerateConfig(max_new_tokens=12))
    ids, mask = left_pad(prompts, max(map(len, prompts)))
    with torch.no_grad():
        ref = model.generate(torch.tensor(ids, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long),
                             do_sample=False, max_new_tokens=12, min_new_tokens=12,
                             pad_token_id=0, eos_token_id=None).numpy()[:, ids.shape[1]:]
    np.testing.assert_array_equal(ours, ref)
