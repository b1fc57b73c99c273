"""Parity with Hugging Face PEFT (PyTorch, test-only reference) for every adapter method.

Same adapter weights must give the same logits in PEFT and jaxmem, trainable-parameter counts
must match ``get_nb_trainable_parameters``, and adapters must cross between the two in PEFT's
on-disk format in both directions.
"""

import functools
import json

import jax
import numpy as np
import pytest

from conftest import rel_err, tiny_hf_model, to_jaxmem

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from jaxmem.models import transformer  # noqa: E402
from jaxmem.tuning import count, init_method, lora, method_config  # noqa: E402
from jaxmem.tuning.peft_import import import_adapter  # noqa: E402
from jaxmem.tuning.peft_io import export_adapter  # noqa: E402

TOL = 1e-5
LLAMA = {"num_key_value_heads": 2}  # grouped-query attention: 4 query heads, 2 KV heads
# Right padding in row 1 (PEFT/HF count positions from the left edge, as jaxmem does here).
IDS = np.array([[5, 17, 33, 2, 90, 41, 7], [8, 8, 61, 12, 3, 0, 0]], np.int32)
MASK = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]], np.int32)

pytestmark = pytest.mark.filterwarnings("ignore")


def _base(kind):
    return tiny_hf_model(kind, **(LLAMA if kind == "llama" else {}))


def _peft_logits(model):
    """Logits of the real tokens only: prompt and P-tuning models also return the virtual ones
    (prepended), prefix tuning does not; the last T positions are the input's either way."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(IDS, dtype=torch.long),
                    attention_mask=torch.tensor(MASK, dtype=torch.long)).logits
    return out[:, out.shape[1] - IDS.shape[1]:].numpy()


_LOGITS = jax.jit(transformer.logits, static_argnums=1)


def _jax_logits(params, cfg):
    return np.asarray(_LOGITS(params, cfg, IDS, MASK))


def _assert_same(ours, theirs, tol=TOL):
    real = MASK.astype(bool)  # padding positions are never compared
    err = rel_err(ours[real], theirs[real])
    assert err < tol, f"relative error {err:.2e} >= {tol:.0e}"


@functools.cache
def _base_logits(kind):
    return _jax_logits(*to_jaxmem(_base(kind)))


def _assert_adapted(logits, kind):
    """The adapter really changes the outputs (so parity is not parity of two base models)."""
    real = MASK.astype(bool)
    assert rel_err(logits[real], _base_logits(kind)[real]) > 1e-2


def _randomize(model, offset=0.0, std=0.3, seed=1):
    """Random values for every trainable (adapter) weight, e.g. a nonzero LoRA B."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(offset + std * torch.randn(p.shape, generator=gen))


def _peft_model(kind, peft_cfg, seed=1, **randomize):
    pm = peft.get_peft_model(_base(kind), peft_cfg).eval()
    _randomize(pm, seed=seed, **randomize)
    return pm


def _n_trainable(pm):
    return pm.get_nb_trainable_parameters()[0]


def _init_shapes(spec, base, cfg):
    """(param shapes, labels) of a method's init, traced without running (fast: no compiles)."""
    box = {}

    def init(key):
        params, box["labels"] = init_method(method_config(spec), base, cfg, key)
        return params

    return jax.eval_shape(init, jax.random.PRNGKey(0)), box["labels"]


def _random_method(spec, base, cfg, seed=0, offset=0.0):
    """A method's params with random trainable leaves (around ``offset``), built from the init's
    shapes and labels without compiling the init: base leaves stay, LoRA scales are the config's.
    """
    mcfg = method_config(spec)
    shapes, labels = _init_shapes(mcfg, base, cfg)
    rng = np.random.default_rng(seed)

    def fill(path, shape, label):
        if label == "trainable":
            return (offset + 0.3 * rng.standard_normal(shape.shape)).astype(np.float32)
        if path[-1].key == "lora_scale":
            return np.full(shape.shape, mcfg.scale, np.float32)
        node = base
        for k in path:
            node = node[k.key]
        return node

    return jax.tree_util.tree_map_with_path(fill, shapes, labels), labels


