#!/usr/bin/env bash
# The small-budget recipe end to end on a 2-core CPU, and its answer to "did pretraining pay?":
#   jobs/cpu_recipe.sh [OUT]   (default runs/cpu-recipe; needs ../shared/data beside the checkout)
# prepare (defaults) → pretrain configs/pretrain/cpu-20min.yaml (5.6 M tokens, ~20 minutes) → export →
# SST-2 (8,000 random training rows, dev set), pretrained and random init, seeds 0 1 2.
set -euo pipefail
OUT=${1:-runs/cpu-recipe}
SHARED=${SHARED:-../shared/data}
BERTPRE=${BERTPRE:-bertpre}
export HF_HUB_OFFLINE=1
[ -d "$OUT/data" ] || $BERTPRE prepare --inputs "$SHARED/pretrain" --output "$OUT/data"
$BERTPRE pretrain --config configs/pretrain/cpu-20min.yaml --data "$OUT/data" --output "$OUT/pretrain"
$BERTPRE status "$OUT/pretrain" --report
$BERTPRE export --checkpoint "$OUT/pretrain" --output "$OUT/model" --overwrite true
$BERTPRE finetune --model "$OUT/model" --task sst2 --data-dir "$SHARED/glue" --max-train-samples 8000 \
    --epochs 3 --per-device-batch-size 32 --learning-rate 1e-4 --compare-random-init true --seeds 0 1 2 \
    --cpu true --output "$OUT/sst2" --overwrite true
