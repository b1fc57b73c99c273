"""The command line as a new user meets it (issue 22): --version, a --help that imports no JAX and
lists every command, PEFT's option spellings, only usable flags, `jaxmem export` round-tripping
through torch PEFT, and the provenance every run, study and attack records."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import save_tiny_tokenizer, tiny_hf_model
from jaxmem.cli import COMMANDS, main
from jaxmem.cli.parser import build_parser
from jaxmem.provenance import KEY, provenance
from jaxmem.tuning import method_config

PROVENANCE_FIELDS = {"jaxmem", "jax", "git_commit", "host", "device", "command"}


def test_version(capsys):
    import jax

    import jaxmem

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxmem {jaxmem.__version__} (jax {jax.__version__})"


def test_help_imports_no_jax_and_lists_every_command():
    """--help is fast because building the parser imports neither JAX nor the models (12-15 s
    before); the top-level usage names every subcommand."""
    code = ("import sys, jaxmem.cli, jaxmem.cli.parser as p; p.build_parser(['--help']); "
            "p.build_parser(['study', '--help']); "
            "assert 'jax' not in sys.modules, 'jax imported'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = subprocess.run([sys.executable, "-m", "jaxmem.cli", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    for name in COMMANDS:
        assert f"\n    {name} " in r.stdout and f"jaxmem {name}" in r.stdout, name


def test_only_usable_flags():
    """extract and canaries run on one device: no --mesh there; train's Adam epsilon is
    --adam-eps (next to --dp epsilon=), and each method's options are listed."""
    p = build_parser()
    subs = p._subparsers._group_actions[0].choices
    flags = {name: {o for a in s._actions for o in a.option_strings} for name, s in subs.items()}
    for name in ("extract", "canaries", "info", "export"):
        assert "--mesh" not in flags[name] and "--distributed" not in flags[name], name
    for name in ("score", "train", "attack", "study", "frontier"):
        assert "--mesh" in flags[name], name
    assert "--adam-eps" in flags["train"] and "--eps" not in flags["train"]
    assert {n for n in subs if "--remat" in flags[n]} == {"train", "study", "frontier", "plan"}
    for name in ("train", "info"):
        text = subs[name].format_help()
        assert "lora_alpha" in text and "num_virtual_tokens=20" in text, name
    words = {name: " ".join(subs[name].format_help().split()) for name in ("score", "attack")}
    assert "attack's 16" in words["score"] and "(default: 8)" in words["score"]
    assert "(default: 16)" in words["attack"]


def test_peft_spellings_are_aliases():
    ours = method_config("lora:alpha=32,dropout=0.1,target=q_proj+v_proj")
    assert method_config("lora:lora_alpha=32,lora_dropout=0.1,target_modules=q_proj,v_proj") \
        == ours
    assert method_config("lora:target_modules=q_proj,v_proj,r=4").target == ("q_proj", "v_proj")
    assert method_config("ia3:target_modules=c_attn,feedforward_modules=c_proj") \
        == method_config("ia3:target=c_attn,feedforward=c_proj")
    assert method_config("prompt:prompt_tuning_init=TEXT,prompt_tuning_init_text=hi").init \
        == "text"
    assert method_config("ptuning:encoder_reparameterization_type=LSTM").encoder == "lstm"
    # a run.json method record (JSON lists) reads back to the same config
    assert method_config(json.loads(json.dumps(ours.__dict__))) == ours
    with pytest.raises(ValueError, match="PEFT's spellings: lora_alpha"):
        method_config("lora:alpah=3")


def test_provenance_fields():
    p = provenance()
    assert set(p) == PROVENANCE_FIELDS and p["command"] == sys.argv and p["device"]


# ----------------------------------------------------------------------------- export

