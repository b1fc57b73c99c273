"""Scoring and attacks streamed from files (jaxmem.streaming): the same numbers as the in-memory
path, the same bytes after a resume as without one, and refusals when a resume would mix runs."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import CharTok, save_tiny_tokenizer, tiny_hf_model, to_jaxmem
from jaxmem import streaming as S
from jaxmem.chunked import ChunkedTable, progress_path
from jaxmem.audit import AuditConfig, run_attacks_on
from jaxmem.cli import main
from jaxmem.io import write_table
from jaxmem.scoring import score_texts

COLS = ("nll", "ppl", "min_k20_logp", "mean_mu", "mean_sigma")


def _words(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{x}" for x in rng.integers(0, 96, rng.integers(2, 24))) for _ in range(n)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream") / "model"
    tiny_hf_model("gpt2").save_pretrained(d)
    save_tiny_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def loaded(model_dir):
    from jaxmem.models import load_model

    return load_model(str(model_dir))


class Interrupt(Exception):
    pass


def _stop_after(k):
    def hook(done):
        if done >= k:
            raise Interrupt(done)
    return hook


def test_streamed_rows_equal_score_texts_in_every_format(loaded, tmp_path):
    params, cfg, tok = loaded
    texts = _words(150, 0)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    inp = S.scan_input(src)
    assert inp.n_texts == 150
    kw = dict(batch_size=16, chunk_size=40)
    settings = S.score_settings(inp, **kw)
    res = S.score_file(params, cfg, tok, inp, settings, out=tmp_path / "s.jsonl", **kw)
    got = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    want = S.score_rows(score_texts(params, cfg, tok, texts, batch_size=16), texts)
    assert [g["index"] for g in got] == list(range(150))
    assert [g["n_tokens"] for g in got] == [w["n_tokens"] for w in want]
    for c in COLS:
        np.testing.assert_allclose([g[c] for g in got], [w[c] for w in want], rtol=1e-6)
    # the summary aggregates the rows it wrote (the unstreamed pass differs in float32 rounding)
    n = np.array([g["n_tokens"] for g in got])
    nll = np.array([g["nll"] for g in got])
    assert res["n_tokens"] == n.sum() and res["n_texts"] == 150
    assert res["corpus_ppl"] == pytest.approx(np.exp((nll * n).sum() / n.sum()), rel=1e-9)
    assert res["head"] == got[:S.HEAD_ROWS]
    # every other format holds exactly what write_table writes for the same rows
    for ext in (".csv", ".json", ".md", ".parquet"):
        out = tmp_path / f"s{ext}"
        S.score_file(params, cfg, tok, inp, settings, out=out, **kw)
        write_table(got, tmp_path / f"ref{ext}")
        if ext == ".parquet":
            assert pq.read_table(out).to_pylist() == got
        else:
            assert out.read_bytes() == (tmp_path / f"ref{ext}").read_bytes(), ext
        assert not progress_path(out).exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_interrupted_score_resumes_to_the_same_output(loaded, tmp_path, ext):
    params, cfg, tok = loaded
    src = tmp_path / "in.txt"
    src.write_text("\n\n".join(_words(130, 1)) + "\n")
    inp = S.scan_input(src)
    kw = dict(batch_size=8, chunk_size=32)
    settings = S.score_settings(inp, **kw)
    whole = tmp_path / f"whole{ext}"
    S.score_file(params, cfg, tok, inp, settings, out=whole, **kw)
    out = tmp_path / f"cut{ext}"
    with pytest.raises(Interrupt):
        S.score_file(params, cfg, tok, inp, settings, out=out, after_chunk=_stop_after(64),
                     **kw)
    assert not out.exists() and json.loads(progress_path(out).read_text())["done"] == 64
    if ext == ".csv":  # a kill in the middle of the next chunk's write leaves half a row
        with open(tmp_path / "cut.csv.partial", "a") as fh:
            fh.write("64,7,False,4.1")
    else:  # ... or a whole part the marker does not count yet
        (tmp_path / "cut.parquet.parts" / "part-000002.parquet").write_bytes(b"junk")
    seen = []
    res = S.score_file(params, cfg, tok, inp, settings, out=out, after_chunk=seen.append, **kw)
    assert seen == [96, 128, 130]  # the first 64 texts were not scored again
    assert res["resumed_from"] == 64 and res["n_texts"] == 130
    if ext == ".csv":
        assert out.read_bytes() == whole.read_bytes()
    else:
        assert pq.read_table(out).equals(pq.read_table(whole))
    assert not progress_path(out).exists()


def test_cli_resume_and_refusals(model_dir, tmp_path, capsys, monkeypatch):
    """`jaxmem score --out` killed mid-way: the same command resumes and writes what an
    uninterrupted run writes; another input or other settings are refused, naming them."""
    src = tmp_path / "in.csv"
    src.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(_words(90, 2))))
    cmd = f"score {src} --model {model_dir} --batch-size 8 --chunk-size 20 --show 2 --out "
    assert main((cmd + str(tmp_path / "whole.csv")).split()) == 0
    first = capsys.readouterr().out
    out = tmp_path / "cut.csv"
    real_append, calls = ChunkedTable.append, []

    def dying_append(self, rows, n, state=None):
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C between two chunks
        real_append(self, rows, n, state)

    monkeypatch.setattr(ChunkedTable, "append", dying_append)
    assert main((cmd + str(out)).split()) == 130
    monkeypatch.setattr(ChunkedTable, "append", real_append)
    capsys.readouterr()
    # other settings, or another input, with the partial output: refused before any work
    assert main((cmd + str(out)).replace("--batch-size 8", "--batch-size 4").split()) == 2
    err = capsys.readouterr().err
    assert "differs in: batch_size" in err and "--overwrite" in err
    src.write_text(src.read_text().replace("w1 ", "w2 "))
    assert main((cmd + str(out)).split()) == 2
    assert "differs in: input" in capsys.readouterr().err
    assert main((cmd + str(out) + " --overwrite").split()) == 0  # starts over on the new input
    capsys.readouterr()
    # back to the original input: interrupt, then resume with the same command
    src.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(_words(90, 2))))
    out.unlink()
    calls.clear()
    monkeypatch.setattr(ChunkedTable, "append", dying_append)
    assert main((cmd + str(out)).split()) == 130
    monkeypatch.setattr(ChunkedTable, "append", real_append)
    assert json.loads(progress_path(out).read_text())["done"] == 40
    capsys.readouterr()
    assert main((cmd + str(out)).split()) == 0
    resumed = capsys.readouterr()
    assert "resuming" in resumed.err and "40 of 90" in resumed.err
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()
    # the same table head and corpus perplexity as the uninterrupted run
    assert resumed.out.split("tokens/s")[0].split("\n")[:-1] == \
        first.split("tokens/s")[0].split("\n")[:-1]


def _attack_inputs(tmp_path):
    members, nonmembers = _words(40, 3), _words(36, 4)
    nonmembers[5] = members[7].upper()  # an exact copy (after normalizing): dropped
    (tmp_path / "m.txt").write_text("\n".join(members) + "\n")
    (tmp_path / "n.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in nonmembers))
    return members, nonmembers


def test_streamed_attack_equals_in_memory_and_resumes(tmp_path):
    params, cfg = to_jaxmem(tiny_hf_model("llama", num_key_value_heads=2))
    ref, _ = to_jaxmem(tiny_hf_model("llama", seed=1, num_key_value_heads=2))
    tok = CharTok()
    members, nonmembers = _attack_inputs(tmp_path)
    acfg = AuditConfig(block_size=48, batch_size=8, n_boot=50)
    with pytest.warns(UserWarning, match="Dropped 1 non-members"):
        mem = run_attacks_on(params, cfg, tok, members, nonmembers, acfg, reference_params=ref,
                             out_dir=tmp_path / "memory")
    m_in, n_in = S.scan_input(tmp_path / "m.txt"), S.scan_input(tmp_path / "n.jsonl")

    def stream(out, chunk, **kw):
        settings = S.attack_settings(m_in, n_in, acfg, chunk_size=chunk)
        with pytest.warns(UserWarning, match="Dropped 1 non-members"):
            return S.attack_files(params, cfg, tok, m_in, n_in, acfg, out_dir=out,
                                  settings=settings, reference_params=ref, chunk_size=chunk,
                                  **kw)

    # one chunk: the same batches as in memory, so the very same files
    one = stream(tmp_path / "one", 1000)
    assert pq.read_table(tmp_path / "one" / "scores.parquet").equals(
        pq.read_table(tmp_path / "memory" / "scores.parquet"))
    assert (json.loads((tmp_path / "one" / "metrics.json").read_text())
            == json.loads((tmp_path / "memory" / "metrics.json").read_text()))
    assert one["info"] == mem["info"]
    # small chunks, interrupted and resumed: the scores agree to float rounding, the metrics too
    with pytest.raises(Interrupt):
        stream(tmp_path / "cut", 16, after_chunk=_stop_after(32))
    assert not (tmp_path / "cut" / "metrics.json").exists()
    cut = stream(tmp_path / "cut", 16)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [
        "histograms.png", "metrics.json", "roc.png", "scores.parquet"]
    for name, s in mem["scores"].items():
        np.testing.assert_allclose(cut["scores"][name], s, rtol=1e-5, atol=1e-7)
        assert cut["metrics"][name]["auc"] == pytest.approx(mem["metrics"][name]["auc"], abs=1e-9)
    np.testing.assert_array_equal(cut["labels"], mem["labels"])
    whole = stream(tmp_path / "whole", 16)
    assert pq.read_table(tmp_path / "cut" / "scores.parquet").equals(
        pq.read_table(tmp_path / "whole" / "scores.parquet"))
    assert whole["metrics"] == cut["metrics"]


def test_cli_attack_on_files(model_dir, tmp_path, capsys):
    members, nonmembers = _words(30, 5), _words(30, 6)
    (tmp_path / "m.txt").write_text("\n".join(members) + "\n")
    (tmp_path / "n.txt").write_text("\n".join(nonmembers) + "\n")
    argv = (f"attack --model {model_dir} --members {tmp_path}/m.txt --nonmembers "
            f"{tmp_path}/n.txt --out-dir {tmp_path}/a --n-boot 10 --block-size 32 "
            "--chunk-size 25").split()
    assert main(argv) == 0
    rows = pq.read_table(tmp_path / "a" / "scores.parquet").to_pylist()
    assert len(rows) == 60 and sum(r["member"] for r in rows) == 30
    assert [r["index"] for r in rows] == list(range(60))
    assert main(argv) == 2 and "already holds results" in capsys.readouterr().err


@pytest.mark.parametrize("content", [
    b"a b\n\nc\r\n d \n", b"one\ntwo\r\nthree", b"\n\n  x\n \t\ny\n\n\nz\n", b"a\n\x0c\nb\n",
    b"p1 l1\np1 l2\n\n\np2\n", b"lat\xe9n1\n\nok\n", b"  \n\nonly\n\n"])
def test_iter_text_file_reads_what_read_text_file_reads(tmp_path, content):
    from jaxmem.data.files import iter_text_file, read_text_file

    f = tmp_path / "t.txt"
    f.write_bytes(content)
    with pytest.warns(UserWarning) if b"\xe9" in content else _no_warning():
        want = read_text_file(f)
    with pytest.warns(UserWarning) if b"\xe9" in content else _no_warning():
        assert list(iter_text_file(f)) == want


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


def test_scan_refuses_what_read_text_file_refuses(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n' * 150 + "{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:151: not valid JSON"):
        S.scan_input(tmp_path / "bad.jsonl")
    (tmp_path / "col.csv").write_text("body\nhello\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['text'\]; columns present: "
                                         r"\['body'\]"):
        S.scan_input(tmp_path / "col.csv")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="no non-empty texts"):
        S.scan_input(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        S.scan_input(tmp_path / "nowhere.txt")
