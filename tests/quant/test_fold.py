from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from torchslim.quant.fold import fold_batchnorm, fold_into


def _randomise_bn(model: nn.Module) -> None:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"]
)
def test_folding_is_equivalent_on_torchvision(name: str) -> None:
    model = torchvision.models.get_model(name, num_classes=10).eval()
    _randomise_bn(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        folded = fold_batchnorm(model)
        out = model(x)
    assert folded and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_fold_into_linear_without_bias_and_shared_output_is_left_alone() -> None:
    lin, bn = nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3).eval()
    _randomise_bn(bn)
    x = torch.randn(5, 4)
    ref = bn(lin(x))
    fold_into(lin, bn)
    torch.testing.assert_close(lin(x), ref)

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # the conv output is used twice: folding would be wrong

    assert fold_batchnorm(Shared().eval()) == []
