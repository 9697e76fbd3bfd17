"""Measured latency as a budget: a per-layer look-up table timed in ONNX Runtime on this machine.

Every convolution and matrix product of a model's trace is an *op shape* (its input shape,
channels, kernel, stride...). :class:`LatencyTable` times each op shape once, alone, in an ONNX
Runtime session with the given threads, and keeps the milliseconds in a JSON file cached by CPU
model, threads and ONNX Runtime version (op shapes carry the batch size), so a search or a
second run on the same machine times nothing again. :class:`LatencyModel` predicts a pruned
variant of one model from the table, without building or running it: the sum of its ops'
times, mapped to the whole model's time by ``a * sum + b`` fitted on a few variants measured
whole (the dense model and two uniform cuts). ``b`` takes what the table does not hold (element-
wise ops, pooling, the session's own overhead) less the fixed cost each op pays when timed
alone; ``a`` the rest of the difference between ops alone and inside the graph.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchslim.graph.trace import trace
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3))
    >>> graph = trace(net, torch.randn(1, 3, 16, 16))
    >>> [op.kind for op in op_shapes(graph)]
    ['conv', 'conv']
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchslim._tensors import Inputs, Kwargs, input_tuple, map_tensors
from torchslim.graph.trace import ChannelGraph
from torchslim.runtime import (
    OPSET,
    cpu_info,
    export_for_latency,
    ort_session,
    round_robin_latency,
)

log = logging.getLogger("torchslim.latency")

# a measured whole model may differ from the table's prediction by this much before the
# prediction is corrected and the channels chosen again: half the 5% a latency budget is
# promised within, leaving room for the next measurement's noise (1-3% on a quiet machine)
VERIFY_TOLERANCE = 0.025
TABLE_VERSION = 1  # bump when what an entry means changes: older files are then ignored
_LAYOUT_OPS = {"ReorderInput", "ReorderOutput", "Transpose"}  # ORT's layout plumbing
_clock = time.perf_counter
_aten = torch.ops.aten
_MM = {_aten.mm: False, _aten.addmm: True}  # op -> whether its first argument is a bias
_BMM = {_aten.bmm: False, _aten.baddbmm: True}


def cache_dir() -> Path:
    """Where latency tables live: ``$TORCHSLIM_CACHE/latency``, else
    ``$XDG_CACHE_HOME/torchslim/latency``, else ``~/.cache/torchslim/latency``.

    Example:
        >>> cache_dir().name
        'latency'
    """
    root = os.environ.get("TORCHSLIM_CACHE")
    if root:
        return Path(root).expanduser() / "latency"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "torchslim" / "latency"


@dataclass(frozen=True)
class OpShape:
    """One timed op: a convolution (``conv``, ``conv_transpose``), a matrix product with a
    weight (``mm``: ``(M, K) @ (K, N)``) or of two activations (``bmm``).

    ``shape`` is the input's shape, ``weight`` the weight's (``mm``: ``(K, N)``; ``bmm``: the
    second operand's); ``attrs`` the op's other arguments.
    """

    kind: str
    shape: tuple[int, ...]
    weight: tuple[int, ...]
    bias: bool
    attrs: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """The table key.

        Example:
            >>> OpShape("mm", (1, 8), (8, 4), True).key
            'mm|1x8|8x4|b|'
        """
        attrs = ",".join(f"{k}={v}" for k, v in self.attrs)
        dims = lambda s: "x".join(map(str, s))  # noqa: E731
        return (
            f"{self.kind}|{dims(self.shape)}|{dims(self.weight)}|{'b' if self.bias else ''}|{attrs}"
        )

    def onnx_model(self) -> Any:
        """A one-node ONNX model of this op, its weight an initializer."""
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        inits = [numpy_helper.from_array(rng.standard_normal(self.weight, np.float32), "w")]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.shape))]
        names = ["x", "w"]
        attrs = dict(self.attrs)
        if self.kind in ("conv", "conv_transpose"):
            out_channels = (
                self.weight[0] if self.kind == "conv" else self.weight[1] * attrs["group"]
            )
            if self.bias:
                inits.append(numpy_helper.from_array(np.zeros(out_channels, np.float32), "b"))
                names.append("b")
            op = "Conv" if self.kind == "conv" else "ConvTranspose"
            nodes = [helper.make_node(op, names, ["y"], **attrs)]
        else:
            if self.kind == "bmm":
                inits.clear()
                inputs.append(
                    helper.make_tensor_value_info("w", TensorProto.FLOAT, list(self.weight))
                )
            nodes = [helper.make_node("MatMul", ["x", "w"], ["y" if not self.bias else "m"])]
            if self.bias:
                size = self.weight[-1]
                inits.append(numpy_helper.from_array(np.zeros(size, np.float32), "b"))
                nodes.append(helper.make_node("Add", ["m", "b"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph(nodes, self.kind, inputs, [out], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = min(model.ir_version, 8)
        return model


def _conv_shape(args: Sequence[Any], scale: int) -> OpShape:
    x, w, b, stride, padding, dilation, transposed, output_padding, groups = args[:9]
    # groups as traced: pruning a depthwise conv shrinks its group count with its channels
    per_group = w[0] if transposed else w[1]
    if per_group and x[1] % per_group == 0:
        groups = x[1] // per_group
    spatial = len(x) - 2
    attrs: dict[str, Any] = {
        "strides": list(stride) * (spatial if len(stride) == 1 else 1),
        "pads": list(padding) * (spatial if len(padding) == 1 else 1) * 2,
        "dilations": list(dilation) * (spatial if len(dilation) == 1 else 1),
        "group": int(groups),
        "kernel_shape": list(w[2:]),
    }
    if transposed:
        attrs["output_padding"] = list(output_padding) * (
            spatial if len(output_padding) == 1 else 1
        )
    frozen = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(attrs.items()))
    kind = "conv_transpose" if transposed else "conv"
    return OpShape(kind, (x[0] * scale, *x[1:]), tuple(w), b is not None, frozen)


def op_shapes(
    graph: ChannelGraph, keep: Mapping[int, Sized] | None = None, scale: int = 1
) -> list[OpShape]:
    """The convolutions and matrix products of a traced model, shaped as ``keep`` leaves them
    (``None``: as traced), their leading (batch) dimension times ``scale``.

    Example:
        >>> import torch
        >>> from torchslim.graph.trace import trace
        >>> g = trace(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), torch.randn(1, 4))
        >>> [op.key for op in op_shapes(g, {g.prunable()[0]: [0, 1]}, scale=4)]
        ['mm|4x4|4x2|b|', 'mm|4x2|2x2|b|']
    """
    ops = []
    for packet, args in graph.mac_op_shapes(keep):
        if packet is _aten.convolution:
            ops.append(_conv_shape(args, scale))
        elif packet in _MM:
            bias = _MM[packet]
            a, b = (args[1], args[2]) if bias else (args[0], args[1])
            ops.append(OpShape("mm", (a[0] * scale, a[1]), tuple(b), bias))
        elif packet in _BMM:
            bias = _BMM[packet]
            a, b = (args[1], args[2]) if bias else (args[0], args[1])
            ops.append(OpShape("bmm", (a[0] * scale, *a[1:]), tuple(b), bias))
    return ops


def table_path(threads: int) -> Path:
    """The cache file of this machine's table at ``threads`` (CPU model and flags, ONNX Runtime
    version and the table format in its name)."""
    import onnxruntime

    info = cpu_info()
    ident = f"{info.label}|{info.machine}|ort {onnxruntime.__version__}|t{threads}|v{TABLE_VERSION}"
    digest = hashlib.sha1(ident.encode()).hexdigest()[:12]
    return cache_dir() / f"ort-{threads}t-{digest}.json"


class LatencyTable:
    """Milliseconds of op shapes in ONNX Runtime on this machine, timed on first use and kept.

    ``threads`` (default: PyTorch's thread count) is the sessions' intra-op threads; ``path``
    the JSON file (default: :func:`table_path`, in :func:`cache_dir`). Each op is timed alone
    (at least ``repeats`` runs lasting ``min_seconds`` in all), its compute nodes' time read
    from ONNX Runtime's profiler.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     table = LatencyTable(threads=1, path=Path(d) / "t.json", min_seconds=0.01)
        ...     ms = table.ms(OpShape("mm", (1, 64), (64, 64), True))
        ...     table.save()
        ...     again = LatencyTable(threads=1, path=Path(d) / "t.json")
        >>> ms >= 0, len(again)
        (True, 1)
    """

    def __init__(
        self,
        threads: int | None = None,
        path: str | Path | None = None,
        *,
        repeats: int = 10,
        min_seconds: float = 0.03,
    ) -> None:
        self.threads = threads or torch.get_num_threads()
        self.path = Path(path) if path is not None else table_path(self.threads)
        self.repeats, self.min_seconds = repeats, min_seconds
        self.entries: dict[str, float] = {}
        self._dirty = False
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("latency table %s unreadable (%s): timing again", self.path, exc)
            else:
                if data.get("version") == TABLE_VERSION:
                    self.entries = {str(k): float(v) for k, v in data.get("entries", {}).items()}

    def __len__(self) -> int:
        return len(self.entries)

    def _time(self, model: Any, feeds: Mapping[str, np.ndarray]) -> float:
        """Milliseconds of the model's compute nodes per run, from ONNX Runtime's profiler:
        the layout conversions ORT puts around an op alone (``ReorderInput`` /
        ``ReorderOutput``, ``Transpose``) and the session's own overhead are left out, since
        inside a whole model they happen once, not per op. A trimmed mean per node (its middle
        60%) over the timed runs."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "op.onnx"
            path.write_bytes(model.SerializeToString())
            session = ort_session(path, self.threads, profile_prefix=Path(tmp) / "profile")
            for _ in range(3):
                session.run(None, dict(feeds))
            runs, spent, began = 0, 0.0, _clock()
            while runs < self.repeats + 3 or spent < self.min_seconds:
                session.run(None, dict(feeds))
                runs, spent = runs + 1, _clock() - began
                if runs >= 100 * self.repeats:
                    break
            events = json.loads(Path(session.end_profiling()).read_text())
        per_node: dict[str, list[float]] = {}
        for event in events:
            if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
                continue
            if event.get("args", {}).get("op_name") in _LAYOUT_OPS:
                continue
            per_node.setdefault(event["name"], []).append(float(event["dur"]))
        total = 0.0
        for durations in per_node.values():
            timed = sorted(durations[3:])  # the first three runs were warm-up
            cut = len(timed) // 5
            middle = timed[cut : len(timed) - cut] or timed
            total += sum(middle) / len(middle)
        return total / 1e3  # microseconds -> ms

    def ms(self, op: OpShape) -> float:
        """The op's milliseconds (timed now if the table does not have them yet)."""
        key = op.key
        found = self.entries.get(key)
        if found is None:
            rng = np.random.default_rng(0)
            feeds = {"x": rng.standard_normal(op.shape, np.float32)}
            if op.kind == "bmm":
                feeds["w"] = rng.standard_normal(op.weight, np.float32)
            found = self._time(op.onnx_model(), feeds)
            self.entries[key], self._dirty = found, True
        return found

    def total_ms(self, ops: Iterable[OpShape], progress: bool = False) -> float:
        """The summed milliseconds of ``ops``; a bar while new ones are timed."""
        ops = list(ops)
        missing = {op.key: op for op in ops if op.key not in self.entries}
        if missing:
            from tqdm.auto import tqdm

            for op in tqdm(missing.values(), desc="latency table", unit="op",
                           disable=not progress or len(missing) < 20, leave=False):  # fmt: skip
                self.ms(op)
        return sum(self.ms(op) for op in ops)

    def save(self) -> None:
        """Write the table (atomically, merged with what other processes wrote meanwhile)."""
        if not self._dirty:
            return
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            merged: dict[str, float] = {}
            if self.path.exists():
                try:
                    data = json.loads(self.path.read_text())
                    if data.get("version") == TABLE_VERSION:
                        merged = dict(data.get("entries", {}))
                except (OSError, ValueError):
                    pass
            merged.update(self.entries)
            info = cpu_info()
            data = {"version": TABLE_VERSION, "cpu": info.label, "threads": self.threads,
                    "entries": merged}  # fmt: skip
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=0, sort_keys=True)
            os.replace(tmp, self.path)
        self.entries, self._dirty = merged, False


