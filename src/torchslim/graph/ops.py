"""How each ATen op ties the channel layouts of its inputs and outputs.

A handler receives the op's arguments with every tensor replaced by its per-dimension layouts
(:class:`T`) and returns the layouts of the outputs. Handlers are registered by the op's
overload-packet name; new ops are a few lines each (see :func:`register_op`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from torchslim.graph.spaces import Layout, SpaceTable, untracked


@dataclass
class T:
    """A traced tensor: its shape and one layout per dimension."""

    shape: tuple[int, ...]
    dims: list[Layout]
    name: str = ""  # parameter/buffer name, if it is one

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass
class OpContext:
    """What a handler may use besides its arguments."""

    spaces: SpaceTable
    module: str  # qualified name of the innermost module running the op
    op: str
    outputs: list[torch.Tensor]  # the op's real output tensors (shapes)
    views: list[tuple[str, list[tuple[int, Layout]]]] = field(default_factory=list)
    groups: dict[str, Layout] = field(default_factory=dict)
    # (module, its attribute, the pieces' layouts, how the value follows their kept sizes):
    # split sizes the code keeps on the module (see shape_ops._split)
    splits: list[tuple[str, str, list[Layout], Any]] = field(default_factory=list)
    module_obj: Any = None  # the module ``module`` names

    def why(self) -> str:
        return f"{self.op} in {self.module or 'the model'}"

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        return tuple(self.outputs[i].shape)


Handler = Callable[..., Any]
HANDLERS: dict[str, Handler] = {}


def register_op(*names: str) -> Callable[[Handler], Handler]:
    """Register a layout handler for ATen ops by overload-packet name (e.g. ``"convolution"``)."""

    def deco(fn: Handler) -> Handler:
        for n in names:
            HANDLERS[n] = fn
        return fn

    return deco


def untracked_like(shape: Sequence[int]) -> list[Layout]:
    return [untracked(s) for s in shape]


def norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def freeze_dim(ctx: OpContext, x: T, d: int, what: str) -> None:
    ctx.spaces.freeze_layout(x.dims[d], f"{what} ({ctx.why()})")


def broadcast(ctx: OpContext, tensors: Sequence[T], shape: tuple[int, ...]) -> list[Layout]:
    """Unify trailing-aligned dims of equal size (broadcast dims of size 1 are not tied)."""
    out: list[Layout | None] = [None] * len(shape)
    for t in tensors:
        offset = len(shape) - t.ndim
        for i, size in enumerate(t.shape):
            j = i + offset
            if j < 0 or size != shape[j] or size == 1:
                continue
            if out[j] is None:
                out[j] = t.dims[i]
            else:
                ctx.spaces.unify(out[j], t.dims[i], ctx.why())
    return [o if o is not None else untracked(s) for o, s in zip(out, shape, strict=True)]


def _words(text: str) -> list[str]:
    return text.split()


def _tensors(args: Sequence[Any]) -> list[T]:
    found: list[T] = []
    for a in args:
        if isinstance(a, T):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(x for x in a if isinstance(x, T))
    return found


ELEMENTWISE = _words(
    "abs add addcdiv addcmul bitwise_not clamp clamp_max clamp_min clone copy cos detach "
    "div elu eq erf exp expm1 fill ge gelu gt hardsigmoid hardswish hardtanh le leaky_relu "
    "lift_fresh lift_fresh_copy log log1p log_sigmoid_forward logical_not lt masked_fill "
    "maximum minimum mish mul ne neg pow reciprocal relu relu6 round rsqrt sigmoid sign "
    "silu sin softplus sqrt square sub tanh where zero _to_copy alias _softmax _log_softmax "
    "softmax log_softmax native_dropout dropout bernoulli threshold prelu _prelu_kernel "
    "lerp floor ceil trunc nan_to_num copy_ fill_ zero_ logit gelu_ relu_ silu_ hardswish_ "
    "hardtanh_ sigmoid_ mul_ add_ sub_ div_ clamp_ masked_fill_ where_ _conj resolve_conj "
    "resolve_neg contiguous empty_like zeros_like ones_like full_like rand_like randn_like "
    "rsub _safe_softmax"
)


@register_op(*ELEMENTWISE)
def _elementwise(ctx: OpContext, *args: Any, **kwargs: Any) -> list[list[Layout]]:
    tensors = _tensors([*args, *kwargs.values()])
    layouts = broadcast(ctx, tensors, ctx.out_shape(0))
    return [layouts for _ in ctx.outputs]


@register_op("convolution", "_convolution")
def _convolution(ctx: OpContext, x: T, w: T, b: T | None, *rest: Any) -> list[list[Layout]]:
    transposed, groups = bool(rest[3]), int(rest[5])
    sp = ctx.spaces
    out = list(untracked_like(ctx.out_shape()))
    if transposed:
        if groups != 1:
            sp.freeze_layout(x.dims[1] + w.dims[0] + w.dims[1], "grouped transposed convolution")
            return [out]
        sp.unify(x.dims[1], w.dims[0], ctx.why())
        out_dim = w.dims[1]
    elif groups == 1:
        sp.unify(x.dims[1], w.dims[1], ctx.why())
        out_dim = w.dims[0]
    else:
        per_in, per_out = x.shape[1] // groups, w.shape[0] // groups
        fx = sp.factorize(x.dims[1], [groups, per_in])
        fw = sp.factorize(w.dims[0], [groups, per_out])
        if fx is None or fw is None:
            sp.freeze_layout(x.dims[1] + w.dims[0], f"grouped convolution ({ctx.why()})")
        else:
            sp.unify(fx[0], fw[0], ctx.why())
            sp.unify(fx[1], w.dims[1], ctx.why())
            ctx.groups[ctx.module] = fx[0]
        out_dim = w.dims[0]
    if b is not None:
        sp.unify(b.dims[0], out_dim, ctx.why())
    out[1] = out_dim
    return [out]


def _matmul_core(ctx: OpContext, a: T, b: T) -> list[Layout]:
    ctx.spaces.unify(a.dims[-1], b.dims[-2], ctx.why())
    batch = broadcast(
        ctx, [T(a.shape[:-2], a.dims[:-2]), T(b.shape[:-2], b.dims[:-2])], ctx.out_shape()[:-2]
    )
    return [*batch, a.dims[-2], b.dims[-1]]


@register_op("mm", "bmm", "matmul")
def _mm(ctx: OpContext, a: T, b: T, *_: Any) -> list[list[Layout]]:
    return [_matmul_core(ctx, a, b)]


@register_op("addmm", "baddbmm", "addbmm")
def _addmm(ctx: OpContext, c: T, a: T, b: T, *_: Any, **__: Any) -> list[list[Layout]]:
    out = _matmul_core(ctx, a, b)
    return [broadcast(ctx, [T(ctx.out_shape(), out), c], ctx.out_shape())]


@register_op(
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)
def _sdpa(ctx: OpContext, q: T, k: T, v: T, *rest: Any, **kw: Any) -> list[list[Layout]]:
    sp = ctx.spaces
    sp.unify(q.dims[-1], k.dims[-1], ctx.why())
    sp.unify(k.dims[-2], v.dims[-2], ctx.why())
    batch_shape = q.shape[:-2]
    batch = broadcast(ctx, [T(t.shape[:-2], t.dims[:-2]) for t in (q, k, v)], tuple(batch_shape))
    first = [*batch, q.dims[-2], v.dims[-1]]
    return [first] + [untracked_like(o.shape) for o in ctx.outputs[1:]]


@register_op(
    "native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"
)
def _batch_norm(ctx: OpContext, x: T, *params: Any) -> list[list[Layout]]:
    for p in params[:4]:
        if isinstance(p, T):
            ctx.spaces.unify(x.dims[1], p.dims[0], ctx.why())
    rest = [[x.dims[1]] if o.ndim == 1 else untracked_like(o.shape) for o in ctx.outputs[1:]]
    return [x.dims, *rest]


@register_op("native_layer_norm")
def _layer_norm(ctx: OpContext, x: T, shape: Sequence[int], w: Any, b: Any, *_: Any) -> list:
    k = len(shape)
    if not isinstance(w, T):  # normalized_shape is a constant of the module: keep those dims
        for d in x.dims[x.ndim - k :]:
            ctx.spaces.freeze_layout(d, f"layer norm without weight ({ctx.why()})")
    for p in (w, b):
        if isinstance(p, T):
            for i in range(k):
                ctx.spaces.unify(x.dims[x.ndim - k + i], p.dims[i], ctx.why())
    return [x.dims] + [untracked_like(o.shape) for o in ctx.outputs[1:]]


@register_op("native_group_norm")
def _group_norm(ctx: OpContext, x: T, w: Any, b: Any, n: int, c: int, hw: int, g: int, *_: Any):
    sp = ctx.spaces
    if not isinstance(w, T):
        sp.freeze_layout(x.dims[1], f"group norm without weight ({ctx.why()})")
    for p in (w, b):
        if isinstance(p, T):
            sp.unify(x.dims[1], p.dims[0], ctx.why())
    parts = sp.factorize(x.dims[1], [g, c // g])
    if parts is None:
        sp.freeze_layout(x.dims[1], f"group norm ({ctx.why()})")
    else:
        ctx.groups[ctx.module] = parts[0]
    return [x.dims] + [untracked_like(o.shape) for o in ctx.outputs[1:]]


def _reduce(ctx: OpContext, x: T, dims: Any, keepdim: bool) -> list[Layout]:
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(x.ndim))
    dims = {norm_dim(d, x.ndim) for d in ([dims] if isinstance(dims, int) else dims)}
    out = []
    for i in range(x.ndim):
        if i not in dims:
            out.append(x.dims[i])
        elif keepdim:
            out.append(untracked(1))
    return out


@register_op("mean", "sum", "amax", "amin", "prod", "logsumexp", "any", "all", "nansum")
def _reduction(ctx: OpContext, x: T, dims: Any = None, keepdim: bool = False, *_: Any, **kw: Any):
    if isinstance(dims, torch.dtype):
        dims = None
    return [_reduce(ctx, x, dims, kw.get("keepdim", keepdim))]


@register_op("var", "std", "var_mean", "std_mean")
def _var(ctx: OpContext, x: T, dims: Any = None, *args: Any, **kw: Any) -> list:
    out = _reduce(ctx, x, dims, bool(kw.get("keepdim", False)))
    return [out for _ in ctx.outputs]


@register_op("linalg_vector_norm", "norm")
def _norm(ctx: OpContext, x: T, ord: Any = 2, dims: Any = None, keepdim: bool = False, *_: Any):
    return [_reduce(ctx, x, dims, keepdim)]


@register_op("max", "min", "argmax", "argmin")
def _max(ctx: OpContext, x: T, dim: Any = None, keepdim: bool = False, *rest: Any) -> list:
    if isinstance(dim, T):  # elementwise max(a, b)
        return [broadcast(ctx, [x, dim], ctx.out_shape())]
    out = _reduce(ctx, x, dim, keepdim)
    return [out for _ in ctx.outputs]


SPATIAL_OPS = _words(
    "max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices "
    "avg_pool1d avg_pool2d avg_pool3d _adaptive_avg_pool2d adaptive_avg_pool2d "
    "_adaptive_avg_pool3d adaptive_max_pool2d adaptive_avg_pool1d upsample_nearest2d "
    "upsample_bilinear2d upsample_bicubic2d _upsample_bilinear2d_aa upsample_nearest1d "
    "upsample_linear1d _upsample_nearest_exact2d"
)


@register_op(*SPATIAL_OPS)
def _spatial(ctx: OpContext, x: T, *_: Any, **__: Any) -> list[list[Layout]]:
    outs = []
    for o in ctx.outputs:
        keep = o.ndim - (x.ndim - 2 if x.ndim >= 3 else 1)
        outs.append([*x.dims[:keep], *untracked_like(o.shape[keep:])])
    return outs


# Ops whose outputs carry no channels of their inputs (shape queries, creation, sampling...).
NO_CHANNELS = set(
    _words(
        "arange zeros ones full empty empty_strided scalar_tensor randn rand randint linspace "
        "_local_scalar_dense sym_size sym_stride is_nonzero item nonzero eye tril triu "
        "new_zeros new_ones new_full new_empty tensor zeros_like_nonzero"
    )
)


def handler_for(func: Any) -> Handler | None:
    """The handler of an ATen op: registered by its name, else derived from its schema - every
    op tagged ``pointwise`` (``leaky_relu_``, ``erfinv``, ``logical_and``...) is elementwise,
    and an in-place variant ``op_`` is handled as ``op``. None: the op's channel behaviour is
    unknown (the tracer then freezes every channel it touches).

    Example:
        >>> aten = torch.ops.aten
        >>> handler_for(aten.leaky_relu_.default) is handler_for(aten.add.Tensor)
        True
        >>> handler_for(aten.topk.default) is None
        True
    """
    name = func._overloadpacket.__name__
    found = HANDLERS.get(name)
    if found is None and torch.Tag.pointwise in getattr(func, "tags", ()):
        found = _elementwise
    if found is None and name.endswith("_") and not name.endswith("__"):
        found = HANDLERS.get(name[:-1])
    return found


@register_op("unfold")
def _unfold(ctx: OpContext, x: T, dim: int, size: int, step: int) -> list[list[Layout]]:
    """``Tensor.unfold``: windows along ``dim`` (its channels, if any, are mixed: frozen), the
    window's elements as a new last dimension."""
    d = norm_dim(dim, max(1, x.ndim))
    out = ctx.out_shape()
    if x.ndim == 0:
        return [untracked_like(out)]
    freeze_dim(ctx, x, d, "unfolded")
    return [[*x.dims[:d], untracked(out[d]), *x.dims[d + 1 :], untracked(out[-1])]]