# ----------------------------------------------------------------------------- LoRA and IA3

LLAMA_ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
LLAMA_MLP = ["gate_proj", "up_proj", "down_proj"]
GPT2_ALL = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
LORA_CASES = {  # id: (kind, PEFT target_modules, jaxmem target, use_rslora)
    "llama-attention": ("llama", LLAMA_ATTN, "attention", False),
    "llama-mlp": ("llama", LLAMA_MLP, "mlp", False),
    "llama-all-rslora": ("llama", LLAMA_ATTN + LLAMA_MLP, "all", True),
    "gpt2-c_attn": ("gpt2", ["c_attn"], "peft", False),
    "gpt2-all": ("gpt2", GPT2_ALL, "all", False),
}


@pytest.mark.parametrize("case", list(LORA_CASES))
def test_lora_matches_peft(case, tmp_path):
    kind, targets, ours, rslora = LORA_CASES[case]
    pm = _peft_model(kind, peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=12,
                                           target_modules=targets, use_rslora=rslora))
    base, cfg = to_jaxmem(_base(kind))  # the same seed: the same base weights as pm's
    mcfg = method_config("lora", r=4, alpha=12, target=ours, use_rslora=rslora)
    assert count(*_init_shapes(mcfg, base, cfg)) == _n_trainable(pm)

    pm.save_pretrained(tmp_path / "peft")
    params, labels, got = import_adapter(base, cfg, tmp_path / "peft")
    assert count(params, labels) == _n_trainable(pm)
    assert (got.r, got.alpha, got.use_rslora) == (4, 12, rslora)
    peft_scale = pm.base_model.model.get_submodule(lora_module(kind, targets[0])).scaling["default"]
    assert mcfg.scale == got.scale == pytest.approx(peft_scale)
    assert count(*_init_shapes(got, base, cfg)) == _n_trainable(pm)  # same placement
    expected = _peft_logits(pm)
    _assert_adapted(expected, kind)
    _assert_same(_jax_logits(params, cfg), expected)

    # Re-export: the same tensor names, shapes and values as PEFT wrote.
    export_adapter(params, cfg, got, tmp_path / "ours")
    _assert_same_files(tmp_path / "peft", tmp_path / "ours")


def lora_module(kind, target):
    target = target.split(".")[-1]
    if kind == "gpt2":
        section = "mlp" if target == "c_fc" else "attn"
        return f"transformer.h.0.{section}.{target}"
    section = "self_attn" if target in LLAMA_ATTN else "mlp"
    return f"model.layers.0.{section}.{target}"


