"""Run a model's forward for its shapes only: the execution engine under the tracer and ``analyze``.

Convolutions, matrix products, activations and eval-mode BatchNorm, nearly all of a forward
pass's time, are checked as their kernels would check their arguments and return zeros of the
right shapes instead of computing (:func:`shape_only_call`, :class:`ShapesOnly`); the exact
``torch.nn`` modules of those kinds can be shaped one level up, at the module, where the op never
reaches the Python dispatch mode (:func:`shape_only_modules`). :class:`ModuleScope` says which
module is running, :func:`measuring` sets up a measured pass (eval, no gradients, no fused
attention) and :class:`PlainDispatchMode` is the cheap base of torchslim's dispatch modes.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._mode_utils import no_dispatch
from torch.utils._python_dispatch import TorchDispatchMode

from torchslim._tensors import lead_tensor, map_tensors, module_mode
from torchslim.graph.macs import flop_formula


def shape_only_call(func: Any, args: tuple, kwargs: dict) -> Any:
    """``func``'s output as zeros of the right shapes, without its arithmetic (None: run it).

    Convolutions are checked and shaped by :func:`conv_output_shape`, the other ops with MACs
    by their meta kernels, which check the arguments as the real ones would (a weight that no
    longer matches its input's channels raises). Activations and BatchNorm in eval mode, whose
    cost on a large input is all arithmetic, are checked and shaped by :func:`value_free_call`.
    Every other op returns None and must run.

    Example:
        >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
        >>> shape_only_call(torch.ops.aten.mm.default, (a, b), {})
        tensor([[0., 0., 0., 0.],
                [0., 0., 0., 0.]])
        >>> shape_only_call(torch.ops.aten.add.Tensor, (a, a), {}) is None  # cheap: runs
        True
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


def _shape(value: Any) -> tuple[int, ...]:
    tensor = lead_tensor(value)
    return () if tensor is None else tuple(tensor.shape)


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


class ShapesOnly(PlainDispatchMode):
    """Convolutions, matrix products, activations and BatchNorm are only shape-checked, as in
    :class:`torchslim.analysis.MacsCounter` with ``shapes_only``, and nothing is counted: a
    cheap check that a model still runs.

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
    Modules that already have an instance-level forward are left alone.

    Example:
        >>> net = nn.Sequential(nn.ReLU(), nn.Identity())
        >>> relu_only = lambda m: (lambda x: x - 1) if isinstance(m, nn.ReLU) else None
        >>> with swapped_forwards(net, relu_only):
        ...     net(torch.zeros(1)).item()
        -1.0
        >>> net(torch.zeros(1)).item()
        0.0
    """
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


@contextlib.contextmanager
def measuring(model: nn.Module) -> Iterator[None]:
    """Eval mode, no gradients, no fused attention fast path; all restored on exit (each
    submodule's training flag as it was, see :func:`torchslim._tensors.module_mode`).

    Example:
        >>> net = nn.Linear(2, 2).train()
        >>> with measuring(net):
        ...     net.training, torch.is_grad_enabled()
        (False, False)
        >>> net.training
        True
    """
    # The fused attention fast path (eval + no_grad) runs one native op the counter cannot see.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with module_mode(model, training=False), torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
