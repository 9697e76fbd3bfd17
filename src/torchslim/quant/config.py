"""The configs of quantization: PTQ (bit widths, range mappings, calibration, what to keep in
float), QAT, product quantization and binarization. Frozen dataclasses checked on construction
(:func:`torchslim.config.check_fields`), with their str-valued enums; each is re-exported by the
module that uses it (``quant.qat``, ``quant.pq``, ``quant.binary``) and by ``torchslim.quant``."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from torchslim.config import check_fields
from torchslim.errors import ConfigError
from torchslim.quant.observers import Calibration, Mapping, QuantSpec
from torchslim.runtime import cpu_info
from torchslim.selection import Selection


def _first_match(patterns: dict[str, int], name: str) -> int | None:
    """The value of the first glob in ``patterns`` that ``name`` matches."""
    for pattern, bits in patterns.items():
        if fnmatchcase(name, pattern):
            return int(bits)
    return None


class ActPlacement(str, enum.Enum):
    """Which activations a static quantization quantizes: ``all``, every quantized layer's
    input and output and every residual sum (int8 from layer to layer: what ONNX Runtime's
    QLinearConv chains need); ``inputs``, only each layer's input (the rest stays float: a
    transformer's residual stream, whose outlier channels one int8 range cannot hold);
    ``auto``, ``inputs`` when no convolution is quantized, else ``all``."""

    AUTO = "auto"
    ALL = "all"
    INPUTS = "inputs"


class EmbeddingScales(str, enum.Enum):
    """How an int8 ``nn.Embedding`` table is scaled: ``row``, one scale per row (per token: the
    most accurate where rows differ in norm); ``column``, one per embedding channel (the file
    holds a few hundred scales instead of one per vocabulary entry)."""

    ROW = "row"
    COLUMN = "column"


class WeightOnlyAlgorithm(str, enum.Enum):
    """How weight-only quantization picks the integer weights: ``rtn`` rounds each to nearest
    (no data needed); ``gptq`` (Frantar et al., 2022) rounds column by column and moves each
    rounding error onto the columns not yet rounded, weighted by the layer's input Hessian
    measured on ``calib_data``."""

    RTN = "rtn"
    GPTQ = "gptq"


_ACCURACY_LEVELS = (0, 1, 4)  # MatMulNBits on CPU: 0 unset (float), 1 float, 4 int8 activations


@dataclass(frozen=True)
class QuantConfig:
    """How ``ts.quantize`` quantizes weights and activations.

    Weights default to per-channel symmetric int8, activations to affine (asymmetric) int8 —
    the layout ONNX Runtime's int8 kernels run fastest. ``weight_only=True`` instead stores every
    Linear's weight in ``weight_bits`` 4 or 8 per group of ``group_size`` input channels and
    keeps activations float (ONNX Runtime's ``MatMulNBits``). ``act_mapping="saturating"`` with
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
    act_placement: ActPlacement = ActPlacement.AUTO  # static: which activations get int8
    bias_correction: bool = False  # remove the mean output shift caused by weight rounding
    fold_bn: bool = True
    skip: tuple[str, ...] = ()  # layers kept in float (torchslim.selection patterns)
    auto_skip: int = 0  # also keep the k layers whose quantization hurts most in float
    dynamic: bool = False  # weights only ahead of time; activation ranges per batch at run time
    # nn.Embedding tables stored int8 too (0: kept float), one scale per row or per column
    embedding_bits: int = 8
    embedding_scales: EmbeddingScales = EmbeddingScales.ROW
    # SmoothQuant migration strength alpha (0: off): each Linear's input channels are divided
    # by s = max|x|^alpha / max|w|^(1 - alpha) and its weight columns multiplied by s, so
    # outlier channels stop setting the per-tensor range; needs calib_data. Static: the
    # Linears reading one tensor (Q, K, V) share s and one scaled quantizer (a Mul, then Q/DQ)
    smooth: float = 0.0
    # the Linears SmoothQuant smooths (torchslim.selection patterns; empty: every quantized
    # Linear); each smoothed input costs a Mul at run time
    smooth_layers: tuple[str, ...] = ()
    # dynamic: the Linears (torchslim.selection patterns) whose input is divided per token
    # (row) by its largest magnitude before the per-batch range is taken, and the output
    # multiplied back: one outlier token no longer sets every token's step (Abs, ReduceMax, Add,
    # Div and Mul at run time)
    token_scale_layers: tuple[str, ...] = ()
    # dynamic: also scale per token the k Linears where that alone raises the model output's
    # SQNR most (each tried on two calibration batches with the rest of the model quantized;
    # only those that gain); needs calib_data
    auto_token_scale: int = 0
    reduce_range: bool | None = None  # 7-bit weights for CPUs without VNNI (None: detect)
    first_layer_bits: int | None = None  # bits of the first layer's weights and input
    last_layer_bits: int | None = None  # bits of the last layer's weights and input
    # weight bits per layer, {name or glob: bits} (first match wins, before the first/last
    # layer rule and weight_bits): a mixed-precision search writes one entry per layer
    layer_bits: dict[str, int] = field(default_factory=dict)
    # input activation bits per layer, {name or glob: bits} (first match wins, before the
    # first/last layer rule and act_bits); a tensor several layers read takes the most bits
    # any of them asks for
    layer_act_bits: dict[str, int] = field(default_factory=dict)
    # weight-only: every nn.Linear (and transformers' Conv1D) gets weight_bits 4 or 8, one scale
    # and zero point per group_size input channels; activations stay float; exported as ONNX
    # Runtime's MatMulNBits
    weight_only: bool = False
    group_size: int = 128  # weight_only: input channels per scale (a power of two, >= 16)
    algorithm: WeightOnlyAlgorithm = WeightOnlyAlgorithm.RTN  # weight_only: rtn or gptq
    # gptq: quantize the input channels in descending order of their Hessian diagonal (the
    # most active first, while the most columns remain to take their error); the groups stay
    # contiguous runs of channels with scales from the unquantized weights
    act_order: bool = False
    # weight_only: MatMulNBits compute; 4: the input is rounded to int8 per group and the
    # products summed in int32 (fast on CPU; the PyTorch model rounds the same), 0 or 1: float
    accuracy_level: int = 4

    def input_bits(self, node: object, first: object, last: object,
                   readers: Sequence[str] = ()) -> int:  # fmt: skip
        """Activation bits of a tensor that the quantized layers ``readers`` read: wider where
        it feeds the first/last layer if asked, else ``act_bits``; where ``layer_act_bits``
        names a reader, the most bits any reader needs (one it does not name: the former).

        Example:
            >>> cfg = QuantConfig(layer_act_bits={"conv2": 4})
            >>> cfg.input_bits(None, None, None, ["conv2"]), cfg.input_bits(None, None, None)
            (4, 8)
            >>> cfg.input_bits(None, None, None, ["conv2", "downsample"])
            8
        """
        bits = self.act_bits
        if node is first and self.first_layer_bits:
            bits = self.first_layer_bits
        elif node is last and self.last_layer_bits:
            bits = self.last_layer_bits
        asked = [_first_match(self.layer_act_bits, r) for r in readers]
        if any(a is not None for a in asked):
            return max(bits if a is None else a for a in asked)
        return bits

    def layer_weight_bits(self, index: int, count: int, name: str = "") -> int:
        """Weight bits of quantized layer ``index`` of ``count`` (in graph order), called
        ``name``: its ``layer_bits`` entry, else wider for the first/last layer if asked.

        Example:
            >>> [QuantConfig(weight_bits=4, first_layer_bits=8).layer_weight_bits(i, 3)
            ...  for i in range(3)]
            [8, 4, 4]
            >>> QuantConfig(layer_bits={"layer1.*": 4}).layer_weight_bits(1, 3, "layer1.0.conv")
            4
        """
        bits = _first_match(self.layer_bits, name)
        if bits is not None:
            return bits
        if index == 0 and self.first_layer_bits:
            return self.first_layer_bits
        if index == count - 1 and self.last_layer_bits:
            return self.last_layer_bits
        return self.weight_bits

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("weight_bits", "act_bits", "first_layer_bits", "last_layer_bits"):
            bits = getattr(self, name)
            if bits is not None and not 2 <= bits <= 8:
                raise ConfigError(f"{name}: must be in 2..8, got {bits}")
        for key in ("layer_bits", "layer_act_bits"):
            for pattern, bits in getattr(self, key).items():
                if not isinstance(bits, int) or not 2 <= bits <= 8:
                    raise ConfigError(f"{key}.{pattern}: must be in 2..8, got {bits!r}")
        if self.calib_batches < 1:
            raise ConfigError(f"calib_batches: must be >= 1, got {self.calib_batches}")
        if self.auto_skip < 0:
            raise ConfigError(f"auto_skip: a number of layers >= 0, got {self.auto_skip}")
        if not 0.0 <= self.smooth <= 1.0:
            raise ConfigError(f"smooth: a migration strength in [0, 1], got {self.smooth}")
        if self.smooth_layers and not self.smooth:
            raise ConfigError("smooth_layers: set smooth (the migration strength, e.g. 0.75) "
                              "too; without it nothing is smoothed")  # fmt: skip
        if self.auto_token_scale < 0:
            raise ConfigError(
                f"auto_token_scale: a number of layers >= 0, got {self.auto_token_scale}"
            )
        for key in ("token_scale_layers", "auto_token_scale"):
            if getattr(self, key) and not self.dynamic:
                raise ConfigError(f"{key}: scales the run-time range of dynamic quantization; "
                                  "set dynamic: true too")  # fmt: skip
        if self.embedding_bits and not 2 <= self.embedding_bits <= 8:
            raise ConfigError(f"embedding_bits: 0 (float) or 2..8, got {self.embedding_bits}")
        self._check_weight_only()
        self.weight_spec()  # validates percentile through QuantSpec
        self.selection  # noqa: B018  (checks the patterns)

    def _check_weight_only(self) -> None:
        size = self.group_size
        if size < 16 or size & (size - 1):
            raise ConfigError(f"group_size: a power of two >= 16 (MatMulNBits' block_size), "
                              f"got {size}")  # fmt: skip
        if self.accuracy_level not in _ACCURACY_LEVELS:
            raise ConfigError(f"accuracy_level: 0 or 1 (float compute) or 4 (int8), got "
                              f"{self.accuracy_level}")  # fmt: skip
        if not self.weight_only:
            changed = [
                f"{key}={getattr(self, key)!r}"
                for key, default in (("group_size", 128), ("accuracy_level", 4))
                if getattr(self, key) != default
            ]
            if self.algorithm is not WeightOnlyAlgorithm.RTN:
                changed.append(f"algorithm={self.algorithm.value!r}")
            if self.act_order:
                changed.append("act_order=True")
            if changed:
                raise ConfigError(f"{', '.join(changed)}: apply to weight-only quantization; "
                                  "set weight_only=True")  # fmt: skip
            return
        if self.act_order and self.algorithm is not WeightOnlyAlgorithm.GPTQ:
            raise ConfigError("act_order: orders GPTQ's columns; set algorithm='gptq'")
        if self.dynamic:
            raise ConfigError(
                "weight_only and dynamic: choose one (weight_only keeps the "
                "activations float; dynamic quantizes them to int8 at run time)"
            )
        static = [key for key in ("bias_correction", "auto_skip", "layer_act_bits")
                  if getattr(self, key)]  # fmt: skip
        if static:
            raise ConfigError(f"{', '.join(static)}: not available with weight_only "
                              "(activations stay float; no per-layer search)")  # fmt: skip
        bits = {"weight_bits": self.weight_bits, "first_layer_bits": self.first_layer_bits,
                "last_layer_bits": self.last_layer_bits,
                **{f"layer_bits.{k}": v for k, v in self.layer_bits.items()}}  # fmt: skip
        for key, value in bits.items():
            if value is not None and value not in (4, 8):
                raise ConfigError(f"{key}: weight_only takes 4 or 8 bits (MatMulNBits), got "
                                  f"{value}")  # fmt: skip

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


class ActQuantizer(str, enum.Enum):
    STE = "ste"
    LSQ = "lsq"
    PACT = "pact"


class WeightQuantizer(str, enum.Enum):
    STE = "ste"
    LSQ = "lsq"


@dataclass(frozen=True)
class QATConfig(QuantConfig):
    """:class:`QuantConfig` plus the trainable quantizers of QAT.

    Example:
        >>> QATConfig(weight_bits=4, act_bits=4, act_quantizer="pact").act_quantizer.value
        'pact'
    """

    act_quantizer: ActQuantizer = ActQuantizer.LSQ  # lsq (learned step), pact (learned clip), ste
    weight_quantizer: WeightQuantizer = WeightQuantizer.LSQ  # lsq (learned step) or ste (min/max)
    pact_alpha: float = 0.0  # initial clip; 0: 99.9th percentile of calib_data (1.0 without)
    ema: float = 0.9  # moving-average momentum of ``ste`` activation ranges

    def __post_init__(self) -> None:
        super().__post_init__()  # checks every field, these included
        if self.dynamic:
            raise ConfigError("dynamic: not available for QAT (train with static quantizers)")
        if self.smooth:
            raise ConfigError("smooth: SmoothQuant is a post-training step; not available for QAT")
        if self.act_placement is ActPlacement.INPUTS:
            raise ConfigError(
                "act_placement: QAT trains every layer's input and output "
                "quantizers (all); 'inputs' is for post-training quantization"
            )
        if self.weight_only:
            raise ConfigError("weight_only: not available for QAT (use ts.quantize)")
        if self.pact_alpha < 0 or not 0 <= self.ema < 1:
            raise ConfigError("pact_alpha must be >= 0 and ema in [0, 1)")


class PQMethod(str, enum.Enum):
    """``kmeans``: fit the weights; ``qcnn``: fit the layer outputs on calibration data."""

    KMEANS = "kmeans"
    QCNN = "qcnn"


@dataclass(frozen=True)
class PQConfig:
    """How ``product_quantize`` compresses weights.

    Example:
        >>> PQConfig(subvector=9, codebook_size=64).code_bits
        6
    """

    subvector: int = 4  # columns per sub-space (for 3x3 convs, 9 = one input channel's kernel)
    codebook_size: int = 64  # centroids per sub-space (codes are log2 of this many bits)
    method: PQMethod = PQMethod.KMEANS  # qcnn: output-error minimisation, needs calib_data
    iterations: int = 20
    layers: tuple[str, ...] = ()  # layers to compress (empty: every plain Conv2d and Linear)
    skip: tuple[str, ...] = ()  # layers left alone; both as torchslim.selection patterns
    min_rows: int = 16  # layers with fewer output rows than this stay float
    calib_batches: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.subvector < 1 or not 2 <= self.codebook_size <= 65536:
            raise ConfigError("subvector must be >= 1 and codebook_size in 2..65536")
        self.selection  # noqa: B018  (checks the patterns)

    @property
    def selection(self) -> Selection:
        """``layers`` (the targets) minus ``skip``."""
        return Selection(self.layers, self.skip)

    @property
    def code_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size)))


