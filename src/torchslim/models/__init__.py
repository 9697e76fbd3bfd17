"""The small reference zoo and a name registry: torchvision (every task), timm and your own
constructors by name; how to rebuild a model built elsewhere (:mod:`torchslim.models.specs`)."""

from __future__ import annotations

from torch import nn

from torchslim.models.mobilenet import MobileNetV1, MobileNetV2, make_divisible
from torchslim.models.registry import (
    create,
    is_registered,
    list_models,
    register_model,
    unregister_model,
)
from torchslim.models.resnet_cifar import CifarResNet
from torchslim.models.small import MLP, SmallCNN


def zero_init_last_bn(model: nn.Module) -> int:
    """Zero the last BatchNorm scale of every residual block; returns how many were zeroed.

    Uses each block's ``zero_init_last()`` (torchslim and timm convention) and knows
    torchvision's ResNet ``BasicBlock`` / ``Bottleneck``.

    Example:
        >>> zero_init_last_bn(create("resnet20", num_classes=10))
        9
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    count = 0
    for module in model.modules():
        if hasattr(module, "zero_init_last"):
            # torchslim's blocks return False when they have no residual to zero (timm's: None).
            count += module.zero_init_last() is not False
        elif isinstance(module, BasicBlock):
            nn.init.zeros_(module.bn2.weight)
            count += 1
        elif isinstance(module, Bottleneck):
            nn.init.zeros_(module.bn3.weight)
            count += 1
    return count


__all__ = [
    "MLP",
    "CifarResNet",
    "MobileNetV1",
    "MobileNetV2",
    "SmallCNN",
    "create",
    "is_registered",
    "list_models",
    "make_divisible",
    "register_model",
    "unregister_model",
    "zero_init_last_bn",
]
