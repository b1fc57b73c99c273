"""Shared fixtures: tiny random Hugging Face models (PyTorch, test-only) and the embedded default."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here; fail fast, not slow

# Reruns of the suite load compiled executables from JAX's persistent cache (as the CLI does);
# JAXMEM_COMPILE_CACHE=off turns it off, or names another directory.
from jaxmem import compile_cache  # noqa: E402

compile_cache.enable(min_compile_seconds=0.1)  # the suite's tiny models compile fast

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_hf_config(kind: str, **overrides):
    """A tiny random-weight transformers config of the given kind."""
    import transformers

    if kind == "gpt2":
        kw = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)
        kw.update(overrides)
        return transformers.GPT2Config(**kw)
    kw = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
              tie_word_embeddings=False, rms_norm_eps=1e-5)
    kw.update(overrides)
    return transformers.LlamaConfig(**kw)


def tiny_hf_model(kind: str, seed: int = 0, **overrides):
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = tiny_hf_config(kind, **overrides)
    cls = transformers.GPT2LMHeadModel if kind == "gpt2" else transformers.LlamaForCausalLM
    model = cls(cfg).eval()
    with torch.no_grad():  # HF inits some weights to exactly 0/1; randomize them for real tests
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def to_jaxmem(model):
    """(params, cfg) for a transformers model, through jaxmem's own checkpoint mapping."""
    from jaxmem.models.checkpoints import params_from_hf_state_dict
    from jaxmem.models.config import ModelConfig

    cfg = ModelConfig.from_hf(model.config)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return params_from_hf_state_dict(state, cfg), cfg


def save_tiny_tokenizer(path, vocab_size=97, words=()):
    """A word-level tokenizer over 'w0'..'wN' saved in HF format (no network needed); ``words``
    (e.g. a canary template's words and digits) take the last ids before '<unk>'."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size - 1 - len(words))}
    vocab.update({w: len(vocab) + i for i, w in enumerate(words)})
    vocab["<unk>"] = vocab_size - 1
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>").save_pretrained(str(path))


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model (loaded once per session)."""
    from jaxmem.models import load_model

    try:
        return load_model("smollm2-135m")
    except FileNotFoundError as e:
        pytest.skip(str(e))


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


class CharTok:
    """A character tokenizer for tiny models: no files, no network."""

    pad_token_id = 0

    def __call__(self, texts, **kw):
        enc = lambda t: [1 + (ord(c) % 90) for c in t]  # noqa: E731
        return {"input_ids": enc(texts) if isinstance(texts, str) else [enc(t) for t in texts]}


def random_texts(n, seed=0, alphabet="abcdefgh "):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(alphabet), rng.integers(10, 40))) for _ in range(n)]


@pytest.fixture
def tiny_setup(tmp_path, monkeypatch):
    """A tiny Llama saved as a HF directory and a local text corpus (word-level vocabulary)."""
    model = tiny_hf_model("llama", num_key_value_heads=2)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    save_tiny_tokenizer(model_dir)
    rng = np.random.default_rng(0)
    lines = [" ".join(f"w{i}" for i in rng.integers(0, 90, rng.integers(8, 20)))
             for _ in range(120)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(lines))
    return str(model_dir), str(corpus)