def _assert_same_files(dir_a, dir_b):
    from safetensors.numpy import load_file

    a, b = load_file(dir_a / "adapter_model.safetensors"), load_file(dir_b / "adapter_model.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_ia3_matches_peft(kind, tmp_path):
    pm = _peft_model(kind, peft.IA3Config(task_type="CAUSAL_LM"), offset=1.0)
    base, cfg = to_jaxmem(_base(kind))
    assert count(*_init_shapes("ia3", base, cfg)) == _n_trainable(pm)
    pm.save_pretrained(tmp_path / "peft")
    params, labels, mcfg = import_adapter(base, cfg, tmp_path / "peft")
    assert count(params, labels) == _n_trainable(pm)
    expected = _peft_logits(pm)
    _assert_adapted(expected, kind)
    _assert_same(_jax_logits(params, cfg), expected)
    # The imported config reproduces PEFT's default placement.
    _, labels2 = _init_shapes(mcfg, base, cfg)
    assert jax.tree.structure(labels2) == jax.tree.structure(labels)
    export_adapter(params, cfg, mcfg, tmp_path / "ours")
    _assert_same_files(tmp_path / "peft", tmp_path / "ours")


# ----------------------------------------------------------------------------- prompt learning

def _encoder_to_jaxmem(pm):
    """Direct mapping of a PEFT prompt encoder (training mode, encoder included) to jaxmem's
    subtree: PEFT never saves the encoder, so this is how its weights are compared."""
    enc = pm.prompt_encoder["default"]
    t = lambda x: x.detach().numpy().copy()  # noqa: E731
    lin = lambda m: {"kernel": t(m.weight).T, "bias": t(m.bias)}  # noqa: E731
    sub = {"embedding": t(enc.embedding.weight)}
    if hasattr(enc, "prefix_projection"):
        if enc.prefix_projection:
            sub["transform"] = {"0": lin(enc.transform[0]), "2": lin(enc.transform[2])}
        return "prefix", sub
    if hasattr(enc, "lstm_head"):
        lstm = enc.lstm_head

        def direction(layer, sfx):
            g = lambda n: t(getattr(lstm, f"{n}_l{layer}{sfx}"))  # noqa: E731
            return {"w_ih": g("weight_ih").T, "w_hh": g("weight_hh").T,
                    "b_ih": g("bias_ih"), "b_hh": g("bias_hh")}

        sub["lstm"] = {str(i): {"fwd": direction(i, ""), "bwd": direction(i, "_reverse")}
                       for i in range(lstm.num_layers)}
        sub["mlp"] = {"0": lin(enc.mlp_head[0]), "2": lin(enc.mlp_head[2])}
    elif hasattr(enc, "mlp_head"):
        sub["mlp"] = {k: lin(enc.mlp_head[int(k)]) for k in ("0", "2", "4")}
    return "soft_prompt", sub


PROMPT_CASES = {  # id: (kind, PEFT config, jaxmem method spec)
    "prefix-gpt2": ("gpt2", peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
                    "prefix:num_virtual_tokens=5"),
    "prefix-llama-gqa": ("llama", peft.PrefixTuningConfig(task_type="CAUSAL_LM",
                                                          num_virtual_tokens=5),
                         "prefix:num_virtual_tokens=5"),
    "prefix-proj-gpt2": ("gpt2", peft.PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=4, prefix_projection=True),
        "prefix:num_virtual_tokens=4,prefix_projection=true"),
    "prefix-proj-llama-gqa": ("llama", peft.PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=4, prefix_projection=True,
        encoder_hidden_size=20),
        "prefix:num_virtual_tokens=4,prefix_projection=true,encoder_hidden_size=20"),
    "prompt-gpt2": ("gpt2", peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6),
                    "prompt:num_virtual_tokens=6"),
    "prompt-llama": ("llama", peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                      num_virtual_tokens=6),
                     "prompt:num_virtual_tokens=6"),
    "ptuning-mlp-llama": ("llama", peft.PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=24),
        "ptuning:num_virtual_tokens=3,encoder_hidden_size=24"),
    "ptuning-lstm-gpt2": ("gpt2", peft.PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_reparameterization_type="LSTM"),
        "ptuning:num_virtual_tokens=3,encoder=lstm"),
}


@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_prompt_methods_match_peft(case, tmp_path):
    kind, peft_cfg, spec = PROMPT_CASES[case]
    pm = _peft_model(kind, peft_cfg, std=0.5)
    base, cfg = to_jaxmem(_base(kind))
    expected = _peft_logits(pm)
    _assert_adapted(expected, kind)

    # Same weights (encoder included) -> same logits; same structure -> same trainable count.
    shapes, labels = _init_shapes(spec, base, cfg)
    assert count(shapes, labels) == _n_trainable(pm)
    key, sub = _encoder_to_jaxmem(pm)
    assert jax.tree.structure(sub) == jax.tree.structure(shapes[key])
    assert jax.tree.map(np.shape, sub) == jax.tree.map(lambda x: x.shape, shapes[key])
    _assert_same(_jax_logits({**base, key: sub}, cfg), expected)

    # PEFT's file (the computed prompt) imports to the same logits.
    pm.save_pretrained(tmp_path / "peft")
    params, labels, mcfg = import_adapter(base, cfg, tmp_path / "peft")
    want = method_config(spec)
    if hasattr(want, "encoder_hidden_size") and want.encoder_hidden_size is None:
        # PEFT records its default: the token dim (KV heads x head dim for prefixes).
        width = cfg.n_kv_heads * cfg.head_dim if key == "prefix" else cfg.d_model
        want = method_config(want, encoder_hidden_size=width)
    assert mcfg == want
    _assert_same(_jax_logits(params, cfg), expected)


