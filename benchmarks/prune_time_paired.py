"""Pruning time of torchslim and Torch-Pruning timed in turn in one process, model by model.

Usage:
    python benchmarks/prune_time_paired.py --models mobilenet_v2,mnasnet0_5 [--rounds 4]
        [--threads 2] [--out bench-out/prune_time_paired.jsonl]
        [--results benchmarks/results/prune_time_paired.jsonl] [--table prune_time_paired]

``prune_sweep.py`` times each tool in its own process, once. On this 2-core VM a whole process
can run 30-60% slower than the next one (same code, same model: MobileNetV2 pruned in 72 ms in
one process and 125 ms in another), so a ratio of two single timings from two processes moves
by more than the margin that decides "at most half". Here one fresh process per model runs
``--rounds`` rounds; each round prunes a fresh copy of the model with each tool, the order
alternating between rounds, exactly as the sweep sets them up (``prune_sweep._prune``: 50% of
the channels, ``gc.collect()`` before each timer). Reported per model and tool: the first call (what
a user's first pruning costs, one-time costs included) and the median and minimum of the rest;
the ratios compare the two tools under the same process conditions.

The figures (per model, and the summary lines) are appended to --results for
benchmarks/render.py, into the BENCHMARKS.md block --table (``prune_time_paired`` holds the
near-line models of the headline claim; another name keeps a run apart).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

# Figures here cut single channels (round_to 1): pruning's default round_to is the CPU's
# vector width, so the run pins it (a round_to in a config, or the variable set, wins).
os.environ.setdefault("TORCHSLIM_VECTOR_FLOATS", "1")

TOOLS = ("torchslim", "torch-pruning")
PAIRED = "… the 15 near-line models, both tools timed in turn in one process"  # headline claim


def worker(name: str, rounds: int, threads: int) -> dict[str, Any]:
    """Every round: a fresh model pruned by each tool in turn; the times of each call."""
    import prune_sweep as sweep
    import torch

    torch.set_num_threads(threads)
    size = sweep._input_size(name, None)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():  # both tools then start from the same warm process
        sweep._build(name)(x)
    times: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    for r in range(rounds):
        for tool in TOOLS if r % 2 == 0 else TOOLS[::-1]:  # neither tool always goes first
            torch.manual_seed(0)
            model = sweep._build(name)
            times[tool].append(sweep._prune(tool, model, x)["prune_seconds"])
            del model
    return {"model": name, "threads": threads, "rounds": rounds, "seconds": times}


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    ts, tp = rec["seconds"]["torchslim"], rec["seconds"]["torch-pruning"]
    later = lambda v: v[1:] or v  # noqa: E731
    return {
        "model": rec["model"],
        "first": (ts[0], tp[0]),
        "median": (statistics.median(later(ts)), statistics.median(later(tp))),
        "min": (min(later(ts)), min(later(tp))),
    }


def summary(records: list[dict[str, Any]]) -> str:
    lines = [
        "| model | ts first ms | TP first ms | first ts/TP | ts median ms | TP median ms "
        "| median ts/TP | ts min ms | TP min ms | min ts/TP |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, list[float]] = {"first": [], "median": [], "min": []}
    for rec in records:
        row = _row(rec)
        cells = [row["model"]]
        for key in ("first", "median", "min"):
            a, b = row[key]
            ratios[key].append(a / b)
            cells += [f"{1e3 * a:.0f}", f"{1e3 * b:.0f}", f"{a / b:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key, values in ratios.items():
        ok = sum(r <= 0.5 for r in values)
        lines.append(
            f"{key} call(s): median ratio ts/TP {statistics.median(values):.2f}, "
            f"max {max(values):.2f}; torchslim <= 0.5 x Torch-Pruning on {ok}/{len(values)}"
        )
    return "\n".join(lines)


def write_results(records: list[dict[str, Any]], res: Results, table: str) -> None:
    """Per model: first / median / min call of each tool (ms) and their ratios; then the
    summary lines. Only the ``prune_time_paired`` block stands for the headline claim."""
    head = table == "prune_time_paired"
    summary_rows: dict[str, list[float]] = {"first": [], "median": [], "min": []}
    for rec in records:
        row = _row(rec)
        for key in ("first", "median", "min"):
            a, b = row[key]
            summary_rows[key].append(a / b)
            res.add(rec["model"], f"ts {key} ms", round(1e3 * a, 2), "ms", 0, model=rec["model"])
            res.add(rec["model"], f"TP {key} ms", round(1e3 * b, 2), "ms", 0, model=rec["model"])
            extra: dict[str, Any] = {}
            if key in ("first", "median"):
                extra["target"] = {"text": "≤ 0.5 on every model", "op": "<=", "value": 0.5}
                if head:
                    label = "first calls" if key == "first" else "median of later calls"
                    extra["headline"] = {"claim": PAIRED, "order": 5, "label": label}
            res.add(rec["model"], f"{key} ts/TP", round(a / b, 4), "ratio", 2,
                    model=rec["model"], **extra)  # fmt: skip
    for key, values in summary_rows.items():
        if not values:
            continue
        row_label = f"{key} call" + (
            "" if key == "first" else f"s (rounds 2-{records[0]['rounds']})"
        )
        kw = {"table": f"{table}_summary", "row_header": ["calls"]}
        res.add(row_label, "median ts/TP", round(statistics.median(values), 4), "ratio", 2, **kw)
        res.add(row_label, "max ts/TP", round(max(values), 4), "ratio", 2, **kw)
        res.add(row_label, "models ≤ 0.5", sum(v <= 0.5 for v in values), "count", 0,
                of=len(values), **kw)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="comma-separated torchvision names")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out/prune_time_paired.jsonl"))
    add_results_option(parser, "prune_time_paired")
    parser.add_argument("--table", default="prune_time_paired", help="BENCHMARKS.md block")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (the first call is reported apart)")
    if args.worker:
        print(json.dumps(worker(args.worker, args.rounds, args.threads)))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    res = Results(args.results, table=args.table, area="pruning",
                  claim="Pruning time of torchslim and Torch-Pruning timed in turn in one process "
                  f"({args.rounds} rounds)", row_header=["model"], threads=args.threads,
                  settings={"rounds": args.rounds, "raw results": str(args.out)})  # fmt: skip
    records = []
    for name in args.models.split(","):
        cmd = [sys.executable, __file__, "--models", name, "--worker", name,
               "--rounds", str(args.rounds), "--threads", str(args.threads)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name}: worker failed ({done.returncode}): {done.stderr.strip()[-500:]}")
            continue
        rec = json.loads(done.stdout.strip().splitlines()[-1])
        records.append(rec)
        with args.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        row = _row(rec)
        print(f"{name}: first {row['first'][0] / row['first'][1]:.2f}, "
              f"median {row['median'][0] / row['median'][1]:.2f}", flush=True)  # fmt: skip
    print(summary(records))
    if records:
        write_results(records, res, args.table)


if __name__ == "__main__":
    main()
