#!/usr/bin/env bash
# Learning rates under DP-SGD at the frontier's settings (experiments/cpu/frontier.yaml:
# 128 texts, 2 epochs, batch 8, block 32; epsilon 8, delta 1e-5, clip 1.0). Prints the
# validation perplexity after each epoch for each (method, lr); finished runs are skipped.
#   bash experiments/cpu/dp_lr_sweep.sh [OUT_DIR]      (default results/dp-lr-sweep)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/dp-lr-sweep}
mkdir -p "$out"
for spec in "lora 3e-3" "lora 1e-2" "lora 3e-2" "head 1e-3" "head 1e-2" "full 3e-4" \
            "full 1e-3" "full 3e-3"; do
  set -- $spec
  run="$out/$1-$2"
  if [ ! -f "$run.log" ] || ! grep -q "epoch 2: train loss" "$run.log"; then
    .venv/bin/jaxmem train --method "$1" --lr "$2" --corpus default --n-train 128 \
      --n-validation 24 --n-members 128 --n-nonmembers 128 --epochs 2 --batch-size 8 \
      --block-size 32 --dp epsilon=8,delta=1e-5,clip=1.0 --run-dir "$run" > "$run.log" 2>&1 \
      || { echo "$1 lr $2: failed, see $run.log"; continue; }
  fi
  echo "$1 lr $2: $(grep -o 'val ppl [0-9.]*' "$run.log" | tr '\n' ' ')"
done
