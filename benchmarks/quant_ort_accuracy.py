"""Accuracy of torchslim's int8 export vs ONNX Runtime's quantize_static on *trained* models.

No pretrained ImageNet weights can be downloaded here (quant_ort_compare.py's linear probes on
random backbones were inconclusive), so torchvision ResNet-18 and MobileNetV2 are trained on
the embedded Fashion-MNIST at its native 28x28 (one input channel, 10 classes) and then
quantized by both tools from the same FP32 model with the same calibration images: torchslim
(`ts.quantize`, per-channel weights, default observers) and ORT (`quant_pre_process` +
`quantize_static`, QDQ, per-channel; its default int8 activations, and uint8 activations with
reduce_range). Every file is scored in ONNX Runtime on the full 10,000-image test set.

Usage:
    python benchmarks/quant_ort_accuracy.py [--models resnet18,mobilenet_v2]
        [--subset 20000] [--epochs 3] [--calib 512]
        [--results benchmarks/results/quant_ort_accuracy.jsonl]
Target (issue 4): torchslim's int8 at least as accurate as ORT's quantizer. The figures are
appended to --results (block ``quant_ort_accuracy``) for benchmarks/render.py.
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
from torchslim.data import calibration_loader, get_dataset, stratified_subset
from torchslim.export import evaluate_onnx
from torchslim.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

ORT_S8, ORT_U8 = "ORT quantize_static (int8 acts)", "ORT quantize_static (uint8 acts, reduce_range)"
ACC = "int8 accuracy change, trained ResNet-18 / MobileNetV2"  # headline claim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--subset", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--calib", type=int, default=512)
    add_results_option(parser, "quant_ort_accuracy")
    args = parser.parse_args()
    res = Results(args.results, table="quant_ort_accuracy", area="quantization",
                  claim="Accuracy of torchslim's int8 vs ONNX Runtime's quantize_static on trained "
                  "models", row_header=["model", "variant"],
                  settings={"subset": args.subset, "epochs": args.epochs,
                            "calibration images": args.calib})  # fmt: skip
    train = stratified_subset(get_dataset("fashion-mnist", train=True, augment=[]),
                              per_class=args.subset // 10, seed=0)  # fmt: skip
    test = get_dataset("fashion-mnist", train=False)
    calib = calibration_loader(get_dataset("fashion-mnist", train=True, augment=[]), args.calib)
    example = next(iter(calib))[0][:8]
    print(
        f"Fashion-MNIST 28x28, {args.subset} training images x {args.epochs} epochs (SGD lr "
        f"0.05 cosine), {args.calib} calibration images, top-1 on the 10k test set in ORT\n"
    )
    print("| model | variant | top-1 (ORT) | change vs FP32 | file bytes |")
    print("|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            start = time.perf_counter()
            torch.manual_seed(0)
            model = ts.models.create(name, num_classes=10, in_channels=1)
            cfg = {"epochs": args.epochs, "lr": 0.05, "batch_size": 128, "schedule": "cosine",
                   "weight_decay": 5e-4, "progress": False, "seed": 0}  # fmt: skip
            Trainer(model, cfg, train).fit()
            model.eval()
            paths = {"FP32": tmp / f"{name}_fp32.onnx", "torchslim": tmp / f"{name}_ts.onnx"}
            ts.export_onnx(model, example, paths["FP32"])
            batches = [x.numpy() for x, _ in calib]
            for label, u8 in ((ORT_S8, False), (ORT_U8, True)):
                paths[label] = tmp / f"{name}_{'u8' if u8 else 's8'}.onnx"
                ort_quantize_static(paths["FP32"], paths[label], batches, uint8_activations=u8)
            q = ts.quantize(model, calib, {"per_channel": True}, progress=False)
            ts.export_onnx(q, example, paths["torchslim"])
            acc = {k: evaluate_onnx(p, test, batch_size=500) for k, p in paths.items()}
            for k, p in paths.items():
                change = "-" if k == "FP32" else f"{100 * (acc[k] - acc['FP32']):+.2f}"
                print(f"| {name} | {k} | {100 * acc[k]:.2f}% | {change} | "
                      f"{p.stat().st_size:,} |", flush=True)  # fmt: skip
                row = [name, k]
                res.add(row, "top-1 (ORT)", round(100 * acc[k], 4), "%", 2, model=name)
                if k != "FP32":
                    extra: dict[str, Any] = {"headline": {"claim": ACC, "order": 19,
                                                          "label": "torchslim"}}  # fmt: skip
                    if k == "torchslim":
                        extra["target"] = {"text": "≥ ORT's (same model)", "op": ">=",
                                           "ref": "peer"}  # fmt: skip
                    else:
                        extra["headline"].update(label="ORT", side="peer")
                    res.add(row, "change vs FP32", round(100 * (acc[k] - acc["FP32"]), 4), "pt",
                            2, model=name, **extra)  # fmt: skip
                res.add(row, "file bytes", p.stat().st_size, "bytes", 0, model=name)
            print(f"<!-- {name}: {time.perf_counter() - start:.0f}s -->", flush=True)


if __name__ == "__main__":
    main()
