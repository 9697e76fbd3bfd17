"""Fold BatchNorm into the convolution or linear layer before it (inference only).

``y = γ (W x + b - μ) / sqrt(σ² + ε) + β`` becomes a layer with ``W' = W γ / sqrt(σ² + ε)``
and ``b' = (b - μ) γ / sqrt(σ² + ε) + β``; the BatchNorm is replaced by ``nn.Identity``.
"""

from __future__ import annotations

import logging

import torch
from torch import fx, nn

from torchslim.errors import UnsupportedOpError

log = logging.getLogger("torchslim.quant")

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def fold_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``bn``'s running statistics and affine parameters into ``layer`` in place.

    Example:
        >>> conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval()
        >>> x = torch.randn(1, 3, 8, 8)
        >>> ref = bn(conv(x))
        >>> fold_into(conv, bn)
        >>> torch.allclose(conv(x), ref, atol=1e-5)
        True
    """
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedOpError(f"cannot fold {type(bn).__name__} without running statistics")
    with torch.no_grad():
        inv = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(inv)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(inv)
        factor = gamma * inv
        w = layer.weight
        if isinstance(layer, nn.modules.conv._ConvNd) and layer.transposed:
            shape = [1, -1] + [1] * (w.ndim - 2)  # weight is [in, out/groups, ...]
            if layer.groups != 1:
                raise UnsupportedOpError("folding BN into a grouped transposed conv")
        else:
            shape = [-1] + [1] * (w.ndim - 1)
        w.mul_(factor.reshape(shape))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * factor + beta
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias)
        else:
            layer.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every BatchNorm whose only input is a conv/linear used by nothing else.

    Found by ``torch.fx`` tracing; returns the ``(layer, batchnorm)`` names folded. The model
    must be in eval mode semantics afterwards (the statistics are frozen into the weights).

    Example:
        >>> m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
        >>> fold_batchnorm(m)
        [('0', '1')]
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types for untraceable Python
        log.warning("fold_batchnorm: torch.fx cannot trace %s (%s); nothing folded",
                    type(model).__name__, exc)  # fmt: skip
        return []
    modules = dict(model.named_modules())
    folded = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        bn = modules.get(str(node.target))
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or len(node.args) != 1:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        layer = modules.get(str(src.target))
        if isinstance(layer, _FOLDABLE):
            fold_into(layer, bn)
            model.set_submodule(str(node.target), nn.Identity())
            folded.append((str(src.target), str(node.target)))
    return folded
