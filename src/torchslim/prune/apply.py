"""Physically remove channels: slice every parameter/buffer, then fix module attributes.

Per-module-type shrinking is a registry (:func:`register_shrink`): a function that updates a
module's attributes (``in_channels``, ``num_heads``...) after its tensors were sliced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from torchslim.graph.spaces import Layout, SpaceTable
from torchslim.graph.trace import ChannelGraph
from torchslim.prune.importance import is_hf_conv1d

Keep = dict[int, torch.Tensor]  # atom -> sorted kept channel indices


def _segment_grid(sp: SpaceTable, seg: tuple[int, ...], keep: Keep) -> torch.Tensor:
    """Flat positions (relative to the segment start) of the kept elements of a product."""
    sizes = [sp.size(f) for f in seg]
    strides = [math.prod(sizes[i + 1 :]) for i in range(len(sizes))]
    pos = torch.zeros(1, dtype=torch.long)
    for f, size, stride in zip(seg, sizes, strides, strict=True):
        idx = keep.get(sp.find(f), None) if f >= 0 else None
        idx = torch.arange(size) if idx is None else idx
        pos = (pos[:, None] + idx[None, :] * stride).reshape(-1)
    return pos


def kept_positions(
    sp: SpaceTable, layout: Layout, keep: Keep, memo: dict[Any, Any] | None = None
) -> torch.Tensor | None:
    """Indices to keep along a dim with ``layout``; ``None`` when nothing is removed.

    ``memo`` (one dict per ``keep``) shares the result between dims with the same layout.
    """
    resolved = sp.resolve(layout)
    if len(resolved) == 1 and len(resolved[0]) == 1 and resolved[0][0] >= 0:
        return keep.get(sp.find(resolved[0][0]))  # the common case: the dim is one space
    key = tuple(resolved)
    if memo is not None and key in memo:
        return memo[key]
    found = None
    if any(sp.find(f) in keep for seg in resolved for f in seg if f >= 0):
        parts, offset = [], 0
        for seg in resolved:
            parts.append(_segment_grid(sp, seg, keep) + offset)
            offset += sp.seg_size(seg)
        found = torch.cat(parts)
    if memo is not None:
        memo[key] = found
    return found


def channel_positions(
    sp: SpaceTable, layout: Layout, atom: int, memo: dict[Any, Any] | None = None
) -> torch.Tensor:
    """``[size(atom), k]`` positions along a dim of every element belonging to each channel.

    ``memo`` shares the result between dims with the same layout (read it, do not modify it).
    """
    resolved = sp.resolve(layout)
    if len(resolved) == 1 and len(resolved[0]) == 1 and sp.find(resolved[0][0]) == atom:
        return torch.arange(sp.spaces[atom].size).unsqueeze(1)  # the common case: dim == atom
    key = (tuple(resolved), atom)
    if memo is not None and key in memo:
        return memo[key]
    found = _channel_grid(sp, resolved, atom)
    if memo is not None:
        memo[key] = found
    return found


def _channel_grid(sp: SpaceTable, resolved: Layout, atom: int) -> torch.Tensor:
    parts, offset = [], 0
    for seg in resolved:
        sizes = [sp.size(f) for f in seg]
        total = math.prod(sizes)
        roots = [sp.find(f) if f >= 0 else -1 for f in seg]
        if atom in roots:
            grid = torch.arange(total).reshape(sizes or [1]) + offset
            axis = roots.index(atom)
            parts.append(grid.movedim(axis, 0).reshape(sizes[axis], -1))
        offset += total
    return torch.cat(parts, dim=1)


def _owner(graph: ChannelGraph, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return graph.module(module_name), attr


def slice_tensors(graph: ChannelGraph, keep: Keep) -> dict[str, tuple[int, ...]]:
    """Slice every parameter and buffer in place; returns the old shape of each sliced one."""
    sp = graph.spaces
    model = graph.model
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(dict(model.named_buffers(remove_duplicate=False)))
    by_id: dict[int, torch.Tensor] = {}
    old_shapes: dict[str, tuple[int, ...]] = {}
    memo: dict[Any, Any] = {}
    for name, dims in graph.param_dims.items():
        tensor = tensors[name]
        new = tensor.detach()
        for d, layout in enumerate(dims):
            pos = kept_positions(sp, layout, keep, memo)
            if pos is not None:
                new = new.index_select(d, pos.to(new.device))
        if new.shape != tensor.shape:
            old_shapes[name] = tuple(tensor.shape)
            by_id[id(tensor)] = new.contiguous()
    for name, tensor in tensors.items():
        if id(tensor) not in by_id:
            continue
        owner, attr = _owner(graph, name)
        new = by_id[id(tensor)]
        if isinstance(tensor, nn.Parameter):
            owner._parameters[attr] = nn.Parameter(new, requires_grad=tensor.requires_grad)
        else:
            owner._buffers[attr] = new
        old_shapes.setdefault(name, tuple(tensor.shape))
    return old_shapes


Shrink = Callable[[nn.Module, str, "ShrinkContext"], None]
SHRINKERS: list[tuple[type, Shrink]] = []


class ShrinkContext:
    """What a shrinker may read: kept sizes of the graph's recorded group/head layouts."""

    def __init__(self, graph: ChannelGraph, keep: Keep) -> None:
        self.graph, self.keep = graph, keep
        self.memo: dict[Any, Any] = {}

    def atom_sizes(self, layout: Layout) -> list[tuple[int, int]]:
        """(old, new) sizes of the channel spaces along a dim, if it holds exactly one."""
        sp = self.graph.spaces
        atoms = sp.atoms(layout)
        if len(atoms) != 1:
            return []
        old = sp.spaces[atoms[0]].size
        new = len(self.keep[atoms[0]]) if atoms[0] in self.keep else old
        return [(old, new)] if new != old else []

    def kept(self, layout: Layout) -> int:
        pos = kept_positions(self.graph.spaces, layout, self.keep, self.memo)
        return self.graph.spaces.layout_size(layout) if pos is None else len(pos)


