"""Where ``ts.prune`` spends its time: each phase of one pruning call, first call and later ones.

Usage:
    python benchmarks/prune_phases.py [--models mobilenet_v3_small,resnet50] [--calls 3]
        [--threads 2] [--results benchmarks/results/prune_phases.jsonl]

Each call prunes a fresh torchvision model (random weights, 1x3x224x224, 50% of the channels,
L1) through the same steps as ``ts.prune``, timing each (wall clock): the trace, grouping,
importance, channel selection, slicing the tensors, fixing module attributes, predicting the
statistics after pruning, the check of the pruned model (a real or shapes-only forward), the
report. The first call in a process also pays one-time costs;
``full GCs`` counts the interpreter's full garbage collections during the call (a full
collection of the heap lands in whichever call happens to trigger it). The figures are
appended to --results (block ``prune_phases``) for benchmarks/render.py.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import torch
import torchvision

from torchslim.graph.trace import trace
from torchslim.prune.apply import shrink_modules, slice_tensors
from torchslim.prune.importance import get_importance
from torchslim.prune.pruner import PruneConfig, build_groups, check_forward, select_channels
from torchslim.prune.report import build_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

# Figures here cut single channels (round_to 1): pruning's default round_to is the CPU's
# vector width, so the run pins it (a round_to in a config, or the variable set, wins).
os.environ.setdefault("TORCHSLIM_VECTOR_FLOATS", "1")

PHASES = (
    "trace",
    "groups",
    "importance",
    "select",
    "slice",
    "shrink",
    "predict",
    "check",
    "report",
)


def one_call(name: str, x: torch.Tensor) -> dict[str, float]:
    """Milliseconds per phase of pruning a fresh ``name``, plus ``full GCs`` during the call."""
    model = torchvision.models.get_model(name).eval()
    cfg = PruneConfig(ratio=0.5)
    full = []
    gc.callbacks.append(lambda phase, info: full.append(1) if info["generation"] == 2 else None)
    ms: dict[str, float] = {}
    start = time.perf_counter()

    def tick(phase: str) -> None:
        nonlocal start
        now = time.perf_counter()
        ms[phase] = 1e3 * (now - start)
        start = now

    try:
        graph = trace(model, (x,), count=True)
        tick("trace")
        groups = build_groups(graph, cfg.prune_head_dims)
        tick("groups")
        fn = get_importance(cfg.importance)
        scores = {g.id: fn(g) for g in groups}
        tick("importance")
        keep = select_channels(groups, scores, cfg, 1.0)
        tick("select")
        slice_tensors(graph, keep)
        tick("slice")
        shrink_modules(model, graph, keep)
        tick("shrink")
        after = graph.stats_after(keep)
        tick("predict")
        check_forward(model, (x,))
        tick("check")
        build_report(graph.stats, after, graph, groups, keep, 0.0)
        tick("report")
    finally:
        gc.callbacks.pop()
    ms["full GCs"] = len(full) / 2  # a start and a stop event per collection
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="mobilenet_v3_small,mobilenet_v2,resnet50")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    add_results_option(parser, "prune_phases")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    res = Results(args.results, table="prune_phases", area="pruning",
                  claim="Where ts.prune spends its time: milliseconds per phase of one call",
                  row_header=["model", "call"], threads=args.threads,
                  settings={"ratio": 0.5, "input": "1x3x224x224"})  # fmt: skip
    x = torch.randn(1, 3, 224, 224)
    print(f"{args.threads} threads; ms per phase\n")
    print("| model | call | " + " | ".join(PHASES) + " | total | full GCs |")
    print("|---|---|" + "---|" * (len(PHASES) + 2))
    for name in args.models.split(","):
        for call in range(1, args.calls + 1):
            ms = one_call(name, x)
            total = sum(ms[p] for p in PHASES)
            cells = " | ".join(f"{ms[p]:.1f}" for p in PHASES)
            print(f"| {name} | {call} | {cells} | {total:.1f} | {ms['full GCs']:.0f} |", flush=True)
            row = [name, str(call)]
            for phase in PHASES:
                res.add(row, phase, round(ms[phase], 3), "ms", 1, model=name)
            res.add(row, "total", round(total, 3), "ms", 1, model=name)
            res.add(row, "full GCs", ms["full GCs"], "count", 0, model=name)


if __name__ == "__main__":
    main()
