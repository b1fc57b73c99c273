"""Docstring examples (``pytest --doctest-modules`` over jaxmem/) run in a fresh temporary
folder each, so an example that writes ``runs/lora`` or ``scores.csv`` leaves nothing behind.
Offline and fast: they use :func:`jaxmem.tiny_model` where the real model would be slow."""

import os

import pytest

# The suite's tiny models are compile-bound: skipping LLVM's code optimizations (as the suite's
# multi-device subprocesses already do) about halves its compile time. Numerics are unchanged
# (XLA's CPU backend uses no fast-math). Set before jax starts its backend; subprocesses inherit
# it. An XLA_FLAGS that already names an optimization level is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

collect_ignore = ["jaxmem/cli/__main__.py"]  # running it is `python -m jaxmem.cli`, not an import


@pytest.fixture(autouse=True)
def _doctest_in_tmp(request, tmp_path, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("JAXMEM_CACHE", str(tmp_path / "cache"))  # nothing in ~/.cache
        # compile_cache.enable()'s example: its XLA cache in here too, not in ~/.cache
        monkeypatch.setenv("JAXMEM_COMPILE_CACHE", str(tmp_path / "xla"))
