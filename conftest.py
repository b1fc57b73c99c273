"""Docstring examples (``pytest --doctest-modules`` over jaxmem/) run in a fresh temporary
folder each, so an example that writes ``runs/lora`` or ``scores.csv`` leaves nothing behind.
Offline and fast: they use :func:`jaxmem.tiny_model` where the real model would be slow."""

import pytest

collect_ignore = ["jaxmem/cli/__main__.py"]  # running it is `python -m jaxmem.cli`, not an import


@pytest.fixture(autouse=True)
def _doctest_in_tmp(request, tmp_path, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("JAXMEM_CACHE", str(tmp_path / "cache"))  # nothing in ~/.cache
        # compile_cache.enable()'s example: its XLA cache in here too, not in ~/.cache
        monkeypatch.setenv("JAXMEM_COMPILE_CACHE", str(tmp_path / "xla"))
