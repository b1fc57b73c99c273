"""Gradient-norm attack (MIMIR): batched vmapped gradients against a plain per-example loop."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import CharTok, random_texts, tiny_hf_model, to_jaxmem
from jaxmem.gradnorm import grad_norm_scores
from jaxmem.scoring import target_logp
from jaxmem.tuning import init_method
from jaxmem.tuning.partition import TRAINABLE


@pytest.fixture(scope="module")
def tiny():
    return to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))


def _reference(params, cfg, labels, texts, which, p):
    """One jax.grad per unpadded text, then MIMIR's mean of per-tensor norms in float64 numpy."""
    tok = CharTok()
    flat_labels = traverse_util.flatten_dict(labels)

    @jax.jit  # compiled once per text length; the texts below have two
    @jax.grad
    def grad(prm, ids):
        logp, m = target_logp(prm, cfg, ids, jnp.ones_like(ids))
        return -jnp.sum(jnp.where(m, logp, 0.0)) / jnp.sum(m)

    out = []
    for t in texts:
        ids = jnp.asarray([tok(t)["input_ids"]], jnp.int32)
        grads = traverse_util.flatten_dict(grad(params, ids))
        norms = []
        for path, g in grads.items():
            if path[-1] == "lora_scale" or (which == "trainable" and flat_labels[path] != TRAINABLE):
                continue
            g = np.asarray(g, np.float64)
            tensors = list(g) if path[0] == "layers" else [g]  # a stacked leaf: one per layer
            norms += [np.linalg.norm(x.ravel(), ord=p) for x in tensors]
        out.append(-np.mean(norms))
    return np.array(out)


@pytest.mark.parametrize("method,which,p,micro", [("lora", "trainable", math.inf, 1),
                                                   ("lora", "all", 2, 2),
                                                   ("full", "trainable", 1, 4)])
def test_grad_norm_matches_per_example_loop(tiny, method, which, p, micro):
    params, cfg = tiny
    params, labels = init_method(method, params, cfg, jax.random.PRNGKey(0))
    if method == "lora":  # lora_b starts at zero; make the adapter matter
        params = jax.tree_util.tree_map_with_path(
            lambda path, x: x + 0.1 if "lora_b" in jax.tree_util.keystr(path) else x, params)
    # 6 texts of two lengths, batch 4: two buckets, and filler rows in the second batch
    texts = [t[:12] for t in random_texts(4, seed=3, alphabet="abcdefgh")] + \
        [t[:20] + "x" for t in random_texts(2, seed=4, alphabet="abcdefgh")]
    got = grad_norm_scores(params, cfg, labels, CharTok(), texts, which=which, p=p,
                           batch_size=4, micro_batch=micro, block_size=64)
    want = _reference(params, cfg, labels, texts, which, p)
    np.testing.assert_allclose(got, want, rtol=2e-5)
    assert np.all(got < 0)


def test_grad_norm_refuses_bad_arguments(tiny):
    params, cfg = tiny
    params, labels = init_method("lora", params, cfg, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="micro_batch"):
        grad_norm_scores(params, cfg, labels, CharTok(), ["abc def"], batch_size=4, micro_batch=3)
    with pytest.raises(ValueError, match="p must be"):
        grad_norm_scores(params, cfg, labels, CharTok(), ["abc def"], p=3)
    with pytest.raises(ValueError, match="which must be"):
        grad_norm_scores(params, cfg, labels, CharTok(), ["abc def"], which="frozen")
