"""int8 PTQ of the Fashion-MNIST ResNet-20: accuracy measured in ONNX Runtime, for every range
mapping x calibration x per-tensor/per-channel, beside ONNX Runtime's own quantize_static.

Usage:
    python benchmarks/quant_fmnist.py --run bench-out/fmnist-resnet20 [--calib 512]
(the run folder comes from benchmarks/train_fmnist_resnet20.sh). Prints a Markdown table.
Target (issue 4): accuracy drop <= 0.3 points, measured in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import torchslim as ts
from torchslim.cli import _load_run
from torchslim.data import calibration_loader, get_dataset
from torchslim.export import ort_session
from torchslim.quant.config import cpu_lacks_vnni

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


def ort_accuracy(path: Path, test: torch.utils.data.Dataset, batch: int = 500) -> float:
    session = ort_session(path, threads=2)
    name = session.get_inputs()[0].name
    loader = torch.utils.data.DataLoader(test, batch_size=batch)
    right = total = 0
    for x, y in loader:
        logits = session.run(None, {name: x.numpy()})[0]
        right += int((logits.argmax(1) == y.numpy()).sum())
        total += len(y)
    return right / total


def ort_quantize_static(fp32: Path, out: Path, calib: torch.utils.data.DataLoader) -> None:
    """ONNX Runtime's own static quantizer: QDQ, per-channel, its default int8 types."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": x.numpy()} for x, _ in calib])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    pre = out.with_name("pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="bench-out/fmnist-resnet20")
    parser.add_argument("--calib", type=int, default=512, help="calibration images (train set)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, _ = _load_run(Path(args.run))
    model.eval()
    test = get_dataset("fashion-mnist", train=False)
    train = get_dataset("fashion-mnist", train=True, augment=[])  # no augmentation
    calib = calibration_loader(train, args.calib)
    x = torch.randn(1, 1, 28, 28)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = ts.export_onnx(model, x, tmp / "fp32.onnx")
        base = ort_accuracy(fp32.path, test)
        print(f"calibration: {args.calib} training images; accuracy on the 10k test set in "
              f"ONNX Runtime {__import__('onnxruntime').__version__}; 7-bit weights "
              f"(reduce_range, no VNNI here): {cpu_lacks_vnni()}\n")  # fmt: skip
        print("| quantizer | weights | top-1 (ORT) | change vs FP32 | model SQNR dB | "
              "ORT vs PyTorch top-1 agreement | file bytes |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        print(f"| FP32 | - | {100 * base:.2f}% | - | - | - | {fp32.file_bytes:,} |", flush=True)
        for label, extra in ROWS:
            for per_channel in (False, True):
                start = time.perf_counter()
                cfg = {"per_channel": per_channel, **extra}
                q = ts.quantize(model, calib, cfg, progress=False)
                rep = ts.export_onnx(q, next(iter(calib))[0], tmp / "q.onnx")
                acc = ort_accuracy(rep.path, test)
                kind = "per-channel" if per_channel else "per-tensor"
                print(f"| torchslim: {label} | {kind} | {100 * acc:.2f}% | "
                      f"{100 * (acc - base):+.2f} | {q.quant_report.model_sqnr_db:.1f} | "
                      f"{rep.top1_agreement:.3f} | {rep.file_bytes:,} |"
                      f" <!-- {time.perf_counter() - start:.0f}s -->", flush=True)  # fmt: skip
        ort_path = tmp / "ort_int8.onnx"
        ort_quantize_static(fp32.path, ort_path, calib)
        acc = ort_accuracy(ort_path, test)
        print(f"| ONNX Runtime quantize_static (QDQ, per-channel, defaults) | per-channel | "
              f"{100 * acc:.2f}% | {100 * (acc - base):+.2f} | - | - | "
              f"{ort_path.stat().st_size:,} |")  # fmt: skip


if __name__ == "__main__":
    main()