def _batched(inputs: tuple, batch_size: int) -> tuple:
    """The example inputs repeated along their first axis up to ``batch_size``."""

    def grow(t: torch.Tensor) -> torch.Tensor:
        if not t.ndim or t.shape[0] == batch_size:
            return t
        reps = math.ceil(batch_size / t.shape[0])
        return t.repeat(reps, *([1] * (t.ndim - 1)))[:batch_size]

    # positional tensors and keyword ones; a list of images (a detector's input) stays as is
    return tuple(
        grow(t) if isinstance(t, torch.Tensor) else map_tensors(grow, t) if isinstance(t, Kwargs)
        else t
        for t in inputs
    )  # fmt: skip


def measure_ms(model: nn.Module, inputs: Inputs, threads: int, rounds: int = 5) -> float:
    """``model``'s measured latency (ms) in ONNX Runtime on ``inputs`` with ``threads``
    threads: the lowest of ``rounds`` medians (each of at least 10 runs and 0.2 s), which a
    shared or virtual machine's bursts of other work do not reach.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> measure_ms(net, torch.randn(1, 3, 16, 16), threads=1, rounds=1) > 0
        True
    """
    return measure_many([model], inputs, threads, rounds)[0]


@dataclass(frozen=True)
class LatencyCorrection:
    """Predicted latency ratios corrected by one measured model: through its (predicted,
    measured) point, the ratio scaled (``ratio``: measured / predicted) and the saving
    scaled (``saving``: (1 - measured) / (1 - predicted), the unpruned model staying at 1); a
    prediction becomes the larger of the two. Each alone misleads: scaling every ratio down
    after a fast measurement lets the unpruned model meet a budget, and scaling the saving
    alone overshoots where the table is off by a constant factor; their upper envelope keeps
    the unpruned model at 1 or more, and measuring again from the next choice converges on
    either kind of error. Both factors are clamped to [0.25, 4] (a pruned model measured no
    faster than the whole says more about that measurement than about the table).

    Example:
        >>> fix = LatencyCorrection.measured(0.7, 0.56)  # ran faster than predicted
        >>> round(fix(0.7), 3), round(fix(1.0), 3), round(fix(0.5), 3)
        (0.56, 1.0, 0.4)
        >>> LatencyCorrection()(0.5)  # no measurement yet
        0.5
    """

    ratio: float = 1.0
    saving: float = 1.0

    @classmethod
    def measured(cls, predicted: float, measured: float) -> LatencyCorrection:
        """The correction a model predicted at ``predicted`` and measured at ``measured``
        (latency ratios to the unpruned model) gives."""
        if not 0 < predicted < 1:
            return cls()
        ratio = min(max(measured / predicted, 0.25), 4.0)
        saving = min(max((1 - measured) / (1 - predicted), 0.25), 4.0)
        return cls(ratio, saving)

    def __call__(self, predicted: float) -> float:
        return max(predicted * self.ratio, 1 - (1 - predicted) * self.saving)


