"""How each ATen op ties the channel layouts of its inputs and outputs.

A handler receives the op's arguments with every tensor replaced by its per-dimension layouts
(:class:`T`) and returns the layouts of the outputs. Handlers are registered by the op's
overload-packet name; new ops are a few lines each (see :func:`register_op`).
"""

from __future__ import annotations

import math
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


def _untracked_like(shape: Sequence[int]) -> list[Layout]:
    return [untracked(s) for s in shape]


def _norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


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
    "resolve_neg contiguous empty_like zeros_like ones_like full_like rand_like randn_like"
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
    out = list(_untracked_like(ctx.out_shape()))
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
    return [first] + [_untracked_like(o.shape) for o in ctx.outputs[1:]]


@register_op(
    "native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"
)
def _batch_norm(ctx: OpContext, x: T, *params: Any) -> list[list[Layout]]:
    for p in params[:4]:
        if isinstance(p, T):
            ctx.spaces.unify(x.dims[1], p.dims[0], ctx.why())
    rest = [[x.dims[1]] if o.ndim == 1 else _untracked_like(o.shape) for o in ctx.outputs[1:]]
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
    return [x.dims] + [_untracked_like(o.shape) for o in ctx.outputs[1:]]


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
    return [x.dims] + [_untracked_like(o.shape) for o in ctx.outputs[1:]]


def _reduce(ctx: OpContext, x: T, dims: Any, keepdim: bool) -> list[Layout]:
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(x.ndim))
    dims = {_norm_dim(d, x.ndim) for d in ([dims] if isinstance(dims, int) else dims)}
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
        outs.append([*x.dims[:keep], *_untracked_like(o.shape[keep:])])
    return outs


