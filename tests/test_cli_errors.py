"""Bad input at the command line: a non-zero exit, one message naming the problem (the option or
the file) and no traceback, and no file changed or lost. Table-driven: one row per bad input.

Most rows fail before any model is loaded (that is part of the contract: checks run first);
the rest load a tiny model from a folder made here.
"""

import hashlib
import json
from pathlib import Path

import pytest

from conftest import save_tiny_tokenizer, tiny_hf_model
from jaxmem.cli import main


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace of good and broken inputs."""
    d = tmp_path_factory.mktemp("cli")
    model = d / "model"
    tiny_hf_model("gpt2").save_pretrained(model)
    save_tiny_tokenizer(model)
    no_tok = d / "no_tokenizer"
    tiny_hf_model("gpt2").save_pretrained(no_tok)
    bad_st = d / "bad_safetensors"
    tiny_hf_model("gpt2").save_pretrained(bad_st)
    save_tiny_tokenizer(bad_st)
    f = bad_st / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])  # truncated
    bad_cfg = d / "bad_config"
    tiny_hf_model("gpt2").save_pretrained(bad_cfg)
    save_tiny_tokenizer(bad_cfg)
    (bad_cfg / "config.json").write_text('{"model_type": "gpt2", "n_embd": ')
    (d / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(40))
    (d / "texts.txt").write_text("w1 w2 w3 w4\n\nw5 w6 w7 w8\n\nw9 w10 w11\n")
    (d / "binary.txt").write_bytes(b"w1 w2\n\x00\xff\xfe\x80 w3\n\x89PNG\r\n")
    (d / "existing.csv").write_text("mine\n")
    user = d / "user_folder"
    user.mkdir()
    (user / "notes.md").write_text("my notes")
    (user / "roc.png").write_text("my figure")
    (d / "empty.yaml").write_text("")
    (d / "list.yaml").write_text("- lora\n- prompt\n")
    (d / "broken.yaml").write_text("methods: [lora\ntrain: {epochs: 3}\n")
    (d / "typo.yaml").write_text("methods: [lora]\ntrain: {epochs: three}\n")
    (d / "negative.yaml").write_text("methods: [lora]\ntrain: {epochs: -1}\n")
    (d / "flat.yaml").write_text("methods: [lora]\nepochs: 3\n")  # before options were nested
    (d / "attack_typo.yaml").write_text("methods: [lora]\naudit: {attacks: [loss, nope]}\n")
    run = d / "corrupt_run"
    run.mkdir()
    (run / "run.json").write_text('{"model": "m", "trunc')
    # --- workspace: content identity (issue 21)
    save_tiny_tokenizer(d / "big_tok", vocab_size=501)  # more ids than the tiny models' 97
    bad_tok = d / "bad_tokenizer"
    tiny_hf_model("gpt2").save_pretrained(bad_tok)
    save_tiny_tokenizer(bad_tok)
    t = bad_tok / "tokenizer.json"
    t.write_text(t.read_text()[:40])  # truncated
    # --- workspace: locks and output files (issue 21)
    (d / "existing.json").write_text('{"mine": 1}')
    (d / "existing.png").write_bytes(b"my figure")
    user_roc = d / "user_roc"  # a user's folder holding only a file named like jaxmem's
    user_roc.mkdir()
    (user_roc / "roc.png").write_text("my figure")
    (d / "mine.csv.partial").write_text("my half-written table\n")  # not jaxmem's: no marker
    (d / "mine.parquet.parts").mkdir()
    (d / "mine.parquet.parts" / "part-000000.parquet").write_text("my part")
    # --- workspace: training sanity and config types (issue 21)
    (d / "sanity_train_int.yaml").write_text("methods: [lora]\ntrain: 5\n")
    (d / "sanity_attacks_int.yaml").write_text("methods: [lora]\naudit: {attacks: 5}\n")
    (d / "sanity_int_key.yaml").write_text("methods: [lora]\n1: 2\n")
    (d / "sanity_nested_key.yaml").write_text("methods: [lora]\ntrain: {3: 4}\n")
    (d / "sanity_binary.yaml").write_bytes(b"\x00\x01\xff\xfe\x89PNG\r\n\x1a\n")
    neg = d / "sanity_neg_hidden"  # a Llama whose config.json holds a negative width
    tiny_hf_model("llama").save_pretrained(neg)
    save_tiny_tokenizer(neg)
    cfg = json.loads((neg / "config.json").read_text())
    (neg / "config.json").write_text(json.dumps({**cfg, "hidden_size": -32}))
    # --- workspace: corpus files (issue 21)
    (d / "valid.yaml").write_text("methods: [lora]\n")
    return d


M = "{ws}/model"
# (id, argv (with {ws} for the workspace), words the message must hold)
CASES = [
    ("epochs-0", "train --model {M} --run-dir {ws}/r --epochs 0", ["--epochs", "0"]),
    ("epochs-neg", "train --model {M} --run-dir {ws}/r --epochs -1", ["--epochs"]),
    ("lr-neg", "train --model {M} --run-dir {ws}/r --lr -1e-3", ["--lr"]),
    ("lr-nan", "train --model {M} --run-dir {ws}/r --lr nan", ["--lr", "nan"]),
    ("batch-0", "train --model {M} --run-dir {ws}/r --batch-size 0", ["--batch-size"]),
    ("accum-0", "train --model {M} --run-dir {ws}/r --grad-accum 0", ["--grad-accum"]),
    ("block-0", "train --model {M} --run-dir {ws}/r --block-size 0", ["--block-size"]),
    ("maxlen-neg", "train --model {M} --run-dir {ws}/r --block-size -5", ["--block-size"]),
    ("warmup-neg", "train --model {M} --run-dir {ws}/r --warmup-steps -1", ["--warmup-steps"]),
    ("method", "train --model {M} --run-dir {ws}/r --method dora", ["dora", "choose from"]),
    ("lora-r0", "train --model {M} --run-dir {ws}/r --method lora:r=0", ["lora:r="]),
    ("lora-opt", "train --model {M} --run-dir {ws}/r --method lora:rank=4", ["rank"]),
    ("prefix-0", "train --model {M} --run-dir {ws}/r --method prefix:num_virtual_tokens=0",
     ["prefix:num_virtual_tokens="]),
    ("run-dir-foreign", "train --model {M} --run-dir {ws}/user_folder", ["user_folder",
                                                                         "not empty"]),
    ("attack-block-0", "attack --model {M} --out-dir {ws}/a --block-size 0", ["--block-size"]),
    ("attack-batch-0", "attack --model {M} --out-dir {ws}/a --batch-size 0", ["--batch-size"]),
    ("attack-name", "attack --model {M} --out-dir {ws}/a --attacks loss,nope", ["nope"]),
    ("attack-nboot", "attack --model {M} --out-dir {ws}/a --n-boot -1", ["--n-boot"]),
    ("attack-pair", "attack --model {M} --out-dir {ws}/a --members {ws}/texts.txt",
     ["--members", "--nonmembers"]),
    ("attack-out-foreign", "attack --model {M} --out-dir {ws}/user_folder",
     ["user_folder", "not empty"]),
    ("attack-no-run", "attack --model {M} --out-dir {ws}/a --run-dir {ws}/nowhere",
     ["nowhere", "not a jaxmem run"]),
    ("canaries-no-run", "canaries --model {M} --run-dir {ws}/nowhere", ["nowhere",
                                                                        "not a jaxmem run"]),
    ("canaries-bad-spec", "train --model {M} --run-dir {ws}/r --canaries 8:x", ["8:x",
                                                                               "N:REPEATS"]),
    ("extract-top-p", "extract --model {M} --top-p 0", ["top_p", "(0, 1]"]),
    ("frontier-missing", "frontier {ws}/nope.yaml --out-dir {ws}/f", ["nope.yaml"]),
    ("attack-corrupt-run", "attack --model {M} --out-dir {ws}/a --run-dir {ws}/corrupt_run",
     ["run.json", "corrupt"]),
    ("attack-binary-strict", "attack --model {M} --out-dir {ws}/a --strict --members "
     "{ws}/binary.txt --nonmembers {ws}/texts.txt", ["binary.txt", "UTF-8"]),
    ("study-missing", "study {ws}/nope.yaml --out-dir {ws}/s", ["nope.yaml"]),
    ("study-empty", "study {ws}/empty.yaml --out-dir {ws}/s", ["empty.yaml", "nothing"]),
    ("study-list", "study {ws}/list.yaml --out-dir {ws}/s", ["list.yaml", "list"]),
    ("study-yaml", "study {ws}/broken.yaml --out-dir {ws}/s", ["broken.yaml", "YAML"]),
    ("study-type", "study {ws}/typo.yaml --out-dir {ws}/s", ["epochs", "three"]),
    ("study-negative", "study {ws}/negative.yaml --out-dir {ws}/s", ["epochs", "-1"]),
    ("study-flat", "study {ws}/flat.yaml --out-dir {ws}/s", ["epochs -> train.epochs"]),
    ("study-attack", "study {ws}/attack_typo.yaml --out-dir {ws}/s", ["nope"]),
    ("study-set", "study --set train.epochs --out-dir {ws}/s", ["key=value"]),
    ("study-foreign", "study --out-dir {ws}/user_folder", ["user_folder", "not empty"]),
    ("score-nofile", "score {ws}/nothing.txt --model {M}", ["nothing.txt"]),
    ("score-ext", "score {ws}/texts.txt --model {M} --out {ws}/out.xlsx", [".xlsx"]),
    ("score-exists", "score {ws}/texts.txt --model {M} --out {ws}/existing.csv",
     ["existing.csv", "exists"]),
    ("score-batch-0", "score {ws}/texts.txt --model {M} --batch-size 0", ["--batch-size"]),
    ("score-binary", "score {ws}/binary.txt --model {M} --strict", ["binary.txt"]),
    ("model-path", "score {ws}/texts.txt --model {ws}/no/such/dir", ["no/such/dir"]),
    ("model-name", "score {ws}/texts.txt --model nonsense-model", ["nonsense-model"]),
    ("no-tokenizer", "score {ws}/texts.txt --model {ws}/no_tokenizer",
     ["no_tokenizer", "--tokenizer"]),
    ("bad-safetensors", "score {ws}/texts.txt --model {ws}/bad_safetensors",
     ["model.safetensors", "truncated"]),
    ("bad-config", "score {ws}/texts.txt --model {ws}/bad_config", ["config.json", "JSON"]),
    ("bad-gguf", "score {ws}/texts.txt --model {ws}/bad.gguf", ["bad.gguf", "GGUF"]),
    ("info-method", "info {ws}/model --method lora:r=-2", ["lora:r="]),
    ("tokenizer-path", "score {ws}/texts.txt --model {ws}/no_tokenizer --tokenizer "
     "{ws}/nowhere_tok", ["nowhere_tok", "--tokenizer"]),
    # --- cases: content identity (issue 21)
    ("tokenizer-too-large", "score {ws}/texts.txt --model {M} --tokenizer {ws}/big_tok",
     ["big_tok", "501", "97", "--tokenizer"]),
    ("tokenizer-corrupt", "score {ws}/texts.txt --model {ws}/bad_tokenizer",
     ["bad_tokenizer/tokenizer.json", "corrupt"]),
    # --- cases: locks and output files (issue 21)
    ("extract-out-exists", "extract --model {M} --out {ws}/existing.json",
     ["existing.json", "exists", "--overwrite"]),
    ("extract-out-suffix", "extract --model {M} --out {ws}/x.txt", ["--out", ".txt", ".json"]),
    ("extract-out-under-file", "extract --model {M} --out {ws}/texts.txt/x.json",
     ["--out", "texts.txt", "not a folder"]),
    ("canaries-out-exists", "canaries --model {M} --run-dir {ws}/nowhere --out "
     "{ws}/existing.json", ["existing.json", "exists", "--overwrite"]),
    ("canaries-figure-exists", "canaries --model {M} --run-dir {ws}/nowhere --figure "
     "{ws}/existing.png", ["existing.png", "exists", "--overwrite"]),
    ("canaries-figure-suffix", "canaries --model {M} --run-dir {ws}/nowhere --figure "
     "{ws}/exposure.jpg", ["--figure", ".jpg", ".png"]),
    ("canaries-out-under-file", "canaries --model {M} --run-dir {ws}/nowhere --out "
     "{ws}/texts.txt/x.json", ["--out", "texts.txt", "not a folder"]),
    ("attack-out-user-roc", "attack --model {M} --out-dir {ws}/user_roc --overwrite",
     ["user_roc", "roc.png", "did not write"]),
    ("attack-out-under-file", "attack --model {M} --out-dir {ws}/texts.txt/a",
     ["--out-dir", "texts.txt", "not a folder"]),
    ("attack-out-is-file", "attack --model {M} --out-dir {ws}/texts.txt",
     ["--out-dir", "texts.txt", "not a folder"]),
    ("train-run-dir-under-file", "train --model {M} --run-dir {ws}/texts.txt/r",
     ["--run-dir", "texts.txt", "not a folder"]),
    ("study-out-under-file", "study --out-dir {ws}/texts.txt/s", ["--out-dir", "texts.txt"]),
    ("score-out-under-file", "score {ws}/texts.txt --model {M} --out {ws}/texts.txt/o.csv",
     ["--out", "texts.txt", "not a folder"]),
    ("score-user-partial", "score {ws}/texts.txt --model {M} --out {ws}/mine.csv --overwrite",
     ["mine.csv.partial", "did not write"]),
    ("score-user-parts", "score {ws}/texts.txt --model {M} --out {ws}/mine.parquet",
     ["mine.parquet.parts", "did not write"]),
    ("score-show-neg", "score {ws}/texts.txt --model {M} --show -3", ["--show", "-3"]),
    # --- cases: training sanity and config types (issue 21)
    ("study-section-int", "study {ws}/sanity_train_int.yaml --out-dir {ws}/s",
     ["train", "mapping", "TrainConfig", "5"]),
    ("study-set-section", "study --set train.optim=5 --out-dir {ws}/s",
     ["train.optim", "mapping", "OptimConfig"]),
    ("study-attacks-int", "study {ws}/sanity_attacks_int.yaml --out-dir {ws}/s",
     ["attacks", "list", "5"]),
    ("study-int-key", "study {ws}/sanity_int_key.yaml --out-dir {ws}/s",
     ["sanity_int_key.yaml", "key 1", "int"]),
    ("study-nested-int-key", "study {ws}/sanity_nested_key.yaml --out-dir {ws}/s",
     ["sanity_nested_key.yaml", "key 3", "train"]),
    ("study-binary-yaml", "study {ws}/sanity_binary.yaml --out-dir {ws}/s",
     ["sanity_binary.yaml", "UTF-8"]),
    ("study-schedule", "study --set train.optim.schedule=cosin --out-dir {ws}/s",
     ["schedule", "cosin", "cosine"]),
    ("seed-float", "train --model {M} --run-dir {ws}/r --seed 1e23", ["--seed", "1e23"]),
    ("seed-huge", "train --model {M} --run-dir {ws}/r --block-size 32 --seed "
     "100000000000000000000000", ["--seed", "2**32"]),
    ("seed-negative", "train --model {M} --run-dir {ws}/r --block-size 32 --seed -1",
     ["--seed", "-1"]),
    ("data-seed-negative", "train --model {M} --run-dir {ws}/r --data-seed -1",
     ["--data-seed", "-1"]),
    ("config-negative-size", "score {ws}/texts.txt --model {ws}/sanity_neg_hidden",
     ["config.json", "hidden_size", "-32", "positive"]),
    ("info-negative-size", "info {ws}/sanity_neg_hidden", ["config.json", "hidden_size"]),
    # --- cases: corpus files (issue 21)
    ("plan-utilization", "plan {ws}/valid.yaml --utilization 0", ["--utilization", "(0, 1]"]),
    ("dp-delta", "train --model {M} --run-dir {ws}/r --corpus {ws}/texts.txt --dp "
     "epsilon=8,delta=0.5", ["delta=0.5", "1/n"]),
]


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() else "/"
            for p in sorted(d.rglob("*"))}


@pytest.mark.parametrize("argv,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_clearly(ws, capsys, argv, words):
    before = _snapshot(ws)
    try:
        code = main(argv.format(ws=ws, M=M.format(ws=ws)).split())
    except SystemExit as e:  # argparse's own refusals (a bad choice, a bad type)
        code = e.code
    err = capsys.readouterr().err
    assert code not in (0, None), err
    assert "Traceback" not in err and "unexpected" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert _snapshot(ws) == before  # nothing written, changed or removed


def test_table_is_large_enough():
    assert len(CASES) >= 30


def test_a_traceback_only_with_debug(ws, capsys):
    argv = f"train --model {ws}/model --run-dir {ws}/r --epochs 0".split()
    assert main(argv) == 2
    with pytest.raises(ValueError, match="epochs"):
        main(["--debug", *argv])


def test_attack_follows_the_run_and_refuses_a_conflicting_flag(ws, tmp_path, capsys):
    """attack --run-dir draws the members the run trained on (its model, corpus, seed and
    sizes), and a flag that says otherwise is refused."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(f"w{(i * 7 + j) % 90}" for j in range(12))
                                  for i in range(40)))
    run = tmp_path / "run"
    common = f"--corpus {corpus} --n-train 8 --n-validation 4 --n-members 6 --n-nonmembers 6"
    assert main(f"train --model {ws}/model --run-dir {run} --method prompt --epochs 1 "
                f"--batch-size 4 --block-size 16 --seed 1 --data-seed 3 {common}".split()) == 0
    spec = json.loads((run / "run.json").read_text())
    assert spec["data"]["data_seed"] == 3 and spec["data"]["corpus"] == str(corpus)
    assert spec["data"]["split"] == "auto"
    capsys.readouterr()
    assert main(f"attack --run-dir {run} --out-dir {tmp_path / 'a1'} --data-seed 4 "
                "--n-boot 10".split()) == 2
    assert "--data-seed" in capsys.readouterr().err and not (tmp_path / "a1").exists()
    assert main(f"attack --run-dir {run} --out-dir {tmp_path / 'a2'} --n-boot 10".split()) == 0
    import pyarrow.parquet as pq

    from jaxmem.data import load_corpus

    scored = pq.read_table(tmp_path / "a2" / "scores.parquet").to_pylist()
    members = [r["text"] for r in scored if r["member"]]
    drawn = load_corpus(str(corpus), seed=3, n_train=8, n_validation=4, n_members=6,
                        n_nonmembers=6)
    assert len(members) == 6 and set(members) <= {t[:200] for t in drawn.train}
    # the same run folder on another corpus: refused, the run untouched
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text().replace("w1", "w2"))
    assert main(f"train --model {ws}/model --run-dir {run} --method prompt --epochs 1 "
                f"--batch-size 4 --block-size 16 --seed 1 --data-seed 3 "
                f"{common.replace(str(corpus), str(other))}".split()) == 2
    assert "differs in: data" in capsys.readouterr().err
    assert json.loads((run / "run.json").read_text()) == spec


def test_distributed_without_a_coordinator_fails_in_bounded_time(ws):
    """--distributed with nobody at the coordinator's address: one message naming it, exit 2,
    within the configured wait (not JAX's 5 minutes, not a C++ abort)."""
    import os
    import subprocess
    import sys
    import time

    env = dict(os.environ, JAX_COORDINATOR_ADDRESS="127.0.0.1:9", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID="1", JAXMEM_COORDINATOR_TIMEOUT="2", JAX_PLATFORMS="cpu")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "jaxmem.cli", "score", f"{ws}/texts.txt",
                        "--model", f"{ws}/model", "--distributed"], env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "127.0.0.1:9" in r.stderr, r.stderr[-2000:]
    assert time.monotonic() - t0 < 120


def test_undecodable_text_is_warned_about_by_name(ws):
    from jaxmem.data import read_text_file

    with pytest.warns(UserWarning, match=r"binary.txt: 2 of 4 lines are binary data"):
        texts = read_text_file(f"{ws}/binary.txt")
    assert texts and texts[0].startswith("w1 w2")
