#!/usr/bin/env bash
# Set up (if needed) and run the embedded default job: the whole pipeline on the bundled demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/lpselect demo --out "${1:-runs/demo}"
