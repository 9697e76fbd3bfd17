"""MobileNetV1 (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018) with width multipliers.

``small_input=True`` (the default) adapts the striding to 28-32 px images: the stem and the
first downsampling stage keep stride 1, so a 32x32 input ends at 4x4 instead of 1x1.
``small_input=False`` is the ImageNet network. torchvision's ``mobilenet_v2`` is a separate
name that passes through to torchvision; these are ``mobilenetv1`` / ``mobilenetv2``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from torchslim.errors import ConfigError


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never dropping more than 10%.

    Example:
        >>> make_divisible(32 * 0.35)
        16
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _conv_bn_act(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: type = nn.ReLU
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        act(),
    )


def _check_width(width_mult: float) -> None:
    if width_mult <= 0:
        raise ConfigError(f"width_mult: must be > 0, got {width_mult}")


class MobileNetV1(nn.Module):
    """Depthwise-separable stack 32-64-128-128-256-256-512x6-1024-1024."""

    # (output channels, stride) of each depthwise-separable block
    BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5,
              (1024, 2), (1024, 1))  # fmt: skip

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        small_input: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_width(width_mult)
        cin = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [self._stem(in_channels, cin, 1 if small_input else 2)]
        for i, (c, s) in enumerate(self.BLOCKS):
            cout = make_divisible(c * width_mult)
            stride = 1 if small_input and i == 1 else s
            layers.append(
                nn.Sequential(
                    _conv_bn_act(cin, cin, 3, stride, groups=cin),  # depthwise 3x3
                    _conv_bn_act(cin, cout, 1),  # pointwise 1x1
                )
            )
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    @staticmethod
    def _stem(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))


class InvertedResidual(nn.Module):
    """Expand 1x1 (ReLU6), depthwise 3x3 (ReLU6), linear 1x1 projection; residual if same shape."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_act(cin, hidden, 1, act=nn.ReLU6))
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)

    def zero_init_last(self) -> bool:
        """Zero the projection BN scale of a residual block so it starts as the identity."""
        if self.use_residual:
            nn.init.zeros_(self.conv[-1].weight)
        return self.use_residual


class MobileNetV2(nn.Module):
    """Inverted residuals with linear bottlenecks; channels rounded to multiples of 8."""

    # expansion t, channels c, repeats n, first stride s
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        small_input: bool = True,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        _check_width(width_mult)
        cin = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, cin, 3, 1 if small_input else 2, 1, bias=False),
                nn.BatchNorm2d(cin),
                nn.ReLU6(),
            )
        ]
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            cout = make_divisible(c * width_mult)
            for j in range(n):
                stride = s if j == 0 and not (small_input and i == 1) else 1
                layers.append(InvertedResidual(cin, cout, stride, t))
                cin = cout
        layers.append(_conv_bn_act(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))


def mobilenetv1(
    num_classes: int = 1000,
    in_channels: int = 3,
    width_mult: float = 1.0,
    small_input: bool = True,
    dropout: float = 0.0,
) -> MobileNetV1:
    """MobileNetV1. Example: ``create("mobilenetv1", num_classes=10, width_mult=0.25)``."""
    return MobileNetV1(num_classes, in_channels, width_mult, small_input, dropout)


def mobilenetv2(
    num_classes: int = 1000,
    in_channels: int = 3,
    width_mult: float = 1.0,
    small_input: bool = True,
    dropout: float = 0.2,
) -> MobileNetV2:
    """MobileNetV2. Example: ``create("mobilenetv2", num_classes=10, width_mult=0.5)``."""
    return MobileNetV2(num_classes, in_channels, width_mult, small_input, dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mobilenetv1": mobilenetv1,
    "mobilenetv2": mobilenetv2,
}
