"""Latency in PyTorch and ONNX Runtime, the one place torchslim opens ONNX Runtime sessions,
and what the CPU can do.

:func:`ort_session` builds every session (export checks, evaluation, kernel listings, timing)
with the same options, and :data:`OPSET` is the ONNX opset of every file torchslim writes.
:func:`cpu_info` reads the CPU model and its vector extensions; :func:`vector_floats` is the
number of float32 lanes of its widest vectors, the default channel multiple of pruning.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from torchslim._tensors import (
    Inputs,
    Kwargs,
    call_model,
    input_names,
    input_tuple,
    module_mode,
    ordered_kwargs,
    split_inputs,
)

OPSET = 17  # the ONNX opset of every exported file (export_onnx and the latency exports)
VECTOR_FLOATS_ENV = "TORCHSLIM_VECTOR_FLOATS"  # overrides vector_floats() (e.g. 8, 16, 1)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU model, its architecture and its flags (``/proc/cpuinfo`` on Linux)."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def vector_floats(self) -> int:
        """float32 lanes of the widest vectors: 16 with AVX-512, 8 with AVX2 or on ARM
        (NEON/ASIMD: 4 lanes, but its kernels block channels by 8), 4 with SSE/AVX only, 1
        when unknown.

        Example:
            >>> CpuInfo("x", "x86_64", frozenset({"avx2", "avx512f"})).vector_floats
            16
            >>> CpuInfo("x", "x86_64", frozenset({"avx2"})).vector_floats
            8
        """
        machine = self.machine.lower()
        if machine in ("arm64", "aarch64") or machine.startswith("arm"):
            return 8
        if "avx512f" in self.flags:
            return 16
        if "avx2" in self.flags:
            return 8
        return 4 if {"sse2", "avx"} & self.flags else 1

    @property
    def label(self) -> str:
        """The model and the vector extensions that matter for speed, for reports.

        Example:
            >>> CpuInfo("Xeon", "x86_64", frozenset({"avx2", "fma"})).label
            'Xeon (avx2, fma)'
        """
        isa = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd")
        present = [f for f in isa if f in self.flags]
        return f"{self.model} ({', '.join(present)})" if present else self.model


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU, read once.

    Example:
        >>> cpu_info().vector_floats in (1, 4, 8, 16)
        True
    """
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "Hardware") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:  # not Linux
        pass
    machine = platform.machine()
    if not flags and machine.lower() in ("arm64", "aarch64"):
        flags = {"asimd"}
    return CpuInfo(model or platform.processor() or machine, machine, frozenset(flags))


def vector_floats() -> int:
    """The channel multiple CPU kernels run fastest at: :attr:`CpuInfo.vector_floats` of this
    machine, or the ``TORCHSLIM_VECTOR_FLOATS`` environment variable when set (to prune for
    another machine, or to pin it in tests).

    Example:
        >>> vector_floats() >= 1
        True
    """
    value = os.environ.get(VECTOR_FLOATS_ENV, "").strip()
    if value:
        try:
            lanes = int(value)
        except ValueError:
            lanes = 0
        if lanes < 1:
            raise ValueError(f"{VECTOR_FLOATS_ENV} must be a positive integer, got {value!r}")
        return lanes
    return cpu_info().vector_floats


