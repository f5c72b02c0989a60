#!/usr/bin/env bash
# ModernBERT-mini against BERT-mini at an equal token budget, on the same data, by the same recipe:
#   jobs/architectures.sh [OUT]   (default runs/quality; run jobs/quality.sh OUT first: its BERT-mini arm,
#                                  data and SST-2 runs are reused; ~40 CPU-minutes more on 2 cores)
# 1. pretrain configs/pretrain/cpu-domain.yaml with --model modernbert-mini on OUT/data-domain (the movie
#    reviews, decontaminated against SST-2 dev): the 5.6 M-token budget of the BERT-mini arm, evaluated as often;
# 2. fine-tune it on SST-2 exactly as quality.sh fine-tunes BERT-mini (five paired seeds, the epoch chosen on
#    held-out training rows), and ModernBERT-mini from random initialisation with the same seeds;
# 3. compare: ModernBERT − its random init, ModernBERT − BERT (both pretrained), and the two random inits;
#    and print held-out MLM accuracy over training for both arms.
set -euo pipefail
OUT=${1:-runs/quality}
SHARED=${SHARED:-../shared/data}
BERTPRE=${BERTPRE:-bertpre}
PYTHON=${PYTHON:-python}
SEEDS=${SEEDS:-0 1 2 3 4}
export HF_HUB_OFFLINE=1
for needed in "$OUT/data-domain" "$OUT/pretrain-domain" "$OUT/sst2-domain/pretrained" "$OUT/sst2-random/random"; do
    [ -e "$needed" ] || { echo "$needed: missing; run jobs/quality.sh $OUT first" >&2; exit 2; }
done
FINETUNE=(--task sst2 --data-dir "$SHARED/glue" --max-train-samples 8000 --epochs 3 --per-device-batch-size 32
          --learning-rate 1e-4 --unpad-inputs true --cpu true --report-to none --seeds $SEEDS)

$BERTPRE pretrain --config configs/pretrain/cpu-domain.yaml --model modernbert-mini --eval-every 200 \
    --data "$OUT/data-domain" --output "$OUT/pretrain-modernbert" --report-to none
[ -d "$OUT/model-modernbert" ] || $BERTPRE export --checkpoint "$OUT/pretrain-modernbert" \
    --output "$OUT/model-modernbert"
[ -f "$OUT/sst2-modernbert/comparison.json" ] || $BERTPRE finetune --model "$OUT/model-modernbert" \
    --compare-random-init true "${FINETUNE[@]}" --output "$OUT/sst2-modernbert"

$BERTPRE compare --runs "$OUT/sst2-modernbert/pretrained" "$OUT/sst2-modernbert/random" \
    --names modernbert random-modernbert --output "$OUT/modernbert-vs-random.json"
$BERTPRE compare --runs "$OUT/sst2-modernbert/pretrained" "$OUT/sst2-domain/pretrained" \
    --names modernbert bert --output "$OUT/modernbert-vs-bert.json"
$BERTPRE compare --runs "$OUT/sst2-modernbert/random" "$OUT/sst2-random/random" \
    --names random-modernbert random-bert --output "$OUT/random-modernbert-vs-random-bert.json"

$PYTHON - "$OUT/pretrain-domain/metrics.jsonl" "$OUT/pretrain-modernbert/metrics.jsonl" <<'PY'
import json, sys
curves = []
for path in sys.argv[1:]:
    rows = [json.loads(line) for line in open(path)]
    curves.append({r["step"]: (r["tokens_seen"], r["eval_mlm_accuracy"]) for r in rows if "eval_mlm_accuracy" in r})
print("held-out MLM accuracy over training (the same 5.6 M-token budget, the same evaluation pairs)")
print(f"{'step':>6} {'tokens':>10} {'BERT-mini':>10} {'ModernBERT-mini':>16}")
for step in sorted(set(curves[0]) | set(curves[1])):
    tokens = (curves[0].get(step) or curves[1].get(step))[0]
    cells = [f"{100 * c[step][1]:.2f}" if step in c else "-" for c in curves]
    print(f"{step:>6} {tokens:>10,} {cells[0]:>10} {cells[1]:>16}")
PY
