#!/usr/bin/env bash
# The modern recipe's training features, measured one at a time against the plain recipe:
#   jobs/modern_recipe.sh DATA [OUT]   (DATA: a prepared dataset, e.g. runs/quality/data-domain of quality.sh;
#                                       ~12 CPU-minutes on 2 cores)
# BERT-mini by configs/pretrain/cpu-domain.yaml on a 1.5 M-token budget, one seed, four runs that differ in one
# feature each: the linear schedule (the recipe), warm-up-stable-decay with a 1-sqrt decay over the last 20%,
# batch-size warm-up (8 → 32 sequences over the first 200 steps), and a masking-rate schedule (30% → 15%).
# Prints each run's held-out masked-LM accuracy and loss, always measured at 15% masking.
set -euo pipefail
DATA=${1:?a prepared dataset}
OUT=${2:-runs/modern-recipe}
BERTPRE=${BERTPRE:-bertpre}
PYTHON=${PYTHON:-python}
export HF_HUB_OFFLINE=1
COMMON=(--config configs/pretrain/cpu-domain.yaml --data "$DATA" --max-tokens 1500000 --eval-every 100
        --eval-batches 40 --report-to none)
declare -A VARIANTS=(
    [linear]=""
    [wsd]="--lr-schedule wsd --decay-fraction 0.2 --decay-shape 1-sqrt"
    [batch-warmup]="--per-device-batch-size 8 --batch-warmup-steps 200 --batch-warmup-start 0.25"
    [masking-schedule]="--mlm-probability 0.3 --mlm-probability-end 0.15 --mlm-probability-steps 400"
)
for name in linear wsd batch-warmup masking-schedule; do
    # shellcheck disable=SC2086 - each variant is a list of options
    $BERTPRE pretrain "${COMMON[@]}" ${VARIANTS[$name]} --output "$OUT/$name"
done
$PYTHON - "$OUT" <<'PY'
import json, sys
from pathlib import Path
print(f"{'variant':<18} {'steps':>6} {'tokens':>10} {'held-out MLM acc':>17} {'held-out MLM loss':>18}")
for name in ("linear", "wsd", "batch-warmup", "masking-schedule"):
    rows = [json.loads(line) for line in (Path(sys.argv[1]) / name / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "eval_mlm_accuracy" in r][-1]
    print(f"{name:<18} {last['step']:>6} {last.get('tokens_seen', 0):>10,} {100 * last['eval_mlm_accuracy']:>16.2f}% "
          f"{last['eval_mlm_loss']:>18.3f}")
PY