TEXTS = [" ".join(f"w{(i * 7 + j) % 90}" for j in range(12)) for i in range(40)]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny GPT-2 folder, a corpus file and a LoRA run on them (PEFT's option spellings)."""
    d = tmp_path_factory.mktemp("export")
    tiny_hf_model("gpt2").save_pretrained(d / "model")
    save_tiny_tokenizer(d / "model")
    (d / "corpus.txt").write_text("\n\n".join(TEXTS))
    run = d / "run"
    assert main(f"train --model {d / 'model'} --corpus {d / 'corpus.txt'} --run-dir {run} "
                "--method lora:r=4,lora_alpha=16,target_modules=c_attn,c_proj --epochs 1 "
                "--batch-size 4 --block-size 16 --lr 1e-2 --n-train 8 --n-validation 4 "
                "--n-members 6 --n-nonmembers 6".split()) == 0
    return d, run


def test_export_round_trips_through_peft(lora_run, tmp_path, capsys):
    """`jaxmem export` writes the run's LoRA as a PEFT adapter; torch PEFT loads it onto the
    base model and gives the per-text losses jaxmem gives with the run's checkpoint."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from jaxmem.models import load_model
    from jaxmem.batching import encode_texts
    from jaxmem.scoring import score_texts
    from jaxmem.trainer import load_checkpoint

    d, run = lora_run
    out = tmp_path / "adapter"
    assert main(["export", str(run), "--out-dir", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_alpha"] == 16 and config["r"] == 4
    assert main(["export", str(run), "--out-dir", str(out)]) == 2  # never silently replaced
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run), "--out-dir", str(out), "--overwrite"]) == 0

    base, cfg, tok = load_model(str(d / "model"))
    params, _ = load_checkpoint(run, base, cfg, tok)
    texts = TEXTS[:6]
    ours = score_texts(params, cfg, tok, texts, block_size=16).nll()
    model = transformers.AutoModelForCausalLM.from_pretrained(d / "model")
    pm = peft.PeftModel.from_pretrained(model, str(out)).eval()
    seqs, _ = encode_texts(tok, texts, 16)
    with torch.no_grad():
        theirs = np.array([pm(input_ids=torch.tensor([s[:16]]),
                              labels=torch.tensor([s[:16]])).loss.item() for s in seqs])
    base_nll = score_texts(base, cfg, tok, texts, block_size=16).nll()
    assert np.abs(ours - base_nll).max() > 1e-3  # the adapter changed the model
    np.testing.assert_allclose(theirs, ours, rtol=1e-4)


def test_export_refuses_a_full_run_and_a_foreign_folder(lora_run, tmp_path, capsys):
    d, run = lora_run
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("my notes")
    assert main(["export", str(run), "--out-dir", str(mine)]) == 2
    assert "not a PEFT adapter" in capsys.readouterr().err
    assert (mine / "notes.md").read_text() == "my notes"
    spec = json.loads((run / "run.json").read_text())
    full = tmp_path / "full_run"
    full.mkdir()
    (full / "run.json").write_text(json.dumps(dict(spec, method={"name": "full"})))
    assert main(["export", str(full), "--out-dir", str(tmp_path / "a")]) == 2
    assert "no PEFT adapter format" in capsys.readouterr().err


# ----------------------------------------------------------------------------- provenance

def _val_losses(run) -> list[float]:
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in lines if "val_loss" in r]


def test_remat_is_an_execution_choice(lora_run, tmp_path):
    """--remat full trains the same run to float rounding (the same validation losses as
    without it), and the run is found finished under another --remat: not part of its
    identity."""
    d, run = lora_run
    args = (f"train --model {d / 'model'} --corpus {d / 'corpus.txt'} --run-dir "
            f"{tmp_path / 'r'} --method lora:r=4,lora_alpha=16,target_modules=c_attn,c_proj "
            "--batch-size 4 --block-size 16 --lr 1e-2 --n-train 8 --n-validation 4 "
            "--n-members 6 --n-nonmembers 6")
    assert main(f"{args} --epochs 1 --remat full".split()) == 0
    want = _val_losses(run)
    assert np.allclose(_val_losses(tmp_path / "r"), want, rtol=1e-5)
    assert main(f"{args} --epochs 1 --remat dots".split()) == 0  # the same run: done
    assert len(_val_losses(tmp_path / "r")) == len(want)  # nothing trained again


def test_run_and_attack_record_provenance_outside_their_identity(lora_run, tmp_path):
    """run.json and metrics.json say what produced them; a run resumed from another host or
    command line (another provenance) is the same run."""
    d, run = lora_run
    spec = json.loads((run / "run.json").read_text())
    assert set(spec[KEY]) == PROVENANCE_FIELDS
    spec[KEY] = dict(spec[KEY], host="elsewhere", jaxmem="0.0.1", command=["python"])
    (run / "run.json").write_text(json.dumps(spec))
    assert main(f"train --model {d / 'model'} --corpus {d / 'corpus.txt'} --run-dir {run} "
                "--method lora:r=4,lora_alpha=16,target_modules=c_attn,c_proj --epochs 1 "
                "--batch-size 4 --block-size 16 --lr 1e-2 --n-train 8 --n-validation 4 "
                "--n-members 6 --n-nonmembers 6".split()) == 0
    assert json.loads((run / "run.json").read_text())[KEY]["host"] != "elsewhere"
    out = tmp_path / "attack"
    assert main(f"attack --run-dir {run} --out-dir {out} --n-boot 10 --attacks loss".split()) == 0
    info = json.loads((out / "metrics.json").read_text())["info"]
    assert set(info[KEY]) == PROVENANCE_FIELDS and info[KEY]["command"] == sys.argv


def test_study_json_records_provenance_outside_its_identity(tmp_path, monkeypatch):
    """study.json says what started the study; a rerun from another command line resumes."""
    from jaxmem.study import StudyConfig
    from jaxmem.study.grid import claim_study_folder

    out = tmp_path / "study"
    monkeypatch.setattr(sys, "argv", ["jaxmem", "study", "--out-dir", str(out)])
    claim_study_folder(out, StudyConfig(), overwrite=False)
    first = json.loads((out / "study.json").read_text())
    assert set(first[KEY]) == PROVENANCE_FIELDS and first[KEY]["command"][1] == "study"
    monkeypatch.setattr(sys, "argv", ["python", "my_script.py"])
    claim_study_folder(out, StudyConfig(), overwrite=False)  # not refused: the same study
    assert json.loads((out / "study.json").read_text())[KEY]["command"] == sys.argv