def ort_session(
    path: str | Path,
    threads: int | None = None,
    *,
    level: str = "all",
    optimized_model_path: str | Path | None = None,
    profile_prefix: str | Path | None = None,
) -> Any:
    """An ONNX Runtime CPU session; ``level`` of graph optimisations ("basic", "extended" or
    "all", the default: int8 fusions on). ``threads`` sets the intra-op threads (inter-op: 1);
    ``optimized_model_path`` saves the graph ONNX Runtime runs after its optimisations;
    ``profile_prefix`` turns ORT's profiler on (``session.end_profiling()`` writes the file).

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = export_for_latency(nn.Linear(4, 2), (torch.randn(1, 4),), Path(d) / "m.onnx")
        ...     session = ort_session(path, threads=1)
        ...     feed = {session.get_inputs()[0].name: torch.randn(1, 4).numpy()}
        ...     session.run(None, feed)[0].shape
        (1, 2)
    """
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}  # fmt: skip
    if level not in levels:
        raise ValueError(f"level must be one of {sorted(levels)}, got {level!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class LatencyResult:
    """Latency of repeated forward passes (milliseconds)."""

    backend: str
    median_ms: float
    mean_ms: float
    p90_ms: float
    min_ms: float
    repeats: int
    threads: int
    batch_size: int

    def __str__(self) -> str:
        return (
            f"{self.backend}: median {self.median_ms:.3f} ms (p90 {self.p90_ms:.3f}, "
            f"min {self.min_ms:.3f}) over {self.repeats} runs, batch {self.batch_size}, "
            f"{self.threads} threads"
        )


def _summarise(times: list[float], backend: str, threads: int, batch: int) -> LatencyResult:
    ms = sorted(t * 1e3 for t in times)
    p90 = ms[min(len(ms) - 1, math.ceil(0.9 * len(ms)) - 1)]
    return LatencyResult(
        backend, statistics.median(ms), statistics.fmean(ms), p90, ms[0], len(ms), threads, batch
    )


def export_for_latency(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    """Export a float model to ONNX (opset :data:`OPSET`) for latency measurement in ONNX
    Runtime.

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     export_for_latency(nn.Linear(4, 2), (torch.randn(1, 4),), Path(d) / "m.onnx").name
        'm.onnx'
    """
    model = model.eval()
    with torch.no_grad():
        module, args = exportable(model, inputs)
        torch.onnx.export(module, args, str(path), opset_version=OPSET, dynamo=False,
                          input_names=input_names(model, inputs))  # fmt: skip
    return path


class KeywordCall(nn.Module):
    """``model`` with a positional forward for ``torch.onnx.export``: the last ``keys`` of its
    tensors are passed by keyword, and a mapping output (a Hugging Face ``ModelOutput``)
    becomes the tuple of its tensors. The TorchScript exporter's own keyword support fills
    every parameter before them with its default, positionally, which breaks forwards that
    take some of those by keyword (Hugging Face's ``use_cache``)."""

    def __init__(self, model: nn.Module, keys: Sequence[str],
                 constants: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.keys = list(keys)
        self.constants = dict(constants or {})  # non-tensor keywords (flags), fixed in the file

    def forward(self, *tensors: Any) -> Any:
        split = len(tensors) - len(self.keys)
        kwargs = Kwargs(zip(self.keys, tensors[split:], strict=True), **self.constants)
        out = call_model(self.model, (*tensors[:split], kwargs))
        if isinstance(out, Mapping):
            return tuple(v for v in out.values() if v is not None)
        return out


def exportable(model: nn.Module, inputs: Sequence[Any]) -> tuple[nn.Module, tuple[Any, ...]]:
    """(module, positional arguments) to give ``torch.onnx.export`` for an
    :func:`~torchslim._tensors.input_tuple`: the model itself, or, with keyword inputs, a
    :class:`KeywordCall` taking them in the order of the forward's signature (the order of
    :func:`~torchslim._tensors.input_names`).

    Example:
        >>> module, args = exportable(nn.Linear(2, 2), (torch.zeros(1, 2),))
        >>> type(module).__name__, len(args)
        ('Linear', 1)
    """
    args, kwargs = split_inputs(inputs)
    if not kwargs:
        return model, args
    ordered = ordered_kwargs(model, kwargs)
    tensors = {k: v for k, v in ordered.items() if isinstance(v, torch.Tensor)}
    constants = {k: v for k, v in ordered.items() if k not in tensors}
    return KeywordCall(model, list(tensors), constants), (*args, *tensors.values())


def ort_feed(session: Any, inputs: Sequence[Any]) -> dict[str, Any]:
    """The ONNX Runtime feed for an :func:`~torchslim._tensors.input_tuple`: positional tensors
    to the session's inputs in order, keyword ones by name (an input the export left out
    because the graph never reads it is skipped).

    Example:
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = export_for_latency(nn.Linear(4, 2), (torch.randn(1, 4),), Path(d) / "m.onnx")
        ...     sorted(ort_feed(ort_session(path), (torch.randn(3, 4),)))
        ['input']
    """
    args, kwargs = split_inputs(inputs)
    names = [i.name for i in session.get_inputs()]
    leaves = [t for t in tree_flatten(list(args))[0] if isinstance(t, torch.Tensor)]
    taken = [n for n in names if n not in kwargs]
    feed = {n: t.detach().cpu().numpy() for n, t in zip(taken, leaves, strict=not kwargs)}
    feed.update({k: v.detach().cpu().numpy() for k, v in kwargs.items()
                 if k in names and isinstance(v, torch.Tensor)})  # fmt: skip
    return feed


def measure_latency(
    model_or_path: nn.Module | str | Path,
    example_inputs: Inputs,
    *,
    backend: Literal["torch", "ort"] = "torch",
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
    min_seconds: float = 0.0,
) -> LatencyResult:
    """Median latency of ``repeats`` forward passes after ``warmup`` ones, on the CPU.

    ``backend="ort"`` runs an ONNX file in ONNX Runtime (a module is exported to a temporary
    file first). ``threads`` sets intra-op threads (default: PyTorch's current setting).
    ``min_seconds`` keeps timing past ``repeats`` (up to 100 times as many) until the timed
    runs add up to that long: sub-millisecond medians of 20 runs vary by tens of percent.

    Example:
        >>> res = measure_latency(nn.Linear(8, 8), torch.randn(1, 8), repeats=5)
        >>> res.repeats, res.median_ms > 0
        (5, True)
    """
    if repeats <= 0 or warmup < 0:
        raise ValueError("repeats must be > 0 and warmup >= 0")
    inputs = input_tuple(example_inputs)
    threads = threads or torch.get_num_threads()
    # a batched tensor's first axis; a detector's list of images counts its images
    lead = inputs[0] if inputs else None
    if isinstance(lead, Kwargs):  # keyword inputs: the first tensor's first axis
        leaves = tree_flatten(list(inputs))[0]
        lead = next((t for t in leaves if isinstance(t, torch.Tensor)), None)
    batch = _batch_size(lead) if lead is not None else 1
    if backend == "torch":
        if not isinstance(model_or_path, nn.Module):
            raise TypeError("backend='torch' needs an nn.Module")
        return _torch_latency(model_or_path, inputs, warmup, repeats, threads, batch, min_seconds)
    if backend != "ort":
        raise ValueError(f"backend must be 'torch' or 'ort', got {backend!r}")
    if isinstance(model_or_path, nn.Module):
        with tempfile.TemporaryDirectory() as tmp:
            path = export_for_latency(model_or_path, inputs, Path(tmp) / "model.onnx")
            return _ort_latency(path, inputs, warmup, repeats, threads, batch, min_seconds)
    return _ort_latency(Path(model_or_path), inputs, warmup, repeats, threads, batch, min_seconds)


def round_robin_latency(
    paths: Mapping[Any, str | Path],
    inputs: Sequence[Inputs],
    *,
    rounds: int = 3,
    repeats: int | Sequence[int] = 20,
    threads: int | None = None,
    min_seconds: float = 0.0,
    reduce: Callable[[list[float]], float] = statistics.median,
) -> dict[Any, list[float]]:
    """Median ORT latency (ms) of several ONNX files on each input, timed round-robin.

    Each of ``rounds`` rounds times every file on every input in turn (``measure_latency``,
    ``repeats`` runs, one count per input or one for all); the result is ``reduce`` (default
    the median) of the rounds' medians, so slow drift of the machine (clock, other load) hits
    all files alike instead of whichever was timed then.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = export_for_latency(nn.Linear(4, 4).eval(), (torch.randn(1, 4),),
        ...                               Path(d) / "m.onnx")
        ...     ms = round_robin_latency({"m": path}, [torch.randn(1, 4)], rounds=2, repeats=3)
        >>> len(ms["m"]), ms["m"][0] > 0
        (1, True)
    """
    counts = [repeats] * len(inputs) if isinstance(repeats, int) else list(repeats)
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for key, path in paths.items():
            for i, (x, n) in enumerate(zip(inputs, counts, strict=True)):
                res = measure_latency(path, x, backend="ort", repeats=n, threads=threads,
                                      min_seconds=min_seconds)  # fmt: skip
                times.setdefault((key, i), []).append(res.median_ms)
    return {k: [reduce(times[k, i]) for i in range(len(inputs))] for k in paths}


def _time_runs(run: Callable[[], object], warmup: int, repeats: int,
               min_seconds: float) -> list[float]:  # fmt: skip
    """Seconds of each timed call of ``run``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < 100 * repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _torch_latency(model: nn.Module, inputs: tuple, warmup: int, repeats: int, threads: int,
                   batch: int, min_seconds: float) -> LatencyResult:  # fmt: skip
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with module_mode(model, training=False), torch.inference_mode():
            times = _time_runs(lambda: call_model(model, inputs), warmup, repeats, min_seconds)
    finally:
        torch.set_num_threads(previous)
    return _summarise(times, "torch", threads, batch)


def _batch_size(first: Any) -> int:
    if isinstance(first, torch.Tensor):
        return first.shape[0] if first.ndim else 1
    return len(first) if isinstance(first, (list, tuple)) else 1


def _ort_latency(path: Path, inputs: tuple, warmup: int, repeats: int, threads: int,
                 batch: int, min_seconds: float) -> LatencyResult:  # fmt: skip
    session = ort_session(path, threads)
    feed = ort_feed(session, inputs)
    times = _time_runs(lambda: session.run(None, feed), warmup, repeats, min_seconds)
    return _summarise(times, "ort", threads, batch)
