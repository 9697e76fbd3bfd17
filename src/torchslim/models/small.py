"""Small reference models: a compact CNN for tests and quick runs, and an MLP (Hinton MNIST)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from torchslim.errors import ConfigError


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-maxpool blocks and a linear classifier (~100k parameters at 32-64-128)."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128)
    ) -> None:
        super().__init__()
        if not widths or any(w <= 0 for w in widths):
            raise ConfigError(f"widths: expected positive channel counts, got {list(widths)}")
        layers: list[nn.Module] = []
        cin = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


class MLP(nn.Module):
    """Flatten, then Linear-ReLU(-Dropout) hidden layers and a linear output."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        hidden: Sequence[int] = (1200, 1200),
        in_features: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {dropout}")
        width = in_features if in_features is not None else in_channels * 28 * 28
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def smallcnn(
    num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128)
) -> SmallCNN:
    """A small CNN. Example: ``create("smallcnn", num_classes=10, in_channels=1)``."""
    return SmallCNN(num_classes, in_channels, widths)


def mlp(
    num_classes: int = 10,
    in_channels: int = 1,
    hidden: Sequence[int] = (1200, 1200),
    in_features: int | None = None,
    dropout: float = 0.0,
) -> MLP:
    """An MLP; 28x28 inputs by default. Example: ``create("mlp", hidden=(800, 800))``."""
    return MLP(num_classes, in_channels, hidden, in_features, dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {"smallcnn": smallcnn, "mlp": mlp}