@register_op("im2col")
def _im2col(ctx: OpContext, x: T, kernel: Sequence[int], *_: Any) -> list[list[Layout]]:
    """``F.unfold``: (N, C, H, W) -> (N, C * kh * kw, L); channel-major, so the output's
    channel dimension is C's layout times the kernel positions."""
    out = ctx.out_shape()
    c = x.ndim - 3
    positions = out[c] // max(1, x.shape[c])
    channels = ctx.spaces.product([ctx.spaces.resolve(x.dims[c]), untracked(positions)])
    return [[*x.dims[:c], channels, untracked(out[-1])]]


def untracked_outputs(ctx: OpContext) -> list[list[Layout]]:
    return [untracked_like(o.shape) for o in ctx.outputs]


def has_channels(ctx: OpContext, tensors: Sequence[T]) -> bool:
    return any(ctx.spaces.atoms(d) for t in tensors for d in t.dims)


@register_op("as_strided", "as_strided_", "resize_", "set_", "_reshape_copy")
def _restride(ctx: OpContext, x: T, *_: Any) -> list[list[Layout]]:
    # Same shape: a change of memory layout only (e.g. adaptive pooling's channels-last fix-up).
    if ctx.out_shape() == x.shape:
        return [x.dims]
    ctx.spaces.freeze_layout([s for d in x.dims for s in d], f"{ctx.op} ({ctx.why()})")
    return untracked_outputs(ctx)
