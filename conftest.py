"""Docstring examples (``pytest --doctest-modules`` over jaxmem/) run in a fresh temporary
folder each, so an example that writes ``runs/lora`` or ``scores.csv`` leaves nothing behind.
Offline and fast: they use :func:`jaxmem.tiny_model` where the real model would be slow."""

import pytest


@pytest.fixture(autouse=True)
def _doctest_in_tmp(request, tmp_path, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("JAXMEM_CACHE", str(tmp_path / "cache"))  # nothing in ~/.cache
