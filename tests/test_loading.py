"""The embedded default model, and clear errors for bad model input."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import rel_err
from jaxmem.models import load_model, logits
from jaxmem.scoring import score_texts

PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889. Locally nicknamed the Iron Lady, it was constructed as the centrepiece "
    "of the 1889 World's Fair, and to crown the centennial anniversary of the French Revolution.")


@pytest.mark.slow
def test_default_model_is_a_real_language_model(smollm2):
    params, cfg, tok = smollm2
    assert cfg.arch == "llama" and cfg.n_layers == 30 and cfg.n_kv_heads == 3
    words = PARAGRAPH.split()
    shuffled = " ".join(np.random.default_rng(0).permutation(words))
    stats = score_texts(params, cfg, tok, [PARAGRAPH, shuffled])
    ppl = np.exp(stats.nll())
    assert ppl[0] < 20, ppl
    assert ppl[1] > 10 * ppl[0], ppl


@pytest.mark.slow
def test_default_model_matches_transformers_gguf_loader(smollm2):
    torch = pytest.importorskip("torch")
    import transformers

    from jaxmem.models.checkpoints import _embedded_smollm2

    params, cfg, tok = smollm2
    path = _embedded_smollm2()
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    ids = tok([PARAGRAPH])["input_ids"]
    with torch.no_grad():
        ref = ref_model(torch.tensor(ids)).logits.numpy()
    # Same dequantized float32 weights on both sides: only float32 summation order differs.
    assert rel_err(logits(params, cfg, jnp.asarray(ids)), ref) < 1e-5
    ref_tok = transformers.AutoTokenizer.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path))
    assert ref_tok([PARAGRAPH])["input_ids"] == ids


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="No such model file or directory"):
        load_model("./no/such/model")
    with pytest.raises(FileNotFoundError, match="No such model"):
        load_model("/tmp/definitely-missing.gguf")


def test_unknown_alias():
    with pytest.raises(ValueError, match="Unknown model 'gpt9'.*smollm2-135m"):
        load_model("gpt9")


def test_unreachable_hub_says_how_to_work_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="To work offline"):
        load_model("no-such-org/no-such-model")


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError, match="Unsupported architecture model_type='bert'"):
        load_model(str(tmp_path))


def test_directory_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_embd": 8, "n_layer": 1, "n_head": 2, "vocab_size": 10,
        "n_positions": 8}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="reads safetensors only"):
        load_model(str(tmp_path))


def test_gguf_of_another_architecture(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny-gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="architecture 'gpt2'.*only Llama-architecture"):
        load_model(str(path))


def test_directory_without_tokenizer_names_the_fix(tmp_path):
    """Weights without tokenizer files: a clear error naming the directory and --tokenizer
    (transformers would otherwise load a 1-token tokenizer and every score is NaN)."""
    from conftest import save_tiny_tokenizer, tiny_hf_model

    from jaxmem.models import load_model

    tiny_hf_model("gpt2").save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="has weights but no tokenizer files") as e:
        load_model(str(tmp_path / "model"))
    assert str(tmp_path / "model") in str(e.value) and "--tokenizer PATH" in str(e.value)
    save_tiny_tokenizer(tmp_path / "tok")
    params, cfg, tok = load_model(str(tmp_path / "model"), tokenizer=str(tmp_path / "tok"))
    assert tok("w1 w2")["input_ids"] == [1, 2] and cfg.arch == "gpt2"
    with pytest.raises(ValueError, match="no tokenizer files"):
        load_model(str(tmp_path / "model"), tokenizer=str(tmp_path / "model"))
