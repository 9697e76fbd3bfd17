from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.distill import FeatureHooks
from torchslim.errors import ConfigError


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2)))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_records_named_modules_and_output_in_order() -> None:
    net = _net()
    x = torch.randn(3, 4)
    with FeatureHooks(net, ["2.0", "1", "output"]) as hooks:
        out = net(x)
        feats = hooks.features()
    torch.testing.assert_close(feats[0], out)
    torch.testing.assert_close(feats[1], torch.relu(net[0](x)))
    assert feats[2] is out
    assert _hook_count(net) == 0


def test_hooks_are_removed_after_an_error() -> None:
    net = _net()
    with pytest.raises(RuntimeError), FeatureHooks(net, ["1"]):
        net(torch.randn(3, 5))
    assert _hook_count(net) == 0


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"no module 'relu'.*'output'"):
        FeatureHooks(_net(), ["relu"])
    with pytest.raises(ConfigError, match=r"did you mean '2\.0'"):
        FeatureHooks(_net(), ["2.O"])


def test_module_that_did_not_run_is_reported() -> None:
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    net = Skips()
    with FeatureHooks(net, ["unused"]) as hooks:
        net(torch.randn(1, 2))
        with pytest.raises(ConfigError, match="did not run"):
            hooks.features()
