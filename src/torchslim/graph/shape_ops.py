"""Layout handlers of the ops that move, reshape, split or join dimensions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchslim.graph.ops import (
    OpContext,
    T,
    broadcast,
    freeze_dim,
    norm_dim,
    register_op,
    untracked_like,
)
from torchslim.graph.spaces import Layout, SpaceTable, untracked


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
    out = untracked_like(shape)
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
    return [[x.dims[norm_dim(d, x.ndim)] for d in dims]]


@register_op("transpose", "swapaxes")
def _transpose(ctx: OpContext, x: T, a: int, b: int) -> list[list[Layout]]:
    dims = list(x.dims)
    a, b = norm_dim(a, x.ndim), norm_dim(b, x.ndim)
    dims[a], dims[b] = dims[b], dims[a]
    return [dims]


@register_op("t", "numpy_T")
def _t(ctx: OpContext, x: T) -> list[list[Layout]]:
    return [list(reversed(x.dims))]


@register_op("unsqueeze", "unsqueeze_")
def _unsqueeze(ctx: OpContext, x: T, d: int) -> list[list[Layout]]:
    dims = list(x.dims)
    dims.insert(norm_dim(d, x.ndim + 1), untracked(1))
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
    out = untracked_like(shape)
    for i, s in enumerate(x.shape):
        if s == shape[i + offset]:
            out[i + offset] = x.dims[i]
    return [out]


@register_op("repeat")
def _repeat(ctx: OpContext, x: T, repeats: Sequence[int]) -> list[list[Layout]]:
    shape = ctx.out_shape()
    offset = len(shape) - x.ndim
    out = untracked_like(shape)
    for i in range(x.ndim):
        r = repeats[i + offset]
        out[i + offset] = x.dims[i] * r if r <= 64 else untracked(shape[i + offset])
        if r > 64:
            ctx.spaces.freeze_layout(x.dims[i], f"large repeat ({ctx.why()})")
    return [out]


@register_op("select", "select_copy")
def _select(ctx: OpContext, x: T, d: int, index: int) -> list[list[Layout]]:
    d = norm_dim(d, x.ndim)
    freeze_dim(ctx, x, d, "indexing a channel by position")
    return [x.dims[:d] + x.dims[d + 1 :]]


@register_op("unbind")
def _unbind(ctx: OpContext, x: T, d: int = 0) -> list[list[Layout]]:
    d = norm_dim(d, x.ndim)
    freeze_dim(ctx, x, d, "unbinding channels")
    return [x.dims[:d] + x.dims[d + 1 :] for _ in ctx.outputs]


@register_op("slice", "slice_copy", "narrow")
def _slice(ctx: OpContext, x: T, d: int = 0, start: Any = None, end: Any = None, step: int = 1):
    d = norm_dim(d, x.ndim)
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
        freeze_dim(ctx, x, d, "slicing channels with constant bounds")
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
    d = norm_dim(d, x.ndim)
    sp = ctx.spaces
    rest, outs = x.dims[d], []
    for o in ctx.outputs:
        n = o.shape[d]
        parts = sp.cut(rest, n)
        if parts is None:
            freeze_dim(ctx, x, d, "split inside a channel")
            return [[*x.dims[:d], untracked(o.shape[d]), *x.dims[d + 1 :]] for o in ctx.outputs]
        outs.append([*x.dims[:d], parts[0], *x.dims[d + 1 :]])
        rest = parts[1]
    # Split points are recomputed from the pruned width at run time (chunk) or are constants:
    # equal pieces stay equal by being pruned identically; unequal ones are kept whole, unless
    # the running module keeps their sizes as an attribute (updated after pruning).
    pieces = [o[d] for o in outs]
    sizes = [o.shape[d] for o in ctx.outputs]
    if len(set(sizes)) == 1:
        for p in pieces[1:]:
            sp.unify(pieces[0], p, f"equal chunks ({ctx.why()})")
        _size_attributes(ctx, pieces, sizes)
    elif not _size_attributes(ctx, pieces, sizes):
        freeze_dim(ctx, x, d, "split into unequal pieces")
    return outs


def _size_attributes(ctx: OpContext, pieces: list[Layout], sizes: list[int]) -> bool:
    """Record the running module's attributes that hold these split sizes, so the shrinker
    gives them the pruned sizes: a list of the sizes (``self.splits``), or, for equal pieces,
    an int equal to one piece (``self.width``) or to all of them (``self.in_channels // 2``).
    Whether any was found."""
    module = ctx.module_obj
    if module is None:
        return False
    found = False
    for attr, value in vars(module).items():
        if attr.startswith("_") or isinstance(value, bool):
            continue
        if isinstance(value, (list, tuple)) and list(value) == sizes:
            ctx.splits.append((ctx.module, attr, pieces, type(value)))
            found = True
        elif isinstance(value, int) and len(set(sizes)) == 1 and value in (sizes[0], sum(sizes)):
            ctx.splits.append((ctx.module, attr, pieces[:1], value // sizes[0]))
            found = True
    return found


@register_op("cat", "concat", "concatenate")
def _cat(ctx: OpContext, tensors: Sequence[T], d: int = 0) -> list[list[Layout]]:
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]
    if not tensors:  # only legacy empty tensors (e.g. no detections on any level)
        return [untracked_like(ctx.out_shape())]
    d = norm_dim(d, tensors[0].ndim)
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
    out.insert(norm_dim(d, len(tensors[0].shape) + 1), untracked(len(tensors)))
    return [out]


@register_op("index_select", "gather", "take_along_dim")
def _index_select(ctx: OpContext, x: T, d: int, index: Any, *_: Any) -> list[list[Layout]]:
    d = norm_dim(d, x.ndim)
    shape = ctx.out_shape()
    dims = []
    for i, size in enumerate(shape):
        if i == d or size != x.shape[i]:
            freeze_dim(ctx, x, i, "gathering channels by index")
            dims.append(untracked(size))
        else:
            dims.append(x.dims[i])
    return [dims]


@register_op("index", "_unsafe_index")
def _index(ctx: OpContext, x: T, indices: Sequence[Any]) -> list[list[Layout]]:
    indexed = [i for i, ix in enumerate(indices) if ix is not None]
    for i in indexed:
        freeze_dim(ctx, x, i, "indexing channels by a tensor")
    shape = ctx.out_shape()
    n_index_dims = len(shape) - (x.ndim - len(indexed))
    adjacent = indexed == list(range(indexed[0], indexed[-1] + 1))
    rest = [x.dims[i] for i in range(x.ndim) if i not in indexed]
    at = indexed[0] if adjacent else 0
    out = rest[:at] + untracked_like(shape[at : at + n_index_dims]) + rest[at:]
    return [out]


@register_op("embedding")
def _embedding(ctx: OpContext, weight: T, indices: T, *_: Any) -> list[list[Layout]]:
    freeze_dim(ctx, weight, 0, "embedding rows, looked up by index")  # a vocabulary
    return [[*untracked_like(indices.shape), weight.dims[1]]]


@register_op("roll", "flip")
def _roll(ctx: OpContext, x: T, *args: Any) -> list[list[Layout]]:
    dims = args[-1] if ctx.op == "roll" else args[0]
    dims = [dims] if isinstance(dims, int) else list(dims)
    if ctx.op == "roll" and not dims:
        dims = list(range(x.ndim))
    for d in dims:
        freeze_dim(ctx, x, norm_dim(d, x.ndim), f"{ctx.op} along channels")
    return [x.dims]


@register_op("constant_pad_nd", "reflection_pad2d", "replication_pad2d", "pad")
def _pad(ctx: OpContext, x: T, pad: Sequence[int], *_: Any) -> list[list[Layout]]:
    dims = list(x.dims)
    shape = ctx.out_shape()
    for i in range(x.ndim):
        if shape[i] != x.shape[i]:
            freeze_dim(ctx, x, i, "padding channels")
            dims[i] = untracked(shape[i])
    return [dims]


@register_op("channel_shuffle", "native_channel_shuffle", "pixel_shuffle", "pixel_unshuffle")
def _shuffle(ctx: OpContext, x: T, groups: int) -> list[list[Layout]]:
    sp = ctx.spaces
    out = list(x.dims)
    parts = sp.factorize(x.dims[1], [groups, x.shape[1] // groups]) if "channel" in ctx.op else None
    if parts is None:
        freeze_dim(ctx, x, 1, ctx.op)
        out = untracked_like(ctx.out_shape())
        out[0] = x.dims[0]
    else:
        out[1] = sp.product([sp.resolve(parts[1]), sp.resolve(parts[0])])
    return [out]
