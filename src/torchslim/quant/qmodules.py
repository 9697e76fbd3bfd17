"""Quantized layers: convolutions and linears whose weights pass through a fake quantizer.

The float module's class is swapped in place (``to_quantized``), so parameter names, hooks and
state-dict keys stay as they were; only ``weight_fake_quant`` is added.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.quant.fake_quant import WeightQuantize, quantize_dequantize
from torchslim.quant.observers import QuantSpec, affine_qparams


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
    """A fake-quantized Linear; with ``input_fake_quant`` (dynamic quantization) the input is
    quantized with its own range on every call, and the ONNX export is the integer pattern ONNX
    Runtime fuses into ``DynamicQuantizeMatMul`` (see :class:`DynamicInt8Linear`). An
    ``input_smooth`` buffer (SmoothQuant, see :func:`smooth_linear`) scales the input's
    channels first (a ``Mul`` in ONNX). A dynamic quantizer with ``per_token`` set divides each
    token by its largest magnitude before the range is taken and multiplies the output back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smooth = self._buffers.get("input_smooth")  # SmoothQuant: 1 / s per input channel
        if smooth is not None:
            x = x * smooth
        dynamic = self._modules.get("input_fake_quant")
        if dynamic is None:
            return F.linear(x, self.quantized_weight(), self.bias)
        rows = dynamic.token_scales(x) if getattr(dynamic, "per_token", False) else None
        bias = self.bias if rows is None else None
        if rows is not None:
            x = x / rows
        onnx_form = getattr(self, "onnx_int8", None)
        if onnx_form is not None and torch.onnx.is_in_onnx_export():
            out = DynamicInt8Linear.apply(x, *onnx_form, bias)
        else:
            out = F.linear(dynamic(x), self.quantized_weight(), bias)
        if rows is None:
            return out
        out = out * rows
        return out if self.bias is None else out + self.bias


class QuantEmbedding(_QuantWeight, nn.Embedding):
    """An embedding table on an integer grid, one scale per row (per token): exported as an
    int8 initializer, ``DequantizeLinear`` and ``Gather``, so the file holds a byte per value."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        onnx_form = getattr(self, "onnx_int8", None)
        if onnx_form is not None and torch.onnx.is_in_onnx_export():
            return GatherDequantize.apply(ids, *onnx_form)
        return F.embedding(ids, self.quantized_weight(), self.padding_idx, self.max_norm,
                           self.norm_type, self.scale_grad_by_freq, self.sparse)  # fmt: skip


class GatherDequantize(torch.autograd.Function):
    """ONNX form of an int8 embedding lookup: ``Gather`` the int8 rows (and, with one scale per
    row, their scales), then ``Cast`` and ``Mul``. Only the looked-up rows are dequantized on
    each run, not the whole table (a ``DequantizeLinear`` before the ``Gather``, which ONNX
    Runtime does not fold, would dequantize 30,522 x 384 values per call for a BERT
    vocabulary).

    Arguments: the ids, the int8 table and its scales, ``[rows, 1]`` (per row) or
    ``[columns]`` (per column), made outside the trace so that they export as constants (see
    ``torchslim.export.onnx``).
    """

    @staticmethod
    def forward(ctx: object, ids: torch.Tensor, table: torch.Tensor,
                scales: torch.Tensor) -> torch.Tensor:  # fmt: skip
        return table[ids].float() * (scales[ids] if scales.dim() == 2 else scales)

    @staticmethod
    def symbolic(g: Any, ids: Any, table: Any, scales: Any) -> Any:
        rows = g.op("Cast", g.op("Gather", table, ids, axis_i=0), to_i=1)  # 1: FLOAT
        if scales.type().dim() == 2:  # one scale per row: gathered with the rows
            scales = g.op("Gather", scales, ids, axis_i=0)
        return g.op("Mul", rows, scales)


def onnx_int8_table(table: QuantEmbedding) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(int8 table, scales)`` of a symmetric 8-bit embedding for :class:`GatherDequantize`:
    scales ``[rows, 1]`` (one per row) or ``[columns]`` (one per column); None when it is
    not on such a grid. The table must already be frozen on its grid
    (``WeightQuantize.freeze``).

    Example:
        >>> emb = to_quantized(nn.Embedding(5, 3), QuantSpec(bits=8, per_channel=True))
        >>> _ = emb.weight_fake_quant.freeze(emb.weight)
        >>> q, scales = onnx_int8_table(emb)
        >>> q.dtype, tuple(q.shape), tuple(scales.shape)
        (torch.int8, (5, 3), (5, 1))
    """
    wq = table.weight_fake_quant
    if wq.frozen is None or wq.spec.bits != 8:
        return None
    scale, zero = (t.detach().to(torch.float32) for t in wq.frozen)
    if zero.abs().max() > 0:
        return None
    if scale.numel() > 1 and wq.spec.ch_axis == 1:
        scale = scale.reshape(-1)  # per column: broadcast over the rows
    elif scale.numel() > 1:
        scale = scale.reshape(-1, 1)
    else:
        scale = scale.reshape(1, 1).expand(table.weight.shape[0], 1)
    q = torch.round(table.weight.detach() / scale).clamp(-128, 127).to(torch.int8)
    return q, scale.contiguous()


