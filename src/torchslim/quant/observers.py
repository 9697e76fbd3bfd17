"""Range observers and the three range mappings (scale and zero point from observed ranges).

* non-saturating symmetric: ``scale = max|x| / qmax``, zero point 0;
* saturating symmetric: ``scale = T / qmax`` for a threshold ``T <= max|x|`` chosen by a
  percentile, KL divergence (TensorRT's entropy calibration) or MSE search on a histogram;
* affine (asymmetric): ``[min, max] -> [qmin, qmax]`` with an integer zero point.

Per-tensor or per-channel; 2-8 bits; min/max either absolute or a moving average.
Observers are ``nn.Module``s with buffers, so calibrated ranges travel in ``state_dict``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import nn

from torchslim.config import check_fields
from torchslim.errors import ConfigError


class Mapping(str, enum.Enum):
    """How an observed range becomes a scale and zero point."""

    SYMMETRIC = "symmetric"  # non-saturating: abs-max -> int range
    SATURATING = "saturating"  # symmetric with a clipping threshold from calibration
    AFFINE = "affine"  # asymmetric: min/max -> int min/max


class Calibration(str, enum.Enum):
    """How the saturating mapping picks its threshold from a histogram of |x|."""

    PERCENTILE = "percentile"
    KL = "kl"
    MSE = "mse"


@dataclass(frozen=True)
class QuantSpec:
    """What one quantizer does.

    Example:
        >>> QuantSpec(bits=8, mapping="affine").qrange
        (0, 255)
    """

    bits: int = 8
    mapping: Mapping = Mapping.SYMMETRIC
    per_channel: bool = False
    ch_axis: int = 0
    calibration: Calibration = Calibration.PERCENTILE  # saturating mapping only
    percentile: float = 99.99
    averaging: float = 0.0  # moving-average momentum for min/max (0: absolute min/max)

    def __post_init__(self) -> None:
        check_fields(self)
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"bits: must be in 2..8, got {self.bits}")
        if not 50 < self.percentile <= 100:
            raise ConfigError(f"percentile: must be in (50, 100], got {self.percentile}")
        if not 0 <= self.averaging < 1:
            raise ConfigError(f"averaging: a momentum in [0, 1), got {self.averaging}")

    @property
    def symmetric(self) -> bool:
        return self.mapping is not Mapping.AFFINE

    @property
    def qrange(self) -> tuple[int, int]:
        """Integer range: signed for symmetric mappings, unsigned for affine."""
        if self.symmetric:
            return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        return 0, 2**self.bits - 1


def symmetric_qparams(absmax: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``absmax / (2^(bits-1) - 1)`` and zero point 0.

    Example:
        >>> s, z = symmetric_qparams(torch.tensor(2.54), 8)
        >>> round(s.item(), 6), z.item()
        (0.02, 0)
    """
    qmax = 2 ** (bits - 1) - 1
    scale = (absmax / qmax).clamp(min=torch.finfo(torch.float32).tiny)
    return scale, torch.zeros_like(absmax, dtype=torch.int32)


