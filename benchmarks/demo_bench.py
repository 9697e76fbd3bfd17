"""``torchslim demo`` as a benchmark: run it, time it, and record its table.

Usage:
    python benchmarks/demo_bench.py [--quick] [--out runs/demo] [--overwrite]
        [--results benchmarks/results/demo.jsonl]
Runs ``torchslim demo`` (the README's main command) in a subprocess, measures its wall time
and appends the rows of the ``report.json`` it writes: top-1 in ONNX Runtime and PyTorch, the
change against the baseline, parameters, MACs, ONNX file size, ORT latency at batch 1 and 32
(blocks ``demo`` / ``demo_quick`` and ``demo_time`` of BENCHMARKS.md). The two compressed rows
carry PaddleSlim's MobileNetV1 ImageNet figures beside them and the demo's targets (issue 6):
distilled + int8 >= 3.5x smaller at >= the baseline's accuracy; pruned + int8 >= 7x smaller
with a drop <= 1 point; the full demo in <= 15 minutes, ``--quick`` in <= 3.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

# PaddleSlim's MobileNetV1 ImageNet model-zoo figures: x smaller, top-1 change, the sizes
PADDLE = {"distilled_int8": (3.5, 1.06, "17.0 MB → 4.8 MB"),
          "pruned_int8": (7.4, -1.71, "17.0 MB → 2.3 MB")}  # fmt: skip
TARGETS = {  # stage -> (claim, order, min x smaller, its text, min top-1 change, its text)
    "distilled_int8": ("`torchslim demo`: distilled + int8", 25, 3.5, "≥ 3.5× smaller", 0.0,
                       "accuracy ≥ baseline"),
    "pruned_int8": ("`torchslim demo`: pruned −50% MACs + int8", 26, 7.0, "≥ 7× smaller", -1.0,
                    "drop ≤ 1.0 point"),
}  # fmt: skip
WALL = "`torchslim demo` wall time"


def record(res: Results, report: dict[str, Any], headline: bool) -> int:
    """The rows of a demo's ``report.json``; ``headline``: the full demo's claims."""
    n = 0
    for row in report["rows"]:
        stage = row["stage"]
        label = [stage + (" (baseline)" if stage == report.get("baseline") else ""),
                 row["type"] + (" int8" if row.get("int8") else "")]  # fmt: skip
        ratios = row.get("vs_baseline") or {}
        latency = {str(k): v for k, v in (row.get("latency_ms") or {}).items()}
        figures: list[tuple[str, Any, str, int]] = [
            ("top-1 ORT", row.get("ort_accuracy"), "%", 2),
            ("top-1 PyTorch", row.get("accuracy"), "%", 2),
            ("Δ top-1", ratios.get("top1_change"), "pt", 2),
            ("params", row["params"] / 1e6, "M", 3),
            ("MACs", row["macs"] / 1e6, "M", 2),
            ("ONNX file (MiB)", row["onnx_bytes"] / 2**20, "MiB", 3),
            ("smaller", ratios.get("smaller"), "x", 2),
        ]
        for bs in ("1", "32"):
            figures.append((f"ORT b{bs} ms", latency.get(bs), "ms", 2))
            figures.append((f"b{bs} speed-up", ratios.get(f"speedup_b{bs}"), "x", 2))
        for metric, value, unit, digits in figures:
            if value is None:
                continue
            if metric.startswith("top-1"):
                value = 100 * value
            extra: dict[str, Any] = {}
            if headline and stage in TARGETS and metric in ("smaller", "Δ top-1"):
                claim, order, x_min, x_text, d_min, d_text = TARGETS[stage]
                smaller, change, sizes = PADDLE[stage]
                extra["headline"] = {"claim": claim, "order": order, "label": metric}
                if metric == "smaller":
                    extra["target"] = {"text": x_text, "op": ">=", "value": x_min}
                    extra["peer"] = {"name": "PaddleSlim", "label": "PaddleSlim",
                                     "value": smaller, "unit": "x", "digits": 1,
                                     "note": f"MobileNetV1 on ImageNet: {sizes}"}  # fmt: skip
                else:
                    extra["target"] = {"text": d_text, "op": ">=", "value": d_min}
                    extra["peer"] = {"name": "PaddleSlim", "label": "PaddleSlim",
                                     "value": change, "unit": "pt", "digits": 2}  # fmt: skip
            res.add(label, metric, round(value, 5), unit, digits, **extra)
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="torchslim demo --quick")
    parser.add_argument("--out", default=None, help="the demo's output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    add_results_option(parser, "demo")
    args = parser.parse_args()
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))
    res = Results(args.results, table="demo_quick" if args.quick else "demo", area="pipeline",
                  claim="`torchslim demo`: PaddleSlim's MobileNetV1 table in miniature on "
                  "Fashion-MNIST", row_header=["stage", "type"],
                  settings={"quick": args.quick, "out": str(out)})  # fmt: skip
    cmd = [sys.executable, "-m", "torchslim.cli", "demo", "--out", str(out)]
    cmd += ["--quick"] * args.quick + ["--overwrite"] * args.overwrite
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"torchslim demo failed (exit {done.returncode}); nothing recorded")
    report = json.loads((out / "report.json").read_text())
    n = record(res, report, headline=not args.quick)
    name = "torchslim demo --quick" if args.quick else "torchslim demo"
    limit, text = (180, "≤ 3 min") if args.quick else (900, "≤ 15 min")
    head = {"claim": WALL, "order": 27, "label": "--quick" if args.quick else "full"}
    res.add(name, "wall time", round(wall, 1), "min s", 0, table="demo_time", row_header=["run"],
            target={"text": text, "op": "<=", "value": limit}, headline=head)  # fmt: skip
    print(f"torchslim demo: {wall / 60:.1f} min; {n + 1} figures appended to {res.path}")


if __name__ == "__main__":
    main()
