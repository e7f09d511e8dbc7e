#!/usr/bin/env bash
# Issue 15 in one run: the timing benchmarks for three scorers (SmolLM2-135M real weights, random Llama 360M and
# 1.3B built here), then the Alpaca-size job (52,002 synthetic rows, 360M, score --epochs 3) and the cost plan
# of it. One markdown file per part in OUTDIR.
#   bash benchmarks/run_gpu_scorers.sh OUTDIR [SIZES]        (SIZES default "135m 360m 1.3b"; "tiny" on a CPU)
# N_SCORE / N_TRAIN / N_JOB change the row counts (default 2000 / 1024 / 52002). DEVICE=cpu for a dry run.
set -uo pipefail
out=$(realpath -m "$1"); mkdir -p "$out"
sizes=${2:-"135m 360m 1.3b"}
cd "$(dirname "$0")"
py=${PYTHON:-python3}
device=${DEVICE:-auto}
data=../../shared/data/instructions/dolly.json
status=0
for size in $sizes; do
  if [[ $size == 135m ]]; then model=$($py -c "from lpselect.engine.models import model_source; print(model_source(None))")
  else model=$out/llama-$size; [[ -e $model/config.json ]] || $py random_llama.py --size "$size" --out "$model" || status=1
  fi
  N_SCORE=${N_SCORE:-2000} N_TRAIN=${N_TRAIN:-1024} DEVICE=$device bash run_gpu.sh "$model" "$data" "$out/$size" || status=1
done
# the Alpaca-size job: synthetic rows with Alpaca's joint length distribution
job_model=$out/llama-${JOB_SIZE:-360m}; [[ $sizes == tiny ]] && job_model=$out/llama-tiny
$py -c "
import sys; sys.path.insert(0, '.')
from pathlib import Path
from scale import alpaca_lengths, write_synthetic
write_synthetic(Path('$out/alpaca-size.jsonl'), ${N_JOB:-52002}, alpaca_lengths(), 0)" || status=1
$py -m lpselect plan --data "$out/alpaca-size.jsonl" --model "$job_model" --epochs 3 --no-embed --device "$device" \
    --peak-tflops 989 --gpu H200 --json "$out/plan.json" > "$out/plan.md" 2>&1 || status=1
/usr/bin/time -v $py -m lpselect score --data "$out/alpaca-size.jsonl" --model "$job_model" --epochs 3 \
    --device "$device" --out "$out/alpaca-job" --quiet > "$out/alpaca-job.log" 2>&1 || status=1
$py -c "
import json; m = json.load(open('$out/alpaca-job/manifest.json'))['steps']['score']
t = m['wall_time_s']; print('| phase | s |'); print('|---|---|')
for k, v in t.items(): print(f'| {k} | {v:.1f} |')
print(f'| total | {sum(t.values()):.1f} |'); print(); print('precision', m.get('precision'), 'device', m.get('device'))
" > "$out/alpaca-job.md" || status=1
cat "$out/plan.md" "$out/alpaca-job.md"
exit $status
