"""A tiny random model with a character tokenizer: for examples, tests and a first try of a
pipeline in seconds, offline (no download, no torch).

Its parameters are random (N(0, 0.02), :func:`jaxmem.models.init_params`), so its numbers mean
nothing; every code path (training, scoring, attacks, checkpoints) runs as on a real model.

Example:
    >>> params, cfg, tok = tiny_model()
    >>> cfg.arch, cfg.n_layers, cfg.vocab_size
    ('llama', 2, 99)
    >>> tok.decode(tok("Hi there")["input_ids"])
    'Hi there'
    >>> tok("Hi!")["input_ids"]
    [42, 75, 3]
"""

from __future__ import annotations

import string

import jax

from jaxmem.models.checkpoints import LoadedModel
from jaxmem.models.config import ModelConfig

#: The tokenizer's characters after <pad> and <unk>: printable ASCII (space to "~") and "\n".
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]
VOCAB_SIZE = 2 + len(CHARS) + 1  # <pad>, <unk>, the characters, <eos>


def char_tokenizer():
    """A Hugging Face fast tokenizer with one id per character (``<pad>`` 0, ``<unk>`` 1,
    ``<eos>`` last), built in memory."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, **{c: 2 + i for i, c in enumerate(CHARS)}}
    vocab["<eos>"] = len(vocab)
    tk = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))  # no merges: one token per char
    tk.decoder = decoders.Fuse()  # characters join back without spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<eos>")


def tiny_model(arch: str = "llama", *, seed: int = 0, d_model: int = 32, n_layers: int = 2,
               max_positions: int = 128) -> LoadedModel:
    """A random ``arch`` ("llama" or "gpt2") decoder of ``n_layers`` layers and width
    ``d_model``, with :func:`char_tokenizer`.

    Returns:
      ``LoadedModel(params, config, tokenizer)``, as :func:`jaxmem.models.load_model` does.

    Example:
        >>> import jaxmem
        >>> params, cfg, tok = jaxmem.tiny_model("gpt2", n_layers=1)
        >>> stats = jaxmem.score_texts(params, cfg, tok, ["The cat sat on the mat."])
        >>> stats.nll().shape
        (1,)
    """
    from jaxmem.models.transformer import init_params

    if arch not in ("llama", "gpt2"):
        raise ValueError(f"tiny_model builds 'llama' or 'gpt2', not {arch!r}.")
    llama = arch == "llama"
    cfg = ModelConfig(arch=arch, vocab_size=VOCAB_SIZE, d_model=d_model, n_layers=n_layers,
                      n_heads=4, n_kv_heads=2 if llama else 4, d_ff=2 * d_model,
                      max_positions=max_positions, activation="silu" if llama else "gelu_tanh",
                      attention_bias=not llama, mlp_bias=not llama)
    params = jax.tree.map(lambda x: jax.device_get(x), init_params(cfg, jax.random.PRNGKey(seed)))
    return LoadedModel(params, cfg, char_tokenizer())


__all__ = ["CHARS", "VOCAB_SIZE", "char_tokenizer", "tiny_model"]
