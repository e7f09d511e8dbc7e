#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite (slow tests included; `-m "not slow"` skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest "$@"
