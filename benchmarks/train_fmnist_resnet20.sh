#!/usr/bin/env bash
# Foundation benchmark: ResNet-20 on the embedded Fashion-MNIST, full training set, CPU.
# Target (issue 2): >= 92% test top-1 within 20 minutes on 2 cores.
set -euo pipefail
out=${1:-bench-out/fmnist-resnet20}
/usr/bin/time -v torchslim train --model resnet20 --data fashion-mnist --augment hflip \
    --epochs 4 --batch-size 128 --lr 0.1 --nesterov --warmup-epochs 0.2 --schedule cosine \
    --weight-decay 5e-4 --label-smoothing 0.1 --channels-last --eval-every 2 --seed 0 \
    --no-progress --out "$out" 2>&1 | tee "$out.log"
