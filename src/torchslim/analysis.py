"""Measure a model: parameters, MACs per layer, bytes at a bit width, latency (PyTorch and ORT).

Every later feature (pruning reports, quantization reports, the demo's table) measures through
this module.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils._mode_utils import no_dispatch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_flop_count, shape_wrapper

from torchslim.inputs import run_forward

Inputs = torch.Tensor | Sequence[torch.Tensor]


def format_count(value: float, unit: str = "") -> str:
    """Human units: ``format_count(1.82e9) == "1.82 G"``.

    Example:
        >>> format_count(11_689_512)
        '11.69 M'
    """
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip() if float(value).is_integer() else f"{value:.2f} {unit}"


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
        widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" if i < 4 else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*header), "  ".join("-" * w for w in widths)]
        lines += [fmt.format(*row) for row in rows]
        lines.append(
            f"total: {format_count(self.params)} params ({self.params:,}), "
            f"{format_count(self.macs)}MACs ({self.macs:,}), "
            f"{self.size_bytes / 2**20:.2f} MiB"
        )
        return "\n".join(lines)


def input_tuple(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """Example inputs as a tuple of positional arguments (a lone tensor is wrapped)."""
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def first_tensor(out: Any) -> torch.Tensor:
    """The first tensor of a model or module output (tensor, tuple/list, or dict).

    Example:
        >>> first_tensor((torch.zeros(2), "aux")).shape
        torch.Size([2])
    """
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise TypeError(f"model output has no tensor: {type(out).__name__}")


def lead_tensor(value: Any) -> torch.Tensor | None:
    """The tensor a module's input or output is reported by: itself, or the first of a list.

    Example:
        >>> lead_tensor([torch.zeros(2), torch.zeros(3)]).shape, lead_tensor("text")
        (torch.Size([2]), None)
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _shape(value: Any) -> tuple[int, ...]:
    tensor = lead_tensor(value)
    return () if tensor is None else tuple(tensor.shape)


def _storage_bytes(model: nn.Module, params: dict[int, torch.Tensor]) -> tuple[int, int]:
    """Bytes of the model's unique parameters (``params``, by ``id``) and of its persistent
    buffers, at their stored dtypes."""
    param_bytes = sum(p.numel() * p.element_size() for p in params.values())
    buffers: dict[int, torch.Tensor] = {}
    for value in model.state_dict(keep_vars=True).values():
        if isinstance(value, torch.Tensor) and id(value) not in params:
            buffers[id(value)] = value
    return param_bytes, sum(b.numel() * b.element_size() for b in buffers.values())


@shape_wrapper
def _cpu_sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# The CPU flash kernel of SDPA, which PyTorch's counter has no formula for.
_EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
}


def flop_formula(packet: Any) -> Callable[..., int] | None:
    """PyTorch's FLOP formula for an op (convolutions, matrix products, attention), or ours;
    read at call time, so formulas registered after import count too. None: no MACs."""
    return _EXTRA_FLOP_FORMULAS.get(packet) or flop_registry.get(packet)


def map_tensors(fn: Callable[[Any], Any], value: Any, kind: type = torch.Tensor) -> Any:
    """``fn`` applied to every tensor in an ATen argument or result (lists, tuples, dicts).

    A cheap stand-in for ``torch.utils._pytree.tree_map`` on what ATen ops take and return;
    ``kind`` maps leaves of another type instead (e.g. the tracer's stand-ins for tensors).

    Example:
        >>> map_tensors(lambda t: t.shape[0], (torch.zeros(2), [torch.zeros(3), 1.5]))
        (2, [3, 1.5])
    """
    if isinstance(value, kind):
        return fn(value)
    if isinstance(value, (list, tuple)):  # leaves inline: this runs for every traced op
        return type(value)(
            [
                fn(v) if isinstance(v, kind) else map_tensors(fn, v, kind) if _nested(v) else v
                for v in value
            ]
        )
    if isinstance(value, dict):
        return {k: map_tensors(fn, v, kind) for k, v in value.items()}
    return value


def _nested(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict))


