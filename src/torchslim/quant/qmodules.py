"""Quantized layers: convolutions and linears whose weights pass through a fake quantizer.

The float module's class is swapped in place (``to_quantized``), so parameter names, hooks and
state-dict keys stay as they were; only ``weight_fake_quant`` is added.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.quant.fake_quant import WeightQuantize
from torchslim.quant.observers import QuantSpec


class _QuantWeight:
    weight: nn.Parameter
    weight_fake_quant: WeightQuantize

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_fake_quant(self.weight)


class QuantConv1d(_QuantWeight, nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantConv2d(_QuantWeight, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantConv3d(_QuantWeight, nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantLinear(_QuantWeight, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


QUANT_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
    nn.Linear: QuantLinear,
}
FLOAT_CLASSES = {v: k for k, v in QUANT_CLASSES.items()}


def is_quantizable(module: nn.Module) -> bool:
    """Exactly one of the float classes with a quantized counterpart (not subclasses)."""
    return type(module) in QUANT_CLASSES


def to_quantized(module: nn.Module, spec: QuantSpec) -> nn.Module:
    """Turn a float Conv/Linear into its fake-quantized class in place and return it.

    Example:
        >>> layer = to_quantized(nn.Linear(4, 2), QuantSpec(bits=8, per_channel=True))
        >>> type(layer).__name__, layer(torch.randn(3, 4)).shape
        ('QuantLinear', torch.Size([3, 2]))
    """
    module.__class__ = QUANT_CLASSES[type(module)]
    module.weight_fake_quant = WeightQuantize(spec)
    return module


def to_float(module: nn.Module) -> nn.Module:
    """Undo :func:`to_quantized` (the weights are untouched)."""
    if type(module) in FLOAT_CLASSES:
        del module.weight_fake_quant
        module.__class__ = FLOAT_CLASSES[type(module)]
    return module
