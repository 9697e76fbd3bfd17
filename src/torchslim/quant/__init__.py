"""Quantization: observers, range mappings, fake quantization (STE, LSQ, PACT), BN folding, PTQ."""

from torchslim.quant.config import QuantConfig
from torchslim.quant.fake_quant import (
    PACT,
    FakeQuantize,
    LSQQuantize,
    WeightQuantize,
    fake_quantize,
    round_ste,
)
from torchslim.quant.fold import fold_batchnorm, fold_into
from torchslim.quant.observers import (
    Calibration,
    Mapping,
    Observer,
    QuantSpec,
    affine_qparams,
    symmetric_qparams,
    weight_qparams,
)
from torchslim.quant.ptq import DynamicQuantize, QuantReport, QuantState, calibrate, quantize
from torchslim.quant.qat import QATConfig, convert, prepare_qat

__all__ = [
    "PACT",
    "Calibration",
    "DynamicQuantize",
    "FakeQuantize",
    "LSQQuantize",
    "Mapping",
    "Observer",
    "QATConfig",
    "QuantConfig",
    "QuantReport",
    "QuantSpec",
    "QuantState",
    "WeightQuantize",
    "affine_qparams",
    "calibrate",
    "convert",
    "fake_quantize",
    "fold_batchnorm",
    "fold_into",
    "prepare_qat",
    "quantize",
    "round_ste",
    "symmetric_qparams",
    "weight_qparams",
]
