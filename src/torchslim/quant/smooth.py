"""SmoothQuant (Xiao et al., 2023): a Linear's input outlier channels moved into its weight
columns, so that one int8 range per tensor holds the input; with a per-tensor search of the
migration strength."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchslim.quant.fake_quant import WeightQuantize, quantize_dequantize
from torchslim.quant.observers import QuantSpec, affine_qparams

# The migration strengths :func:`search_alpha` tries.
ALPHAS = tuple(round(0.05 * k, 2) for k in range(5, 20))  # 0.25 .. 0.95


def _factors(weights: Sequence[torch.Tensor], input_amax: torch.Tensor,
             alpha: float) -> torch.Tensor:  # fmt: skip
    w_amax = torch.stack([w.detach().abs().amax(0) for w in weights]).amax(0).clamp(min=1e-5)
    return (input_amax.clamp(min=1e-5) ** alpha / w_amax ** (1 - alpha)).clamp(min=1e-5)


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
    s = _factors([m.weight for m in layers], input_amax, alpha)
    for m in layers:
        m.weight.mul_(s)
    return s


def smooth_linear(layer: nn.Linear, input_amax: torch.Tensor, alpha: float) -> torch.Tensor:
    """:func:`smoothing_factors` for one Linear that scales its own input: ``1 / s`` is kept
    as its ``input_smooth`` buffer, applied in its forward (a ``Mul`` in ONNX). Returns ``s``.

    Example:
        >>> from torchslim.quant.qmodules import to_quantized
        >>> layer = to_quantized(nn.Linear(3, 2), QuantSpec(bits=8, per_channel=True))
        >>> x = torch.tensor([[1.0, 50.0, -0.5]])
        >>> before = torch.nn.functional.linear(x, layer.weight, layer.bias)
        >>> s = smooth_linear(layer, x.abs().amax(0), alpha=0.5)
        >>> torch.allclose(layer(x), before, atol=0.05)  # through its int8 weight
        True
    """
    s = smoothing_factors([layer], input_amax, alpha)
    layer.register_buffer("input_smooth", (1.0 / s).to(layer.weight.dtype))
    return s


@torch.no_grad()
def search_alpha(
    layers: Sequence[nn.Linear],
    rows: torch.Tensor,
    input_amax: torch.Tensor,
    weight_spec: QuantSpec,
    act_bits: int = 8,
    alphas: Sequence[float] = ALPHAS,
) -> float:
    """The migration strength of ``alphas`` whose quantized output is closest to float: for
    each, ``rows`` (a sample of the input the ``layers`` share, ``[n, in]``) divided by the
    smoothing factors and quantized to ``act_bits`` over its range, times each weight
    multiplied by them and quantized by ``weight_spec``; the squared error of the outputs
    against the float ones, summed over ``layers``. The weights are not changed.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> layer = nn.Linear(16, 8)
        >>> x = torch.randn(256, 16)
        >>> x[:, 3] *= 40  # an outlier channel
        >>> a = search_alpha([layer], x, x.abs().amax(0), QuantSpec(per_channel=True))
        >>> 0.25 <= a <= 0.95
        True
    """
    x = rows.detach().float()
    reference = [x @ m.weight.detach().float().T for m in layers]
    best, best_error = alphas[0], float("inf")
    for alpha in alphas:
        s = _factors([m.weight for m in layers], input_amax, alpha)
        xs = x / s
        scale, zero = affine_qparams(xs.min(), xs.max(), act_bits)
        xq = quantize_dequantize(xs, scale, zero, 0, 2**act_bits - 1)
        error = 0.0
        for m, ref in zip(layers, reference, strict=True):
            wq = WeightQuantize(weight_spec)(m.weight.detach().float() * s)
            error += float((xq @ wq.T - ref).square().sum())
        if error < best_error:
            best, best_error = alpha, error
    return float(best)
