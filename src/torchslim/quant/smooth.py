"""SmoothQuant (Xiao et al., 2023): a Linear's input outlier channels moved into its weight
columns, so that one int8 range per tensor holds the input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchslim.quant.fake_quant import float16_values


@torch.no_grad()
def smoothing_factors(layers: Sequence[nn.Linear], input_amax: torch.Tensor,
                      alpha: float) -> torch.Tensor:  # fmt: skip
    """SmoothQuant for Linears that read one input: with ``input_amax`` the largest |input| per
    input channel seen on calibration data and ``max|w|`` the largest weight of each input
    channel over all ``layers``, ``s = amax^alpha / max|w|^(1 - alpha)``. Every layer's weight
    columns are multiplied by ``s``; the caller divides the input by ``s``. The input's outlier
    channels move into the weights, which are quantized per output channel. Returns ``s``.

    Example:
        >>> q, k = nn.Linear(3, 2), nn.Linear(3, 4)
        >>> x = torch.tensor([[1.0, 50.0, -0.5]])
        >>> before = q(x)
        >>> s = smoothing_factors([q, k], x.abs().amax(0), alpha=0.5)
        >>> torch.allclose(q(x / s), before)
        True
    """
    w_amax = torch.stack([m.weight.abs().amax(0) for m in layers]).amax(0).clamp(min=1e-5)
    s = (input_amax.clamp(min=1e-5) ** alpha / w_amax ** (1 - alpha)).clamp(min=1e-5)
    for m in layers:
        m.weight.mul_(s)
    return s


def smooth_linear(layers: nn.Linear | Sequence[nn.Linear], input_amax: torch.Tensor,
                  alpha: float) -> torch.Tensor:  # fmt: skip
    """:func:`smoothing_factors` for Linears that each scale their own input (one Linear, or
    several reading one input: they get the same factors): ``1 / s``, as float16 values (a
    file stores them in half the bytes), is kept as each one's ``input_smooth`` buffer,
    applied in its forward (a ``Mul`` in ONNX). Returns ``s``.

    Example:
        >>> from torchslim.quant.observers import QuantSpec
        >>> from torchslim.quant.qmodules import to_quantized
        >>> layer = to_quantized(nn.Linear(3, 2), QuantSpec(bits=8, per_channel=True))
        >>> x = torch.tensor([[1.0, 50.0, -0.5]])
        >>> before = torch.nn.functional.linear(x, layer.weight, layer.bias)
        >>> s = smooth_linear(layer, x.abs().amax(0), alpha=0.5)
        >>> torch.allclose(layer(x), before, atol=0.05)  # through its int8 weight
        True
    """
    layers = [layers] if isinstance(layers, nn.Linear) else list(layers)
    inverse = half_inverse(layers, smoothing_factors(layers, input_amax, alpha))
    for layer in layers:
        layer.register_buffer("input_smooth", inverse.to(layer.weight.dtype))
    return 1.0 / inverse


@torch.no_grad()
def half_inverse(layers: Sequence[nn.Linear], s: torch.Tensor) -> torch.Tensor:
    """The input's multiplier ``1 / s`` of Linears smoothed by ``s`` (their weight columns
    hold ``s``), as float16 values (a file stores it in half the bytes): the columns are
    corrected to hold ``1 / inverse`` instead, so the product is unchanged. Returns it.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> x = torch.tensor([[1.0, 50.0, -0.5]])
        >>> before = layer(x)
        >>> inverse = half_inverse([layer], smoothing_factors([layer], x.abs().amax(0), 0.5))
        >>> torch.allclose(layer(x * inverse), before, atol=1e-5)
        True
        >>> inverse.half().float().equal(inverse)
        True
    """
    inverse = float16_values((1.0 / s).float())
    for layer in layers:  # the columns times 1 / inverse instead of s
        layer.weight.mul_((1.0 / (inverse * s)).to(layer.weight.dtype))
    return inverse
