#!/usr/bin/env bash
# Set up (if needed), lint, build the documentation site (offline; a warning fails it), and run the whole test
# suite (slow tests included; `-m "not slow"` skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
.venv/bin/python -m pytest "$@"
