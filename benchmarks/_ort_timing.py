"""Latency of several ONNX files timed round-robin, so drift of the machine hits all alike."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from torchslim.analysis import measure_latency


def round_robin_ms(
    paths: dict[str, Path], sample_shape: tuple[int, ...], repeats: dict[int, int], rounds: int
) -> dict[str, tuple[float, ...]]:
    """Median ms per file and batch size (in ``repeats``' order): ``rounds`` rounds, each timing
    every file in turn (``repeats[batch]`` runs, 2 threads), median of the round medians."""
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for key, path in paths.items():
            for batch, n in repeats.items():
                x = torch.randn(batch, *sample_shape)
                res = measure_latency(path, x, backend="ort", threads=2, repeats=n)
                times.setdefault((key, batch), []).append(res.median_ms)
    return {k: tuple(statistics.median(times[k, b]) for b in repeats) for k in paths}
