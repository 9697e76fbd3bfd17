"""QAT of the Fashion-MNIST ResNet-20 at 4/3/2 bits (LSQ and PACT) vs PTQ at the same bits.

Usage:
    python benchmarks/qat_fmnist.py --run bench-out/fmnist-resnet20 [--steps 300]
        [--rows lsq:4,pact:4,pact:3,pact:2]   (append ":fl8" to keep first/last layers at 8 bits)
        [--results benchmarks/results/qat_fmnist.jsonl]
(the run folder comes from benchmarks/train_fmnist_resnet20.sh). Each QAT row fine-tunes the
trained float model for --steps SGD steps of batch 128 (cosine LR); accuracy is the full 10k
test set, in PyTorch (fake-quant) and in ONNX Runtime after ts.convert + ts.export_onnx.
Target (issue 4): W4A4 within 1 point of float; PACT rows beside the PACT paper's ResNet-20
CIFAR-10 table (FP 91.6; 89.7 / 91.1 / 91.3 at 2 / 3 / 4 bits). The figures are appended to
--results for benchmarks/render.py (QAT rows: block ``qat_fmnist``; PTQ rows: ``qat_fmnist_ptq``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import torchslim as ts
from torchslim.data import calibration_loader, get_dataset
from torchslim.export import evaluate_onnx
from torchslim.pipeline import load_run
from torchslim.train import Trainer, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

# the PACT paper's change from its float model (ResNet-20, CIFAR-10), by bits
PACT_PAPER = {2: -1.9, 3: -0.5, 4: -0.3}
Q4 = "QAT W4A4, Fashion-MNIST ResNet-20, 0.85 epoch: change"  # headline claims
Q23 = "PACT W2A2 / W3A3, first/last layers 8-bit, 3.4 epochs: change"


def budget(steps: int, images: int) -> str:
    """``400 steps (0.85 epoch)``: the QAT budget as the results label it."""
    epochs = steps * 128 / images
    return f"{steps} steps ({epochs:.2g} epoch{'s' if epochs >= 1 else ''})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="bench-out/fmnist-resnet20")
    parser.add_argument("--steps", type=int, default=300, help="QAT steps (batch 128)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--rows", default="lsq:4,pact:4,pact:3,pact:2")
    add_results_option(parser, "qat_fmnist")
    args = parser.parse_args()
    res = Results(args.results, table="qat_fmnist", area="quantization",
                  claim="QAT of the Fashion-MNIST ResNet-20 at 4/3/2 bits (LSQ, PACT) beside PTQ "
                  "at the same bits", row_header=["method", "W/A bits", "budget"],
                  model="ResNet-20",
                  settings={"run": args.run, "steps": args.steps, "lr": args.lr,
                            "batch": 128, "calibration images": 512})  # fmt: skip
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
    res.add(["float", "32/32", "–"], "top-1 PyTorch", round(100 * base_acc, 4), "%", 2)
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
            ptq_row = ["PTQ (affine acts, per-channel weights)", f"{bits}/{bits}", "–"]
            res.add(ptq_row, "top-1 PyTorch", round(100 * ptq_acc, 4), "%", 2,
                    table="qat_fmnist_ptq")  # fmt: skip
            res.add(ptq_row, "change vs float", round(100 * (ptq_acc - base_acc), 4), "pt", 2,
                    table="qat_fmnist_ptq")  # fmt: skip
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
            row = [label, f"{bits}/{bits}", budget(args.steps, len(train))]
            change: dict[str, Any] = {}
            if kind == "pact" and bits in PACT_PAPER:
                change["peer"] = {"name": "PACT paper", "label": "PACT paper", "unit": "pt",
                                  "digits": 1, "value": PACT_PAPER.get(bits),
                                  "note": "ResNet-20 on CIFAR-10, full schedule, first and last "
                                          "layers at full precision"}  # fmt: skip
            if bits == 4:
                change["target"] = {"text": "within 1 point of float", "op": ">=", "value": -1.0}
                if args.steps == 400 and not edge:
                    change["headline"] = {"claim": Q4, "order": 14, "label": kind.upper()}
            if kind == "pact" and edge and bits in (2, 3) and args.steps == 1600:
                change["headline"] = {"claim": Q23, "order": 15, "label": f"W{bits}A{bits}"}
            res.add(row, "top-1 PyTorch", round(100 * acc, 4), "%", 2)
            res.add(row, "top-1 ORT", round(100 * ort_acc, 4), "%", 2)
            res.add(row, "change vs float", round(100 * (acc - base_acc), 4), "pt", 2, **change)
            res.add(row, "change vs float (ORT)", round(100 * (ort_acc - base_acc), 4), "pt", 2)
            res.add(row, "minutes", round(minutes, 2), "min", 1)


if __name__ == "__main__":
    main()
