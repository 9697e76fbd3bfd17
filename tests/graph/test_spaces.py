from __future__ import annotations

import torch
from torch import nn

from torchslim.graph import SpaceTable, trace
from torchslim.prune.apply import kept_positions


def test_unify_splits_a_space_at_a_concatenation_boundary() -> None:
    sp = SpaceTable()
    a, b, c = sp.new(4), sp.new(6), sp.new(10)
    sp.unify([(c,)], [(a,), (b,)], "cat")
    assert sp.atoms([(c,)]) == [sp.find(a), sp.find(b)]
    keep = {sp.find(a): torch.tensor([0, 3]), sp.find(b): torch.tensor([5])}
    assert kept_positions(sp, [(c,)], keep).tolist() == [0, 3, 9]


def test_product_refinement_maps_heads_to_contiguous_blocks() -> None:
    sp = SpaceTable()
    width = sp.new(12)
    heads, head_dim = sp.factorize([(width,)], [3, 4])
    (h,), (d,) = sp.atoms(heads), sp.atoms(head_dim)
    assert sp.spaces[d].inner and not sp.spaces[h].inner
    keep = {h: torch.tensor([0, 2])}  # drop the middle head
    assert kept_positions(sp, [(width,)], keep).tolist() == [0, 1, 2, 3, 8, 9, 10, 11]


def test_equal_chunks_of_a_concatenation_are_tied() -> None:
    sp = SpaceTable()
    a, b = sp.new(5), sp.new(5)
    parts = sp.factorize([(a,), (b,)], [2, 5])
    assert parts is not None and sp.find(a) == sp.find(b)


def test_untracked_meeting_a_space_freezes_it() -> None:
    sp = SpaceTable()
    k = sp.new(8)
    sp.unify([(k,)], [(-8,)], "output")
    assert sp.is_frozen(k)


def test_cut_inside_a_channel_is_refused() -> None:
    sp = SpaceTable()
    k = sp.new(4)
    assert sp.cut([(k, -3)], 5) is None
    assert sp.cut([(k, -3)], 6) is not None


def test_trace_finds_residual_and_depthwise_coupling() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = nn.Conv2d(8, 8, 1)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = x + self.pw(self.dw(x))
            return self.head(x.mean((2, 3)))

    graph = trace(Block(), torch.randn(1, 3, 6, 6))
    (atom,) = graph.prunable()
    names = {n for n, _ in graph.members(atom)}
    assert {"stem.weight", "dw.weight", "pw.weight", "pw.bias", "head.weight"} <= names