# ----------------------------------------------------------------------------- jaxmem -> PEFT

EXPORT_CASES = {  # id: (kind, jaxmem spec, IA3-style offset)
    "lora-llama-attention-rslora": ("llama", "lora:r=4,alpha=16,target=attention,use_rslora=true",
                                    None),
    "lora-gpt2-all": ("gpt2", "lora:r=3,alpha=5,target=all,dropout=0.1", None),
    "ia3-llama": ("llama", "ia3", 1.0),
    "ia3-gpt2": ("gpt2", "ia3", 1.0),
    "prefix-proj-llama-gqa": ("llama", "prefix:num_virtual_tokens=4,prefix_projection=true", None),
    "prefix-gpt2": ("gpt2", "prefix:num_virtual_tokens=4", None),
    "prompt-llama": ("llama", "prompt:num_virtual_tokens=5", None),
    "ptuning-mlp-gpt2": ("gpt2", "ptuning:num_virtual_tokens=3", None),
    "ptuning-lstm-llama": ("llama", "ptuning:num_virtual_tokens=3,encoder=lstm", None),
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_exported_adapter_loads_in_peft(case, tmp_path):
    kind, spec, offset = EXPORT_CASES[case]
    base, cfg = to_jaxmem(_base(kind))
    mcfg = method_config(spec)
    params, labels = _random_method(mcfg, base, cfg, seed=3, offset=offset or 0.0)
    ours = _jax_logits(params, cfg)
    _assert_adapted(ours, kind)

    out = export_adapter(params, cfg, mcfg, tmp_path / "adapter", base_model_name_or_path="tiny")
    pm = peft.PeftModel.from_pretrained(_base(kind), str(out)).eval()
    _assert_same(ours, _peft_logits(pm))
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"

    # And back: the imported adapter gives the same logits and, re-exported, the same files.
    back, back_labels, back_mcfg = import_adapter(base, cfg, out)
    _assert_same(_jax_logits(back, cfg), ours)
    if mcfg.name in ("lora", "ia3", "prompt") or spec == "prefix:num_virtual_tokens=4":
        assert back_mcfg.name == mcfg.name and count(back, back_labels) == count(params, labels)
    export_adapter(back, cfg, back_mcfg, tmp_path / "again", base_model_name_or_path="tiny")
    _assert_same_files(out, tmp_path / "again")
    assert (json.loads((out / "adapter_config.json").read_text())
            == json.loads((tmp_path / "again" / "adapter_config.json").read_text()))


def test_export_replaces_files_in_existing_dir(tmp_path):
    base, cfg = to_jaxmem(_base("gpt2"))
    params, _ = _random_method("prompt:num_virtual_tokens=2", base, cfg)
    (tmp_path / "notes.txt").write_text("keep me")
    export_adapter(params, cfg, "prompt:num_virtual_tokens=2", tmp_path)
    params, _ = _random_method("prompt:num_virtual_tokens=3", base, cfg)
    export_adapter(params, cfg, "prompt:num_virtual_tokens=3", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "notes.txt"]
    _, _, mcfg = import_adapter(base, cfg, tmp_path)
    assert mcfg.num_virtual_tokens == 3


def test_lora_rank_and_alpha_patterns(tmp_path):
    """PEFT's per-module ranks / alphas survive both directions."""
    pm = _peft_model("llama", peft.LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern={"v_proj": 2}, alpha_pattern={"down_proj": 3}))
    pm.save_pretrained(tmp_path / "peft")
    base, cfg = to_jaxmem(_base("llama"))
    params, labels, mcfg = import_adapter(base, cfg, tmp_path / "peft")
    assert count(params, labels) == _n_trainable(pm)
    assert params["layers"]["attn"]["v_proj"]["lora_a"].shape == (2, 32, 2)
    np.testing.assert_allclose(params["layers"]["mlp"]["down_proj"]["lora_scale"], 3 / 4)
    expected = _peft_logits(pm)
    _assert_same(_jax_logits(params, cfg), expected)
    out = export_adapter(params, cfg, mcfg, tmp_path / "ours")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["rank_pattern"] == {"self_attn.v_proj": 2}
    assert config["alpha_pattern"] == {"mlp.down_proj": 3}
    _assert_same_files(tmp_path / "peft", out)
    _assert_same(_peft_logits(peft.PeftModel.from_pretrained(_base("llama"), str(out))), expected)


