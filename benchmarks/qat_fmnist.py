"""QAT of the Fashion-MNIST ResNet-20 at 4/3/2 bits (LSQ and PACT) vs PTQ at the same bits.

Usage:
    python benchmarks/qat_fmnist.py --run bench-out/fmnist-resnet20 [--steps 300]
        [--rows lsq:4,pact:4,pact:3,pact:2]   (append ":fl8" to keep first/last layers at 8 bits)
(the run folder comes from benchmarks/train_fmnist_resnet20.sh). Each QAT row fine-tunes the
trained float model for --steps SGD steps of batch 128 (cosine LR); accuracy is the full 10k
test set, in PyTorch (fake-quant) and in ONNX Runtime after ts.convert + ts.export_onnx.
Target (issue 4): W4A4 within 1 point of float; PACT rows beside the PACT paper's ResNet-20
CIFAR-10 table (FP 91.6; 89.7 / 91.1 / 91.3 at 2 / 3 / 4 bits).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

import torchslim as ts
from torchslim.data import calibration_loader, get_dataset
from torchslim.export import evaluate_onnx
from torchslim.pipeline import load_run
from torchslim.train import Trainer, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="bench-out/fmnist-resnet20")
    parser.add_argument("--steps", type=int, default=300, help="QAT steps (batch 128)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--rows", default="lsq:4,pact:4,pact:3,pact:2")
    args = parser.parse_args()
    torch.manual_seed(0)
    base, _ = load_run(Path(args.run))
    base.eval()
    train = get_dataset("fashion-mnist", train=True, augment=["hflip"])
    test = get_dataset("fashion-mnist", train=False)
    calib = calibration_loader(get_dataset("fashion-mnist", train=True, augment=[]), 512)
    base_acc = evaluate(base, test, batch_size=512).accuracy
    print(f"QAT budget: {args.steps} steps x 128 images ({args.steps * 128 / 60000:.2f} epochs), "
          f"SGD lr {args.lr} cosine, from the trained float model; 2-core CPU\n")  # fmt: skip
    print("| method | W/A bits | top-1 PyTorch | top-1 ORT | change vs float | minutes |")
    print("|---|---|---|---|---|---|")
    print(f"| float | 32/32 | {100 * base_acc:.2f}% | - | - | - |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for row in args.rows.split(","):
            kind, bits, *opts = row.split(":")
            bits = int(bits)
            edge = {"first_layer_bits": 8, "last_layer_bits": 8} if "fl8" in opts else {}
            start = time.perf_counter()
            ptq = ts.quantize(base, calib, {"weight_bits": bits, "act_bits": bits},
                              progress=False)  # fmt: skip
            ptq_acc = evaluate(ptq, test, batch_size=512).accuracy
            print(f"| PTQ (affine acts, per-channel weights) | {bits}/{bits} | "
                  f"{100 * ptq_acc:.2f}% | - | {100 * (ptq_acc - base_acc):+.2f} | - |",
                  flush=True)  # fmt: skip
            cfg = {"weight_bits": bits, "act_bits": bits, "act_quantizer": kind,
                   "weight_quantizer": "lsq" if kind == "lsq" else "ste", **edge}  # fmt: skip
            q = ts.prepare_qat(base, cfg, calib_data=calib)
            # --steps beyond one epoch (468 steps) spreads them evenly over enough epochs
            epochs = math.ceil(args.steps / (len(train) // 128))
            tcfg = {"epochs": epochs, "lr": args.lr, "batch_size": 128, "schedule": "cosine",
                    "weight_decay": 5e-5, "progress": False, "seed": 0, "eval_every": epochs,
                    "max_steps_per_epoch": math.ceil(args.steps / epochs)}  # fmt: skip
            Trainer(q, tcfg, train, None).fit()
            ts.convert(q)
            acc = evaluate(q, test, batch_size=512).accuracy
            path = Path(tmp) / f"{row.replace(':', '_')}.onnx"
            ts.export_onnx(q, next(iter(calib))[0], path)
            ort_acc = evaluate_onnx(path, test, batch_size=500)
            minutes = (time.perf_counter() - start) / 60
            label = f"QAT {kind.upper()}" + (", first/last layer W8" if edge else "")
            print(f"| {label} | {bits}/{bits} | {100 * acc:.2f}% | "
                  f"{100 * ort_acc:.2f}% | {100 * (acc - base_acc):+.2f} | {minutes:.1f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
