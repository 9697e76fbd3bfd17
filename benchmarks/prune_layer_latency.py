"""Per-convolution CPU latency of a torchvision model before and after pruning to 50% MACs.

Usage:
    python benchmarks/prune_layer_latency.py [--model mobilenet_v2] [--batch 1] [--threads 2]
        [--round-to 8] [--rows] [--results benchmarks/results/prune_layer_latency.jsonl]

Times every ``nn.Conv2d`` of the dense and the pruned model alone in PyTorch (BatchNorm folded,
channels-last, the layer's own input shape, best of 5 × 10 calls) and sums the times by kind —
depthwise, pointwise (1×1) and other — next to the MACs each kind keeps. It shows which layers'
time follows their MACs when channels are removed and which are bound by a per-call cost that
does not shrink with the channel count. Prints Markdown tables; the per-kind sums are appended
to --results (block ``prune_layer_latency``) for benchmarks/render.py.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

import torchslim as ts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option


def _conv_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[nn.Conv2d, torch.Size]]:
    seen: dict[str, tuple[nn.Conv2d, torch.Size]] = {}

    def record(name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...], _: object) -> None:
        seen.setdefault(name, (module, inputs[0].shape))

    hooks = [
        module.register_forward_hook(functools.partial(record, name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    with torch.inference_mode():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def _conv_ms(conv: nn.Conv2d, shape: torch.Size, batch: int) -> float:
    conv = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    x = torch.randn(batch, *shape[1:]).contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(5):
            conv(x)
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(10):
                conv(x)
            best = min(best, (time.perf_counter() - start) / 10)
    return best * 1e3


def _kind(conv: nn.Conv2d) -> str:
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return "depthwise"
    return "pointwise" if conv.kernel_size == (1, 1) else "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--rows", action="store_true", help="also print one row per convolution")
    add_results_option(parser, "prune_layer_latency")
    args = parser.parse_args()
    res = Results(args.results, table="prune_layer_latency", area="pruning",
                  claim="Per-convolution CPU latency, dense vs pruned to 50% MACs (BatchNorm "
                  "folded, channels-last), summed by kind", row_header=["batch", "kind"],
                  model=args.model, threads=args.threads,
                  settings={"round_to": args.round_to, "timing": "best of 5 x 10"})  # fmt: skip
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    dense = torchvision.models.get_model(args.model, weights=None).eval()
    pruned = copy.deepcopy(dense)
    ts.prune(pruned, x, {"target_macs": 0.5, "round_to": args.round_to})
    for model in (dense, pruned):
        ts.quant.fold_batchnorm(model)
    convs = [_conv_inputs(dense, x), _conv_inputs(pruned, x)]
    totals: dict[str, list[float]] = {}
    if args.rows:
        print("| conv | kind | dense → pruned weight | dense ms | pruned ms | time kept | MACs kept |")  # fmt: skip  # noqa: E501
        print("|---|---|---|---|---|---|---|")
    for name, (conv, shape) in convs[0].items():
        small, small_shape = convs[1][name]
        ms = [_conv_ms(conv, shape, args.batch), _conv_ms(small, small_shape, args.batch)]
        pair = ((conv, shape), (small, small_shape))
        macs = [ts.analyze(c, torch.randn(1, *s[1:])).macs for c, s in pair]
        kind = _kind(conv)
        row = totals.setdefault(kind, [0.0, 0.0, 0.0, 0.0, 0.0])
        row[0] += 1
        for i in range(2):
            row[1 + i] += ms[i]
            row[3 + i] += macs[i]
        if args.rows:
            shapes = f"{tuple(conv.weight.shape)} → {tuple(small.weight.shape)}"
            kept = f"{ms[1] / ms[0]:.2f} | {macs[1] / macs[0]:.2f}"
            print(f"| {name} | {kind} | {shapes} | {ms[0]:.3f} | {ms[1]:.3f} | {kept} |")
    print(f"\n{args.model}, batch {args.batch}, {args.threads} threads, per-kind sums:\n")
    print("| kind | convs | dense ms | pruned ms | time kept | MACs kept | dense ms per conv |")
    print("|---|---|---|---|---|---|---|")
    all_rows = [sum(col) for col in zip(*totals.values(), strict=True)]
    for kind, (n, d, p, md, mp) in [*totals.items(), ("all", all_rows)]:
        kept = f"{p / d:.2f} | {mp / md:.2f}"
        print(f"| {kind} | {n:.0f} | {d:.2f} | {p:.2f} | {kept} | {d / n:.3f} |")
        row = [str(args.batch), kind]
        for metric, value, unit, digits in (
            ("convs", int(n), "count", 0), ("dense ms", d, "ms", 2), ("pruned ms", p, "ms", 2),
            ("time kept", p / d, "ratio", 2), ("MACs kept", mp / md, "ratio", 2),
            ("dense ms per conv", d / n, "ms", 3),
        ):  # fmt: skip
            res.add(row, metric, round(value, 5), unit, digits)


if __name__ == "__main__":
    main()
