"""CPU latency of torchvision models pruned to 50% MACs, PyTorch and ONNX Runtime, batch 1 and 32.

Usage:
    python benchmarks/prune_latency.py [--models resnet50,mobilenet_v2,resnet20] [--threads 2]
        [--round-to 8] [--rounds 3]
        [--backends ort,torch,torch-folded,torch-compiled,torch-frozen,torch-onednn-graph]
        [--ratio 0 --ratios 'features.*.conv.0.0=0.5']   # which channels the MACs search cuts
        [--results benchmarks/results/prune_latency.jsonl] [--table NAME]
Models: torchvision names at 224x224, or torchslim's zoo (``resnet20``: CIFAR-10 ResNet-20
at 32x32). Target (issue 3): latency speedup >= 0.85 x the MACs reduction; with no
``--round-to`` (torchslim's default, the CPU's vector width; issue 19): >= 0.8 x. Prints a
Markdown table and appends every figure to --results for benchmarks/render.py: block
``prune_latency_default`` with no ``--round-to`` and the default cut, ``prune_latency`` with
``--round-to 8``, ``prune_latency_round1`` with ``--round-to 1``, ``prune_latency_custom``
otherwise (or --table).

Backends: ``ort`` (the float ONNX export in ONNX Runtime, which folds BatchNorm and fuses
activations itself); ``torch`` (PyTorch eager, the model as trained: BatchNorm a separate op,
NCHW); ``torch-folded`` (PyTorch eager as one deploys it for CPU inference: BatchNorm folded into
the convolutions with ``ts.quant.fold_batchnorm`` and channels-last memory format, the layout
oneDNN's convolutions run in); ``torch-compiled`` (``torch.compile`` with its default
inductor backend, which fuses ops and cuts the per-op overhead; needs a C++ compiler, not in the
default list); ``torch-frozen`` (``torch.compile`` with inductor's ``freezing`` option, PyTorch's
recommended CPU inference set-up: weights become constants, BatchNorm is folded into the
convolutions and the convolution weights are pre-packed for oneDNN; not in the default list);
``torch-onednn-graph`` (``torch.jit.trace`` + ``torch.jit.freeze`` with PyTorch's oneDNN Graph
fuser, ``torch.jit.enable_onednn_fusion(True)``: fused partitions are compiled once, so a
convolution does not pay oneDNN's per-call primitive-descriptor creation, most of a small
depthwise call's 47–76 µs at batch 1 (kernel: ~4 µs; BENCHMARKS.md at 3b9e795); TorchScript is
deprecated in PyTorch 2.x, so this is a measurement of what the pruned shapes can give, not a
recommended path; one trace per input shape, checked against eager; not in the default list).
Dense and pruned get the same treatment. Each (backend, batch) cell times dense and pruned in
turn for ``--rounds`` rounds and keeps the median of the round medians, so a drift of the
machine hits both alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision

import torchslim as ts
from torchslim.prune import PruneConfig
from torchslim.runtime import export_for_latency, measure_latency

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

BACKENDS = ("ort", "torch", "torch-folded", "torch-compiled", "torch-frozen", "torch-onednn-graph")
_TRACED: dict[tuple[torch.nn.Module, int], torch.jit.ScriptModule] = {}  # keeps keys alive


def _onednn_graph(model: torch.nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
    """``model`` traced for ``x``'s shape, frozen, run by the oneDNN Graph fuser (cached)."""
    key = (model, x.shape[0])  # the module itself: an id could be reused once it is freed
    if key not in _TRACED:
        torch.jit.enable_onednn_fusion(True)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model, x))
            for _ in range(3):  # the profiling executor fuses after its first runs
                out = traced(x)
            torch.testing.assert_close(out, model(x), rtol=1e-3, atol=1e-4)
        _TRACED[key] = traced
    return _TRACED[key]


