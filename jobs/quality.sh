#!/usr/bin/env bash
# Does pretraining on your own domain's text pay? The own-corpus recipe measured end to end, in one command:
#   jobs/quality.sh [OUT]   (default runs/quality; needs ../shared/data beside the checkout; ~2 CPU-hours)
# 1. prepare the domain corpus (2,000 movie reviews) and the general one (pretrain/: Wikipedia, WikiText, books,
#    speeches) with the default tokenizer, each decontaminated against SST-2 dev;
# 2. pretrain configs/pretrain/cpu-domain.yaml on each: the same 5.6 M-token budget;
# 3. fine-tune on SST-2 (8,000 training rows, 10% of them held out to choose the epoch; the dev set only scores)
#    with five paired seeds: each pretrained model, and the same architecture from random init;
# 4. compare the arms seed by seed: domain − random, general − random, domain − general.
# Every step is deterministic given the token budget and the seeds; a step whose output exists is skipped.
set -euo pipefail
OUT=${1:-runs/quality}
SHARED=${SHARED:-../shared/data}
BERTPRE=${BERTPRE:-bertpre}
SEEDS=${SEEDS:-0 1 2 3 4}
export HF_HUB_OFFLINE=1
FINETUNE=(--task sst2 --data-dir "$SHARED/glue" --max-train-samples 8000 --epochs 3 --per-device-batch-size 32
          --learning-rate 1e-4 --unpad-inputs true --cpu true --report-to none --seeds $SEEDS)

for corpus in domain general; do
    inputs=$SHARED/classification/movie_reviews/movie_reviews.jsonl.gz
    [ "$corpus" = general ] && inputs=$SHARED/pretrain
    [ -d "$OUT/data-$corpus" ] || $BERTPRE prepare --inputs "$inputs" --decontaminate "$SHARED/glue/SST-2/dev.tsv" \
        --output "$OUT/data-$corpus"
    $BERTPRE pretrain --config configs/pretrain/cpu-domain.yaml --data "$OUT/data-$corpus" \
        --output "$OUT/pretrain-$corpus" --report-to none
    [ -d "$OUT/model-$corpus" ] || $BERTPRE export --checkpoint "$OUT/pretrain-$corpus" --output "$OUT/model-$corpus"
    [ -f "$OUT/sst2-$corpus/comparison.json" ] || $BERTPRE finetune --model "$OUT/model-$corpus" "${FINETUNE[@]}" \
        --output "$OUT/sst2-$corpus"
done
[ -f "$OUT/sst2-random/comparison.json" ] || $BERTPRE finetune --model "$OUT/model-domain" --init random \
    "${FINETUNE[@]}" --output "$OUT/sst2-random"

compare() {
    $BERTPRE compare --runs "$OUT/sst2-$1/$3" "$OUT/sst2-$2/$4" --names "$1" "$2" --output "$OUT/$1-vs-$2.json"
}
compare domain random pretrained random
compare general random pretrained random
compare domain general pretrained pretrained