def test_single_module_name_specs():
    base, cfg = to_jaxmem(_base("llama"))
    shapes, _ = _init_shapes("lora:target=q_proj", base, cfg)
    assert [k for k, v in shapes["layers"]["attn"].items() if "lora_a" in v] == ["q_proj"]
    shapes, _ = _init_shapes("ia3:target=v_proj", base, cfg)
    assert [k for k, v in shapes["layers"]["attn"].items() if "ia3_out" in v] == ["v_proj"]


# ----------------------------------------------------------------------------- LoRA merge

@pytest.mark.parametrize("kind,targets", [("llama", LLAMA_ATTN + LLAMA_MLP), ("gpt2", ["c_attn"])])
def test_lora_merge_matches_unmerged_and_peft(kind, targets, tmp_path):
    pm = _peft_model(kind, peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                           target_modules=targets))
    pm.save_pretrained(tmp_path)
    base, cfg = to_jaxmem(_base(kind))
    params, _, _ = import_adapter(base, cfg, tmp_path)
    unmerged = _jax_logits(params, cfg)
    merged = lora.merge_into_base(params)
    assert not any("lora" in str(p) for p, _ in jax.tree_util.tree_leaves_with_path(merged))
    _assert_same(_jax_logits(merged, cfg), unmerged)
    _assert_same(_jax_logits(merged, cfg), _peft_logits(pm.merge_and_unload()))


# ----------------------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def gpt2_base():
    return to_jaxmem(_base("gpt2"))


def test_lora_target_matching_nothing(gpt2_base):
    base, cfg = gpt2_base
    with pytest.raises(ValueError, match="matches no layer"):
        init_method(method_config("lora", target=("q_proj",)), base, cfg)


@pytest.mark.parametrize("r", [0, -2])
def test_lora_rank_must_be_positive(gpt2_base, r):
    base, cfg = gpt2_base
    with pytest.raises(ValueError, match="positive"):
        init_method(method_config("lora", r=r), base, cfg)


@pytest.mark.parametrize("method", ["prefix", "prompt", "ptuning"])
def test_too_many_virtual_tokens(gpt2_base, method):
    base, cfg = gpt2_base  # a context of 64 positions
    with pytest.raises(ValueError, match="no room"):
        init_method(method_config(method, num_virtual_tokens=cfg.max_positions), base, cfg)


def test_unknown_method_name():
    with pytest.raises(ValueError, match="Unknown fine-tuning method 'loha'"):
        method_config("loha:r=4")


def test_llama_adapter_into_gpt2(gpt2_base, tmp_path):
    base, cfg = gpt2_base
    llama = peft.get_peft_model(_base("llama"), peft.LoraConfig(task_type="CAUSAL_LM", r=2))
    llama.save_pretrained(tmp_path / "lora")
    with pytest.raises(ValueError, match="llama-architecture model.*this model is gpt2"):
        import_adapter(base, cfg, tmp_path / "lora")
    prefix = peft.get_peft_model(_base("llama"), peft.PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=2))
    prefix.save_pretrained(tmp_path / "prefix")
    with pytest.raises(ValueError, match="token_dim=16.*token_dim=32"):
        import_adapter(base, cfg, tmp_path / "prefix")


