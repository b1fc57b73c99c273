"""The persistent compilation cache: where it lives, how it is turned off, and that a second
process really loads the executable from it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from jaxmem import compile_cache


def test_default_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_dir() == tmp_path / "jaxmem" / "xla"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.default_dir() == tmp_path / "mine"
    for off in ("off", "0", "False", " none "):
        monkeypatch.setenv(compile_cache.ENV, off)
        assert compile_cache.default_dir() is None


PROBE = textwrap.dedent("""
    import time, jax, jax.numpy as jnp
    from jaxmem import compile_cache
    print("dir", compile_cache.enable())
    def f(x):
        for i in range(60):  # enough ops that compiling takes a measurable while
            x = jnp.sin(x @ x.T + i)
        return x
    t = time.perf_counter()
    jax.jit(f).lower(jnp.ones((8, 8))).compile()
    print("compile", time.perf_counter() - t)
""")


def _probe(env):
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split("\n")
    return {line.split()[0]: line.split(maxsplit=1)[1] for line in out if line}


def test_a_second_process_reuses_the_compiled_executable(tmp_path):
    env = {**os.environ, compile_cache.ENV: str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("XLA_FLAGS", None)
    first = _probe({**env, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
    assert first["dir"] == str(tmp_path / "cache")
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert entries, "nothing was written to the cache"
    second = _probe(env)
    # loading from disk skips XLA's compile: measured ~10x faster; 2x leaves room for noise
    assert float(second["compile"]) < float(first["compile"]) / 2, (first, second)
    off = _probe({**env, compile_cache.ENV: "off"})
    assert off["dir"] == "None"


def test_the_command_restarts_once_with_huge_pages(monkeypatch):
    """The console command re-executes itself with glibc's hugetlb tunable (XLA's per-step
    temporaries then fault in 2 MiB pages, not 4 KiB ones), and only once."""
    import pytest

    from jaxmem import cli

    calls = []
    monkeypatch.setattr(os, "execve", lambda exe, args, env: calls.append((exe, args, env)))
    monkeypatch.setattr(sys, "argv", ["jaxmem", "info", "--method", "lora"])
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("JAXMEM_HUGEPAGES", raising=False)
    cli._restart_with_huge_pages()
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if sys.platform != "linux" or not thp.exists() or "[never]" in thp.read_text():
        assert not calls
        pytest.skip("no transparent huge pages here")
    (exe, args, env), = calls
    assert args == [sys.executable, "-m", "jaxmem.cli", "info", "--method", "lora"]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    calls.clear()
    monkeypatch.setenv("GLIBC_TUNABLES", env["GLIBC_TUNABLES"])  # the restarted process
    cli._restart_with_huge_pages()
    monkeypatch.setenv("GLIBC_TUNABLES", "")
    monkeypatch.setenv("JAXMEM_HUGEPAGES", "0")
    cli._restart_with_huge_pages()
    assert not calls
