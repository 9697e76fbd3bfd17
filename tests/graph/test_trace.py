from __future__ import annotations

import weakref

import torch
from torch import nn

import torchslim as ts
from torchslim.graph import trace


class _Chain(nn.Module):
    """Many short-lived activations: freed ones' ids get reused by later tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(6))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for conv in self.convs:
            x = torch.relu(conv(x)) + x  # a residual chain: every conv's channels tied
        return self.head(x)


def test_trace_frees_activations_and_keeps_layouts_right() -> None:
    model = _Chain().eval()
    seen: list[weakref.ref] = []
    alive: list[int] = []  # at each conv's call, how many earlier conv outputs still exist

    def hook(_m: nn.Module, _a: object, out: torch.Tensor) -> None:
        alive.append(sum(ref() is not None for ref in seen))
        seen.append(weakref.ref(out))

    for conv in model.convs:
        conv.register_forward_hook(hook)
    graph = trace(model, torch.randn(1, 3, 16, 16))
    assert alive == [0] * 6  # the trace holds no activation the model has let go of
    # The residual chain ties the stem's channels to every conv's output (and input): one
    # group, found only if every freed activation's layouts were looked up right.
    assert len(graph.prunable()) == 1
    ts.prune(model, torch.randn(1, 3, 16, 16), {"ratio": 0.5})
    assert model.stem.out_channels == 4
    assert all((c.in_channels, c.out_channels) == (4, 4) for c in model.convs)