def measure_many(
    models: Sequence[nn.Module], inputs: Inputs, threads: int, rounds: int = 5
) -> list[float]:
    """Each model's :func:`measure_ms`, the rounds interleaved (one round of each model, then
    the next): a slow spell of the machine then hits every model alike, so their ratios hold
    where separate measurements a minute apart can differ by tens of percent.

    Example:
        >>> nets = [nn.Conv2d(3, c, 3) for c in (4, 64)]
        >>> len(measure_many(nets, torch.randn(1, 3, 16, 16), threads=1, rounds=1))
        2
    """
    with tempfile.TemporaryDirectory() as tmp:
        paths = {i: export_for_latency(m, input_tuple(inputs), Path(tmp) / f"m{i}.onnx")
                 for i, m in enumerate(models)}  # fmt: skip
        found = round_robin_latency(paths, [input_tuple(inputs)], rounds=rounds, repeats=10,
                                    threads=threads, min_seconds=0.2, reduce=min)  # fmt: skip
    return [float(found[i][0]) for i in range(len(models))]


class LatencyModel:
    """Whole-model ONNX Runtime latency of pruned variants of one model, predicted from a
    :class:`LatencyTable` and calibrated on a few variants measured whole.

    ``build(keep)`` makes the pruned variant (a model); :meth:`calibrate` measures the dense
    model and the variants it is given and fits ``ms = a * table_sum + b``; before it, the
    prediction is the table sum alone.

    Example:
        >>> import torch
        >>> from torchslim.graph.trace import trace
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3))
        >>> x = torch.randn(1, 3, 16, 16)
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     table = LatencyTable(threads=1, path=Path(d) / "t.json", min_seconds=0.01)
        ...     lat = LatencyModel(net, x, trace(net, x), table=table)
        ...     lat.calibrate(lambda keep: net, [None])
        ...     lat.predict_ms() > 0
        True
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Inputs,
        graph: ChannelGraph,
        *,
        batch_size: int = 1,
        table: LatencyTable | None = None,
        threads: int | None = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        traced = input_tuple(example_inputs)
        first = next((t for t in traced if isinstance(t, torch.Tensor) and t.ndim), None)
        self.scale = max(1, batch_size // (first.shape[0] if first is not None else 1))
        self.inputs = _batched(traced, batch_size)
        self.graph = graph
        self.batch_size = batch_size
        self.table = table if table is not None else LatencyTable(threads)
        self.progress = progress
        self.a, self.b = 1.0, 0.0
        self.points: list[tuple[float, float]] = []  # (table sum, measured ms) of calibration

    def table_ms(self, keep: Mapping[int, Sized] | None = None) -> float:
        """The table's sum over the variant's ops (ms)."""
        ops = op_shapes(self.graph, keep, self.scale)
        return self.table.total_ms(ops, self.progress)

    def predict_ms(self, keep: Mapping[int, Sized] | None = None) -> float:
        """The variant's predicted latency (ms); ``None``: the model as traced."""
        return max(self.a * self.table_ms(keep) + self.b, 1e-6)

    def measure_ms(self, model: nn.Module, rounds: int = 5) -> float:
        """A model's measured latency at this batch size and thread count
        (:func:`measure_ms`)."""
        return self.measure_many([model], rounds)[0]

    def measure_many(self, models: Sequence[nn.Module], rounds: int = 5) -> list[float]:
        """Models' measured latencies, their rounds interleaved (:func:`measure_many`)."""
        return measure_many(models, self.inputs, self.table.threads, rounds)

    def calibrate(
        self,
        build: Callable[[Mapping[int, Sized] | None], nn.Module],
        keeps: Sequence[Mapping[int, Sized] | None],
    ) -> None:
        """Measure the variants ``build(keep)`` of ``keeps`` whole (their rounds interleaved)
        and fit ``a`` and ``b`` (least squares; one variant: ``b = 0``). A variant ``build``
        fails on is skipped."""
        built = []
        for keep in keeps:
            try:
                built.append((keep, build(keep)))
            except Exception as exc:  # a calibration point less, and the log says why
                log.warning("latency calibration: a variant failed to build (%s); skipped", exc)
        measured = self.measure_many([variant for _, variant in built]) if built else []
        points = [(self.table_ms(keep), ms) for (keep, _), ms in zip(built, measured, strict=True)]
        self.table.save()
        if not points:
            raise RuntimeError("latency calibration: no variant could be measured")
        self.points = points
        xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        if len(points) >= 2 and np.ptp(xs) > 1e-9:
            a, b = np.polyfit(xs, ys, 1)
            if a > 0:  # b < 0 too: an op timed alone carries a fixed cost it sheds in a graph
                self.a, self.b = float(a), float(b)
                return
        self.a, self.b = float(ys.sum() / max(xs.sum(), 1e-9)), 0.0
