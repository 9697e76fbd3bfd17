"""Trace a model once at the ATen level and find the channel groups that must be pruned together.

The tracer runs one forward pass under a ``TorchDispatchMode``: every ATen op the model
executes is seen with its actual tensors, whatever Python control flow produced it, so models
``torch.fx`` cannot trace (Swin, MaxViT, data-dependent shapes) work the same way. The
convolutions, matrix products, activations and eval-mode BatchNorm skip their arithmetic (their
outputs are zeros of the shapes a formula or meta kernel gives, after the same argument checks;
see :func:`torchslim.graph.execution.shape_only_call`): channels need shapes, not values, and those
ops are nearly all of a forward pass's time. Eval BatchNorm and activation modules go one step
further and record their op without it entering the dispatch mode (see ``_shortcut_forward``).

A forward that reads tensor values (``.item()``, ``bool(tensor)``, ``nonzero``... see
``VALUE_READS``) would read those zeros and could take a branch the real input does not: such a
model is traced again with every op computed for real (see :func:`trace`).
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from torchslim._tensors import aten_tensors, call_model, input_tuple, lead_tensor, map_tensors
from torchslim.errors import TorchslimError, UnsupportedOpError
from torchslim.graph import shape_ops  # noqa: F401  (registers the reshape-family handlers)
from torchslim.graph.execution import (
    ACTIVATION_MODULE_OPS,
    BATCH_NORMS,
    ModuleScope,
    PlainDispatchMode,
    measuring,
    shape_only_call,
    shape_only_forward,
    swapped_forwards,
)
from torchslim.graph.macs import flop_formula, op_macs
from torchslim.graph.ops import (
    HANDLERS,
    NO_CHANNELS,
    OpContext,
    T,
    handler_for,
    has_channels,
    untracked_outputs,
)
from torchslim.graph.size_ties import SizeTies
from torchslim.graph.spaces import Layout, SpaceTable, untracked
from torchslim.inputs import input_error, one_line

if TYPE_CHECKING:
    from torchslim.analysis import ModelStats

Inputs = torch.Tensor | Sequence[Any]
log = logging.getLogger("torchslim.graph")

_A = torch.ops.aten
# ATen ops that turn tensor values into Python values (``.item()``, ``bool(t)``, ``int(t)``) or
# into shapes: what a forward's control flow can depend on. ``Tensor.tolist`` reads values
# without any op the dispatch mode sees, so it goes unnoticed.
VALUE_READS = frozenset(
    (_A._local_scalar_dense, _A.is_nonzero, _A.equal, _A.nonzero, _A.masked_select, _A._unique2,
     _A.unique_dim, _A.unique_consecutive, _A.bincount)
)  # fmt: skip

# Modules whose forward derives a reshape size from the *input* width, so the projection's inner
# width must equal the input width: (qkv weight attribute path, input-width weight dim source).
ModuleRule = Callable[[nn.Module, str, "ChannelGraph"], None]
MODULE_RULES: dict[str, ModuleRule] = {}


def register_module_rule(type_name: str) -> Callable[[ModuleRule], ModuleRule]:
    """Add constraints for a module type whose forward hides a coupling (see MHA below)."""

    def deco(fn: ModuleRule) -> ModuleRule:
        MODULE_RULES[type_name] = fn
        return fn

    return deco


def _tie_packed_qkv(graph: ChannelGraph, weight: str) -> None:
    # The forward reshapes the packed projection with (3, heads, width // heads) where width is
    # the *input* width: the projection's inner width is the input width.
    dims = graph.param_dims.get(weight)
    if dims is None:
        return
    sp = graph.spaces
    packed = sp.product([untracked(3), sp.resolve(dims[1])])
    sp.unify(dims[0], packed, f"packed q/k/v projection {weight}")


@register_module_rule("MultiheadAttention")
def _mha_rule(module: nn.Module, name: str, graph: ChannelGraph) -> None:
    if getattr(module, "_qkv_same_embed_dim", False):
        _tie_packed_qkv(graph, f"{name}.in_proj_weight" if name else "in_proj_weight")


@register_module_rule("ShiftedWindowAttention")
@register_module_rule("ShiftedWindowAttentionV2")
def _swin_rule(module: nn.Module, name: str, graph: ChannelGraph) -> None:
    _tie_packed_qkv(graph, f"{name}.qkv.weight" if name else "qkv.weight")


def _tie_bias(module: nn.Module, name: str, graph: ChannelGraph) -> None:
    # A bias runs along its layer's output channels even where the forward touches it first.
    if isinstance(module, nn.Linear) or (
        isinstance(module, nn.modules.conv._ConvNd) and not module.transposed
    ):
        prefix = f"{name}." if name else ""
        weight, bias = (graph.param_dims.get(prefix + p) for p in ("weight", "bias"))
        if weight is not None and bias is not None:
            graph.spaces.unify(weight[0], bias[0], f"bias of {name}")


@dataclass
class ChannelGraph:
    """The traced model: a layout for every parameter/buffer dim, and the channel spaces."""

    model: nn.Module
    spaces: SpaceTable = field(default_factory=SpaceTable)
    param_dims: dict[str, list[Layout]] = field(default_factory=dict)
    views: list[tuple[str, list[tuple[int, Layout]]]] = field(default_factory=list)
    groups: dict[str, Layout] = field(default_factory=dict)
    splits: list[tuple[str, str, list[Layout], Any]] = field(default_factory=list)
    active: set[int] = field(default_factory=set)  # spaces some activation runs along
    stats: ModelStats | None = None  # the model measured on the traced pass (count=True)
    output: Any = None  # the traced pass's output
    # Ops with MACs (convolutions, matrix products...): (module, op, args, kwargs, outputs)
    # with every tensor as its traced layouts, so MACs can be predicted for any pruning.
    mac_ops: list[tuple[str, Any, Any, Any, Any]] = field(default_factory=list)
    module_io: dict[str, tuple[T | None, T | None]] = field(default_factory=dict)
    ops: int = 0  # ATen ops in the traced pass
    modules: dict[str, nn.Module] = field(default_factory=dict)  # model.named_modules()
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # the traced params/buffers
    # Where the forward read tensor values ("aten.<op> in module 'name' (Type)"); not empty:
    # the trace ran on the example input's real values and holds for the branches it took.
    data_dependent: list[str] = field(default_factory=list)
    # Ops whose channel behaviour is unknown ("aten.topk in module 'rpn' (Type)"): every
    # channel they touched is frozen (see trace's ``strict``).
    unknown_ops: list[str] = field(default_factory=list)

    def module(self, name: str) -> nn.Module:
        """The submodule called ``name`` (``""``: the model), from the traced module walk."""
        found = self.modules.get(name)
        return self.model.get_submodule(name) if found is None else found

    def atoms(self) -> list[int]:
        """Atomic spaces that some parameter and some activation run along (pruning groups)."""
        # One space at a time: a single layout of them all could pass MAX_SEGMENTS and be
        # given up on (frozen) as a whole.
        live = {a for f in self.active for a in self.spaces.atoms([(f,)])}
        seen: dict[int, None] = {}
        for dims in self.param_dims.values():
            for layout in dims:
                for a in self.spaces.atoms(layout):
                    if a in live:
                        seen.setdefault(a, None)
        return list(seen)

    def prunable(self, *, allow_inner: bool = False) -> list[int]:
        """Atoms that are not frozen and (by default) not sub-channel factors like head_dim."""
        out = []
        for a in self.atoms():
            space = self.spaces.spaces[a]
            if space.frozen or space.size <= 1 or (space.inner and not allow_inner):
                continue
            out.append(a)
        return out

    def members(self, atom: int) -> list[tuple[str, int]]:
        """(parameter name, dim) pairs that run along ``atom``."""
        return [
            (name, d)
            for name, dims in self.param_dims.items()
            for d, layout in enumerate(dims)
            if atom in self.spaces.atoms(layout)
        ]

    def macs_after(self, keep: Mapping[int, Sized] | None = None) -> dict[str, int]:
        """MACs per module (its own ops) once ``keep`` (atom -> kept channels) is applied,
        predicted from the traced layouts without running the model; ``None``: as traced.

        Example:
            >>> g = trace(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), torch.randn(1, 4))
            >>> g.macs_after(), g.macs_after({g.prunable()[0]: [0, 1]})
            ({'0': 32, '1': 16}, {'0': 8, '1': 4})
        """
        shape = self._shape_after(keep)
        own: dict[str, int] = {}
        for module, packet, args, kwargs, outs in self.mac_ops:
            macs = op_macs(packet, args, kwargs, outs, shape, T)
            own[module] = own.get(module, 0) + macs
        return own

    def mac_op_shapes(self, keep: Mapping[int, Sized] | None = None) -> Iterator[tuple[Any, Any]]:
        """Each op with MACs as ``(op, arguments)``, every tensor argument given as its shape
        once ``keep`` is applied (``None``: as traced); for per-op latency look-ups.

        Example:
            >>> g = trace(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), torch.randn(1, 4))
            >>> [args[1:] for _, args in g.mac_op_shapes({g.prunable()[0]: [0, 1]})]
            [((1, 4), (4, 2)), ((1, 2), (2, 2))]
        """
        shape = self._shape_after(keep)
        for _module, packet, args, _kwargs, _outs in self.mac_ops:
            yield packet, map_tensors(lambda t: tuple(shape(t)), args, T)

    def _shape_after(self, keep: Mapping[int, Sized] | None) -> Callable[[T], tuple[int, ...]]:
        """A traced tensor's shape once ``keep`` is applied (sizes memoised per layout)."""
        kept = {a: len(idx) for a, idx in (keep or {}).items()}
        memo: dict[int, int] = {}

        def size(layout: Layout) -> int:
            found = memo.get(id(layout))
            if found is None:
                found = memo[id(layout)] = self.spaces.kept_size(layout, kept)
            return found

        return lambda t: tuple(map(size, t.dims)) if kept else t.shape

    def stats_after(self, keep: Mapping[int, Sized] | None = None) -> ModelStats:
        """``ModelStats`` of the model once ``keep`` is applied (MACs and shapes predicted from
        the trace; parameters read from the model as it is now, i.e. call it after pruning)."""
        after = self._shape_after(keep)

        def shape(t: T | None) -> tuple[int, ...]:
            return () if t is None else after(t)

        # analysis sits above graph (it runs on graph.execution): imported here, not at the top
        from torchslim.analysis import model_stats

        seen = {name: (shape(i), shape(o)) for name, (i, o) in self.module_io.items()}
        return model_stats(self.model, self.macs_after(keep), seen)

    def freeze_params(self, names: Sequence[str], why: str) -> None:
        for n in names:
            for layout in self.param_dims.get(n, []):
                self.spaces.freeze_layout(layout, why)


