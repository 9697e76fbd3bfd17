"""Ultralytics YOLO (v8 and 11, n and s) pruned to 50% of the channels and run in ONNX Runtime.

Usage:
    python benchmarks/prune_yolo.py [--models yolov8n,yolov8s,yolo11n,yolo11s] [--size 640]
        [--threads 1] [--results benchmarks/results/prune_yolo.jsonl]

Each model is built from its yaml with random weights (``ultralytics.nn.tasks.DetectionModel``;
nothing is downloaded; ``ultralytics`` is a bench extra only, its AGPL licence stays out of the
package) in eval mode, pruned with ``ts.prune(model, x, {"ratio": 0.5})``, checked to keep its
output structure, saved and loaded back with ``ts.save``/``ts.load`` (spec: the
``package.module:callable`` name of the constructor and its yaml) with identical outputs, and
exported to ONNX (``ts.export_onnx``, the whole model with its decoding of boxes) that ONNX
Runtime runs; the ORT output is compared with PyTorch's. Latency: ONNX Runtime, batch 1, dense
and pruned timed in turn (median of three rounds of ``measure_latency`` medians).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")

from _results import Results, add_results_option

# Figures here cut single channels (round_to 1): pruning's default round_to is the CPU's
# vector width, so the run pins it (a round_to in a config, or the variable set, wins).
os.environ.setdefault("TORCHSLIM_VECTOR_FLOATS", "1")

MODELS = ("yolov8n", "yolov8s", "yolo11n", "yolo11s")
CONSTRUCTOR = "ultralytics.nn.tasks:DetectionModel"


def _spec(name: str) -> dict[str, Any]:
    return {"name": CONSTRUCTOR, "kwargs": {"cfg": f"{name}.yaml", "verbose": False}}


def _structure(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, (list, tuple)):
        return [_structure(o) for o in out]
    if isinstance(out, dict):
        return {k: _structure(v) for k, v in out.items()}
    return type(out).__name__


def _latency(path: Path, x: Any, threads: int) -> float:
    from torchslim.runtime import measure_latency

    return measure_latency(path, x, backend="ort", threads=threads, min_seconds=1.0).median_ms


def run(name: str, size: int, threads: int, res: Results) -> None:
    import torch

    import torchslim as ts

    torch.manual_seed(0)
    model = ts.models.create(CONSTRUCTOR, **_spec(name)["kwargs"]).eval()
    dense = copy.deepcopy(model)
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        before = _structure(model(x))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts.prune(model, x, {"ratio": 0.5})
    seconds = time.perf_counter() - start
    report = ts.report(model)
    with torch.no_grad():
        out = model(x)
    same = _structure(out) == before
    with tempfile.TemporaryDirectory() as tmp:
        loaded = ts.load(ts.save(model, Path(tmp) / "m.pt")).eval()
        with torch.no_grad():
            trip = torch.equal(loaded(x)[0], out[0])
        exports = {}
        for label, m in (("dense", dense), ("pruned", model)):
            path = Path(tmp) / f"{label}.onnx"
            rep = ts.export_onnx(m, x, path)
            exports[label] = (path, rep)
        rounds = {"dense": [], "pruned": []}
        for _ in range(3):
            for label in rounds:
                rounds[label].append(_latency(exports[label][0], x, threads))
    ms = {k: statistics.median(v) for k, v in rounds.items()}
    row = [name]
    figures = [
        ("structure kept, save/load identical", "yes" if same and trip else "NO", "text", None),
        ("MACs kept", round(report.macs_after / report.macs_before, 4), "ratio", 3),
        ("params kept", round(report.params_after / report.params_before, 4), "ratio", 3),
        ("prune s", round(seconds, 3), "s", 2),
        ("ORT max |diff|", float(f"{exports['pruned'][1].max_abs_error:.3g}"), "abs", None),
        ("ONNX MB", round(exports["pruned"][1].file_bytes / 1e6, 3), "MB", 2),
        ("ORT ms, batch 1", round(ms["pruned"], 3), "ms", 1),
        ("speed-up", round(ms["dense"] / ms["pruned"], 4), "x", 2),
    ]
    for metric, value, unit, digits in figures:
        peer = None
        if metric == "ONNX MB":
            peer = {"name": "dense", "label": "dense ONNX MB", "unit": "MB", "digits": 2,
                    "value": round(exports["dense"][1].file_bytes / 1e6, 3)}  # fmt: skip
        if metric == "ORT ms, batch 1":
            peer = {"name": "dense", "label": "dense ms", "value": round(ms["dense"], 3),
                    "unit": "ms", "digits": 1}  # fmt: skip
        res.add(row, metric, value, unit, digits, model=name, peer=peer)
    print(f"{name}: {', '.join(f'{m}={v}' for m, v, _, _ in figures)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=640, help="input side (YOLO's default 640)")
    parser.add_argument("--threads", type=int, default=1)
    add_results_option(parser, "prune_yolo")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    res = Results(
        args.results,
        table="prune_yolo",
        area="pruning",
        claim="Ultralytics YOLO pruned to 50% of the channels, exported to ONNX Runtime",
        row_header=["model"],
        settings={"ratio": 0.5, "input": f"1x3x{args.size}x{args.size}", "weights": "random"},
        threads=args.threads,
    )
    for name in args.models.split(","):
        run(name.strip(), args.size, args.threads, res)


if __name__ == "__main__":
    main()