def register_shrink(module_type: type) -> Callable[[Shrink], Shrink]:
    """Register the attribute fix-up of a module type after its tensors were sliced."""

    def deco(fn: Shrink) -> Shrink:
        SHRINKERS.append((module_type, fn))
        return fn

    return deco


@register_shrink(nn.modules.conv._ConvNd)
def _shrink_conv(m: nn.Module, name: str, ctx: ShrinkContext) -> None:
    if name in ctx.graph.groups:
        m.groups = ctx.kept(ctx.graph.groups[name])
    w = m.weight
    if m.transposed:
        m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
    else:
        m.in_channels, m.out_channels = w.shape[1] * m.groups, w.shape[0]


@register_shrink(nn.Linear)
def _shrink_linear(m: nn.Module, name: str, ctx: ShrinkContext) -> None:
    m.out_features, m.in_features = m.weight.shape


@register_shrink(nn.modules.batchnorm._NormBase)
def _shrink_bn(m: nn.Module, name: str, ctx: ShrinkContext) -> None:
    ref = m.weight if m.weight is not None else m.running_mean
    if ref is not None:
        m.num_features = ref.shape[0]
        return
    # InstanceNorm without affine or running statistics: its input's traced channels
    seen = ctx.graph.module_io.get(name, (None, None))[0]
    if seen is not None and seen.ndim >= 2:
        d = 1 if seen.shape[1] == m.num_features else 0  # batched, or an unbatched (C, L)
        m.num_features = ctx.kept(seen.dims[d])


@register_shrink(nn.LayerNorm)
def _shrink_ln(m: nn.Module, name: str, ctx: ShrinkContext) -> None:
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)


@register_shrink(nn.GroupNorm)
def _shrink_gn(m: nn.Module, name: str, ctx: ShrinkContext) -> None:
    if name in ctx.graph.groups:
        m.num_groups = ctx.kept(ctx.graph.groups[name])
    if m.weight is not None:
        m.num_channels = m.weight.shape[0]


@register_shrink(nn.PReLU)
def _shrink_prelu(m: nn.Module, name: str, ctx: ShrinkContext) -> None:
    m.num_parameters = m.weight.numel()