class _ValuesNeeded(Exception):
    """Stops a shapes-only trace where the forward reads tensor values (see ``VALUE_READS``)."""


class _Recorder(PlainDispatchMode):
    def __init__(
        self,
        graph: ChannelGraph,
        ignored: Callable[[str], bool],
        scope: ModuleScope,
        *,
        real: bool = False,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.ignored = ignored
        self.strict = strict  # an op of unknown channel behaviour raises (else: freezes)
        self.real = real  # every op computed (not shapes-only): values can be read
        self.values_needed = ""  # set where a shapes-only pass met a value read
        # id(tensor) -> (weak reference, layouts). The reference tells a live tensor from a
        # new one that reuses a freed one's id; holding the tensors instead would keep every
        # activation of the pass alive (memory, and fresh pages for each new output).
        self.layouts: dict[int, tuple[weakref.ref, T]] = {}
        self.stack = scope.stack  # qualified names of the running modules, innermost last

    def lookup(self, t: torch.Tensor) -> T:
        found = self.layouts.get(id(t))
        if found is not None and found[0]() is t and found[1].shape == tuple(t.shape):
            return found[1]
        return T(tuple(t.shape), [untracked(s) for s in t.shape])

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # The tracer's own tensor calls skip the Python-level modes (SizeTies): they are not
        # the model's, and going through them would cost more than the op.
        with torch._C.DisableTorchFunction():
            return self._dispatch(func, args, kwargs or {})

    def _dispatch(self, func: Any, args: Any, kwargs: Any) -> Any:
        self.graph.ops += 1
        packet = func._overloadpacket
        has_macs = flop_formula(packet) is not None
        name = packet.__name__
        if packet in VALUE_READS:
            out = self.read_values(name, func, args, kwargs)
        else:
            out = None if self.real else shape_only_call(func, args, kwargs)
            if out is None:
                out = func(*args, **kwargs)
        outs = aten_tensors(out)
        if not outs:
            return out
        ctx = OpContext(self.graph.spaces, self.stack[-1], name, outs, self.graph.views,
                        self.graph.groups, self.graph.splits,
                        self.graph.modules.get(self.stack[-1]))  # fmt: skip
        t_args = map_tensors(self.lookup, args)
        t_kwargs = map_tensors(self.lookup, kwargs)
        handler, result = handler_for(func), None
        if handler is not None:
            try:
                result = handler(ctx, *t_args, **t_kwargs)
            except TorchslimError:
                raise
            except Exception as exc:  # a handler that does not cover this call's arguments
                if self.strict:
                    raise
                log.debug("the handler of aten.%s failed (%s): its channels are kept", name, exc)
        if result is None:  # no handler, or it failed: the op's channel behaviour is unknown
            tensors = [a for a in _leaves((t_args, t_kwargs)) if isinstance(a, T)]
            if name in NO_CHANNELS or not has_channels(ctx, tensors):
                result = untracked_outputs(ctx)
            elif self.ignored(ctx.module):
                for t in tensors:
                    self.graph.spaces.freeze_layout(
                        [s for d in t.dims for s in d], f"{name} in ignored {ctx.module}"
                    )
                result = untracked_outputs(ctx)
            else:
                result = self.unknown_op(ctx, name, tensors)
        self.record(outs, result)
        if has_macs:
            t_out = map_tensors(self.lookup, out)
            self.graph.mac_ops.append((ctx.module, packet, t_args, t_kwargs, t_out))
        return out

    def unknown_op(self, ctx: OpContext, name: str, tensors: Sequence[T]) -> list[list[Layout]]:
        """An op whose channel behaviour is unknown (topk, sort, index ops, NMS, custom
        kernels): every channel of its inputs is frozen, as a model output's are, and its
        outputs carry none; ``strict`` raises instead."""
        what = f"aten.{name} in {_describe(self.graph, ctx.module)}"
        if self.strict:
            exclude = (
                f"exclude that module with ignore=[{ctx.module!r}]"
                if ctx.module
                else "ignore=[...] the layers whose outputs reach it"
            )
            raise UnsupportedOpError(
                f"cannot tell how {what} moves channels; {exclude}, register a handler with "
                "torchslim.graph.register_op, or leave strict off to keep the channels it "
                "touches whole"
            )
        for t in tensors:
            self.graph.spaces.freeze_layout([s for d in t.dims for s in d], f"unknown op {what}")
        if what not in self.graph.unknown_ops:
            self.graph.unknown_ops.append(what)
        return untracked_outputs(ctx)

    def read_values(self, name: str, func: Any, args: Any, kwargs: Any) -> Any:
        """Run a value-reading op: stop a shapes-only pass (its values are placeholders), note
        where it happened in a real one."""
        where = f"aten.{name} in {_describe(self.graph, self.stack[-1])}"
        if not self.real:
            self.values_needed = where
            raise _ValuesNeeded(where)
        try:
            out = func(*args, **kwargs)
        except (RuntimeError, NotImplementedError) as exc:
            raise UnsupportedOpError(
                f"{where}: the forward reads tensor values, so it must be traced with real "
                f"values, and these inputs or weights have none ({type(exc).__name__}: "
                f"{one_line(exc)}); trace with real example inputs and weights (not on the "
                "meta device)"
            ) from exc
        if where not in self.graph.data_dependent:
            self.graph.data_dependent.append(where)
        return out

    def record(self, outs: Sequence[torch.Tensor], result: Sequence[list[Layout]]) -> None:
        """Remember each output tensor's layouts (as a handler returned them)."""
        for tensor, dims in zip(outs, result, strict=False):
            self.layouts[id(tensor)] = (weakref.ref(tensor), T(tuple(tensor.shape), dims))
            self.graph.active.update(f for layout in dims for seg in layout for f in seg if f >= 0)

    def shortcut(self, name: str, out: torch.Tensor, args: Sequence[torch.Tensor | None]) -> None:
        """What ``__torch_dispatch__`` does for the op ``name`` that made ``out`` from ``args``,
        for a module that computed ``out`` itself (see :func:`_module_shortcuts`)."""
        self.graph.ops += 1
        ctx = OpContext(
            self.graph.spaces, self.stack[-1], name, [out], self.graph.views, self.graph.groups
        )
        t_args = [None if a is None else self.lookup(a) for a in args]
        self.record([out], HANDLERS[name](ctx, *t_args))

    def module_called(self, name: str, args: Any, output: Any) -> None:
        """Record the layouts of a module's first input and output (for predicted shapes)."""
        first_in, first_out = lead_tensor(args[0] if args else None), lead_tensor(output)
        self.graph.module_io[name] = (
            None if first_in is None else self.lookup(first_in),
            None if first_out is None else self.lookup(first_out),
        )


def _shortcut_forward(recorder: _Recorder, module: nn.Module) -> Callable[[Any], Any] | None:
    """For eval BatchNorm and activations (exact ``torch.nn`` types): a forward that checks
    and shapes the output as the shapes-only op would (:func:`shape_only_forward`) and records
    it as the op's handler would, without the op going through the dispatch mode (its argument
    boxing is most of the cost of such an op in the trace). Anything unusual falls back to the
    real forward."""
    kind = type(module)
    op = "native_batch_norm" if kind in BATCH_NORMS else ACTIVATION_MODULE_OPS.get(kind)
    shape = shape_only_forward(module) if op in HANDLERS else None
    if shape is None:
        return None
    real = kind.forward

    def forward(x: Any) -> Any:
        out = shape(x)
        if out is None:
            return real(module, x)
        if out is x:  # an in-place activation returns its input, whose layouts stay as they are
            recorder.graph.ops += 1
            return x
        m = module
        args = (x, m.weight, m.bias, m.running_mean, m.running_var) if kind in BATCH_NORMS else (x,)
        recorder.shortcut(op, out, args)
        return out

    return forward


def _module_shortcuts(recorder: _Recorder, modules: Iterable[nn.Module]) -> Any:
    """The shortcut forwards swapped in on these module instances (a context manager)."""
    return swapped_forwards(modules, lambda m: _shortcut_forward(recorder, m))


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def _named_tensors(modules: Mapping[str, nn.Module]) -> Iterator[tuple[str, torch.Tensor]]:
    """(qualified name, tensor) of every parameter, then every buffer, as ``named_parameters``
    and ``named_buffers`` give them, from an already walked module tree."""
    for kind in ("_parameters", "_buffers"):
        for module_name, module in modules.items():
            for name, tensor in getattr(module, kind).items():
                if tensor is not None:
                    yield (f"{module_name}.{name}" if module_name else name), tensor


def trace(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    ignore: Callable[[str], bool] | None = None,
    count: bool = False,
    strict: bool = False,
) -> ChannelGraph:
    """Run ``model`` once and return its :class:`ChannelGraph`.

    Channels that reach a model output are frozen (never pruned). So are the channels an op of
    unknown channel behaviour touches (an op with no handler that is neither tagged pointwise
    nor an in-place variant of a handled op: topk, sort, index ops, NMS, custom kernels);
    ``graph.unknown_ops`` lists them, and ``strict=True`` raises
    :class:`~torchslim.errors.UnsupportedOpError` instead. ``count=True`` also measures the
    model (``graph.stats``, as :func:`torchslim.analyze`) on the same forward pass.

    The pass is shapes-only (see the module docstring). A forward that reads tensor values
    (``if x.sum() > 0``, ``.item()``; ``VALUE_READS``) would read placeholders there, so it is
    traced again on the example input's real values and ``graph.data_dependent`` says where:
    the graph then describes the branches that input takes. A warning says so and names the
    modules with parameters it never reached: their channels are not tied to anything, so the
    pruning leaves them whole, but the layers feeding them may be pruned and they may no
    longer fit if another input takes their branch. Prune with an example input that takes
    the branch that matters (or exclude the layers that feed the other branch with
    ``ignore``). A model that does not run on ``example_inputs`` raises
    :class:`~torchslim.errors.InputError`, naming the inputs and the module that failed.

    Example:
        >>> g = trace(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(1, 4))
        >>> len(g.prunable())  # the 8 hidden channels
        1
    """
    ignored = ignore or (lambda _name: False)
    inputs = input_tuple(example_inputs)
    graph = _trace_pass(model, tuple(inputs), ignored, count=count, real=False, strict=strict)
    if isinstance(graph, str):  # where the shapes-only pass needed values
        where = graph
        graph = _trace_pass(model, tuple(inputs), ignored, count=count, real=True, strict=strict)
        assert isinstance(graph, ChannelGraph)  # a real pass never stops for values
        if not graph.data_dependent:  # read on the placeholders' branch only (e.g. a detector
            graph.data_dependent.append(where)  # whose example input leaves no box to sort)
        warnings.warn(_branch_warning(graph), UserWarning, stacklevel=2)
    return graph


def _trace_pass(
    model: nn.Module,
    inputs: tuple,
    ignored: Callable[[str], bool],
    *,
    count: bool,
    real: bool,
    strict: bool,
) -> ChannelGraph | str:
    """One traced forward (shapes-only, or ``real``); where a shapes-only one met a value read
    (it must be done again for real), that place ("aten.nonzero in module ...")."""
    graph = ChannelGraph(model, modules=dict(model.named_modules()))
    sp = graph.spaces
    scope = ModuleScope(model, modules=graph.modules)
    recorder = _Recorder(graph, ignored, scope, real=real, strict=strict)
    scope.on_first_call = recorder.module_called
    seen: dict[int, str] = {}
    # A convolution's kernel dims are never channels, even where the forward reshapes its
    # weight (weight-standardised convs flatten (in, kh, kw) and normalise it).
    kernels = {f"{n}.weight" if n else "weight" for n, m in graph.modules.items()
               if isinstance(m, nn.modules.conv._ConvNd)}  # fmt: skip
    for name, tensor in _named_tensors(graph.modules):
        if id(tensor) in seen or not tensor.is_floating_point():
            continue
        seen[id(tensor)] = name
        dims = [untracked(s) if d >= 2 and name in kernels else sp.fresh_layout(s, f"{name}[{d}]")
                for d, s in enumerate(tensor.shape)]  # fmt: skip
        graph.param_dims[name] = dims
        graph.tensors[name] = tensor
        recorder.layouts[id(tensor)] = (weakref.ref(tensor), T(tuple(tensor.shape), dims, name))
    # Module rules first: ops traced later (e.g. slicing a packed q/k/v bias) see their structure.
    for name, module in graph.modules.items():
        _tie_bias(module, name, graph)
        rule = MODULE_RULES.get(type(module).__name__)
        if rule is not None:
            rule(module, name, graph)
    # Eval mode, no gradients, no fused attention kernel (it would hide the projections), and
    # the arithmetic-heavy ops only shape-checked: the tracer needs shapes, not values (see
    # shape_only_call), and that makes the pass several times cheaper.
    shortcuts = graph.modules.values() if not real else ()
    ties = SizeTies(lambda t: recorder.lookup(t).dims, sp,
                    lambda: _describe(graph, recorder.stack[-1]))  # fmt: skip
    try:
        with scope, measuring(model), recorder, ties, _module_shortcuts(recorder, shortcuts):
            output = call_model(model, inputs)
    except TorchslimError:
        raise
    except Exception as exc:
        if recorder.values_needed:  # also where the model caught _ValuesNeeded and went on
            return recorder.values_needed
        raise input_error(
            model, inputs, "the example input" + ("s" if len(inputs) > 1 else ""), exc,
            hint="Pass example inputs of the shape, dtype and number the model's forward expects",
        ) from exc  # fmt: skip
    if recorder.values_needed:
        return recorder.values_needed
    graph.stats = graph.stats_after() if count else None
    graph.output = output
    for out in tree_flatten(output)[0]:
        if isinstance(out, torch.Tensor):
            for layout in recorder.lookup(out).dims:
                sp.freeze_layout(layout, "reaches a model output")
    for name, module in graph.modules.items():
        if ignored(name):
            graph.freeze_params(
                [f"{name}.{p}" if name else p for p, _ in module.named_parameters()],
                f"module {name} is ignored",
            )
    return graph


def _describe(graph: ChannelGraph, name: str) -> str:
    kind = type(graph.module(name)).__name__
    return f"module {name!r} ({kind})" if name else f"the model's own forward ({kind})"


def _branch_warning(graph: ChannelGraph) -> str:
    reached = set(graph.module_io)
    # a container (ModuleList, ModuleDict) is never called itself: it counts as reached when
    # one of its submodules is
    reached |= {
        ".".join(n.split(".")[:i]) for n in list(reached) for i in range(1, n.count(".") + 1)
    }
    unreached: list[str] = []
    for name, module in graph.modules.items():
        if not name or name in reached or any(name.startswith(u + ".") for u in unreached):
            continue
        if next(module.parameters(), None) is not None:
            unreached.append(name)
    text = (
        f"{graph.data_dependent[0]} reads tensor values, so the forward's control flow may "
        "depend on its input: the model was traced on the example input's real values, and "
        "its pruning holds for the branch the example input takes."
    )
    if unreached:
        shown = ", ".join(repr(n) for n in unreached[:5])
        more = f" and {len(unreached) - 5} more" if len(unreached) > 5 else ""
        text += (
            f" Modules it never reached ({shown}{more}) are left whole but may no longer fit "
            "if another input takes their branch: prune with an example input that reaches "
            "them, or ignore=[...] the layers that feed them."
        )
    return text
