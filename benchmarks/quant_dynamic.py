"""Dynamic int8 quantization of a Linear-heavy model: torchslim beside ONNX Runtime's own.

Model: the MNIST MLP 784-1200-1200-10 of ``distill_mnist_hinton.py`` (loaded from
``--model-file`` if present, else trained for ``--epochs`` on the 60k training images and saved
there). Variants, all run in ONNX Runtime: FP32; ``ts.quantize(model, None, {"dynamic": True})``
exported by ``ts.export_onnx``; ORT's ``quantize_dynamic`` (per-channel int8 weights), with and
without ``reduce_range``. Reported: top-1 on the 10k test images, file bytes, the int8 kernels
ORT actually runs (its optimised graph), and latency at batch 1 and 32 with 2 threads, timed
round-robin over the files (``--rounds`` rounds, median).

Usage:
    python benchmarks/quant_dynamic.py [--data-root ../shared/datasets/mnist]
        [--model-file bench-out/mnist-mlp2x1200.pt] [--epochs 3] [--rounds 5]
        [--results benchmarks/results/quant_dynamic.jsonl]
The figures are appended to --results (block ``quant_dynamic``) for benchmarks/render.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from _ort_quantizer import format_kernels

import torchslim as ts
from torchslim.data import get_dataset
from torchslim.export import evaluate_onnx, ort_kernels, ort_session
from torchslim.models import create
from torchslim.runtime import round_robin_latency
from torchslim.train import Trainer, atomic_save

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

ORT = "ORT quantize_dynamic"
DYN = "Dynamic int8, MNIST MLP"  # headline claim


def _model(path: Path, root: str, epochs: int) -> torch.nn.Module:
    model = create("mlp", num_classes=10, in_channels=1, hidden=(1200, 1200), dropout=0.5)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        train = get_dataset("mnist", train=True, root=root)
        cfg = {"epochs": epochs, "batch_size": 128, "lr": 0.05, "schedule": "cosine"}
        Trainer(model, cfg, train, None).fit()
        atomic_save(model.state_dict(), path)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default="../shared/datasets/mnist")
    parser.add_argument("--model-file", default="bench-out/mnist-mlp2x1200.pt")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    add_results_option(parser, "quant_dynamic")
    args = parser.parse_args()
    res = Results(args.results, table="quant_dynamic", area="quantization",
                  claim="Dynamic int8 of a Linear-heavy model (MNIST MLP 784-1200-1200-10) in ONNX "
                  "Runtime", row_header=["variant"], model="MNIST MLP 2x1200", threads=2,
                  settings={"model file": args.model_file, "rounds": args.rounds})  # fmt: skip
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _model(Path(args.model_file), args.data_root, args.epochs)
    test = get_dataset("mnist", train=False, root=args.data_root)
    x = torch.randn(8, 1, 28, 28)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = {"FP32": tmp / "fp32.onnx", "torchslim dynamic": tmp / "ts.onnx"}
        ts.export_onnx(model, x, paths["FP32"])
        q = ts.quantize(model, None, {"dynamic": True, "per_channel": True})
        report = ts.export_onnx(q, x, paths["torchslim dynamic"])
        for label, reduce in ((ORT, False), (ORT + " reduce_range", True)):
            paths[label] = tmp / f"ort_{int(reduce)}.onnx"
            quantize_dynamic(str(paths["FP32"]), str(paths[label]), per_channel=True,
                             reduce_range=reduce, weight_type=QuantType.QInt8)  # fmt: skip
        acc = {k: evaluate_onnx(p, test, threads=2) for k, p in paths.items()}
        size = {k: p.stat().st_size for k, p in paths.items()}
        kernels = {k: ort_kernels(p) for k, p in paths.items()}
        inputs = [torch.randn(1, 1, 28, 28), torch.randn(32, 1, 28, 28)]
        lat = round_robin_latency(paths, inputs, rounds=args.rounds, repeats=(200, 50), threads=2)
        ort_session(paths["torchslim dynamic"])  # loads: the file is valid
    print(f"torchslim export: {report}\n")
    print("| variant | top-1 (ORT) | file bytes | size vs FP32 | b1 ms | b32 ms | "
          "b1 speedup | b32 speedup | kernels ORT runs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for k in paths:
        print(f"| {k} | {100 * acc[k]:.2f}% | {size[k]:,} | {size[k] / size['FP32']:.3f} | "
              f"{lat[k][0]:.3f} | {lat[k][1]:.2f} | {lat['FP32'][0] / lat[k][0]:.2f}x | "
              f"{lat['FP32'][1] / lat[k][1]:.2f}x | {format_kernels(kernels[k])} |")  # fmt: skip
        figures = {"top-1 (ORT)": (100 * acc[k], "%", 2), "file bytes": (size[k], "bytes", 0),
                   "size vs FP32": (size[k] / size["FP32"], "ratio", 3),
                   "b1 ms": (lat[k][0], "ms", 3), "b32 ms": (lat[k][1], "ms", 2),
                   "b1 speedup": (lat["FP32"][0] / lat[k][0], "x", 2),
                   "b32 speedup": (lat["FP32"][1] / lat[k][1], "x", 2),
                   "kernels ORT runs": (format_kernels(kernels[k]), "text", None)}  # fmt: skip
        for metric, (value, unit, digits) in figures.items():
            extra: dict[str, Any] = {}
            headline = k in ("torchslim dynamic", ORT)
            if headline and metric in ("top-1 (ORT)", "b1 speedup", "b32 speedup"):
                label = "top-1" if metric.startswith("top-1") else "speed-up"
                extra["headline"] = {"claim": DYN, "order": 20, "label": label}
                if k == ORT:
                    extra["headline"].update(label=f"ORT {label}", side="peer")
            value = round(value, 5) if isinstance(value, float) else value
            res.add(k, metric, value, unit, digits, **extra)
        if k == "torchslim dynamic" and report.max_abs_error is not None:
            res.add(k, "PyTorch vs ORT max abs diff", report.max_abs_error, "sci", 1)


if __name__ == "__main__":
    main()
