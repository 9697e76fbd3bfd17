"""Channel spaces: which channels of which tensors must be pruned together.

Every tensor dimension the tracer sees gets a *layout*: a list of segments laid end to end,
each segment a mixed-radix product of *factors* (outer to inner). A factor is either a channel
space (an integer id, size known) or ``None``-like untracked extent (an ``int`` size given as a
negative number). Two dimensions that must agree (a conv's input and the tensor it reads, the
two operands of an add, ...) are *unified*: their spaces are merged with union-find, splitting
spaces into concatenations or products where the two layouts cut them differently.

Whenever a constraint cannot be expressed, the spaces involved are *frozen* (all their channels
kept). Freezing is always safe; it only costs pruning opportunity, and it records why.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

Factor = int  # >= 0: a space id; < 0: an untracked extent of size -factor
Segment = tuple[Factor, ...]
Layout = list[Segment]

_DEEP = 20_000  # the recursion limit while a layout is resolved
MAX_SEGMENTS = 4096  # beyond this a layout is given up on (frozen) rather than enumerated


def untracked(size: int) -> Layout:
    """The layout of a dimension no channel space runs along (batch, spatial, tokens...)."""
    return [(-size,)] if size != 1 else [()]


@dataclass
class _Space:
    size: int
    parent: int
    frozen: str = ""  # why it is frozen ("" when prunable)
    inner: bool = False  # created as an inner factor of a split (head_dim, group width...)
    split: tuple[str, tuple[int, ...]] | None = None  # ("cat" | "prod", children)
    origin: str = ""  # human-readable: the first tensor dim that created it


@dataclass
class SpaceTable:
    """Union-find over channel spaces with concatenation/product refinement and freezing."""

    spaces: list[_Space] = field(default_factory=list)

    # -- creation and lookup -------------------------------------------------------------
    def new(self, size: int, origin: str = "", *, inner: bool = False) -> int:
        self.spaces.append(_Space(size, len(self.spaces), inner=inner, origin=origin))
        return len(self.spaces) - 1

    def fresh_layout(self, size: int, origin: str = "") -> Layout:
        return [(self.new(size, origin),)] if size > 1 else [()]

    def find(self, k: int) -> int:
        root = k
        while self.spaces[root].parent != root:
            root = self.spaces[root].parent
        while self.spaces[k].parent != root:
            self.spaces[k].parent, k = root, self.spaces[k].parent
        return root

    def size(self, f: Factor) -> int:
        return -f if f < 0 else self.spaces[f].size

    def seg_size(self, seg: Segment) -> int:
        return math.prod(self.size(f) for f in seg)

    def layout_size(self, layout: Layout) -> int:
        return sum(self.seg_size(s) for s in layout)

    def kept_size(self, layout: Layout, kept: Mapping[int, int]) -> int:
        """The size of a dim once each atom ``a`` in ``kept`` has only ``kept[a]`` channels."""
        if not kept:
            return self.layout_size(layout)
        total = 0
        for seg in self.resolve(layout):
            n = 1
            for f in seg:
                n *= -f if f < 0 else kept.get(f, self.spaces[f].size)
            total += n
        return total

    def is_frozen(self, k: int) -> bool:
        return bool(self.spaces[self.find(k)].frozen)

    # -- freezing --------------------------------------------------------------------------
    def freeze(self, f: Factor, why: str) -> None:
        if f < 0:
            return
        root = self.spaces[self.find(f)]
        if not root.frozen:
            root.frozen = why
        if root.split:
            for child in root.split[1]:
                self.freeze(child, why)

    def freeze_layout(self, layout: Layout, why: str) -> None:
        for seg in layout:
            for f in seg:
                self.freeze(f, why)

    # -- resolution ------------------------------------------------------------------------
    def resolve(self, layout: Layout) -> Layout:
        """Rewrite a layout in terms of atomic (unsplit) root spaces, dropping size-1 factors."""
        if len(layout) == 1 and len(layout[0]) == 1:  # the common case: one factor
            f = layout[0][0]
            if f < 0:
                return [(f,)] if f != -1 else [()]
            root = self.find(f)
            space = self.spaces[root]
            if space.split is None:
                return [(root,)] if space.size != 1 else [()]
        try:
            out = self._resolve_segments(layout)
        except RecursionError:  # a long chain of concatenations (DenseNets): once more, deeper
            limit = sys.getrecursionlimit()
            sys.setrecursionlimit(max(limit, _DEEP))
            try:
                out = self._resolve_segments(layout)
            except RecursionError:
                out = None
            finally:
                sys.setrecursionlimit(limit)
            if out is None:
                self.freeze_layout(layout, "layout too deeply nested to track")
                return untracked(self.layout_size(layout))
        if len(out) > MAX_SEGMENTS:
            self.freeze_layout(layout, "layout too fragmented to track")
            return untracked(self.layout_size(layout))
        return out

    def _resolve_segments(self, layout: Layout) -> Layout:
        out: Layout = []
        for seg in layout:
            out.extend(self._resolve_segment(seg))
            if len(out) > MAX_SEGMENTS:
                break  # the caller gives up on it
        return out

    def _resolve_factor(self, f: Factor) -> Layout:
        if f < 0:
            return [(f,)] if f != -1 else [()]
        root = self.find(f)
        space = self.spaces[root]
        if space.size == 1:
            return [()]
        if space.split is None:
            return [(root,)]
        kind, children = space.split
        if kind == "cat":
            return [s for c in children for s in self._resolve_factor(c)]
        return self._resolve_segment(children)

    def _resolve_segment(self, seg: Segment) -> Layout:
        return self.product([self._resolve_factor(f) for f in seg])

    def product(self, layouts: list[Layout]) -> Layout:
        """The layout of dimensions merged by a reshape (outer to inner), resolved."""
        result: Layout = [()]
        for layout in layouts:
            parts = layout  # callers pass resolved layouts
            if len(parts) == 1:
                result = [r + parts[0] for r in result]
                continue
            # (A ⊗ (B ⊕ C)) interleaves B and C; expressible only as repetitions of [B, C]
            # over A's positions, so A's channels must all be kept.
            repeated: Layout = []
            for r in result:
                for x in r:
                    self.freeze(x, "concatenation nested inside a product")
                reps = math.prod(self.size(x) for x in r)
                if (len(repeated) + reps) * len(parts) > MAX_SEGMENTS:
                    self.freeze_layout(parts, "layout too fragmented to track")
                    parts = [(-self.layout_size(parts),)]
                repeated.extend(parts * reps)
            result = repeated
        return [tuple(x for x in s if self.size(x) != 1) for s in result]

    # -- refinement ------------------------------------------------------------------------
    def _refine(self, f: Factor, kind: str, sizes: list[int]) -> tuple[Factor, ...]:
        """Split factor ``f`` into a concatenation or product of pieces of ``sizes``."""
        if f < 0:
            return tuple(-s for s in sizes)
        root = self.find(f)
        space = self.spaces[root]
        if space.split is not None:
            raise RuntimeError("refining a split space")  # callers resolve first
        # Only the innermost piece of a product is a sub-channel factor (head_dim, group width);
        # pieces of a concatenation inherit the flag.
        last = len(sizes) - 1
        inner = [space.inner if kind == "cat" else i == last for i in range(len(sizes))]
        children = tuple(self.new(s, space.origin, inner=inner[i]) for i, s in enumerate(sizes))
        space.split = (kind, children)
        if space.frozen:
            for c in children:
                self.freeze(c, space.frozen)
        return children

    def cut(self, layout: Layout, at: int) -> tuple[Layout, Layout] | None:
        """Split a layout at position ``at``; ``None`` if the cut falls inside a channel."""
        layout = self.resolve(layout)
        pos = 0
        for i, seg in enumerate(layout):
            size = self.seg_size(seg)
            if pos + size <= at:
                pos += size
                continue
            if pos == at:
                return layout[:i], layout[i:]
            stride = self.seg_size(seg[1:])
            offset = at - pos
            if offset % stride:
                return None
            first, second = self._refine(
                seg[0], "cat", [offset // stride, (size - offset) // stride]
            )
            return [*layout[:i], (first, *seg[1:])], [(second, *seg[1:]), *layout[i + 1 :]]
        return (layout, []) if pos == at else None

    def factorize(self, layout: Layout, sizes: list[int]) -> list[Layout] | None:
        """Express a single-dimension layout as the product of dimensions of ``sizes``."""
        if len(sizes) == 1:
            return [layout]
        inner = math.prod(sizes[1:])
        layout = self.resolve(layout)
        if len(layout) == 1:
            seg = layout[0]
            head, acc = [], 1
            for i, f in enumerate(seg):
                if acc * self.size(f) <= sizes[0]:
                    head.append(f)
                    acc *= self.size(f)
                    continue
                if sizes[0] % acc or (self.size(f) * acc) % sizes[0]:
                    return None
                a = sizes[0] // acc
                if a > 1:
                    fa, fb = self._refine(f, "prod", [a, self.size(f) // a])
                    head.append(fa)
                    rest: Segment = (fb, *seg[i + 1 :])
                else:
                    rest = seg[i:]
                tail = self.factorize([rest], sizes[1:])
                return None if tail is None else [[tuple(head)], *tail]
            if acc == sizes[0]:
                tail = self.factorize([()], sizes[1:])
                return None if tail is None else [[tuple(head)], *tail]
            return None
        # Several segments: the outer dimension enumerates equal chunks, which must agree.
        chunks: list[Layout] = []
        rest_layout = layout
        for _ in range(sizes[0] - 1):
            parts = self.cut(rest_layout, inner)
            if parts is None:
                return None
            chunks.append(parts[0])
            rest_layout = parts[1]
        chunks.append(rest_layout)
        for chunk in chunks[1:]:
            self.unify(chunks[0], chunk, "equal chunks of a reshaped dimension")
        tail = self.factorize(chunks[0], sizes[1:])
        return None if tail is None else [untracked(sizes[0]), *tail]

    # -- unification -----------------------------------------------------------------------
    def union(self, a: int, b: int, why: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        sa, sb = self.spaces[ra], self.spaces[rb]
        if sa.size != sb.size:
            raise RuntimeError(f"union of spaces of sizes {sa.size} and {sb.size}")
        sb.parent = ra
        sa.inner = sa.inner or sb.inner
        sa.origin = sa.origin or sb.origin
        frozen = sa.frozen or sb.frozen
        split_a, split_b = sa.split, sb.split
        if split_a is None and split_b is not None:
            sa.split = split_b
        elif split_a is not None and split_b is not None:
            self.unify(self._split_layout(split_a), self._split_layout(split_b), why)
        if frozen:
            self.freeze(ra, frozen)

    def _split_layout(self, split: tuple[str, tuple[int, ...]]) -> Layout:
        kind, children = split
        if kind == "cat":
            return [s for c in children for s in self._resolve_factor(c)]
        return self._resolve_segment(children)

    def unify(self, a: Layout, b: Layout, why: str) -> None:
        """Constrain two equally sized dimension layouts to be pruned identically."""
        a, b = self.resolve(a), self.resolve(b)
        if len(a) == 1 and len(b) == 1 and len(a[0]) == 1 and len(b[0]) == 1:
            fa, fb = a[0][0], b[0][0]  # the common case: one unsplit space each (resolved)
            if fa >= 0 and fb >= 0 and self.spaces[fa].size == self.spaces[fb].size:
                self.union(fa, fb, why)
                return
        total_a, total_b = self.layout_size(a), self.layout_size(b)
        if total_a != total_b:
            raise RuntimeError(f"unify: sizes {total_a} != {total_b} ({why})")
        while a and b:
            sa, sb = a[0], b[0]
            za, zb = self.seg_size(sa), self.seg_size(sb)
            if za == zb:
                self._unify_segments(sa, sb, why)
                a, b = self.resolve(a[1:]), self.resolve(b[1:])
                continue
            big, small = (a, b) if za > zb else (b, a)
            parts = self.cut(big, self.seg_size(small[0]))
            if parts is None:
                self.freeze_layout(a + b, f"incompatible channel layouts ({why})")
                return
            big = parts[0] + parts[1]
            a, b = (big, small) if za > zb else (small, big)

    def _unify_segments(self, sa: Segment, sb: Segment, why: str) -> None:
        sa, sb = tuple(sa), tuple(sb)
        while sa and sb:
            fa, fb = sa[0], sb[0]
            za, zb = self.size(fa), self.size(fb)
            if za == zb:
                if fa < 0 or fb < 0:
                    self.freeze(fa, f"meets an untracked dimension ({why})")
                    self.freeze(fb, f"meets an untracked dimension ({why})")
                else:
                    self.union(fa, fb, why)
                ra, rb = self._resolve_segment(sa[1:]), self._resolve_segment(sb[1:])
                if len(ra) != 1 or len(rb) != 1:
                    self.freeze_layout(ra + rb, f"incompatible channel layouts ({why})")
                    return
                sa, sb = ra[0], rb[0]
                continue
            (big, rest_big), (small, _) = ((fa, sa), (fb, sb)) if za > zb else ((fb, sb), (fa, sa))
            zsmall, zbig = self.size(small), self.size(big)
            if zbig % zsmall:
                self.freeze_layout([sa, sb], f"incompatible channel layouts ({why})")
                return
            pieces = self._refine(big, "prod", [zsmall, zbig // zsmall])
            new_big = (*pieces, *rest_big[1:])
            sa, sb = (new_big, sb) if za > zb else (sa, new_big)
            ra, rb = self._resolve_segment(sa), self._resolve_segment(sb)
            if len(ra) != 1 or len(rb) != 1:
                self.freeze_layout(ra + rb, f"incompatible channel layouts ({why})")
                return
            sa, sb = ra[0], rb[0]

    # -- reading the result ----------------------------------------------------------------
    def atoms(self, layout: Layout) -> list[int]:
        """The atomic root spaces occurring in a layout, in order of first appearance."""
        seen: dict[int, None] = {}
        for seg in self.resolve(layout):
            for f in seg:
                if f >= 0:
                    seen.setdefault(self.find(f), None)
        return list(seen)