@register_shrink(nn.Embedding)
def _shrink_embedding(m: nn.Module, name: str, ctx: ShrinkContext) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape


@register_shrink(nn.MultiheadAttention)
def _shrink_mha(m: nn.Module, name: str, ctx: ShrinkContext) -> None:
    if m.in_proj_weight is not None:
        m.embed_dim = m.kdim = m.vdim = m.in_proj_weight.shape[1]
    m.head_dim = m.embed_dim // m.num_heads


def _shrink_hf_conv1d(m: nn.Module, name: str, ctx: ShrinkContext) -> None:
    m.nf = m.weight.shape[1]  # the output width its forward reshapes to


BERT_HEAD_ATTRS = ("num_attention_heads", "attention_head_size", "all_head_size")
HEAD_ATTRS = ("num_heads", "n_heads", "heads", "num_attention_heads", "nhead")
HEAD_DIM_ATTRS = ("head_dim", "dim_head", "head_size", "attention_head_size")
WIDTH_ATTRS = ("hidden_dim", "embed_dim", "dim", "hidden_size", "d_model", "width", "embed_dims")


def fix_head_attributes(model: nn.Module, ctx: ShrinkContext) -> None:
    """Update ``num_heads``/``head_dim``-style attributes read by reshapes inside forwards."""
    updates: dict[tuple[str, str], int] = {}
    for module_name, dims in ctx.graph.views:
        sizes = [(old, ctx.kept(layout)) for old, layout in dims]
        if all(old == new for old, new in sizes):
            continue
        if len(dims) == 1:
            fixes = [(WIDTH_ATTRS, *sizes[0])]
        else:  # a width split into (..., heads, head_dim): compare with the factors' own sizes
            fixes = [(HEAD_ATTRS, *f) for _, layout in dims[:-1] for f in ctx.atom_sizes(layout)]
            fixes += [(HEAD_DIM_ATTRS, *f) for f in ctx.atom_sizes(dims[-1][1])]
        owner_names = [module_name]
        while owner_names[-1]:
            owner_names.append(owner_names[-1].rpartition(".")[0])
        for owner_name in owner_names[:3]:
            owner = ctx.graph.module(owner_name)
            for attrs, old, new in fixes:
                for attr in attrs:
                    if getattr(owner, attr, None) == old:
                        updates[(owner_name, attr)] = new
    for (owner_name, attr), value in updates.items():
        setattr(ctx.graph.module(owner_name), attr, value)
    for owner_name in {name for name, _ in updates}:  # BERT-style: heads x head size
        owner = ctx.graph.module(owner_name)
        if all(isinstance(getattr(owner, a, None), int) for a in BERT_HEAD_ATTRS):
            owner.all_head_size = owner.num_attention_heads * owner.attention_head_size


def fix_split_attributes(ctx: ShrinkContext) -> None:
    """Give the split sizes a module keeps as attributes (``shape_ops._split``) their pruned
    values: a list of the pieces' sizes, or one piece times the recorded factor. An attribute
    whose records disagree is ambiguous and left alone."""
    values: dict[tuple[str, str], list[Any]] = {}
    for module_name, attr, pieces, how in ctx.graph.splits:
        kept = [ctx.kept(p) for p in pieces]
        value = how(kept) if isinstance(how, type) else kept[0] * how
        values.setdefault((module_name, attr), []).append(value)
    for (module_name, attr), found in values.items():
        if all(v == found[0] for v in found):
            setattr(ctx.graph.module(module_name), attr, found[0])


def shrink_modules(model: nn.Module, graph: ChannelGraph, keep: Keep) -> None:
    """Run every registered shrinker on the modules whose tensors changed, then heads."""
    ctx = ShrinkContext(graph, keep)
    fix_head_attributes(model, ctx)
    fix_split_attributes(ctx)
    for name, module in graph.modules.items():
        for module_type, fn in SHRINKERS:
            if isinstance(module, module_type):
                fn(module, name, ctx)
        if is_hf_conv1d(module):
            _shrink_hf_conv1d(module, name, ctx)