def _prepare(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    if backend in ("torch-compiled", "torch-frozen"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = backend == "torch-frozen"  # read when the model compiles
        return torch.compile(copy.deepcopy(model).eval())  # compiled at its first (warm-up) run
    if backend != "torch-folded":
        return model
    folded = copy.deepcopy(model).eval()
    ts.quant.fold_batchnorm(folded)
    return folded.to(memory_format=torch.channels_last)


def _latency(model: torch.nn.Module, batch: int, backend: str, threads: int, tmp: Path,
             side: int = 224) -> float:  # fmt: skip
    x = torch.randn(batch, 3, side, side)
    repeats = 30 if batch == 1 else 8
    if backend == "ort":
        path = tmp / f"m{id(model)}-{batch}.onnx"
        if not path.exists():
            export_for_latency(model, (x,), path)
        return measure_latency(path, x, backend="ort", threads=threads, repeats=repeats,
                               min_seconds=0.3).median_ms  # fmt: skip
    if backend == "torch-folded":
        x = x.contiguous(memory_format=torch.channels_last)
    if backend == "torch-onednn-graph":
        model = _onednn_graph(model, x)
    return measure_latency(model, x, backend="torch", threads=threads, repeats=repeats).median_ms


# headline claims (BENCHMARKS.md) that the default-cut, round_to 8 / 1 figures stand for
L_ORT = "Latency speed-up / MACs reduction at 50% MACs, `round_to` 8: ONNX Runtime"
L_GRAPH = "… PyTorch + oneDNN Graph fuser (TorchScript)"
L_TORCH = "… PyTorch eager, BN-folded, `torch.compile`, frozen inductor"
L_ROUND1 = "… `round_to` 1 (ORT, eager; older protocol)"
L_DEFAULT = "Default settings at 50% MACs (`round_to` from the CPU): speed-up / MACs reduction, ORT"
ZOO_SIDE = {"resnet20": 32, "resnet32": 32, "resnet56": 32}  # torchslim's CIFAR models


def _model(name: str) -> tuple[torch.nn.Module, int]:
    """A model with seeded random weights and its input side."""
    torch.manual_seed(0)
    if name in ZOO_SIDE:
        return ts.models.create(name, num_classes=10).eval(), ZOO_SIDE[name]
    return torchvision.models.get_model(name, weights=None).eval(), 224


def _headline(table: str, model: str, backend: str) -> dict[str, Any] | None:
    name = {"resnet50": "ResNet-50", "mobilenet_v2": "MobileNetV2"}.get(model, model)
    if table == "prune_latency_default":
        return {"claim": L_DEFAULT, "order": 5, "label": name} if backend == "ort" else None
    if table == "prune_latency_round1":
        return {"claim": L_ROUND1, "order": 10, "label": ""}
    if table != "prune_latency":
        return None
    if backend == "ort":
        return {"claim": L_ORT, "order": 6, "label": ""}
    if backend == "torch-onednn-graph":
        return {"claim": L_GRAPH, "order": 7, "label": name}
    return {"claim": L_TORCH, "order": 8, "label": name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet50,mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target-macs", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=None,
                        help="channel-count multiple (default: torchslim's, the CPU's vector "
                        "width)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="dense/pruned alternations")
    parser.add_argument("--backends", default=",".join(BACKENDS[:3]))
    parser.add_argument("--ratio", type=float, default=0.5, help="base ratio (search scales it)")
    parser.add_argument("--ratios", default="", help="per-layer ratios: SELECTOR=R,SELECTOR=R")
    add_results_option(parser, "prune_latency")
    parser.add_argument("--table", default=None, help="BENCHMARKS.md block (see above)")
    args = parser.parse_args()
    ratios = dict(item.split("=") for item in args.ratios.split(",") if item)
    config = {"target_macs": args.target_macs, "round_to": args.round_to, "ratio": args.ratio,
              "ratios": {sel: float(r) for sel, r in ratios.items()}}  # fmt: skip
    round_to = PruneConfig(round_to=args.round_to).round_to  # the default resolved
    backends = args.backends.split(",")
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    default_cut = args.ratio == 0.5 and not ratios and args.target_macs == 0.5
    by_round = {None: "prune_latency_default", 8: "prune_latency", 1: "prune_latency_round1"}
    table = args.table or (
        by_round.get(args.round_to, "prune_latency_custom")
        if default_cut
        else "prune_latency_custom"
    )
    target = 0.8 if table == "prune_latency_default" else 0.85
    # the default's figures name the channel multiple the CPU gave, so one row per CPU kind
    by_cpu = table == "prune_latency_default"
    row_header = ["model", "backend", *(["round_to"] if by_cpu else []), "batch"]
    res = Results(args.results, table=table, area="pruning",
                  claim="CPU latency of torchvision models pruned to 50% MACs, dense vs pruned",
                  row_header=row_header, threads=args.threads,
                  settings={**config, "round_to": round_to, "rounds": args.rounds,
                            "weights": "random (torchvision / torchslim zoo)",
                            "timing": "dense and pruned timed in turn, median of the round "
                                      "medians"})  # fmt: skip
    print("| model | MACs kept | backend | batch | dense ms | pruned ms | speedup | "
          "MACs reduction | speedup / reduction |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            dense, side = _model(name)
            x = torch.randn(1, 3, side, side)
            pruned = copy.deepcopy(dense)
            ts.prune(pruned, x, config)
            kept = ts.analyze(pruned, x).macs / ts.analyze(dense, x).macs
            for backend in backends:
                pair = [_prepare(dense, backend), _prepare(pruned, backend)]
                for batch in (1, 32):
                    runs: list[list[float]] = [[], []]
                    for _ in range(args.rounds):
                        for i, model in enumerate(pair):
                            runs[i].append(
                                _latency(model, batch, backend, args.threads, Path(tmp), side)
                            )
                    d, p = (statistics.median(r) for r in runs)
                    speedup, reduction = d / p, 1 / kept
                    print(f"| {name} | {kept:.3f} | {backend} | {batch} | {d:.1f} | {p:.1f} | "
                          f"{speedup:.2f}x | {reduction:.2f}x | {speedup / reduction:.2f} |",
                          flush=True)  # fmt: skip
                    row = [name, backend, *([str(round_to)] if by_cpu else []), str(batch)]
                    for metric, value, unit, digits in (
                        ("MACs kept", kept, "ratio", 3), ("dense ms", d, "ms", 1),
                        ("pruned ms", p, "ms", 1), ("speedup", speedup, "x", 2),
                        ("MACs reduction", reduction, "x", 2),
                    ):  # fmt: skip
                        res.add(row, metric, round(value, 4), unit, digits, model=name)
                    res.add(row, "speedup / reduction", round(speedup / reduction, 4), "ratio", 2,
                            model=name,
                            target={"text": f"≥ {target}", "op": ">=", "value": target},
                            headline=_headline(table, name, backend))  # fmt: skip


if __name__ == "__main__":
    main()
