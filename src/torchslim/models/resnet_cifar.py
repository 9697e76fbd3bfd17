"""CIFAR-style ResNets (He et al. 2016): 6n+2 layers, stages of 16/32/64 channels.

Options follow "Bag of Tricks" (He et al. 2019): ``stem="deep"`` is ResNet-C (three 3x3 convs in
the stem) and ``downsample="avgpool"`` is ResNet-D (average pooling before the 1x1 projection).
ResNet-B moves the stride of a bottleneck from its 1x1 to its 3x3 conv; a BasicBlock already
strides in its first 3x3 conv, so it needs no option here. Shortcuts that change shape are
1x1 conv + BN projections (never zero padding), so channels can be pruned through them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from torchslim.errors import ConfigError


def _conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, downsample: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        elif downsample == "avgpool":
            pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, *_conv_bn(cin, cout, 1, kernel=1))
        else:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, stride, kernel=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))

    def zero_init_last(self) -> bool:
        """Zero the last BN scale so the block starts as its shortcut (Goyal et al. 2017)."""
        nn.init.zeros_(self.bn2.weight)
        return True


class CifarResNet(nn.Module):
    """ResNet for small (28-32 px) images; ``depth = 6n + 2``."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        stem: Literal["basic", "deep"] = "basic",
        downsample: Literal["conv", "avgpool"] = "conv",
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ConfigError(f"depth: a CIFAR ResNet has 6n+2 layers (8, 14, 20...), got {depth}")
        if stem not in ("basic", "deep"):
            raise ConfigError(f"stem: expected 'basic' or 'deep' (ResNet-C), got {stem!r}")
        if downsample not in ("conv", "avgpool"):
            raise ConfigError(
                f"downsample: expected 'conv' or 'avgpool' (ResNet-D), got {downsample!r}"
            )
        blocks = (depth - 2) // 6
        if stem == "deep":
            half = max(width // 2, 1)
            layers = [*_conv_bn(in_channels, half), nn.ReLU(), *_conv_bn(half, half), nn.ReLU()]
            layers += [*_conv_bn(half, width), nn.ReLU()]
        else:
            layers = [*_conv_bn(in_channels, width), nn.ReLU()]
        self.stem = nn.Sequential(*layers)
        cin, stages = width, []
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            stage = []
            for b in range(blocks):
                stride = 2 if i > 0 and b == 0 else 1
                stage.append(BasicBlock(cin, cout, stride, downsample))
                cin = cout
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


def _make(depth: int) -> Callable[..., CifarResNet]:
    def build(
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        stem: Literal["basic", "deep"] = "basic",
        downsample: Literal["conv", "avgpool"] = "conv",
    ) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_channels, width, stem, downsample)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR-style ResNet-{depth} (He et al. 2016). Example: create('resnet{depth}')"
    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    f"resnet{depth}": _make(depth) for depth in (8, 14, 20, 32, 44, 56, 110)
}
