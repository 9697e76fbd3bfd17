from __future__ import annotations

import contextlib
import sys
import weakref

import pytest
import torch
import torchvision
from torch import nn

import torchslim as ts
from torchslim.graph import trace

_trace_module = sys.modules["torchslim.graph.trace"]


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


def _mixed_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 8, 3, groups=2),
        nn.BatchNorm2d(8, track_running_stats=False), nn.GELU(), nn.Conv2d(8, 6, 1),
        nn.Hardswish(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
        nn.BatchNorm1d(3), nn.Sigmoid(),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("build", "x"),
    [
        (_mixed_net, torch.randn(2, 3, 12, 12)),
        (_mixed_net, torch.randn(2, 3, 12, 12).contiguous(memory_format=torch.channels_last)),
        (torchvision.models.mobilenet_v3_small, torch.randn(1, 3, 64, 64)),
        (torchvision.models.regnet_y_400mf, torch.randn(1, 3, 64, 64)),
    ],
)
def test_module_shortcuts_leave_the_graph_as_the_op_by_op_trace(monkeypatch, build, x) -> None:
    model = build().eval()
    fast = trace(model, x)
    assert not any("forward" in vars(m) for m in model.modules())
    monkeypatch.setattr(_trace_module, "_module_shortcuts", lambda *_: contextlib.nullcontext())
    slow = trace(model, x)

    def groups(g: object) -> list:
        return sorted(sorted(g.members(a)) for a in g.prunable())

    assert groups(fast) == groups(slow) and groups(fast)
    assert fast.macs_after() == slow.macs_after()
    assert fast.stats_after() == slow.stats_after()