def _view_blocks(a: Sequence[int], b: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Group the non-1 dims of two shapes into blocks of equal element count."""
    ia = [i for i, s in enumerate(a) if s != 1]
    ib = [i for i, s in enumerate(b) if s != 1]
    blocks, i, j = [], 0, 0
    while i < len(ia) or j < len(ib):
        if i >= len(ia) or j >= len(ib):
            return None
        ba, bb = [ia[i]], [ib[j]]
        pa, pb = a[ia[i]], b[ib[j]]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(ia):
                ba.append(ia[i])
                pa *= a[ia[i]]
                i += 1
            elif pb < pa and j < len(ib):
                bb.append(ib[j])
                pb *= b[ib[j]]
                j += 1
            else:
                return None
        blocks.append((ba, bb))
    return blocks


@register_op(
    "view", "_unsafe_view", "reshape", "view_copy", "_reshape_alias", "unflatten", "flatten"
)
def _view(ctx: OpContext, x: T, *_: Any, **__: Any) -> list[list[Layout]]:
    sp = ctx.spaces
    shape = ctx.out_shape()
    out = _untracked_like(shape)
    blocks = _view_blocks(x.shape, shape)
    if blocks is None:
        sp.freeze_layout([s for d in x.dims for s in d], f"unsupported reshape ({ctx.why()})")
        return [out]
    for in_dims, out_dims in blocks:
        merged = sp.product([sp.resolve(x.dims[i]) for i in in_dims])
        parts = sp.factorize(merged, [shape[j] for j in out_dims])
        if parts is None:
            sp.freeze_layout(merged, f"reshape that cuts channels apart ({ctx.why()})")
            continue
        for j, layout in zip(out_dims, parts, strict=True):
            out[j] = layout
        if sp.atoms(merged):
            ctx.views.append((ctx.module, [(shape[j], out[j]) for j in out_dims]))
    return [out]


@register_op("permute")
def _permute(ctx: OpContext, x: T, dims: Sequence[int]) -> list[list[Layout]]:
    return [[x.dims[_norm_dim(d, x.ndim)] for d in dims]]


@register_op("transpose", "swapaxes")
def _transpose(ctx: OpContext, x: T, a: int, b: int) -> list[list[Layout]]:
    dims = list(x.dims)
    a, b = _norm_dim(a, x.ndim), _norm_dim(b, x.ndim)
    dims[a], dims[b] = dims[b], dims[a]
    return [dims]


@register_op("t", "numpy_T")
def _t(ctx: OpContext, x: T) -> list[list[Layout]]:
    return [list(reversed(x.dims))]


@register_op("unsqueeze", "unsqueeze_")
def _unsqueeze(ctx: OpContext, x: T, d: int) -> list[list[Layout]]:
    dims = list(x.dims)
    dims.insert(_norm_dim(d, x.ndim + 1), untracked(1))
    return [dims]


@register_op("squeeze", "squeeze_")
def _squeeze(ctx: OpContext, x: T, *_: Any) -> list[list[Layout]]:
    shape = ctx.out_shape()
    kept = [lay for lay, s in zip(x.dims, x.shape, strict=True) if s != 1]
    if len(kept) == len(shape):
        return [kept]
    # Only some size-1 dims were squeezed: rebuild by walking both shapes.
    out, i = [], 0
    for s in shape:
        while x.shape[i] != s:
            i += 1
        out.append(x.dims[i])
        i += 1
    return [out]


@register_op("expand", "expand_as", "expand_copy", "broadcast_to")
def _expand(ctx: OpContext, x: T, *_: Any) -> list[list[Layout]]:
    shape = ctx.out_shape()
    offset = len(shape) - x.ndim
    out = _untracked_like(shape)
    for i, s in enumerate(x.shape):
        if s == shape[i + offset]:
            out[i + offset] = x.dims[i]
    return [out]


@register_op("repeat")
def _repeat(ctx: OpContext, x: T, repeats: Sequence[int]) -> list[list[Layout]]:
    shape = ctx.out_shape()
    offset = len(shape) - x.ndim
    out = _untracked_like(shape)
    for i in range(x.ndim):
        r = repeats[i + offset]
        out[i + offset] = x.dims[i] * r if r <= 64 else untracked(shape[i + offset])
        if r > 64:
            ctx.spaces.freeze_layout(x.dims[i], f"large repeat ({ctx.why()})")
    return [out]


def _freeze_dim(ctx: OpContext, x: T, d: int, what: str) -> None:
    ctx.spaces.freeze_layout(x.dims[d], f"{what} ({ctx.why()})")


@register_op("select", "select_copy")
def _select(ctx: OpContext, x: T, d: int, index: int) -> list[list[Layout]]:
    d = _norm_dim(d, x.ndim)
    _freeze_dim(ctx, x, d, "indexing a channel by position")
    return [x.dims[:d] + x.dims[d + 1 :]]


@register_op("unbind")
def _unbind(ctx: OpContext, x: T, d: int = 0) -> list[list[Layout]]:
    d = _norm_dim(d, x.ndim)
    _freeze_dim(ctx, x, d, "unbinding channels")
    return [x.dims[:d] + x.dims[d + 1 :] for _ in ctx.outputs]


@register_op("slice", "slice_copy", "narrow")
def _slice(ctx: OpContext, x: T, d: int = 0, start: Any = None, end: Any = None, step: int = 1):
    d = _norm_dim(d, x.ndim)
    shape = ctx.out_shape()
    dims = list(x.dims)
    if shape[d] == x.shape[d]:
        return [dims]
    size = x.shape[d]
    start = 0 if start is None else (start + size if start < 0 else min(start, size))
    if ctx.op == "narrow":
        end = start + end
    end = size if end is None else (end + size if end < 0 else min(end, size))
    piece = _proportional_piece(ctx.spaces, x.dims[d], start, end) if step == 1 else None
    if piece is None:
        # Bounds that may be constants of the code: the sliced dim keeps its size.
        _freeze_dim(ctx, x, d, "slicing channels with constant bounds")
        piece = untracked(shape[d])
    dims[d] = piece
    return [dims]


def _proportional_piece(sp: SpaceTable, layout: Layout, start: int, end: int) -> Layout | None:
    """The piece between two cuts that fall inside an untracked outer factor (e.g. the q/k/v
    axis of a packed projection): such bounds scale with the pruned width, so the inner
    channels stay prunable. ``None`` for any other cut."""
    resolved = sp.resolve(layout)
    total = sp.layout_size(resolved)
    for at in (start, end):
        if at in (0, total):
            continue
        pos, inside = 0, False
        for seg in resolved:
            seg_size = sp.seg_size(seg)
            if pos < at < pos + seg_size:
                outer_tracked = seg[0] >= 0 and not sp.is_frozen(seg[0])
                if outer_tracked or (at - pos) % sp.seg_size(seg[1:]):
                    return None
                inside = True
            pos += seg_size
        if not inside:  # exactly between concatenated pieces: could be a constant bound
            return None
    head = sp.cut(layout, start)
    tail = sp.cut(head[1], end - start) if head is not None else None
    return tail[0] if tail is not None else None


@register_op("split", "split_with_sizes", "split_copy", "chunk", "tensor_split")
def _split(ctx: OpContext, x: T, _sizes: Any, d: int = 0) -> list[list[Layout]]:
    d = _norm_dim(d, x.ndim)
    sp = ctx.spaces
    rest, outs = x.dims[d], []
    for o in ctx.outputs:
        n = o.shape[d]
        parts = sp.cut(rest, n)
        if parts is None:
            _freeze_dim(ctx, x, d, "split inside a channel")
            return [[*x.dims[:d], untracked(o.shape[d]), *x.dims[d + 1 :]] for o in ctx.outputs]
        outs.append([*x.dims[:d], parts[0], *x.dims[d + 1 :]])
        rest = parts[1]
    # Split points are recomputed from the pruned width at run time (chunk) or are constants:
    # equal pieces stay equal by being pruned identically; unequal ones are kept whole.
    pieces = [o[d] for o in outs]
    if len({o.shape[d] for o in ctx.outputs}) == 1:
        for p in pieces[1:]:
            sp.unify(pieces[0], p, f"equal chunks ({ctx.why()})")
    else:
        _freeze_dim(ctx, x, d, "split into unequal pieces")
    return outs


@register_op("cat", "concat", "concatenate")
def _cat(ctx: OpContext, tensors: Sequence[T], d: int = 0) -> list[list[Layout]]:
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]
    d = _norm_dim(d, tensors[0].ndim)
    shape = ctx.out_shape()
    out = broadcast(
        ctx,
        [T(tuple(1 if i == d else s for i, s in enumerate(t.shape)), t.dims) for t in tensors],
        tuple(1 if i == d else s for i, s in enumerate(shape)),
    )
    out[d] = [seg for t in tensors for seg in ctx.spaces.resolve(t.dims[d])]
    return [out]


@register_op("stack")
def _stack(ctx: OpContext, tensors: Sequence[T], d: int = 0) -> list[list[Layout]]:
    out = broadcast(ctx, tensors, tensors[0].shape)
    out.insert(_norm_dim(d, len(tensors[0].shape) + 1), untracked(len(tensors)))
    return [out]


@register_op("index_select", "gather", "take_along_dim")
def _index_select(ctx: OpContext, x: T, d: int, index: Any, *_: Any) -> list[list[Layout]]:
    d = _norm_dim(d, x.ndim)
    _freeze_dim(ctx, x, d, "gathering channels by index")
    dims = list(x.dims)
    if ctx.out_shape() != x.shape:
        dims[d] = untracked(ctx.out_shape()[d])
    if ctx.op != "index_select":
        dims = [dims[i] if ctx.out_shape()[i] == x.shape[i] else untracked(s)
                for i, s in enumerate(ctx.out_shape())]  # fmt: skip
    return [dims]


@register_op("index", "_unsafe_index")
def _index(ctx: OpContext, x: T, indices: Sequence[Any]) -> list[list[Layout]]:
    indexed = [i for i, ix in enumerate(indices) if ix is not None]
    for i in indexed:
        _freeze_dim(ctx, x, i, "indexing channels by a tensor")
    shape = ctx.out_shape()
    n_index_dims = len(shape) - (x.ndim - len(indexed))
    adjacent = indexed == list(range(indexed[0], indexed[-1] + 1))
    rest = [x.dims[i] for i in range(x.ndim) if i not in indexed]
    at = indexed[0] if adjacent else 0
    out = rest[:at] + _untracked_like(shape[at : at + n_index_dims]) + rest[at:]
    return [out]


@register_op("embedding")
def _embedding(ctx: OpContext, weight: T, indices: T, *_: Any) -> list[list[Layout]]:
    return [[*_untracked_like(indices.shape), weight.dims[1]]]


@register_op("roll", "flip")
def _roll(ctx: OpContext, x: T, *args: Any) -> list[list[Layout]]:
    dims = args[-1] if ctx.op == "roll" else args[0]
    dims = [dims] if isinstance(dims, int) else list(dims)
    if ctx.op == "roll" and not dims:
        dims = list(range(x.ndim))
    for d in dims:
        _freeze_dim(ctx, x, _norm_dim(d, x.ndim), f"{ctx.op} along channels")
    return [x.dims]


@register_op("constant_pad_nd", "reflection_pad2d", "replication_pad2d", "pad")
def _pad(ctx: OpContext, x: T, pad: Sequence[int], *_: Any) -> list[list[Layout]]:
    dims = list(x.dims)
    shape = ctx.out_shape()
    for i in range(x.ndim):
        if shape[i] != x.shape[i]:
            _freeze_dim(ctx, x, i, "padding channels")
            dims[i] = untracked(shape[i])
    return [dims]


@register_op("channel_shuffle", "native_channel_shuffle", "pixel_shuffle", "pixel_unshuffle")
def _shuffle(ctx: OpContext, x: T, groups: int) -> list[list[Layout]]:
    sp = ctx.spaces
    out = list(x.dims)
    parts = sp.factorize(x.dims[1], [groups, x.shape[1] // groups]) if "channel" in ctx.op else None
    if parts is None:
        _freeze_dim(ctx, x, 1, ctx.op)
        out = _untracked_like(ctx.out_shape())
        out[0] = x.dims[0]
    else:
        out[1] = sp.product([sp.resolve(parts[1]), sp.resolve(parts[0])])
    return [out]


# Ops whose outputs carry no channels of their inputs (shape queries, creation, sampling...).
NO_CHANNELS = set(
    _words(
        "arange zeros ones full empty empty_strided scalar_tensor randn rand randint linspace "
        "_local_scalar_dense sym_size sym_stride is_nonzero item nonzero eye tril triu "
        "new_zeros new_ones new_full new_empty tensor zeros_like_nonzero"
    )
)


def untracked_outputs(ctx: OpContext) -> list[list[Layout]]:
    return [_untracked_like(o.shape) for o in ctx.outputs]


def has_channels(ctx: OpContext, tensors: Sequence[T]) -> bool:
    return any(ctx.spaces.atoms(d) for t in tensors for d in t.dims)


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


@register_op("as_strided", "as_strided_", "resize_", "set_", "_reshape_copy")
def _restride(ctx: OpContext, x: T, *_: Any) -> list[list[Layout]]:
    # Same shape: a change of memory layout only (e.g. adaptive pooling's channels-last fix-up).
    if ctx.out_shape() == x.shape:
        return [x.dims]
    ctx.spaces.freeze_layout([s for d in x.dims for s in d], f"{ctx.op} ({ctx.why()})")
    return untracked_outputs(ctx)
