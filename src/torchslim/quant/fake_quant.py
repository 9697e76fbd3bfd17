"""Fake quantization for training: straight-through rounding, LSQ scales, PACT clipping.

All quantizers map a float tensor to the float values of its quantized grid (quantize then
dequantize) so the rest of the network is unchanged; gradients pass with the straight-through
estimator (STE).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchslim.quant.observers import Observer, QuantSpec, affine_qparams, weight_qparams


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity gradient backward.

    Example:
        >>> x = torch.tensor([0.4, 1.6], requires_grad=True)
        >>> round_ste(x).sum().backward(); x.grad.tolist()
        [1.0, 1.0]
    """
    return x + (torch.round(x) - x).detach()


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int, axis: int = 0
) -> torch.Tensor:
    """Quantize-dequantize with STE; inputs outside the range get zero gradient (clipped).

    ``scale``/``zero`` are scalars or one value per channel along ``axis``.

    Example:
        >>> fake_quantize(torch.tensor([0.26, 5.0]), torch.tensor(0.1), torch.tensor(0), -8, 7)
        tensor([0.3000, 0.7000])
    """
    if scale.numel() > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    q = torch.clamp(round_ste(x / scale) + zero, qmin, qmax)
    return (q - zero) * scale


_ONNX_RANGES = ((-128, 127), (0, 255))


def quantize_dequantize(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int, axis: int = 0
) -> torch.Tensor:
    """Fake quantization through PyTorch's own ops, which export to ONNX QuantizeLinear +
    DequantizeLinear; gradients pass straight through inside the range, zero outside.

    Rounds half to even, as ONNX QuantizeLinear does, so PyTorch and ONNX Runtime agree.

    Example:
        >>> quantize_dequantize(torch.tensor([0.25, 0.35]), torch.tensor(0.1),
        ...                     torch.tensor(0, dtype=torch.int32), -128, 127)
        tensor([0.2000, 0.4000])
    """
    scale = scale.to(torch.float32)
    zero = zero.to(torch.int32)
    if torch.onnx.is_in_onnx_export() and (qmin, qmax) not in _ONNX_RANGES:
        # ONNX holds 8-bit integers: clip to the narrower grid, then use the 8-bit container
        shape = [-1 if d == axis else 1 for d in range(x.ndim)] if scale.numel() > 1 else []
        lo = ((qmin - zero) * scale).reshape(shape)
        hi = ((qmax - zero) * scale).reshape(shape)
        x = torch.maximum(torch.minimum(x, hi), lo)
        qmin, qmax = (-128, 127) if qmin < 0 else (0, 255)
    if scale.numel() > 1:
        return torch.fake_quantize_per_channel_affine(x, scale, zero, axis, qmin, qmax)
    return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()), zero.reshape(()), qmin, qmax)


FLOAT16_TINY, FLOAT16_MAX = 2.0**-14, 65504.0  # float16's smallest normal, its largest


def float16_values(t: torch.Tensor, *, up: bool = False, additive: bool = False) -> torch.Tensor:
    """``t`` (float32) rounded to values float16 holds exactly (``up``: never below ``t``),
    so that a file can store them in half the bytes without changing them; ``t`` as it is
    where a non-zero magnitude is outside float16's normal range (subnormals lose digits).
    ``additive``: ``t`` is added, not multiplied (a bias), so magnitudes under float16's
    smallest normal are rounded too (to its subnormals: an absolute error under 2^-25).

    Example:
        >>> float16_values(torch.tensor([0.1, 3.0])).tolist()  # 0.1 is not a float16 value
        [0.0999755859375, 3.0]
        >>> float16_values(torch.tensor([0.1, 1e-9])).tolist() == torch.tensor([0.1, 1e-9]).tolist()
        True
        >>> x = float16_values(torch.tensor([0.1, 3.0]), up=True)
        >>> bool((x >= torch.tensor([0.1, 3.0])).all()), x.half().float().equal(x)
        (True, True)
        >>> b = float16_values(torch.tensor([0.1, 1e-6]), additive=True)
        >>> b.half().float().equal(b), abs(b[1].item() - 1e-6) < 2**-25
        (True, True)
    """
    mag = t.detach().abs()
    if not t.numel() or not torch.isfinite(t).all() or mag.max() > FLOAT16_MAX / 2:
        return t
    if not additive and ((mag > 0) & (mag < FLOAT16_TINY)).any():
        return t
    if not up:
        return t.half().float()
    # x (1 + 2^-10) rounded to the nearest float16 is at least x: a float16 step is 2^-10 x
    # at most, so rounding goes down by at most half of it
    return torch.where(t > 0, (t * (1 + 2.0**-10)).half().float(), t.half().float())


