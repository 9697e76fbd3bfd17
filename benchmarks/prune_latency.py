"""CPU latency of torchvision models pruned to 50% MACs, PyTorch and ONNX Runtime, batch 1 and 32.

Usage:
    python benchmarks/prune_latency.py [--models resnet50,mobilenet_v2] [--threads 2] [--round-to 8]
Target (issue 3): latency speedup >= 0.85 x the MACs reduction. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
import torchvision

import torchslim as ts
from torchslim.analysis import export_for_latency, measure_latency


def _latency(model: torch.nn.Module, batch: int, backend: str, threads: int, tmp: Path) -> float:
    x = torch.randn(batch, 3, 224, 224)
    repeats = 30 if batch == 1 else 8
    if backend == "ort":
        path = export_for_latency(model, (x,), tmp / f"m{id(model)}-{batch}.onnx")
        return measure_latency(path, x, backend="ort", threads=threads, repeats=repeats).median_ms
    return measure_latency(model, x, backend="torch", threads=threads, repeats=repeats).median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet50,mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target-macs", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=1, help="channel-count multiple")
    args = parser.parse_args()
    x = torch.randn(1, 3, 224, 224)
    print("| model | MACs kept | backend | batch | dense ms | pruned ms | speedup | "
          "MACs reduction | speedup / reduction |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            dense = torchvision.models.get_model(name, weights=None).eval()
            pruned = copy.deepcopy(dense)
            ts.prune(pruned, x, {"target_macs": args.target_macs, "round_to": args.round_to})
            kept = ts.analyze(pruned, x).macs / ts.analyze(dense, x).macs
            for backend in ("ort", "torch"):
                for batch in (1, 32):
                    d = _latency(dense, batch, backend, args.threads, Path(tmp))
                    p = _latency(pruned, batch, backend, args.threads, Path(tmp))
                    speedup, reduction = d / p, 1 / kept
                    print(f"| {name} | {kept:.3f} | {backend} | {batch} | {d:.1f} | {p:.1f} | "
                          f"{speedup:.2f}x | {reduction:.2f}x | {speedup / reduction:.2f} |",
                          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