class BinaryScaling(str, enum.Enum):
    """``xnor``: each output channel scaled by its mean ``|W|`` (XNOR-Net); ``none``: plain sign."""

    XNOR = "xnor"
    NONE = "none"


@dataclass(frozen=True)
class BinaryConfig:
    """What ``binarize`` does.

    Example:
        >>> BinaryConfig(scaling="xnor", binary_activations=True).scaling.value
        'xnor'
    """

    scaling: BinaryScaling = BinaryScaling.XNOR
    stochastic: bool = False  # BinaryConnect stochastic binarization while training
    binary_activations: bool = False  # also sign() the input of each binary layer
    keep_first_last: bool = True  # first and last Conv/Linear stay float
    skip_pointwise: bool = False  # leave 1x1 convolutions float
    targets: tuple[str, ...] = ()  # layers to binarize (empty: every plain Conv2d and Linear)
    ignore: tuple[str, ...] = ()  # layers kept float; both as torchslim.selection patterns

    def __post_init__(self) -> None:
        check_fields(self)
        self.selection  # noqa: B018  (checks the patterns)

    @property
    def selection(self) -> Selection:
        """``targets`` minus ``ignore``, among the plain Conv2d and Linear layers."""
        return Selection(self.targets, self.ignore)


def cpu_lacks_vnni() -> bool:
    """True on an x86-64 Linux CPU without AVX-VNNI / AVX512-VNNI (int8 dot products)."""
    info = cpu_info()
    if info.machine.lower() not in ("x86_64", "amd64") or not info.flags:
        return False
    return not any("vnni" in flag for flag in info.flags)
