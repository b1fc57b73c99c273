"""`jaxmem score` at corpus scale: wall time and peak RSS against the number of texts, and a
kill -9 in the middle of the largest run followed by a resume.

Each size gets N deterministic random texts (one per line) and a fresh `jaxmem score` process
on a tiny random GPT-2 saved as a local safetensors directory, writing every row to a CSV.
Peak RSS is the child's own (``os.wait4``). The resume check starts the largest run again,
kills it with SIGKILL once its progress marker passes half the texts, reruns the same command,
and compares the output byte for byte with the uninterrupted run's.

    python experiments/bench_corpus_scale.py                       # 1k, 10k, 100k
    python experiments/bench_corpus_scale.py --sizes 1000,10000   # a quick look

Writes results/bench_corpus_scale/{results.json,results.csv,results.md,scaling.png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(path: Path) -> None:
    """A random 2-layer GPT-2 (d=32, 97 tokens) and a word-level tokenizer over w0..w95."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(path)
    vocab = {f"w{i}": i for i in range(96)}
    vocab["<unk>"] = 96
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>").save_pretrained(
        str(path))


def write_texts(path: Path, n: int, seed: int = 0) -> None:
    """n texts of 4-24 random words, one per line, the same for the same (n, seed)."""
    rng = np.random.default_rng(seed)
    with path.open("w") as fh:
        for _ in range(n):
            fh.write(" ".join(f"w{x}" for x in rng.integers(0, 96, rng.integers(4, 25))) + "\n")


def run(cmd: list[str], *, kill_at: int | None = None, marker: Path | None = None) -> dict:
    """Runs one command; its wall time, peak RSS (MiB) and exit status. With ``kill_at``, sends
    SIGKILL once ``marker`` records at least that many texts done."""
    t0 = time.perf_counter()
    err = open(Path(cmd[cmd.index("--out") + 1]).with_suffix(".stderr"), "ab")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                         env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)))
    killed_at = None
    while kill_at is not None and p.poll() is None:
        time.sleep(0.2)
        try:
            done = json.loads(marker.read_text())["done"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            continue
        if done >= kill_at:
            os.kill(p.pid, signal.SIGKILL)
            killed_at = done
            break
    _, status, usage = os.wait4(p.pid, 0)
    err.close()
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": usage.ru_maxrss / 1024,
            "status": os.waitstatus_to_exitcode(status), "killed_at": killed_at}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_corpus_scale"))
    ap.add_argument("--no-resume", action="store_true", help="skip the kill -9 / resume check")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    load_start = os.getloadavg()
    model = work / "model"
    if not (model / "config.json").exists():
        tiny_model(model)
    sizes = [int(s) for s in args.sizes.split(",")]

    def score_cmd(src: Path, dst: Path) -> list[str]:
        return [sys.executable, "-m", "jaxmem.cli", "score", str(src), "--model", str(model),
                "--out", str(dst), "--batch-size", str(args.batch_size), "--block-size",
                str(args.block_size), "--chunk-size", str(args.chunk_size), "--show", "3",
                "--overwrite"]

    rows = []
    for n in sizes:
        src = work / f"texts_{n}.txt"
        write_texts(src, n)
        dst = work / f"scores_{n}.csv"
        r = run(score_cmd(src, dst))
        assert r["status"] == 0, (n, r, dst.with_suffix(".stderr").read_text()[-2000:])
        n_rows = sum(1 for _ in dst.open()) - 1
        assert n_rows == n, (n, n_rows)
        rows.append({"texts": n, "wall_s": round(r["seconds"], 1),
                     "peak_rss_mib": round(r["peak_rss_mib"], 1),
                     "texts_per_s": round(n / r["seconds"], 1),
                     "input_mib": round(src.stat().st_size / 2**20, 2)})
        print(rows[-1], flush=True)

    resume = None
    if not args.no_resume:
        n = max(sizes)
        src, whole = work / f"texts_{n}.txt", work / f"scores_{n}.csv"
        cut = work / f"cut_{n}.csv"
        for f in (cut, cut.with_name(cut.name + ".partial"),
                  cut.with_name(cut.name + ".progress.json")):
            f.unlink(missing_ok=True)
        cmd = score_cmd(src, cut)[:-1]  # no --overwrite: the rerun must resume
        first = run(cmd, kill_at=n // 2, marker=cut.with_name(cut.name + ".progress.json"))
        second = run(cmd)
        stderr = cut.with_suffix(".stderr").read_text()
        resume = {"texts": n, "killed_at": first["killed_at"], "killed_after_s":
                  round(first["seconds"], 1), "resumed_run_s": round(second["seconds"], 1),
                  "resumed_peak_rss_mib": round(second["peak_rss_mib"], 1),
                  "resumed_message": next((ln for ln in stderr.splitlines()
                                           if ln.startswith("resuming")), None),
                  "exit_status": second["status"],
                  "identical_to_uninterrupted": cut.read_bytes() == whole.read_bytes()}
        print(resume, flush=True)

    load_end = os.getloadavg()
    import jax

    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} "
                       f"({jax.default_backend()})",
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in load_end],
            "model": "random GPT-2, 2 layers, d=32, 97-token vocabulary (local safetensors dir)",
            "texts": "4-24 random words w0..w95 each, one per line",
            "settings": {"batch_size": args.batch_size, "block_size": args.block_size,
                         "chunk_size": args.chunk_size},
            "command": "python experiments/bench_corpus_scale.py " + " ".join(sys.argv[1:])}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows,
                                                  "resume": resume}, indent=1))
    cols = list(rows[0])
    (out / "results.csv").write_text(",".join(cols) + "\n" + "".join(
        ",".join(str(r[c]) for c in cols) + "\n" for r in rows))
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(md) + "\n")
    plot(rows, out / "scaling.png")
    print("\n".join(md))
    print(json.dumps(meta, indent=1))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["texts"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.loglog(n, [r["wall_s"] for r in rows], "o-")
    a.set(xlabel="texts", ylabel="wall time (s)", title="jaxmem score: wall time")
    b.semilogx(n, [r["peak_rss_mib"] for r in rows], "o-", color="C1")
    b.set(xlabel="texts", ylabel="peak RSS (MiB)", title="peak host memory", ylim=(0, None))
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
