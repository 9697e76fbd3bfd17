"""The quantization config: bit widths, range mappings, calibration, what to keep in float."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

from torchslim.config import check_fields
from torchslim.errors import ConfigError
from torchslim.quant.observers import Calibration, Mapping, QuantSpec
from torchslim.selection import Selection


@dataclass(frozen=True)
class QuantConfig:
    """How ``ts.quantize`` quantizes weights and activations.

    Weights default to per-channel symmetric int8, activations to affine (asymmetric) int8 —
    the layout ONNX Runtime's int8 kernels run fastest. ``act_mapping="saturating"`` with
    ``calibration`` percentile / kl / mse clips outliers; a symmetric activation range whose
    calibration saw no negative values is stored unsigned (zero point 0), as TensorRT does.

    Example:
        >>> QuantConfig(weight_bits=8, act_bits=8, per_channel=True).act_spec().mapping.value
        'affine'
    """

    weight_bits: int = 8
    act_bits: int = 8
    per_channel: bool = True  # per output channel weight scales
    weight_mapping: Mapping = Mapping.SYMMETRIC
    act_mapping: Mapping = Mapping.AFFINE
    calibration: Calibration = Calibration.PERCENTILE  # threshold search for "saturating"
    percentile: float = 99.99
    calib_batches: int = 32  # at most this many batches of calib_data are used
    bias_correction: bool = False  # remove the mean output shift caused by weight rounding
    fold_bn: bool = True
    skip: tuple[str, ...] = ()  # layers kept in float (torchslim.selection patterns)
    auto_skip: int = 0  # also keep the k layers whose quantization hurts most in float
    dynamic: bool = False  # weights only ahead of time; activation ranges per batch at run time
    reduce_range: bool | None = None  # 7-bit weights for CPUs without VNNI (None: detect)
    first_layer_bits: int | None = None  # bits of the first layer's weights and input
    last_layer_bits: int | None = None  # bits of the last layer's weights and input

    def input_bits(self, node: object, first: object, last: object) -> int:
        """Activation bits of a tensor: wider where it feeds the first/last layer if asked."""
        if node is first and self.first_layer_bits:
            return self.first_layer_bits
        if node is last and self.last_layer_bits:
            return self.last_layer_bits
        return self.act_bits

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("weight_bits", "act_bits", "first_layer_bits", "last_layer_bits"):
            bits = getattr(self, name)
            if bits is not None and not 2 <= bits <= 8:
                raise ConfigError(f"{name}: must be in 2..8, got {bits}")
        if self.calib_batches < 1:
            raise ConfigError(f"calib_batches: must be >= 1, got {self.calib_batches}")
        if self.auto_skip < 0:
            raise ConfigError(f"auto_skip: a number of layers >= 0, got {self.auto_skip}")
        self.weight_spec()  # validates percentile through QuantSpec
        self.selection  # noqa: B018  (checks the patterns)

    @property
    def selection(self) -> Selection:
        """The layers to quantize: every quantizable Conv/Linear but those ``skip`` selects."""
        return Selection(ignore=self.skip)

    def weight_spec(self, bits: int | None = None) -> QuantSpec:
        """The spec of a weight quantizer (per output channel when ``per_channel``).

        With ``reduce_range`` 8-bit weights use 7 bits: x86 CPUs without VNNI multiply uint8
        activations by int8 weights with ``vpmaddubsw``, whose int16 pair sums saturate
        (2 x 255 x 127 > 32767) — ONNX Runtime's int8 kernels would then compute something
        else than the model; 2 x 255 x 64 fits.
        """
        bits = bits or self.weight_bits
        reduce = cpu_lacks_vnni() if self.reduce_range is None else self.reduce_range
        if reduce and bits == 8:
            bits = 7
        return QuantSpec(bits=bits, mapping=self.weight_mapping,
                         per_channel=self.per_channel, ch_axis=0,
                         calibration=self.calibration, percentile=self.percentile)  # fmt: skip

    def act_spec(self, bits: int | None = None) -> QuantSpec:
        """The spec of an activation quantizer (always per tensor)."""
        return QuantSpec(bits=bits or self.act_bits, mapping=self.act_mapping,
                         calibration=self.calibration, percentile=self.percentile)  # fmt: skip


@functools.cache
def cpu_lacks_vnni() -> bool:
    """True on an x86-64 Linux CPU without AVX-VNNI / AVX512-VNNI (int8 dot products)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "vnni" not in flags