def affine_qparams(
    lo: torch.Tensor, hi: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map ``[min(lo, 0), max(hi, 0)]`` onto ``[0, 2^bits - 1]`` (zero exactly representable).

    Example:
        >>> s, z = affine_qparams(torch.tensor(-1.0), torch.tensor(3.0), 8)
        >>> round(s.item(), 6), z.item()
        (0.015686, 64)
    """
    qmin, qmax = 0, 2**bits - 1
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = ((hi - lo) / (qmax - qmin)).clamp(min=torch.finfo(torch.float32).tiny)
    zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero


def _histogram_threshold(
    hist: torch.Tensor, edges_max: float, spec: QuantSpec, unsigned: bool = False
) -> float:
    """Clipping threshold on a histogram of |x| over ``[0, edges_max]``.

    ``unsigned``: the values are all >= 0 and use every level of the integer range.
    """
    bins = hist.numel()
    width = edges_max / bins
    if spec.calibration is Calibration.PERCENTILE:
        cdf = hist.cumsum(0) / hist.sum().clamp(min=1)
        idx = int(torch.searchsorted(cdf, torch.tensor(spec.percentile / 100)).clamp(max=bins - 1))
        return (idx + 1) * width
    levels = 2 ** (spec.bits - (0 if unsigned else 1))
    if spec.calibration is Calibration.KL:
        return (_kl_bin(hist, levels) + 1) * width
    return _mse_threshold(hist, width, levels - 1)


def _kl_bin(hist: torch.Tensor, levels: int) -> int:
    """TensorRT entropy calibration: the cut whose quantized distribution diverges least.

    The first bin (exact zeros, e.g. after a ReLU) is left out: zero is always representable,
    and its mass would otherwise pull the threshold far down.
    """
    h = hist.double().clone()
    h[0] = 0
    n = h.numel()
    zero = torch.zeros(1, dtype=torch.float64)
    csum = torch.cat([zero, h.cumsum(0)])
    cnz = torch.cat([zero, (h > 0).double().cumsum(0)])
    total = float(h.sum())
    best, best_kl = n - 1, math.inf
    for cut in range(levels, n + 1, max(1, n // 256)):
        edges = torch.arange(levels + 1) * cut // levels
        avg = (csum[edges[1:]] - csum[edges[:-1]]) / (cnz[edges[1:]] - cnz[edges[:-1]]).clamp(min=1)
        chunk = torch.bucketize(torch.arange(cut), edges[1:], right=True)
        q = torch.where(h[:cut] > 0, avg[chunk], torch.zeros(1, dtype=torch.float64))
        p = h[:cut].clone()
        p[-1] += total - float(csum[cut])  # outliers clipped into the last bin
        p, q = p / p.sum().clamp(min=1e-12), q / q.sum().clamp(min=1e-12)
        mask = p > 0
        kl = float((p[mask] * torch.log(p[mask] / q[mask].clamp(min=1e-12))).sum())
        if kl < best_kl:
            best, best_kl = cut - 1, kl
    return best


def _mse_threshold(hist: torch.Tensor, width: float, qmax: int) -> float:
    """The threshold minimising the expected squared quantization error over the histogram."""
    centers = (torch.arange(hist.numel(), dtype=torch.float64) + 0.5) * width
    weights = hist.double()
    best_t, best_err = centers[-1].item() + width / 2, math.inf
    for i in range(max(1, hist.numel() // 64), hist.numel() + 1, max(1, hist.numel() // 256)):
        t = i * width
        scale = t / qmax
        deq = torch.clamp(torch.round(centers / scale), max=qmax) * scale
        err = float((weights * (centers - deq) ** 2).sum())
        if err < best_err:
            best_t, best_err = t, err
    return best_t


class Observer(nn.Module):
    """Collects the range of what flows through it; ``qparams()`` turns it into scale/zero.

    Example:
        >>> obs = Observer(QuantSpec(bits=8, mapping="symmetric"))
        >>> _ = obs(torch.tensor([-1.27, 0.5]))
        >>> round(obs.qparams()[0].item(), 6)
        0.01
    """

    HIST_BINS = 2048

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("min_val", torch.tensor([]))
        self.register_buffer("max_val", torch.tensor([]))
        self.register_buffer("hist", torch.zeros(self.HIST_BINS))
        self.register_buffer("hist_max", torch.tensor(0.0))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        # Calibrated ranges may be per-channel: adopt the stored shapes before copying.
        for name in ("min_val", "max_val"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.spec.per_channel:
            return x.min(), x.max()
        flat = x.detach().movedim(self.spec.ch_axis, 0).reshape(x.shape[self.spec.ch_axis], -1)
        return flat.min(dim=1).values, flat.max(dim=1).values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self._reduce(x.detach().float())
        m = self.spec.averaging
        if self.min_val.numel() == 0 or (m == 0 and self.min_val.shape != lo.shape):
            self.min_val, self.max_val = lo.clone(), hi.clone()
        elif m > 0:
            self.min_val = self.min_val * m + lo * (1 - m)
            self.max_val = self.max_val * m + hi * (1 - m)
        else:
            self.min_val = torch.minimum(self.min_val, lo)
            self.max_val = torch.maximum(self.max_val, hi)
        if self.spec.mapping is Mapping.SATURATING and not self.spec.per_channel:
            self._update_histogram(x.detach().float().abs())
        return x

    def _update_histogram(self, a: torch.Tensor) -> None:
        top = float(a.max())
        if not math.isfinite(top):  # the range holds it too, and calibration refuses it
            return
        if top > float(self.hist_max):  # re-bin what we have onto the wider range
            if float(self.hist_max) > 0:
                old_edges = torch.linspace(0, float(self.hist_max), self.HIST_BINS + 1)[1:]
                idx = (old_edges / top * self.HIST_BINS).long().clamp(max=self.HIST_BINS - 1)
                self.hist = torch.zeros_like(self.hist).index_add_(0, idx, self.hist)
            self.hist_max = torch.tensor(top)
        if float(self.hist_max) > 0:
            self.hist += torch.histc(a, self.HIST_BINS, 0, float(self.hist_max))

    @property
    def unsigned(self) -> bool:
        """Symmetric per-tensor range that saw no negative value (e.g. after a ReLU)."""
        spec = self.spec
        return spec.symmetric and not spec.per_channel and bool((self.min_val >= 0).all())

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point (per channel when configured).

        A symmetric range over non-negative values is mapped onto the unsigned integer range
        with zero point 0 (one more bit of resolution); see :meth:`qrange`.
        """
        if self.min_val.numel() == 0:
            raise ConfigError("observer saw no data: run calibration batches through the model")
        spec = self.spec
        if spec.mapping is Mapping.AFFINE:
            return affine_qparams(self.min_val, self.max_val, spec.bits)
        unsigned = self.unsigned
        absmax = torch.maximum(self.min_val.abs(), self.max_val.abs())
        if spec.mapping is Mapping.SATURATING and not spec.per_channel and self.hist.sum() > 0:
            threshold = _histogram_threshold(self.hist, float(self.hist_max), spec, unsigned)
            absmax = torch.tensor(min(threshold, float(absmax)))
        if unsigned:
            return symmetric_qparams(absmax, spec.bits + 1)  # scale = absmax / (2^bits - 1)
        return symmetric_qparams(absmax, spec.bits)

    def qrange(self) -> tuple[int, int]:
        """The integer range the scale maps onto (unsigned for non-negative symmetric ranges)."""
        if self.min_val.numel() and self.unsigned:
            return 0, 2**self.spec.bits - 1
        return self.spec.qrange


def weight_qparams(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of a weight tensor, computed from the tensor itself.

    Saturating weights clip per channel: by ``percentile`` of |w|, or (``kl``/``mse``) at the
    threshold that minimises the squared rounding-plus-clipping error, searched on a grid.

    Example:
        >>> s, _ = weight_qparams(torch.tensor([[1.27, -0.5], [0.127, 0.0]]),
        ...                       QuantSpec(per_channel=True))
        >>> [round(v, 4) for v in s.tolist()]
        [0.01, 0.001]
    """
    w = w.detach().float()
    if spec.per_channel:
        flat = w.movedim(spec.ch_axis, 0).reshape(w.shape[spec.ch_axis], -1)
    else:
        flat = w.reshape(1, -1)
    if spec.mapping is Mapping.AFFINE:
        s, z = affine_qparams(flat.min(1).values, flat.max(1).values, spec.bits)
    else:
        absmax = flat.abs().max(1).values
        if spec.mapping is Mapping.SATURATING:
            absmax = _weight_threshold(flat.abs(), absmax, spec)
        s, z = symmetric_qparams(absmax, spec.bits)
    return (s, z) if spec.per_channel else (s[0], z[0])


def _weight_threshold(a: torch.Tensor, absmax: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    if spec.calibration is Calibration.PERCENTILE:
        return torch.quantile(a, spec.percentile / 100, dim=1).clamp(min=1e-12)
    qmax = 2 ** (spec.bits - 1) - 1
    best, best_err = absmax.clone(), torch.full_like(absmax, math.inf)
    for frac in torch.linspace(0.3, 1.0, 36).tolist():
        t = (absmax * frac).clamp(min=1e-12)[:, None]
        scale = t / qmax
        err = ((torch.clamp(torch.round(a / scale), max=qmax) * scale - a) ** 2).sum(1)
        better = err < best_err
        best = torch.where(better, t[:, 0], best)
        best_err = torch.where(better, err, best_err)
    return best
