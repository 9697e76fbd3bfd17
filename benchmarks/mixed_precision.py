"""Mixed-precision search: per-layer weight bits {4, 8} at the bytes of uniform int4 + 10%.

Usage:
    python benchmarks/mixed_precision.py --run bench-out/fmnist-resnet20 [--trials 100]
        [--strategy sa] [--seeds 0,1,2] [--slack 0.10]
        [--results benchmarks/results/mixed_precision.jsonl]
(the run folder comes from benchmarks/train_fmnist_resnet20.sh, or any ``torchslim train`` run:
its model and dataset are read from it, e.g. torchvision's ``mobilenet_v2`` trained with
``torchslim train --model mobilenet_v2 --data fashion-mnist``).

Rows, all post-training quantization of the same trained model with 8-bit
activations and the same calibration batches (training images): uniform int8 weights, uniform
int4 weights, and ``ts.search(..., {"space": "bits", "bytes": B})`` with B the predicted bytes
of uniform int4 times 1 + ``--slack``; each candidate is scored on held-out *training* images,
the test set only scores the chosen models. Every row is exported with ``ts.export_onnx``
(2-4-bit layers stored as packed INT4) and its file bytes and ONNX Runtime test accuracy are
reported. Target (issue 19): the searched model recovers >= 50% of the accuracy gap between
uniform int4 and int8, mean over ``--seeds`` (the search's seed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import torchslim as ts
from torchslim.auto import BitSpace, holdout_split
from torchslim.data import dataset_info, get_dataset
from torchslim.export.onnx import evaluate_onnx
from torchslim.pipeline import load_run
from torchslim.train import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

NAMES = {"resnet20": "ResNet-20", "mobilenet_v2": "MobileNetV2 (torchvision)"}


def _measure(model: torch.nn.Module, x: torch.Tensor, test, tmp: Path) -> dict[str, float]:
    path = tmp / "m.onnx"
    report = ts.export_onnx(model, x, path)
    return {
        "torch": 100 * evaluate(model, test, batch_size=512).accuracy,
        "ort": 100 * evaluate_onnx(path, test, batch_size=512),
        "bytes": report.file_bytes,
        "int4 tensors": report.int4_weights,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="bench-out/fmnist-resnet20")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--strategy", default="sa")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--slack", type=float, default=0.10)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--calib-images", type=int, default=512)
    add_results_option(parser, "mixed_precision")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    base, meta = load_run(Path(args.run))
    base.eval()
    data = meta.get("data", "fashion-mnist")
    info = dataset_info(data)
    plain = get_dataset(data, train=True, augment=[])
    test = get_dataset(data, train=False)
    x = torch.randn(1, info.in_channels, info.image_size, info.image_size)
    model_name = NAMES.get(meta["model"], meta["model"])
    batch = 128
    calib_batches = args.calib_images // batch
    res = Results(args.results, table="mixed_precision", area="search",
                  claim="Mixed-precision PTQ search, weights {4, 8} bits at uniform int4 bytes + "
                  f"{100 * args.slack:.0f}%", row_header=["model", "weights"],
                  model=f"{model_name} ({data})",
                  settings={"activations": "8-bit", "strategy": args.strategy,
                            "trials": args.trials, "seeds": seeds,
                            "eval images": args.eval_images,
                            "calibration images": calib_batches * batch})  # fmt: skip
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for seed in seeds:
            _, calib = holdout_split(plain, args.eval_images, calib_batches * batch, seed)
            space = BitSpace(base, x, calib, choices=(4, 8), batch_size=batch,
                             calib_batches=calib_batches)  # fmt: skip
            budget = space.bytes_ratio(dict.fromkeys(space.names, 4)) * (1 + args.slack)
            for bits in (8, 4):
                model = space.quantized(dict.fromkeys(space.names, bits))
                rows.setdefault(f"uniform int{bits}", []).append(_measure(model, x, test, tmp))
            start = time.perf_counter()
            found = ts.search(base, x, {"space": "bits", "bytes": budget, "trials": args.trials,
                                        "strategy": args.strategy, "seed": seed,
                                        "eval_images": args.eval_images,
                                        "bn_images": calib_batches * batch,
                                        "batch_size": batch, "calib_batches": calib_batches},
                              data=plain, progress=False)  # fmt: skip
            took = time.perf_counter() - start
            row = _measure(found.model, x, test, tmp)
            row.update(seconds=took, budget=budget, predicted=found.bytes_ratio,
                       eight=sum(b == 8 for b in found.bits.values()))  # fmt: skip
            rows.setdefault("searched", []).append(row)
            print(
                f"seed {seed}: {found}; test {row['torch']:.2f}% (ORT {row['ort']:.2f}%), "
                f"{row['bytes']:,} bytes, search {took:.0f} s",
                flush=True,
            )
    mean = {k: {m: statistics.mean(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
    a8, a4, s = mean["uniform int8"]["ort"], mean["uniform int4"]["ort"], mean["searched"]["ort"]
    recovered = (s - a4) / (a8 - a4) if a8 != a4 else float("nan")
    print("\n| weights | test top-1 (ORT) | test top-1 (PyTorch) | ONNX bytes | int4 tensors |")
    print("|---|---|---|---|---|")
    for name, m in mean.items():
        print(f"| {name} | {m['ort']:.2f}% | {m['torch']:.2f}% | {m['bytes']:,.0f} | "
              f"{m['int4 tensors']:.0f} |")  # fmt: skip
    print(f"\ngap recovered: {100 * recovered:.0f}% (target >= 50%)")
    for name, m in mean.items():
        spread = [r["ort"] for r in rows[name]]
        row = [model_name, name]
        res.add(row, f"test top-1 (ORT), mean of {len(seeds)}", round(m["ort"], 3), "%", 2,
                note=f"spread {max(spread) - min(spread):.2f}")  # fmt: skip
        res.add(row, "test top-1 (PyTorch)", round(m["torch"], 3), "%", 2)
        res.add(row, "ONNX file bytes", round(m["bytes"]), "bytes", 0)
        if name == "searched":
            res.add(row, "int8 gap recovered", round(100 * recovered, 1), "%", 0,
                    target={"text": "≥ 50", "op": ">=", "value": 50.0})  # fmt: skip
            res.add(row, "layers kept at 8 bits", round(m["eight"], 1), "count", 1,
                    of=len(space.names))  # fmt: skip
            res.add(row, "search seconds", round(m["seconds"]), "s", 0)


if __name__ == "__main__":
    main()
