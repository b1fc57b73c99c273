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


def test_head_only_flops_have_no_backward_through_the_decoder():
    """Head-only tuning costs one forward plus the head's weight gradient; XLA's own count of
    the compiled step agrees on the ratio to full fine-tuning (3F), within 15%."""
    import jax.numpy as jnp

    from jaxmem.capacity import forward_flops, train_flops
    from jaxmem.optim import OptimConfig, make_optimizer
    from jaxmem.train_step import make_train_step
    from jaxmem.tuning import count

    base, cfg, tok = tiny_model()
    x = jnp.ones((1, 4, 32), jnp.int32)
    xla, ours = {}, {}
    for m in ("full", "head"):
        p, lab = init_method(method_config(m), base, cfg, jax.random.PRNGKey(0), tok)
        p = jax.tree.map(jnp.asarray, p)
        tx = make_optimizer(OptimConfig(), lab, 1)
        step = make_train_step(cfg, tx, lab).lower(p, tx.init(p), x, x, jax.random.PRNGKey(0))
        xla[m] = step.compile().cost_analysis()["flops"]
        ours[m] = train_flops(cfg, m, 4, 32, count(p, lab))
    assert ours["head"] == forward_flops(cfg, 128, 32) + 2 * cfg.d_model * cfg.vocab_size * 128
    assert ours["head"] / ours["full"] == pytest.approx(xla["head"] / xla["full"], rel=0.15)
