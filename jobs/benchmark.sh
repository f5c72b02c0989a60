#!/usr/bin/env bash
# The benchmark of docs/results.md on one GPU, in one command: the phase 1 and phase 2 shapes (against the
# eager and the torch.compile'd reference), real variable-length batches, and the 300-step bf16
# loss-curve check against transformers.BertForPreTraining.
#
#   jobs/benchmark.sh DATA [OUT]
#
# DATA: a dataset from `bertpre prepare` at 128 tokens (configs/data/wikipedia-128.yaml; any real
# text works). OUT (default runs/benchmark) receives a .txt table and a .json report per run.
set -euo pipefail
DATA=${1:?usage: jobs/benchmark.sh DATA [OUT]  (DATA from bertpre prepare, 128 tokens)}
OUT=${2:-runs/benchmark}
BERTPRE=${BERTPRE:-bertpre}
[ -f "$DATA/prepare.json" ] || { echo "$DATA: not a prepared dataset (run bertpre prepare first)" >&2; exit 2; }
mkdir -p "$OUT"

bench() {
    local name=$1; shift
    echo "== $name: bertpre bench $*"
    $BERTPRE bench "$@" --save-json "$OUT/$name.json" | tee "$OUT/$name.txt"
}

bench phase1 --model-size base --seq-length 128 --batch-size 256 --compile true --compile-reference true
bench phase2 --model-size base --seq-length 512 --batch-size 32
bench real-data --model-size base --batch-size 256 --data "$DATA"
bench curves --model-size base --batch-size 256 --data "$DATA" --curve-steps 300