def test_adapter_for_another_size(tmp_path):
    small = peft.get_peft_model(tiny_hf_model("gpt2"), peft.LoraConfig(task_type="CAUSAL_LM", r=2))
    small.save_pretrained(tmp_path)
    base, cfg = to_jaxmem(tiny_hf_model("gpt2", n_embd=48))
    with pytest.raises(ValueError, match=r"lora_A \[2, 32\].*needs \[r, 48\]"):
        import_adapter(base, cfg, tmp_path)


def test_import_errors(gpt2_base, tmp_path):
    base, cfg = gpt2_base
    with pytest.raises(FileNotFoundError, match="No such adapter directory"):
        import_adapter(base, cfg, tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        import_adapter(base, cfg, tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        import_adapter(base, cfg, tmp_path)
    loha = peft.get_peft_model(_base("llama"), peft.LoHaConfig(target_modules=["q_proj"]))
    loha.save_pretrained(tmp_path / "loha")
    with pytest.raises(ValueError, match="'LOHA' is not supported"):
        import_adapter(base, cfg, tmp_path / "loha")
    params, _ = _random_method("prompt:num_virtual_tokens=2", base, cfg)
    export_adapter(params, cfg, "prompt:num_virtual_tokens=2", tmp_path / "p")
    with pytest.raises(ValueError, match="already carry"):
        import_adapter(params, cfg, tmp_path / "p")
    with pytest.raises(ValueError, match="no PEFT adapter format"):
        export_adapter(base, cfg, "head", tmp_path / "h")
    with pytest.raises(ValueError, match="no LoRA weights"):
        export_adapter(base, cfg, "lora", tmp_path / "l")


# ----------------------------------------------------------------------- prefix from real words

@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("projection", [False, True])
def test_prefix_from_activations_reproduces_base_on_real_words(kind, projection):
    """init=activations (Li & Liang 2021): with the initial prefix, the model's logits on a text
    are the base model's on (the init text's first n tokens + the text) at the text's positions
    (Llama with GQA: the prefix keys hold RoPE at positions 0..n-1, the text's start at n)."""
    from conftest import CharTok

    base, cfg = to_jaxmem(_base(kind))
    n, text = 5, "abc"  # 3 tokens, repeated to 5
    spec = (f"prefix:num_virtual_tokens={n},prefix_projection={str(projection).lower()},"
            f"init=activations,init_text={text}")
    params, labels = init_method(spec, base, cfg, jax.random.PRNGKey(3), CharTok())
    words = np.array([(CharTok()(text)["input_ids"] * 2)[:n]] * len(IDS), np.int32)
    ref = _LOGITS(base, cfg, np.concatenate([words, IDS], 1),
                  np.concatenate([np.ones_like(words), MASK], 1))
    _assert_same(_jax_logits(params, cfg), np.asarray(ref)[:, n:])
    peft_init, _ = init_method(spec.replace("activations", "peft"), base, cfg,
                               jax.random.PRNGKey(3), CharTok())
    assert rel_err(_jax_logits(peft_init, cfg), np.asarray(ref)[:, n:]) > 1e-2  # can fail
    # every prefix leaf gets a gradient at the first step (the MLP's output weight is not 0)
    grads = jax.grad(lambda p: _LOGITS({**params, "prefix": p}, cfg, IDS, MASK).std())(
        params["prefix"])
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))


def test_prefix_init_errors(gpt2_base):
    from conftest import CharTok

    base, cfg = gpt2_base
    with pytest.raises(ValueError, match="Unknown prefix init 'words'"):
        method_config("prefix:init=words")
    with pytest.raises(ValueError, match="pass the model's tokenizer"):
        init_method("prefix:init=activations", base, cfg)
    with pytest.raises(ValueError, match="encoder_hidden_size >= num_virtual_tokens"):
        init_method("prefix:num_virtual_tokens=6,prefix_projection=true,encoder_hidden_size=4,"
                    "init=activations", base, cfg, tokenizer=CharTok())