def op_macs(
    packet: Any,
    args: Any,
    kwargs: Any,
    out: Any,
    shape: Callable[[Any], Sequence[int]] = lambda t: t.shape,
    kind: type = torch.Tensor,
) -> int:
    """MACs of one ATen op (0 if it has no FLOP formula), from its arguments' shapes alone.

    ``shape`` gives the shape of each leaf of type ``kind``, so the same formula serves real
    tensors and shapes predicted for a pruned model (see ``ChannelGraph.stats_after``).

    Example:
        >>> a, b = torch.zeros(2, 3), torch.zeros(3, 4)
        >>> op_macs(torch.ops.aten.mm, (a, b), {}, a @ b)
        24
    """
    formula = flop_formula(packet)
    if formula is None:
        return 0
    raw = getattr(formula, "__wrapped__", None)  # PyTorch's formula on shapes, unwrapped
    if raw is not None:  # (its wrapper maps arguments to shapes with the slow pytree)
        size = lambda t: torch.Size(shape(t))  # noqa: E731
        flops = raw(*map_tensors(size, args, kind), out_shape=map_tensors(size, out, kind),
                    **map_tensors(size, kwargs, kind))  # fmt: skip
    else:  # a formula that wants tensors: give it meta tensors of those shapes
        meta = lambda t: torch.empty(tuple(shape(t)), device="meta")  # noqa: E731
        flops = formula(*map_tensors(meta, args, kind), out_val=map_tensors(meta, out, kind),
                        **map_tensors(meta, kwargs, kind))  # fmt: skip
    return int(flops) // 2


