#!/usr/bin/env bash
# Foundation benchmark: ResNet-20 on the embedded Fashion-MNIST, full training set, CPU.
# Target (issue 2): >= 92% test top-1 within 20 minutes on 2 cores.
# Usage: bash benchmarks/train_fmnist_resnet20.sh [OUT] [--results FILE]
# --results: where its figures are appended (default benchmarks/results/train_fmnist_resnet20.jsonl;
# '' writes nothing); then `python benchmarks/render.py` updates BENCHMARKS.md.
set -euo pipefail
cmd="bash benchmarks/train_fmnist_resnet20.sh${*:+ $*}"
out=bench-out/fmnist-resnet20
results=benchmarks/results/train_fmnist_resnet20.jsonl
while [ $# -gt 0 ]; do
    case "$1" in
        --results) results=$2; shift 2 ;;
        --results=*) results=${1#--results=}; shift ;;
        *) out=$1; shift ;;
    esac
done
started=$(date '+%Y-%m-%d %H:%M')
/usr/bin/time -v torchslim train --model resnet20 --data fashion-mnist --augment hflip \
    --epochs 4 --batch-size 128 --lr 0.1 --nesterov --warmup-epochs 0.2 --schedule cosine \
    --weight-decay 5e-4 --label-smoothing 0.1 --channels-last --eval-every 2 --seed 0 \
    --no-progress --out "$out" 2>&1 | tee "$out.log"
python "$(dirname "$0")/train_results.py" "$out" --log "$out.log" --results "$results" \
    --command "$cmd" --date "$started"
