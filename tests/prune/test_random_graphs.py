"""Property tests on randomly generated small graphs (adds, concats, splits, depthwise, shuffles,
squeeze-excitation, attention)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from torchslim.graph import trace
from torchslim.prune import Pruner, prune
from torchslim.prune.pruner import build_groups

SEEDS = list(range(12))
X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_any_ratio_gives_a_runnable_model_of_the_same_output_shape(
    seed: int,
    ratio: float,
    make_net: Callable[[int], nn.Module],
    check_report: Callable[[nn.Module, torch.Tensor], None],
) -> None:
    net = make_net(seed)
    params = sum(p.numel() for p in net.parameters())
    prune(net, X, {"ratio": ratio})
    out = net(X)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert sum(p.numel() for p in net.parameters()) < params
    check_report(net, X)  # the report's predicted figures equal the measured ones


@pytest.mark.parametrize("seed", SEEDS)
def test_ratio_zero_is_exact(seed: int, make_net: Callable[[int], nn.Module]) -> None:
    net = make_net(seed)
    with torch.no_grad():
        before = net(X)
    shapes = {n: p.shape for n, p in net.named_parameters()}
    prune(net, X, {"ratio": 0.0})
    assert {n: p.shape for n, p in net.named_parameters()} == shapes
    with torch.no_grad():
        torch.testing.assert_close(net(X), before, rtol=0, atol=0)


def _kill_half_of_every_group(net: torch.nn.Module) -> None:
    """Zero every parameter slice of half the channels of each group: they become dead."""
    graph = trace(net, X)
    with torch.no_grad():
        for group in build_groups(graph, allow_inner=False):
            dead = torch.randperm(group.size)[: group.size // 2]
            for m in group.members:
                moved = m.param.data.movedim(m.dim, 0)
                moved[m.positions[dead].reshape(-1)] = 0


@pytest.mark.parametrize("seed", SEEDS)
def test_removing_dead_channels_leaves_outputs_unchanged(
    seed: int, make_net: Callable[[int], nn.Module]
) -> None:
    net = make_net(seed)
    torch.manual_seed(100 + seed)
    _kill_half_of_every_group(net)
    with torch.no_grad():
        before = net(X)
    pruner = Pruner(net, X, {"ratio": 0.5, "importance": "l1"}).prune()
    assert (
        pruner.report is not None and pruner.report.channels_after < pruner.report.channels_before
    )
    with torch.no_grad():
        torch.testing.assert_close(net(X), before, rtol=1e-4, atol=1e-4)
