"""Randomly generated small networks covering the channel couplings the pruner must handle."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
from torch import nn


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBN(c, c), nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Concat(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = ConvBN(c, c // 2 + 1), ConvBN(c, c // 2)
        self.out_channels = c + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


class SplitMerge(nn.Module):
    """Chunk in two, transform one half, concatenate and shuffle (ShuffleNetV2 unit)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch = ConvBN(c // 2, c // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        y = torch.cat([a, self.branch(b)], dim=1)
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class Depthwise(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = ConvBN(c, c, groups=c)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, 4, 1), nn.ReLU(),
                                nn.Conv2d(4, c, 1), nn.Sigmoid())  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x)
        return y * self.se(y)


class Attention(nn.Module):
    """Spatial positions as tokens through multi-head attention, then back to a feature map."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(c, 16, 1)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.proj_out = nn.Conv2d(16, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj_in(x)
        n, c, h, w = y.shape
        t = y.flatten(2).transpose(1, 2)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return x + self.proj_out(t.transpose(1, 2).reshape(n, c, h, w))


BLOCKS = {
    "residual": Residual,
    "concat": Concat,
    "split": SplitMerge,
    "depthwise": Depthwise,
    "attention": Attention,
}


class RandomNet(nn.Module):
    def __init__(self, kinds: list[str], width: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = ConvBN(3, width)
        blocks, c = [], width
        for kind in kinds:
            block = BLOCKS[kind](c)
            blocks.append(block)
            c = getattr(block, "out_channels", c)
            if c % 2:  # keep widths even for the split block
                blocks.append(ConvBN(c, c + 1))
                c += 1
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def random_net(seed: int) -> RandomNet:
    rng = random.Random(seed)
    kinds = [rng.choice(sorted(BLOCKS)) for _ in range(rng.randint(2, 5))]
    torch.manual_seed(seed)
    net = RandomNet(kinds, width=rng.choice([8, 12, 16]))
    for m in net.modules():  # non-trivial BN statistics so pruning mistakes show up
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
        if isinstance(m, nn.MultiheadAttention):  # sharp attention: head boundaries matter
            m.in_proj_weight.data *= 4
    return net.eval()


@pytest.fixture
def make_net() -> Callable[[int], RandomNet]:
    """``make_net(seed)``: a random small network in eval mode."""
    return random_net


def assert_report_matches_measurement(model: nn.Module, x: torch.Tensor) -> None:
    """The pruning report's figures after pruning (predicted from the trace, without running
    the pruned model) equal those measured on the pruned model: totals and every layer."""
    import torchslim as ts
    from torchslim.prune.report import out_channels

    report, measured = ts.report(model, "prune"), ts.analyze(model, x)
    assert (report.macs_after, report.params_after) == (measured.macs, measured.params)
    rows = {r.name: r for r in measured.layers}
    for layer in report.layers:
        row = rows[layer.name]
        assert (layer.macs_after, layer.params_after, layer.channels_after) == (
            row.macs,
            row.params,
            out_channels(row),
        ), layer.name


@pytest.fixture
def check_report() -> Callable[[nn.Module, torch.Tensor], None]:
    """``check_report(model, x)``: see :func:`assert_report_matches_measurement`."""
    return assert_report_matches_measurement
