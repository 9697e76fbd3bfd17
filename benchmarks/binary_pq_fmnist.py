"""Binary networks and product quantization on Fashion-MNIST: accuracy and real bytes on disk.

Usage:
    python benchmarks/binary_pq_fmnist.py --run bench-out/fmnist-resnet20 [--steps 470]
        [--parts pq,binary] [--results benchmarks/results/binary_pq_fmnist.jsonl]
(the run folder comes from benchmarks/train_fmnist_resnet20.sh). Rows:
* PQ of the trained ResNet-20 (k-means and Q-CNN, two codebook settings), no fine-tuning;
* binary-weight ResNet-20 (XNOR scaling, first/last layer float) fine-tuned from the float model;
* a binarized MLP (binary weights *and* activations, BNN layout) beside the same MLP in float,
  both trained from scratch for the same steps.
Bytes are the files written by ts.quant.save_pq / save_packed (float32 for what is not packed).
The figures are appended to --results (blocks ``pq_fmnist`` and ``binary_fmnist``) for
benchmarks/render.py.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.data import calibration_loader, get_dataset
from torchslim.pipeline import load_run
from torchslim.quant import binarize, product_quantize, save_packed, save_pq
from torchslim.train import Trainer, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

NAMES = {"kmeans": "k-means", "qcnn": "Q-CNN"}
PQ = "Product quantization, 4-bit codes, no fine-tuning (ResNet-20)"  # headline claims
BIN = "Binary networks on Fashion-MNIST"


def record(res: Results, table: str, row: list[str], acc: float, change: float | None,
           size: int, ratio: float, minutes: float | None,
           head: tuple[str, int, str, str | None] | None = None) -> None:  # fmt: skip
    """One row; ``head`` = (claim, order, label prefix, side) puts its change and file ratio in
    the headline."""
    extra: dict[str, dict[str, Any]] = {"change": {}, "vs float32 file": {}}
    if head is not None:
        claim, order, prefix, side = head
        for metric, what in (("change", "change"), ("vs float32 file", "file/float")):
            extra[metric]["headline"] = {"claim": claim, "order": order,
                                         "label": f"{prefix} {what}"}  # fmt: skip
            if side:
                extra[metric]["headline"]["side"] = side
    res.add(row, "top-1", round(100 * acc, 4), "%", 2, table=table)
    if change is not None:
        res.add(row, "change", round(100 * change, 4), "pt", 2, table=table, **extra["change"])
    res.add(row, "bytes on disk", size, "bytes", 0, table=table)
    res.add(row, "vs float32 file", round(ratio, 4), "ratio", 2, table=table,
            **extra["vs float32 file"])  # fmt: skip
    if minutes is not None:
        res.add(row, "minutes", round(minutes, 2), "min", 1, table=table)


def _float_bytes(model: nn.Module, tmp: Path) -> int:
    path = tmp / "float.pt"
    torch.save(model.state_dict(), path)
    return path.stat().st_size


def _bnn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 1024), nn.BatchNorm1d(1024), nn.Hardtanh(),
        nn.Linear(1024, 1024), nn.BatchNorm1d(1024), nn.Hardtanh(),
        nn.Linear(1024, 1024), nn.BatchNorm1d(1024), nn.Hardtanh(), nn.Linear(1024, 10),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="bench-out/fmnist-resnet20")
    parser.add_argument("--steps", type=int, default=470, help="training steps of batch 128")
    parser.add_argument("--parts", default="pq,binary", help="which rows: pq, binary or both")
    add_results_option(parser, "binary_pq_fmnist")
    args = parser.parse_args()
    res = Results(args.results, table="pq_fmnist", area="binary-pq",
                  claim="Binary networks and product quantization on Fashion-MNIST: accuracy and "
                  "bytes on disk", row_header=["model", "method"],
                  settings={"run": args.run, "steps": args.steps, "parts": args.parts})  # fmt: skip
    torch.manual_seed(0)
    base, _ = load_run(Path(args.run))
    base.eval()
    train = get_dataset("fashion-mnist", train=True, augment=["hflip"])
    test = get_dataset("fashion-mnist", train=False)
    calib = calibration_loader(get_dataset("fashion-mnist", train=True, augment=[]), 256)
    base_acc = evaluate(base, test, batch_size=512).accuracy
    print(f"budget: {args.steps} steps x 128 images per trained row; 2-core CPU\n")
    print("| model | method | top-1 | change | bytes on disk | vs float32 file | minutes |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fbytes = _float_bytes(base, tmp)
        print(f"| ResNet-20 | float32 | {100 * base_acc:.2f}% | - | {fbytes:,} | 1.00 | - |",
              flush=True)  # fmt: skip
        for part, table in (("pq", "pq_fmnist"), ("binary", "binary_fmnist")):
            if part in args.parts:
                record(res, table, ["ResNet-20", "float32"], base_acc, None, fbytes, 1.0, None)
        pq_rows = (("kmeans", 4, 16), ("qcnn", 4, 16), ("kmeans", 9, 64), ("qcnn", 9, 64))
        for method, d, k in pq_rows if "pq" in args.parts else ():
            start = time.perf_counter()
            model = copy.deepcopy(base)
            cfg = {"subvector": d, "codebook_size": k, "method": method}
            product_quantize(model, cfg, calib_data=calib, progress=False)
            acc = evaluate(model, test, batch_size=512).accuracy
            size = save_pq(model, tmp / "pq.zip")
            minutes = (time.perf_counter() - start) / 60
            label = (f"PQ {NAMES[method]}, {d}-dim sub-vectors, {k} centroids "
                     f"({(k - 1).bit_length()}-bit codes)")  # fmt: skip
            print(f"| ResNet-20 | {label} | {100 * acc:.2f}% | {100 * (acc - base_acc):+.2f} | "
                  f"{size:,} | {size / fbytes:.2f} | {minutes:.1f} |", flush=True)  # fmt: skip
            head = None
            if (d, k) == (4, 16):
                head = (PQ, 21, NAMES[method], "peer" if method == "kmeans" else None)
            record(res, "pq_fmnist", ["ResNet-20", label], acc, acc - base_acc, size,
                   size / fbytes, minutes, head)  # fmt: skip
        if "binary" not in args.parts:
            return
        tcfg = {"epochs": 1, "batch_size": 128, "schedule": "cosine", "progress": False,
                "seed": 0, "max_steps_per_epoch": args.steps, "optimizer": "adamw",
                "weight_decay": 0.0}  # fmt: skip
        start = time.perf_counter()
        bwn = binarize(copy.deepcopy(base), {"scaling": "xnor"})
        bwn.train()
        Trainer(bwn, {**tcfg, "lr": 1e-3}, train, None).fit()
        acc = evaluate(bwn, test, batch_size=512).accuracy
        size = save_packed(bwn, tmp / "bwn.zip")
        minutes = (time.perf_counter() - start) / 60
        label = "binary weights (XNOR scales, first/last float), fine-tuned"
        print(f"| ResNet-20 | {label} | {100 * acc:.2f}% | {100 * (acc - base_acc):+.2f} | "
              f"{size:,} | {size / fbytes:.2f} | {minutes:.1f} |", flush=True)  # fmt: skip
        record(res, "binary_fmnist", ["ResNet-20", label], acc, acc - base_acc, size,
               size / fbytes, minutes, (BIN, 22, "ResNet-20", None))  # fmt: skip
        mlp_acc, mlp_bytes = 0.0, 1
        for binary in (False, True):
            start = time.perf_counter()
            mlp = _bnn_mlp()
            if binary:
                binarize(mlp, {"binary_activations": True, "scaling": "xnor"})
            Trainer(mlp, {**tcfg, "lr": 5e-3 if binary else 1e-3}, train, None).fit()
            acc = evaluate(mlp, test, batch_size=512).accuracy
            size = save_packed(mlp, tmp / "mlp.zip") if binary else _float_bytes(mlp, tmp)
            if not binary:  # the float MLP is the reference of the binary one
                mlp_acc, mlp_bytes = acc, size
            label = ("binary weights + activations (BNN, first/last float)" if binary
                     else "float32, same steps")  # fmt: skip
            minutes = (time.perf_counter() - start) / 60
            print(f"| MLP 784-3x1024-10 | {label} | {100 * acc:.2f}% | "
                  f"{100 * (acc - mlp_acc):+.2f} | {size:,} | {size / mlp_bytes:.2f} | "
                  f"{minutes:.1f} |", flush=True)  # fmt: skip
            record(res, "binary_fmnist", ["MLP 784-3x1024-10", label], acc,
                   acc - mlp_acc if binary else None, size, size / mlp_bytes, minutes,
                   (BIN, 22, "BNN MLP", None) if binary else None)  # fmt: skip


if __name__ == "__main__":
    main()
