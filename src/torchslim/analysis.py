"""Measure a model: parameters, MACs per layer, bytes at a bit width.

Every later feature (pruning reports, quantization reports, the demo's table) measures through
this module. The pass runs on the shapes-only execution engine of :mod:`torchslim.graph.execution`
(with ``shapes_only=True``), MACs per op come from :mod:`torchslim.graph.macs`; latency
(PyTorch and ONNX Runtime) is measured by :mod:`torchslim.runtime`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

# Names that lived here before the split of analysis.py stay importable from here: the
# redundant ``as`` marks them as re-exports.
from torchslim._tensors import Inputs as Inputs
from torchslim._tensors import aten_tensors as aten_tensors
from torchslim._tensors import first_tensor as first_tensor
from torchslim._tensors import input_tuple
from torchslim._tensors import lead_tensor as lead_tensor
from torchslim._tensors import map_tensors as map_tensors
from torchslim._tensors import module_mode as module_mode
from torchslim.graph.execution import ACTIVATION_MODULE_OPS as ACTIVATION_MODULE_OPS
from torchslim.graph.execution import BATCH_NORMS as BATCH_NORMS
from torchslim.graph.execution import ModuleScope, PlainDispatchMode, measuring, shape_only_call
from torchslim.graph.execution import ShapesOnly as ShapesOnly
from torchslim.graph.execution import conv_output_shape as conv_output_shape
from torchslim.graph.execution import shape_only_forward as shape_only_forward
from torchslim.graph.execution import shape_only_modules as shape_only_modules
from torchslim.graph.execution import swapped_forwards as swapped_forwards
from torchslim.graph.execution import value_free_call as value_free_call
from torchslim.graph.macs import flop_formula, op_macs
from torchslim.inputs import run_forward
from torchslim.runtime import LatencyResult as LatencyResult
from torchslim.runtime import export_for_latency as export_for_latency
from torchslim.runtime import measure_latency as measure_latency
from torchslim.runtime import round_robin_latency as round_robin_latency
from torchslim.tables import format_count, text_table


@dataclass(frozen=True)
class LayerStats:
    """One row of the per-layer table."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class ModelStats:
    """Totals and the per-layer table of one forward pass.

    ``macs`` counts multiply-accumulates of convolutions, linear layers and matrix products
    (attention included), the convention behind published figures such as ResNet-18's 1.82 G.
    Norms and activations appear in the table with their parameters but add no MACs.
    """

    params: int
    macs: int
    size_bytes: int
    buffer_bytes: int
    layers: tuple[LayerStats, ...]

    def bytes_at(self, bits: int) -> int:
        """Model bytes if every parameter were stored at ``bits`` bits (buffers as they are).

        Example:
            >>> stats = analyze(nn.Linear(10, 10), torch.randn(1, 10))
            >>> stats.bytes_at(32), stats.bytes_at(8)
            (440, 110)
        """
        if bits <= 0:
            raise ValueError(f"bits must be positive, got {bits}")
        return math.ceil(self.params * bits / 8) + self.buffer_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON reports."""
        return {**asdict(self), "layers": [asdict(row) for row in self.layers]}

    def __str__(self) -> str:
        header = ("layer", "type", "input", "output", "params", "MACs")
        rows = [
            (
                r.name,
                r.type,
                "x".join(map(str, r.input_shape)),
                "x".join(map(str, r.output_shape)),
                format_count(r.params) if r.params else "-",
                format_count(r.macs) if r.macs else "-",
            )
            for r in self.layers
        ]
        lines = text_table(header, rows, right={4, 5})
        lines.append(
            f"total: {format_count(self.params)} params ({self.params:,}), "
            f"{format_count(self.macs)}MACs ({self.macs:,}), "
            f"{self.size_bytes / 2**20:.2f} MiB"
        )
        return "\n".join(lines)


def _storage_bytes(model: nn.Module, params: dict[int, torch.Tensor]) -> tuple[int, int]:
    """Bytes of the model's unique parameters (``params``, by ``id``) and of its persistent
    buffers, at their stored dtypes."""
    param_bytes = sum(p.numel() * p.element_size() for p in params.values())
    buffers: dict[int, torch.Tensor] = {}
    for value in model.state_dict(keep_vars=True).values():
        if isinstance(value, torch.Tensor) and id(value) not in params:
            buffers[id(value)] = value
    return param_bytes, sum(b.numel() * b.element_size() for b in buffers.values())


class MacsCounter(PlainDispatchMode):
    """Counts the MACs of every ATen op with a formula, per innermost running module.

    With ``shapes_only`` those ops (the convolutions and matrix products that make up nearly
    all of a forward pass's time), the activations and eval-mode BatchNorm do not compute:
    their outputs are zeros of the right shapes, after the same checks of their arguments (see
    :func:`torchslim.graph.execution.shape_only_call`). Everything else runs for real, so the
    pass still checks that every shape fits, at a fraction of the cost, but the model's output
    values are meaningless.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3))
        >>> with ModuleScope(net) as scope, MacsCounter(scope, shapes_only=True) as counter:
        ...     out = net(torch.randn(1, 3, 10, 10))
        >>> counter.own["0"], out.shape, float(out.abs().sum())  # 8*8*8 outputs x 27 MACs
        (13824, torch.Size([1, 8, 8, 8]), 0.0)
    """

    def __init__(self, scope: ModuleScope, *, shapes_only: bool = False) -> None:
        super().__init__()
        self.scope = scope
        self.shapes_only = shapes_only
        self.own: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = shape_only_call(func, args, kwargs) if self.shapes_only else None
        if out is None:
            out = func(*args, **kwargs)
        if flop_formula(func._overloadpacket) is None:
            return out
        macs = op_macs(func._overloadpacket, args, kwargs, out)
        name = self.scope.stack[-1]
        self.own[name] = self.own.get(name, 0) + macs
        return out


def analyze(model: nn.Module, example_inputs: Inputs, *, shapes_only: bool = False) -> ModelStats:
    """Parameters, MACs, bytes and a per-layer table from one forward pass.

    The model runs once in eval mode without gradients; its training flag is restored.
    ``shapes_only=True`` skips the arithmetic of convolutions and matrix products (same
    figures, several times faster; see :class:`MacsCounter`).

    Example:
        >>> import torchvision
        >>> stats = analyze(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
        >>> stats.params, round(stats.macs / 1e9, 2)
        (11689512, 1.81)
    """
    inputs = input_tuple(example_inputs)
    with counting(model, shapes_only=shapes_only) as finish:
        run_forward(model, inputs, "the example input" + ("s" if len(inputs) > 1 else ""),
                    hint="Check that the example input is what the model's forward takes and "
                    "that the module's weights fit the layers around it")  # fmt: skip
    return finish()


@contextlib.contextmanager
def counting(
    model: nn.Module, *, shapes_only: bool = False, scope: ModuleScope | None = None
) -> Iterator[Callable[[], ModelStats]]:
    """Count whatever forward passes of ``model`` run inside; yields a ``ModelStats`` builder.

    Lets another pass over the model (e.g. the pruning tracer, which passes its own ``scope``)
    measure it on the same run. The model is in eval mode without gradients inside; its
    training flag is restored. ``shapes_only`` as in :class:`MacsCounter`.

    Example:
        >>> net = nn.Linear(4, 2)
        >>> with counting(net) as finish:
        ...     _ = net(torch.randn(1, 4))
        >>> finish().macs
        8
    """
    with contextlib.ExitStack() as stack:
        if scope is None:
            scope = stack.enter_context(ModuleScope(model))
        stack.enter_context(measuring(model))
        counter = stack.enter_context(MacsCounter(scope, shapes_only=shapes_only))
        yield lambda: model_stats(model, counter.own, scope.shapes)


def model_stats(
    model: nn.Module, own: dict[str, int], seen: dict[str, tuple[tuple, tuple]]
) -> ModelStats:
    """``ModelStats`` from MACs per module (``own``: its ops outside any child module) and the
    (input, output) shapes of the modules that ran (``seen``); parameters are read from
    ``model`` as it is now."""
    layers = []
    unique: dict[int, torch.Tensor] = {}  # parameters by identity (shared ones count once)
    for name, module in model.named_modules():
        own_params = [p for p in module._parameters.values() if p is not None]
        for p in own_params:
            unique.setdefault(id(p), p)
        if name not in seen:
            continue
        children = [(n, c) for n, c in module._modules.items() if c is not None]
        macs = own.get(name, 0)
        if children and macs == 0:
            continue
        params = sum(p.numel() for p in own_params)
        for c_name, child in children:  # children that never ran (weights used functionally)
            if f"{name}.{c_name}" not in seen:
                params += sum(p.numel() for p in child.parameters())
        shapes = seen[name]
        layers.append(LayerStats(name, type(module).__name__, shapes[0], shapes[1], params, macs))
    param_bytes, buffer_bytes = _storage_bytes(model, unique)
    unique_params = sum(p.numel() for p in unique.values())
    return ModelStats(
        params=unique_params,
        macs=sum(own.values()),
        size_bytes=param_bytes + buffer_bytes,
        buffer_bytes=buffer_bytes,
        layers=tuple(layers),
    )
