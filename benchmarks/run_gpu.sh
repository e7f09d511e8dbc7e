#!/usr/bin/env bash
# The timing benchmarks at GPU sizes (the figures in the README's GPU table), one markdown file each.
#   bash benchmarks/run_gpu.sh MODEL DATA OUTDIR     (MODEL: hub id, folder or .gguf; DATA: JSON array)
# N_SCORE / N_TRAIN change the row counts (default 2000 / 1024). About 5 minutes on one H100/H200 with SmolLM2-135M. Run from any folder with lpselect importable.
set -uo pipefail
model=$1
data=$(realpath "$2")
out=$(realpath "$3")
[[ -e $model ]] && model=$(realpath "$model")
mkdir -p "$out"
cd "$(dirname "$0")"
status=0
bench() {  # name, script, args...: stdout (markdown) to OUTDIR/name.md, progress to OUTDIR/name.log
  local name=$1; shift
  echo "== $name: python3 $*" >&2
  python3 "$@" --model "$model" --data "$data" --device "${DEVICE:-auto}" >"$out/$name.md" 2>"$out/$name.log" || { status=1; tail -20 "$out/$name.log" >&2; }
  cat "$out/$name.md"
}
bench scoring bench_scoring.py --n "${N_SCORE:-2000}" --repeats 3
bench job bench_job.py --n "${N_TRAIN:-1024}" --bf16 --micro-budget 16384 --epochs-compare
bench training bench_training.py --n "${N_TRAIN:-1024}" --bf16 --micro-budget 2048,16384
exit $status
