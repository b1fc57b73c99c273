"""The compile-only memory pass of `jaxmem plan` (jaxmem.step_memory) for every method."""

import dataclasses

import jax
import pytest

from jaxmem import tiny_model
from jaxmem.step_memory import _abstract_method, step_memory
from jaxmem.tuning import METHODS, init_method, method_config


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_abstract_method_has_the_real_shapes(method, tied):
    """No weights are materialized, yet every method's tree has the shapes a real init gives,
    also where the method computes from a base weight (head-only tuning of a tied model
    copies the embedding into a new head: it failed on abstract weights before)."""
    base, cfg, tok = tiny_model()
    cfg = dataclasses.replace(cfg, tie_embeddings=tied)
    if not tied:
        base = {**base, "lm_head": {"kernel": base["wte"].T}}
    else:
        base = {k: v for k, v in base.items() if k != "lm_head"}
    params, labels = _abstract_method(method, cfg)
    spec = method_config(method)
    if getattr(spec, "init", None) == "activations":
        spec = dataclasses.replace(spec, init="peft")
    real, real_labels = init_method(spec, base, cfg, jax.random.PRNGKey(0), tok)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == \
        jax.tree.map(lambda x: (x.shape, x.dtype), real)
    assert labels == real_labels


def test_head_only_of_a_tied_model_compiles():
    _, cfg, _ = tiny_model()
    cfg = dataclasses.replace(cfg, tie_embeddings=True)
    mem = step_memory(cfg, "head", batch=2, seq_len=16)
    assert mem["trainable"] > 0 and mem["total"] > mem["params"]