class WeightQuantize(nn.Module):
    """Fake-quantizes a weight with qparams computed from the weight itself on every call.

    Example:
        >>> wq = WeightQuantize(QuantSpec(bits=8, per_channel=True))
        >>> w = torch.tensor([[1.27, 0.004], [0.5, -0.25]])
        >>> wq(w)[0].tolist()
        [1.2699999809265137, 0.0]
    """

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec
        self.enabled = True
        self.frozen: tuple[torch.Tensor, torch.Tensor] | None = None
        self.fixed: FixedQuantize | None = None  # a learned grid (LSQ) kept after convert
        # scales rounded up to float16 values (a dynamic int8 file stores them in 2 bytes)
        self.half_scales = False

    def qparams_of(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for ``w``: the fixed grid if there is one, else from ``w``."""
        if self.fixed is not None:
            return self.fixed.scale, self.fixed.zero_point
        scale, zero = weight_qparams(w, self.spec)
        return (float16_values(scale, up=True), zero) if self.half_scales else (scale, zero)

    def freeze(self, w: torch.Tensor) -> torch.Tensor:
        """Fix scale and zero point as constants and return ``w`` on its quantization grid.

        For export: the caller puts the returned values in the weight, so ONNX sees
        ``QuantizeLinear(initializer)`` with constant parameters and exact 8-bit containers
        even for 2-4 bit grids (the values are already clipped).
        """
        with torch.no_grad():
            scale, zero = self.qparams_of(w)
            qmin, qmax = self.spec.qrange
            values = quantize_dequantize(w.detach(), scale, zero, qmin, qmax, self.spec.ch_axis)
        self.frozen = (scale, zero)
        return values

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        if self.frozen is not None:  # w is on the grid already (see freeze)
            scale, zero = self.frozen
            qmin = -128 if self.spec.symmetric else 0
            return quantize_dequantize(w, scale, zero, qmin, qmin + 255, self.spec.ch_axis)
        scale, zero = self.qparams_of(w)
        qmin, qmax = self.spec.qrange
        return quantize_dequantize(w, scale, zero, qmin, qmax, self.spec.ch_axis)

    def extra_repr(self) -> str:
        s = self.spec
        return f"bits={s.bits}, mapping={s.mapping.value}, per_channel={s.per_channel}"


class DynamicQuantize(nn.Module):
    """Affine per-tensor fake quantization with the range of the current input (no calibration).

    Example:
        >>> dq = DynamicQuantize(8)
        >>> dq(torch.tensor([0.0, 1.0, 2.55])).tolist()
        [0.0, 1.0, 2.549999952316284]
    """

    def __init__(self, bits: int = 8, per_token: bool = False) -> None:
        super().__init__()
        self.bits = bits
        self.enabled = True
        # the layer divides each token (row) by token_scales() first and multiplies after
        self.per_token = per_token

    def token_scales(self, x: torch.Tensor) -> torch.Tensor:
        """The largest magnitude of each row of ``x`` (last axis), ``(..., 1)``, plus the
        dtype's smallest normal number (an all-zero row is then divided by that, not by 0).

        Example:
            >>> s = DynamicQuantize(8).token_scales(torch.tensor([[1.0, -3.0], [0.0, 0.0]]))
            >>> s[0].tolist(), bool(s[1] > 0)
            ([3.0], True)
        """
        return x.detach().abs().amax(-1, keepdim=True) + torch.finfo(x.dtype).tiny

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        lo, hi = x.detach().min(), x.detach().max()
        scale, zero = affine_qparams(lo, hi, self.bits)
        return quantize_dequantize(x, scale, zero, 0, 2**self.bits - 1)


class FakeQuantize(nn.Module):
    """Observe (while ``observing``), then fake-quantize with the observed scale and zero point.

    Example:
        >>> fq = FakeQuantize(QuantSpec(bits=4, mapping="symmetric"))
        >>> _ = fq(torch.tensor([-0.7, 0.7]))  # calibrates
        >>> fq.observing = False
        >>> round(fq(torch.tensor([0.33])).item(), 6)
        0.3
    """

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec
        self.observer = Observer(spec)
        self.enabled = True
        self._observing = True
        self._frozen: tuple[torch.Tensor, torch.Tensor, int, int] | None = None

    @property
    def observing(self) -> bool:
        """While True, every input updates the range; qparams are recomputed from it."""
        return self._observing

    @observing.setter
    def observing(self, value: bool) -> None:
        self._observing = value
        self._frozen = None

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        self._frozen = None  # new ranges: recompute the scale
        super()._load_from_state_dict(*args, **kwargs)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """``(scale, zero_point, qmin, qmax)`` from the observed range (cached once frozen)."""
        if self._frozen is not None:
            return self._frozen
        scale, zero = self.observer.qparams()
        params = (scale.detach(), zero, *self.observer.qrange())
        if not self._observing:
            self._frozen = params
        return params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._observing:
            self.observer(x)
        if not self.enabled or self.observer.min_val.numel() == 0:
            return x
        scale, zero, qmin, qmax = self.qparams()
        return quantize_dequantize(x, scale, zero, qmin, qmax, self.spec.ch_axis)

    def extra_repr(self) -> str:
        s = self.spec
        return f"bits={s.bits}, mapping={s.mapping.value}, per_channel={s.per_channel}"


class SmoothQuantize(FakeQuantize):
    """SmoothQuant's input quantizer, shared by the Linears that read one tensor: the tensor's
    channels are multiplied by ``smooth`` (``1 / s``; those Linears' weight columns hold ``s``,
    see :func:`~torchslim.quant.smooth.smoothing_factors`), then fake-quantized. In ONNX one
    ``Mul`` and one ``QuantizeLinear`` serve every reader (Q, K and V of an attention block).
    Switched off, it still scales: the smoothed model's float output is unchanged.

    Example:
        >>> sq = SmoothQuantize(QuantSpec(bits=8), torch.tensor([1.0, 0.5]))
        >>> sq.enabled = False
        >>> sq(torch.tensor([[2.0, 2.0]]))
        tensor([[2., 1.]])
    """

    def __init__(self, spec: QuantSpec, smooth: torch.Tensor) -> None:
        super().__init__(spec)
        self.register_buffer("smooth", smooth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * self.smooth)


class SharedQuantize(nn.Module):
    """Fake-quantizes with another quantizer's scale and zero point (for max-pool, reshape).

    Example:
        >>> src = FakeQuantize(QuantSpec(bits=8, mapping="affine"))
        >>> _ = src(torch.tensor([0.0, 2.55])); src.observing = False
        >>> SharedQuantize(src)(torch.tensor([1.004])).tolist()
        [1.0]
    """

    def __init__(self, source: FakeQuantize) -> None:
        super().__init__()
        self.__dict__["source"] = source  # a reference, not a submodule
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        src = self.source
        if not self.enabled or not src.enabled or src.observer.min_val.numel() == 0:
            return x
        scale, zero, qmin, qmax = src.qparams()
        return quantize_dequantize(x, scale, zero, qmin, qmax)


class LSQQuantize(nn.Module):
    """Learned step size quantization (Esser et al. 2020): the scale is a trained parameter.

    The scale's gradient is scaled by ``1 / sqrt(numel * qmax)`` as in the paper; the scale is
    initialised from the first batch as ``2 * mean|x| / sqrt(qmax)``.
    """

    def __init__(self, spec: QuantSpec, channels: int = 1) -> None:
        super().__init__()
        self.spec = spec
        self.scale = nn.Parameter(torch.ones(channels if spec.per_channel else 1))
        self.register_buffer("initialized", torch.tensor(False))
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        qmin, qmax = self.spec.qrange
        per_ch = self.spec.per_channel and self.scale.numel() > 1
        if not bool(self.initialized):
            with torch.no_grad():
                dims = [d for d in range(x.ndim) if d != self.spec.ch_axis] if per_ch else None
                mean = x.abs().mean(dims) if dims is not None else x.abs().mean()
                self.scale.copy_((2 * mean / math.sqrt(qmax)).clamp(min=1e-8).reshape(-1))
                self.initialized.fill_(True)
        per_scale = x.numel() / self.scale.numel()
        g = 1.0 / math.sqrt(per_scale * qmax)
        scale = self.scale * g + (self.scale - self.scale * g).detach()  # value s, grad g·ds
        if per_ch:
            shape = [1] * x.ndim
            shape[self.spec.ch_axis] = -1
            scale = scale.reshape(shape)
        return torch.clamp(round_ste(x / scale), qmin, qmax) * scale

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """The learned grid as ``(scale, zero_point, qmin, qmax)``."""
        scale = self.scale.detach().abs().clamp(min=1e-8)
        scale = scale if self.scale.numel() > 1 else scale.reshape(())
        return scale, torch.zeros_like(scale, dtype=torch.int32), *self.spec.qrange


class PACT(nn.Module):
    """PACT (Choi et al. 2018): a ReLU with a learned clipping level α, quantized to k bits.

    ``two_sided=True`` clips to ``[-α, α]`` and quantizes symmetrically (for activations that
    are not followed by a ReLU). ∂y/∂α is 1 where the input is clipped, 0 elsewhere (the
    paper's STE).

    Example:
        >>> pact = PACT(bits=2, alpha=3.0)
        >>> pact(torch.tensor([-1.0, 0.9, 2.2, 9.0])).tolist()
        [0.0, 1.0, 2.0, 3.0]
    """

    def __init__(self, bits: int = 4, alpha: float = 10.0, two_sided: bool = False) -> None:
        super().__init__()
        self.bits, self.two_sided = bits, two_sided
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        alpha = self.alpha
        low = -alpha if self.two_sided else torch.zeros_like(alpha)
        y = torch.minimum(torch.maximum(x, low), alpha)
        levels = 2 ** (self.bits - 1) - 1 if self.two_sided else 2**self.bits - 1
        step = alpha.detach() / levels
        return y + (torch.round(y / step) * step - y).detach()

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """The clipped grid as ``(scale, zero_point, qmin, qmax)``: quantizing with it is PACT."""
        levels = 2 ** (self.bits - 1) - 1 if self.two_sided else 2**self.bits - 1
        scale = self.alpha.detach().abs().clamp(min=1e-8) / levels
        return scale, torch.tensor(0, dtype=torch.int32), (-levels if self.two_sided else 0), levels

    def extra_repr(self) -> str:
        return f"bits={self.bits}, two_sided={self.two_sided}"


class FixedQuantize(nn.Module):
    """Fake quantization with a fixed grid (what QAT quantizers become after ``ts.convert``).

    Example:
        >>> fq = FixedQuantize(torch.tensor(0.5), torch.tensor(0, dtype=torch.int32), 0, 3)
        >>> fq(torch.tensor([-1.0, 0.7, 9.0])).tolist()
        [0.0, 0.5, 1.5]
    """

    def __init__(self, scale: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int,
                 axis: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().float())
        self.register_buffer("zero_point", zero.detach().clone().to(torch.int32))
        self.qmin, self.qmax, self.axis = qmin, qmax, axis
        self.enabled = True

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        return self.scale, self.zero_point, self.qmin, self.qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return quantize_dequantize(x, self.scale, self.zero_point, self.qmin, self.qmax,
                                   self.axis)  # fmt: skip

    def extra_repr(self) -> str:
        return f"qmin={self.qmin}, qmax={self.qmax}, per_channel={self.scale.numel() > 1}"


# Every quantizer module type of torchslim: what set_quantizers switches, and what checks that
# look at a quantized model's layers (not its quantizers) skip.
QUANTIZER_TYPES = (FakeQuantize, WeightQuantize, DynamicQuantize, SharedQuantize, FixedQuantize,
               LSQQuantize, PACT)  # fmt: skip


def set_quantizers(model: nn.Module, *, enabled: bool | None = None,
                   observing: bool | None = None) -> None:  # fmt: skip
    """Switch every quantizer of ``model`` on/off, or its observers on/off."""
    for m in model.modules():
        if isinstance(m, QUANTIZER_TYPES) and enabled is not None:
            m.enabled = enabled
        if isinstance(m, FakeQuantize) and observing is not None:
            m.observing = observing


def quantized_modules(model: nn.Module) -> list[str]:
    """Qualified names of ``model``'s torchslim quantizers (the one test of "quantized" that
    export, saving and the pipeline share): weight quantizers and activation fake-quantizers.

    Example:
        >>> quantized_modules(nn.Sequential(nn.Linear(2, 2)))
        []
    """
    return [n for n, m in model.named_modules() if isinstance(m, (FakeQuantize, WeightQuantize))]


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds torchslim quantizers (:func:`quantized_modules`)."""
    return any(isinstance(m, (FakeQuantize, WeightQuantize)) for m in model.modules())
