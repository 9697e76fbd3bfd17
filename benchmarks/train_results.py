"""The figures of a ``torchslim train`` run, appended to benchmarks/results.

Usage:
    python benchmarks/train_results.py RUN_DIR [--log RUN_DIR.log] [--results FILE]
        [--command CMD] [--date DATE]
(``train_fmnist_resnet20.sh`` runs it after training, with its own command and start time.)
Reads ``RUN_DIR/metrics.jsonl`` (one line per epoch: ``train_acc``, ``eval_acc``, ``time_s``)
and, from the log, what ``/usr/bin/time -v`` printed: wall clock, CPU share, peak resident
memory. Target (issue 2): >= 92% test top-1 within 20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

CLAIM = "ResNet-20 trained on Fashion-MNIST on 2 CPU cores"  # the headline row
WHOLE = "whole run (/usr/bin/time)"


def time_v(text: str) -> dict[str, float]:
    """Wall-clock seconds, CPU percent and peak RSS (GiB) from ``/usr/bin/time -v`` output."""
    out: dict[str, float] = {}
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)",
                     text)  # fmt: skip
    if wall:
        hours, minutes, seconds = wall.groups()
        out["wall"] = 3600 * int(hours or 0) + 60 * int(minutes) + float(seconds)
    cpu = re.search(r"Percent of CPU this job got: (\d+)%", text)
    if cpu:
        out["cpu"] = float(cpu.group(1))
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if rss:
        out["rss_gib"] = int(rss.group(1)) / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the torchslim train output folder")
    parser.add_argument("--log", type=Path, default=None, help="the run's log (default RUN.log)")
    parser.add_argument("--command", default=None, help="the command that ran the benchmark")
    parser.add_argument("--date", default=None, help="when it started")
    add_results_option(parser, "train_fmnist_resnet20")
    args = parser.parse_args()
    epochs = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    log = args.log or args.run.with_name(args.run.name + ".log")
    timing = time_v(log.read_text(errors="replace")) if log.exists() else {}
    res = Results(args.results, table="train_fmnist_resnet20", area="foundation",
                  claim="ResNet-20 trained on the full Fashion-MNIST training set on the CPU",
                  row_header=["epoch"], model="torchslim ResNet-20", command=args.command,
                  date=args.date, settings={"run": str(args.run)})  # fmt: skip
    last = epochs[-1]["epoch"]
    for row in epochs:
        epoch = str(row["epoch"])
        res.add(epoch, "train top-1", round(100 * row["train_acc"], 4), "%", 2)
        if "eval_acc" in row:
            final: dict[str, Any] = {}
            if row["epoch"] == last:
                final = {"headline": {"claim": CLAIM, "order": 1, "label": "test top-1"},
                         "target": {"text": "≥ 92%", "op": ">=", "value": 92}}  # fmt: skip
            res.add(epoch, "test top-1", round(100 * row["eval_acc"], 4), "%", 2, **final)
        res.add(epoch, "elapsed s", round(row["time_s"], 1), "s", 0)
    if "wall" in timing:
        res.add(WHOLE, "wall clock", timing["wall"], "m:s", 1,
                headline={"claim": CLAIM, "order": 1, "label": "wall clock"},
                target={"text": "≤ 20 min", "op": "<=", "value": 1200})  # fmt: skip
    if "cpu" in timing:
        res.add(WHOLE, "CPU", timing["cpu"], "%", 0)
    if "rss_gib" in timing:
        res.add(WHOLE, "peak RSS GiB", round(timing["rss_gib"], 3), "GiB", 1)
    print(f"{len(epochs)} epochs; {timing or 'no /usr/bin/time figures in the log'}")


if __name__ == "__main__":
    main()
