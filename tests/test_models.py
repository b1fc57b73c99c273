"""Parity of the one decoder with transformers (PyTorch) on tiny random configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import rel_err, save_tiny_tokenizer, tiny_hf_model, to_jaxmem
from jaxmem.models import load_model, logits
from jaxmem.models.config import ModelConfig

CASES = {
    "gpt2": ("gpt2", {}),
    "gpt2-untied": ("gpt2", {"tie_word_embeddings": False}),
    "llama-mha": ("llama", {}),
    "llama-gqa": ("llama", {"num_key_value_heads": 2}),
    "llama-mqa": ("llama", {"num_key_value_heads": 1}),
    "llama-tied": ("llama", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "llama3-rope-scaling": ("llama", {
        "num_key_value_heads": 2, "rope_theta": 500000.0, "max_position_embeddings": 256,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
}


def _inputs(vocab, b=3, t=40, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (b, t))
    mask = np.ones((b, t), np.int64)
    mask[1, 25:] = 0  # right padding
    mask[2, 9:] = 0
    return ids, mask


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case):
    kind, overrides = CASES[case]
    model = tiny_hf_model(kind, **overrides)
    params, cfg = to_jaxmem(model)
    ids, mask = _inputs(cfg.vocab_size)
    with torch.no_grad():
        ref = model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    ours = np.asarray(logits(params, cfg, jnp.asarray(ids), jnp.asarray(mask)))
    m = mask.astype(bool)
    assert rel_err(ours[m], ref[m]) < 1e-5
    # per-token log-probs of the actual next tokens
    lp_ref = torch.log_softmax(torch.tensor(ref), -1).numpy()
    lp = np.asarray(jax.nn.log_softmax(jnp.asarray(ours), -1))
    take = lambda a: np.take_along_axis(a[:, :-1], ids[:, 1:, None], -1)[..., 0][m[:, 1:]]
    assert rel_err(take(lp), take(lp_ref)) < 1e-5


def test_rope_scaling_changes_logits():
    """The Llama-3 case would pass vacuously if scaling were ignored; check it matters."""
    kind, overrides = CASES["llama3-rope-scaling"]
    model = tiny_hf_model(kind, **overrides)
    params, cfg = to_jaxmem(model)
    assert cfg.rope_scaling is not None
    plain = ModelConfig.from_dict({**cfg.to_dict(), "rope_scaling": None})
    ids, _ = _inputs(cfg.vocab_size, t=120)
    a = logits(params, cfg, jnp.asarray(ids))
    b = logits(params, plain, jnp.asarray(ids))
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_bfloat16_close_to_float32():
    model = tiny_hf_model("llama", num_key_value_heads=2)
    params, cfg = to_jaxmem(model)
    ids, mask = _inputs(cfg.vocab_size)
    a = logits(params, cfg, jnp.asarray(ids), jnp.asarray(mask))
    b = logits(params, cfg, jnp.asarray(ids), jnp.asarray(mask), dtype=jnp.bfloat16)
    assert b.dtype == jnp.float32
    assert rel_err(b[mask.astype(bool)], a[mask.astype(bool)]) < 5e-2


@pytest.mark.parametrize("kind,sharded", [("gpt2", False), ("llama", True)])
def test_save_pretrained_directory_loads(tmp_path, kind, sharded):
    model = tiny_hf_model(kind, **({"num_key_value_heads": 2} if kind == "llama" else {}))
    # a tiny max_shard_size forces an index + several shards
    model.save_pretrained(tmp_path, max_shard_size="20KB" if sharded else "10GB")
    save_tiny_tokenizer(tmp_path)
    if sharded:
        assert (tmp_path / "model.safetensors.index.json").exists()
    params, cfg, tok = load_model(str(tmp_path))
    ids = np.asarray(tok(["w1 w2 w3 w4 w5 w60 w7"])["input_ids"])
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    assert rel_err(logits(params, cfg, jnp.asarray(ids)), ref) < 1e-5


def test_left_padding_matches_unpadded():
    model = tiny_hf_model("llama", num_key_value_heads=2)
    params, cfg = to_jaxmem(model)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, 12))
    alone = logits(params, cfg, jnp.asarray(ids))
    padded = np.concatenate([np.zeros((1, 4), int), ids], 1)
    mask = np.concatenate([np.zeros((1, 4), int), np.ones((1, 12), int)], 1)
    out = logits(params, cfg, jnp.asarray(padded), jnp.asarray(mask))
    assert rel_err(out[:, 4:], alone) < 1e-5