def onnx_none(value: Any) -> bool:
    """Whether an argument of an ONNX ``symbolic`` is absent (None, or a graph value that
    must be None, as an exported ``bias=None`` is)."""
    return value is None or (hasattr(value, "node") and value.node().mustBeNone())


class DynamicInt8Linear(torch.autograd.Function):
    """ONNX form of a dynamically quantized Linear: ``DynamicQuantizeLinear`` (uint8 input,
    range of this input) -> ``MatMulInteger`` with the int8 weight -> ``Cast`` -> ``Mul`` by both
    scales -> ``Add`` bias — ONNX Runtime's own ``quantize_dynamic`` pattern, which it runs as
    one integer kernel. ``forward`` computes the same in float for the exporter's trace.

    Arguments: the input, the int8 weight transposed ``[in, out]``, its zero points and scales
    (per output channel, or one), and the bias (or None). The weight tensors must be made
    outside the trace (see ``torchslim.export.onnx``) so they export as constants.
    """

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, w_t: torch.Tensor, w_zero: torch.Tensor,
                w_scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        lo, hi = x.min(), x.max()
        scale, zero = affine_qparams(lo, hi, 8)
        xq = quantize_dequantize(x, scale, zero, 0, 255)
        w = (w_t.float() - w_zero.float()) * w_scale
        out = xq @ w
        return out + bias if bias is not None else out

    @staticmethod
    def symbolic(g: Any, x: Any, w_t: Any, w_zero: Any, w_scale: Any, bias: Any) -> Any:
        xq, x_scale, x_zero = g.op("DynamicQuantizeLinear", x, outputs=3)
        acc = g.op("MatMulInteger", xq, w_t, x_zero, w_zero)
        out = g.op("Mul", g.op("Cast", acc, to_i=1), g.op("Mul", x_scale, w_scale))  # 1: FLOAT
        return out if onnx_none(bias) else g.op("Add", out, bias)


def onnx_int8_weight(
    layer: QuantLinear,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The int8 weight of a dynamically quantized Linear for :class:`DynamicInt8Linear`:
    ``(weight transposed [in, out], zero points, scales)``; None when not 8-bit-representable.

    The weight must already be frozen on its grid (``WeightQuantize.freeze``).

    Example:
        >>> layer = to_quantized(nn.Linear(4, 2), QuantSpec(bits=8, per_channel=True))
        >>> _ = layer.weight_fake_quant.freeze(layer.weight)
        >>> w_t, zero, scale = onnx_int8_weight(layer)
        >>> w_t.dtype, tuple(w_t.shape), tuple(zero.shape), tuple(scale.shape)
        (torch.int8, (4, 2), (2,), (2,))
    """
    wq = layer.weight_fake_quant
    if wq.frozen is None:
        return None
    scale, zero = (t.detach().to(torch.float32) for t in wq.frozen)
    if zero.abs().max() > 0:
        return None  # affine weights: left to the generic (float Gemm) export
    per_channel = scale.numel() > 1
    scale = scale.reshape(-1) if per_channel else scale.reshape(())
    q = torch.round(layer.weight.detach() / (scale[:, None] if per_channel else scale))
    q = q.clamp(-128, 127).to(torch.int8)
    return q.t().contiguous(), torch.zeros(scale.shape, dtype=torch.int8), scale


QUANT_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
    nn.Linear: QuantLinear,
}


def is_quantizable(module: nn.Module) -> bool:
    """Exactly one of the float classes with a quantized counterpart (not subclasses)."""
    return type(module) in QUANT_CLASSES


def to_quantized(module: nn.Module, spec: QuantSpec) -> nn.Module:
    """Turn a float Conv/Linear (or an Embedding) into its fake-quantized class in place and
    return it.

    Example:
        >>> layer = to_quantized(nn.Linear(4, 2), QuantSpec(bits=8, per_channel=True))
        >>> type(layer).__name__, layer(torch.randn(3, 4)).shape
        ('QuantLinear', torch.Size([3, 2]))
        >>> table = to_quantized(nn.Embedding(10, 4), QuantSpec(bits=8, per_channel=True))
        >>> type(table).__name__, table(torch.tensor([[1, 2]])).shape
        ('QuantEmbedding', torch.Size([1, 2, 4]))
    """
    module.__class__ = {**QUANT_CLASSES, nn.Embedding: QuantEmbedding}[type(module)]
    module.weight_fake_quant = WeightQuantize(spec)
    return module
