"""int8 PTQ of the Fashion-MNIST ResNet-20: accuracy measured in ONNX Runtime, for every range
mapping x calibration x per-tensor/per-channel, beside ONNX Runtime's own quantize_static.

Usage:
    python benchmarks/quant_fmnist.py --run bench-out/fmnist-resnet20 [--calib 512]
        [--results benchmarks/results/quant_fmnist.jsonl]
(the run folder comes from benchmarks/train_fmnist_resnet20.sh). Prints a Markdown table and
appends its figures to --results for benchmarks/render.py.
Target (issue 4): accuracy drop <= 0.3 points, measured in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _ort_quantizer import ort_quantize_static

import torchslim as ts
from torchslim.data import calibration_loader, get_dataset
from torchslim.export import evaluate_onnx
from torchslim.pipeline import load_run
from torchslim.quant.config import cpu_lacks_vnni

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

PTQ = "int8 PTQ of the Fashion-MNIST ResNet-20, change in ONNX Runtime"  # headline claim
ORT_ROW = ["ONNX Runtime quantize_static (QDQ, per-channel, defaults)", "per-channel"]


def record(res: Results, row: list[str], acc: float, base: float, nbytes: int,
           sqnr: float | None = None, agreement: float | None = None) -> None:  # fmt: skip
    """One row's figures; torchslim rows carry the target, the default config and ORT's row
    stand for the headline claim."""
    change: dict[str, Any] = {}
    if row[0].startswith("torchslim"):
        change["target"] = {"text": "drop ≤ 0.3 points", "op": ">=", "value": -0.3}
        if "(default)" in row[0]:
            change["headline"] = {"claim": PTQ, "order": 13, "label": "default"}
    elif row == ORT_ROW:
        change["headline"] = {"claim": PTQ, "order": 13, "label": "ORT quantize_static",
                              "side": "peer"}  # fmt: skip
    res.add(row, "top-1 (ORT)", round(100 * acc, 4), "%", 2)
    if row[0] != "FP32":
        res.add(row, "change vs FP32", round(100 * (acc - base), 4), "pt", 2, **change)
    if sqnr is not None:
        res.add(row, "model SQNR dB", round(sqnr, 3), "dB", 1)
    if agreement is not None:
        res.add(row, "ORT vs PyTorch top-1 agreement", round(agreement, 4), "ratio", 3)
    res.add(row, "file bytes", nbytes, "bytes", 0)


ROWS = [  # (label, config)
    ("symmetric (abs-max)", {"act_mapping": "symmetric", "weight_mapping": "symmetric"}),
    ("saturating, percentile 99.99", {"act_mapping": "saturating", "calibration": "percentile",
                                      "weight_mapping": "symmetric"}),
    ("saturating, KL", {"act_mapping": "saturating", "calibration": "kl",
                        "weight_mapping": "symmetric"}),
    ("saturating, MSE (acts + weights)", {"act_mapping": "saturating", "calibration": "mse",
                                          "weight_mapping": "saturating"}),
    ("affine (min/max)", {"act_mapping": "affine", "weight_mapping": "affine"}),
    ("affine acts, symmetric weights (default)", {}),
    ("default + bias correction", {"bias_correction": True}),
    ("default, full 8-bit weights (reduce_range off)", {"reduce_range": False}),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="bench-out/fmnist-resnet20")
    parser.add_argument("--calib", type=int, default=512, help="calibration images (train set)")
    add_results_option(parser, "quant_fmnist")
    args = parser.parse_args()
    res = Results(args.results, table="quant_fmnist", area="quantization",
                  claim="int8 PTQ of the Fashion-MNIST ResNet-20, top-1 measured in ONNX Runtime",
                  row_header=["quantizer", "weights"], model="ResNet-20",
                  settings={"run": args.run, "calibration images": args.calib,
                            "7-bit weights (no VNNI)": cpu_lacks_vnni()})  # fmt: skip
    torch.manual_seed(0)
    model, _ = load_run(Path(args.run))
    model.eval()
    test = get_dataset("fashion-mnist", train=False)
    train = get_dataset("fashion-mnist", train=True, augment=[])  # no augmentation
    calib = calibration_loader(train, args.calib)
    x = torch.randn(1, 1, 28, 28)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = ts.export_onnx(model, x, tmp / "fp32.onnx")
        base = evaluate_onnx(fp32.path, test, batch_size=500, threads=2)
        print(f"calibration: {args.calib} training images; accuracy on the 10k test set in "
              f"ONNX Runtime {__import__('onnxruntime').__version__}; 7-bit weights "
              f"(reduce_range, no VNNI here): {cpu_lacks_vnni()}\n")  # fmt: skip
        print("| quantizer | weights | top-1 (ORT) | change vs FP32 | model SQNR dB | "
              "ORT vs PyTorch top-1 agreement | file bytes |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        print(f"| FP32 | - | {100 * base:.2f}% | - | - | - | {fp32.file_bytes:,} |", flush=True)
        record(res, ["FP32", "-"], base, base, fp32.file_bytes)
        for label, extra in ROWS:
            for per_channel in (False, True):
                start = time.perf_counter()
                cfg = {"per_channel": per_channel, **extra}
                q = ts.quantize(model, calib, cfg, progress=False)
                rep = ts.export_onnx(q, next(iter(calib))[0], tmp / "q.onnx")
                acc = evaluate_onnx(rep.path, test, batch_size=500, threads=2)
                kind = "per-channel" if per_channel else "per-tensor"
                print(f"| torchslim: {label} | {kind} | {100 * acc:.2f}% | "
                      f"{100 * (acc - base):+.2f} | {ts.report(q).model_sqnr_db:.1f} | "
                      f"{rep.top1_agreement:.3f} | {rep.file_bytes:,} |"
                      f" <!-- {time.perf_counter() - start:.0f}s -->", flush=True)  # fmt: skip
                record(res, [f"torchslim: {label}", kind], acc, base, rep.file_bytes,
                       ts.report(q).model_sqnr_db, rep.top1_agreement)  # fmt: skip
        ort_path = tmp / "ort_int8.onnx"
        ort_quantize_static(fp32.path, ort_path, [x.numpy() for x, _ in calib])
        acc = evaluate_onnx(ort_path, test, batch_size=500, threads=2)
        print(f"| ONNX Runtime quantize_static (QDQ, per-channel, defaults) | per-channel | "
              f"{100 * acc:.2f}% | {100 * (acc - base):+.2f} | - | - | "
              f"{ort_path.stat().st_size:,} |")  # fmt: skip
        record(res, ORT_ROW, acc, base, ort_path.stat().st_size)


if __name__ == "__main__":
    main()