def aten_tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in an ATen argument or result, in order.

    Example:
        >>> len(aten_tensors((torch.zeros(2), [torch.zeros(3), 1.5])))
        2
    """
    found: list[torch.Tensor] = []
    map_tensors(found.append, value)
    return found


def shape_only_call(func: Any, args: tuple, kwargs: dict) -> Any:
    """``func``'s output as zeros of the right shapes, without its arithmetic (None: run it).

    Convolutions are checked and shaped by :func:`conv_output_shape`, the other ops with MACs
    by their meta kernels, which check the arguments as the real ones would (a weight that no
    longer matches its input's channels raises). Activations and BatchNorm in eval mode, whose
    cost on a large input is all arithmetic, are checked and shaped by :func:`value_free_call`.
    Every other op returns None and must run.
    """
    if func in _VALUE_FREE:
        return value_free_call(func, args, kwargs)
    if func is _CONV and not kwargs:
        shape = conv_output_shape(*args)
        if shape is not None:
            return torch.zeros(shape, dtype=args[0].dtype, device=args[0].device)
    if flop_formula(func._overloadpacket) is None:
        return None
    device = next(
        (a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None
    )
    if device is None or "out" in kwargs:  # an out= tensor must really be written
        return None
    to_meta = lambda t: t.to("meta")  # noqa: E731
    meta_args, meta_kwargs = map_tensors(to_meta, args), map_tensors(to_meta, kwargs)
    try:
        if func in _WITH_BIAS:  # addmm / baddbmm: their meta kernels are slow decompositions
            out = _WITH_BIAS[func](*meta_args[1:3])
            if torch.broadcast_shapes(meta_args[0].shape, out.shape) != out.shape:
                raise RuntimeError(f"{func}: bias {tuple(meta_args[0].shape)} does not "
                                   f"broadcast to {tuple(out.shape)}")  # fmt: skip
        else:
            out = func(*meta_args, **meta_kwargs)
    except NotImplementedError:  # no meta kernel: run the real one
        return None
    return map_tensors(lambda t: _zeros(t.shape, t.stride(), t.dtype, device), out)


_CONV = torch.ops.aten.convolution.default


def _per_dim(value: Any, n: int) -> list[int]:
    values = [value] if isinstance(value, int) else list(value)
    return values * n if len(values) == 1 else values


def conv_output_shape(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
) -> list[int] | None:
    """The output shape of ``aten.convolution`` on these arguments, with the checks the real
    kernel makes (channels, groups, bias, dtype, size); None for what it does not cover
    (transposed or unbatched). A few microseconds, where the meta kernel takes ~0.1 ms.

    Example:
        >>> conv_output_shape(torch.zeros(1, 3, 32, 32), torch.zeros(8, 3, 3, 3), None,
        ...                   [2, 2], [1, 1], [1, 1], False, [0, 0], 1)
        [1, 8, 16, 16]
    """
    n = weight.dim() - 2
    if transposed or x.dim() != weight.dim() or n < 1:
        return None
    if x.dtype != weight.dtype:
        raise RuntimeError(
            f"Input type ({x.dtype}) and weight type ({weight.dtype}) should be the same"
        )
    if weight.shape[1] * groups != x.shape[1] or weight.shape[0] % groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected "
            f"input{list(x.shape)} to have {weight.shape[1] * groups} channels, but got "
            f"{x.shape[1]} channels instead"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise RuntimeError(
            f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional "
            f"with {weight.shape[0]} elements, but got bias of size {list(bias.shape)} instead"
        )
    s, p, d = _per_dim(stride, n), _per_dim(padding, n), _per_dim(dilation, n)
    if not len(s) == len(p) == len(d) == n:
        return None  # malformed: left to the meta kernel's own error
    shape = [x.shape[0], weight.shape[0]]
    for i in range(n):
        size = (x.shape[2 + i] + 2 * p[i] - d[i] * (weight.shape[2 + i] - 1) - 1) // s[i] + 1
        if size < 1:
            raise RuntimeError(
                f"Calculated output size is too small: input {list(x.shape)}, kernel "
                f"{list(weight.shape[2:])}, padding {p}, dilation {d}, stride {s}"
            )
        shape.append(size)
    return shape


# Ops whose cost is all arithmetic and whose output has the input's shape and strides (dense
# input): activations, and BatchNorm in eval mode. In-place ones return their input untouched.
_A = torch.ops.aten
_ACTIVATION_NAMES = (
    "relu silu gelu hardswish hardsigmoid sigmoid tanh hardtanh leaky_relu elu mish softplus"
)
_ACTIVATIONS = {getattr(_A, name).default for name in _ACTIVATION_NAMES.split(" ")}
_ACTIVATIONS_INPLACE = {
    getattr(_A, f"{name}_").default
    for name in _ACTIVATION_NAMES.split(" ")
    if hasattr(_A, f"{name}_")
}
_BATCH_NORM = _A.native_batch_norm.default
_VALUE_FREE = _ACTIVATIONS | _ACTIVATIONS_INPLACE | {_BATCH_NORM}


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (
        t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    )


def value_free_call(func: Any, args: tuple, kwargs: dict) -> Any:
    """An activation's or eval-mode BatchNorm's output as zeros (in place: the input itself),
    after the checks the real kernel makes on shapes; None where it must really run."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not _dense(x) or not x.is_floating_point():
        return None
    if func in _ACTIVATIONS_INPLACE:
        return x
    if func in _ACTIVATIONS:
        return _zeros(x.shape, x.stride(), x.dtype, x.device)
    training = args[5] if len(args) > 5 else kwargs.get("training", True)
    if training or x.dim() < 2:
        return None
    _check_batch_norm(x, args[1:5])
    empty = x.new_zeros(0)
    return _zeros(x.shape, x.stride(), x.dtype, x.device), empty, empty.clone()


def _check_batch_norm(x: torch.Tensor, tensors: Sequence[torch.Tensor | None]) -> None:
    """Raise as the real kernel does when weight, bias or running stats do not fit ``x``."""
    for name, t in zip(("weight", "bias", "running_mean", "running_var"), tensors, strict=False):
        if t is not None and tuple(t.shape) != (x.shape[1],):
            raise RuntimeError(
                f"batch_norm: {name} should contain {x.shape[1]} elements, not {t.numel()}"
            )


_WITH_BIAS = {
    torch.ops.aten.addmm.default: torch.ops.aten.mm.default,
    torch.ops.aten.baddbmm.default: torch.ops.aten.bmm.default,
}


def _zeros(shape: Any, stride: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros with these shape and strides (``zeros_like`` on a meta tensor goes through a slow
    Python decomposition; ``torch.zeros`` maps zero pages, nearly free)."""
    numel = math.prod(shape)
    contiguous = torch.zeros(shape, dtype=dtype, device=device)
    if numel <= 1 or contiguous.stride() == tuple(stride):
        return contiguous
    span = 1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True))
    flat = torch.zeros(span if numel else 0, dtype=dtype, device=device)
    return flat.as_strided(shape, stride)


class ModuleScope:
    """The qualified names of the modules running (innermost last) and each one's first shapes.

    Module forward hooks keep ``stack`` current while the model runs; ``shapes`` holds (input
    shape, output shape) of each named module's first call. The hooks are global (one
    registration instead of two per submodule, and cheaper per call) and only act on the
    thread that entered the scope; modules outside ``model`` count as their caller.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> with ModuleScope(net) as scope:
        ...     _ = net(torch.randn(2, 4))
        >>> scope.shapes["0"]
        ((2, 4), (2, 3))
    """

    def __init__(
        self,
        model: nn.Module,
        on_first_call: Callable[[str, Any, Any], None] | None = None,
        *,
        modules: Mapping[str, nn.Module] | None = None,  # model.named_modules(), if at hand
    ) -> None:
        self.on_first_call = on_first_call  # (name, args, output) of each module's first call
        named = dict(model.named_modules()) if modules is None else modules
        self.names = {id(m): n for n, m in named.items()}
        self.stack: list[str] = [""]
        self.shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._handles: list[Any] = []
        self._thread = 0
        self._quiet: warnings.catch_warnings | None = None

    def _pre(self, module: nn.Module, _args: Any) -> None:
        if threading.get_ident() == self._thread:
            self.stack.append(self.names.get(id(module), self.stack[-1]))

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() != self._thread:
            return
        if len(self.stack) > 1:
            self.stack.pop()
        name = self.names.get(id(module))
        if name and name not in self.shapes:
            self.shapes[name] = (_shape(args[0] if args else None), _shape(output))
            if self.on_first_call is not None:
                self.on_first_call(name, args, output)

    def __enter__(self) -> ModuleScope:
        self._thread = threading.get_ident()
        # PyTorch warns that global hooks fire once more for a torch.compile'd submodule's
        # wrapper; the wrapper is a module of the tree like any other here, so say nothing.
        self._quiet = warnings.catch_warnings()
        self._quiet.__enter__()
        warnings.filterwarnings("ignore", message=r"Using `torch\.compile\(module\)` when there")
        hooks = nn.modules.module
        self._handles.append(hooks.register_module_forward_pre_hook(self._pre))
        self._handles.append(hooks.register_module_forward_hook(self._post, always_call=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._quiet is not None:
            self._quiet.__exit__(*exc)
            self._quiet = None


class PlainDispatchMode(TorchDispatchMode):
    """A ``TorchDispatchMode`` whose ``__torch_dispatch__`` is called directly.

    PyTorch wraps a subclass's ``__torch_dispatch__`` in a Dynamo-disabling wrapper, in case
    the mode runs under ``torch.compile``; torchslim's modes never do, and the wrapper costs a
    few microseconds per op (about a millisecond per pass of a mobile network).
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # overrides a private hook of TorchDispatchMode
        return False


class MacsCounter(PlainDispatchMode):
    """Counts the MACs of every ATen op with a formula, per innermost running module.

    With ``shapes_only`` those ops (the convolutions and matrix products that make up nearly
    all of a forward pass's time), the activations and eval-mode BatchNorm do not compute:
    their outputs are zeros of the right shapes, after the same checks of their arguments (see
    :func:`shape_only_call`). Everything else runs for real, so the pass still checks that
    every shape fits, at a fraction of the cost, but the model's output values are meaningless.

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


class ShapesOnly(PlainDispatchMode):
    """Convolutions, matrix products, activations and BatchNorm are only shape-checked, as in
    :class:`MacsCounter` with ``shapes_only``, and nothing is counted: a cheap check that a
    model still runs.

    Example:
        >>> with ShapesOnly():
        ...     out = nn.Conv2d(3, 8, 3)(torch.randn(1, 3, 10, 10))
        >>> out.shape, float(out.abs().sum())
        (torch.Size([1, 8, 8, 8]), 0.0)
    """

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = shape_only_call(func, args, kwargs)
        return func(*args, **kwargs) if out is None else out


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Element-wise activation modules whose output has the input's shape and strides, and the
# ATen op each one's forward runs (value_free_call's ops).
ACTIVATION_MODULE_OPS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "hardtanh",
    nn.SiLU: "silu",
    nn.GELU: "gelu",
    nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
}


def _usable(x: Any) -> bool:
    """A dense floating-point tensor: what the module-level shapes-only forwards handle."""
    return isinstance(x, torch.Tensor) and _dense(x) and x.is_floating_point()


def shape_only_forward(module: nn.Module) -> Callable[[Any], torch.Tensor | None] | None:
    """For the exact ``torch.nn`` convolution, eval BatchNorm and activation types: a function
    of the input that runs the checks of :func:`shape_only_call` and returns the output as it
    shapes it (zeros, or the input itself for an in-place activation), or None where the real
    forward must run instead (training BatchNorm, an unbatched input, ...). None for any other
    module, subclasses included, so that a subclass's own forward always runs.

    Example:
        >>> shape = shape_only_forward(nn.Conv2d(3, 8, 3))
        >>> shape(torch.randn(1, 3, 10, 10)).shape
        torch.Size([1, 8, 8, 8])
    """
    kind = type(module)
    if kind in _CONVS and module.padding_mode == "zeros" and not isinstance(module.padding, str):

        def conv(x: Any) -> torch.Tensor | None:
            m, w = module, module.weight
            if not isinstance(x, torch.Tensor) or x.dim() != w.dim():  # e.g. unbatched input
                return None
            zeros = [0] * (w.dim() - 2)
            shape = conv_output_shape(x, w, m.bias, m.stride, m.padding, m.dilation, False, zeros,
                                      m.groups)  # fmt: skip
            if shape is None:
                return None
            with no_dispatch():
                return torch.zeros(shape, dtype=x.dtype, device=x.device)

        return conv
    if kind in BATCH_NORMS:

        def batch_norm(x: Any) -> torch.Tensor | None:
            m = module
            if m.training or m.running_mean is None or not _usable(x):
                return None
            m._check_input_dim(x)
            _check_batch_norm(x, (m.weight, m.bias, m.running_mean, m.running_var))
            with no_dispatch():
                return _zeros(x.shape, x.stride(), x.dtype, x.device)

        return batch_norm
    if kind in ACTIVATION_MODULE_OPS:
        inplace = bool(getattr(module, "inplace", False))

        def activation(x: Any) -> torch.Tensor | None:
            if not _usable(x):
                return None
            if inplace:  # as value_free_call: the input, untouched
                return x
            with no_dispatch():
                return _zeros(x.shape, x.stride(), x.dtype, x.device)

        return activation
    return None


def _module_shape_only(module: nn.Module) -> Callable[[Any], Any] | None:
    """``module``'s forward as :func:`shape_only_forward`, the real one where it gives None."""
    shape = shape_only_forward(module)
    if shape is None:
        return None
    real = type(module).forward

    def forward(x: Any) -> Any:
        out = shape(x)
        return real(module, x) if out is None else out

    return forward


@contextlib.contextmanager
def shape_only_modules(model: nn.Module) -> Iterator[None]:
    """Convolutions, BatchNorm and activations of ``model`` shaped at the module level.

    For use inside :class:`ShapesOnly`: the same checks and output shapes (see
    :func:`conv_output_shape`, :func:`value_free_call`), but the op never reaches the Python
    dispatch mode, whose boxing of each op's arguments costs more than the check itself (a
    shapes-only pass of a pruned MNASNet0.5: 8.6 -> 4.9 ms, BENCHMARKS.md). Only the exact
    ``torch.nn`` types are swapped, and only on this instance for the duration of the block.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8).eval(), nn.ReLU())
        >>> with ShapesOnly(), shape_only_modules(net):
        ...     net(torch.randn(1, 3, 10, 10)).shape
        torch.Size([1, 8, 8, 8])
        >>> "forward" in vars(net[0])
        False
    """
    with swapped_forwards(model.modules(), _module_shape_only):
        yield


@contextlib.contextmanager
def swapped_forwards(
    modules: Iterable[nn.Module], make: Callable[[nn.Module], Callable[..., Any] | None]
) -> Iterator[None]:
    """Each module gets the forward ``make`` returns for it (None: left alone), set on the
    instance for the duration of the block and removed after, whatever happens inside.
    Modules that already have an instance-level forward are left alone."""
    swapped = []
    try:
        for m in modules:
            forward = make(m)
            if forward is not None and "forward" not in vars(m):
                m.forward = forward
                swapped.append(m)
        yield
    finally:
        for m in swapped:
            del m.forward


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
def measuring(model: nn.Module) -> Iterator[None]:
    """Eval mode, no gradients, no fused attention fast path; all restored on exit (each
    submodule's training flag as it was, see :func:`module_mode`)."""
    # The fused attention fast path (eval + no_grad) runs one native op the counter cannot see.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with module_mode(model, training=False), torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@contextlib.contextmanager
def module_mode(model: nn.Module, *, training: bool) -> Iterator[nn.Module]:
    """``model.train(training)`` inside; on exit every submodule gets back its own flag.

    ``model.train(was)`` would set one flag on the whole tree, so a model in training with
    some parts kept in eval (a frozen BatchNorm) would come back with them unfrozen. Nothing
    is called when the model is already entirely in the asked mode.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
        >>> _ = net[1].eval()
        >>> with module_mode(net, training=False):
        ...     net[0].training
        False
        >>> [m.training for m in net]
        [True, False]
    """
    # a frozen TorchScript module has no training flag (it is inference-only)
    flags = [(m, m.training) for m in model.modules() if hasattr(m, "training")]
    if any(was != training for _, was in flags):
        model.train(training)
    try:
        yield model
    finally:
        for m, was in flags:
            if m.training != was:
                m.training = was


@contextlib.contextmanager
def counting(
    model: nn.Module, *, shapes_only: bool = False, scope: ModuleScope | None = None
) -> Iterator[Callable[[], ModelStats]]:
    """Count whatever forward passes of ``model`` run inside; yields a ``ModelStats`` builder.

    Lets another pass over the model (e.g. the pruning tracer, which passes its own ``scope``)
    measure it on the same run. The model is in eval mode without gradients inside; its
    training flag is restored. ``shapes_only`` as in :class:`MacsCounter`.
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
    """Export a float model to ONNX (opset 17) for latency measurement in ONNX Runtime."""
    model = model.eval()
    with torch.no_grad():
        torch.onnx.export(model, inputs, str(path), opset_version=17, dynamo=False)
    return path


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
    batch = inputs[0].shape[0] if inputs and inputs[0].ndim else 1
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
    paths: dict[str, str | Path],
    inputs: Sequence[torch.Tensor],
    *,
    rounds: int = 3,
    repeats: int | Sequence[int] = 20,
    threads: int | None = None,
    min_seconds: float = 0.0,
) -> dict[str, list[float]]:
    """Median ORT latency (ms) of several ONNX files on each input, timed round-robin.

    Each of ``rounds`` rounds times every file on every input in turn (``measure_latency``,
    ``repeats`` runs, one count per input or one for all); the result is the median of the
    rounds' medians, so slow drift of the machine (clock, other load) hits all files alike
    instead of whichever was timed then.

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
    return {k: [statistics.median(times[k, i]) for i in range(len(inputs))] for k in paths}


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
            times = _time_runs(lambda: model(*inputs), warmup, repeats, min_seconds)
    finally:
        torch.set_num_threads(previous)
    return _summarise(times, "torch", threads, batch)


def _ort_latency(path: Path, inputs: tuple, warmup: int, repeats: int, threads: int,
                 batch: int, min_seconds: float) -> LatencyResult:  # fmt: skip
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {
        i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)
    }
    times = _time_runs(lambda: session.run(None, feed), warmup, repeats, min_seconds)
    return _summarise(times, "ort", threads, batch)
