"""Quantization: observers, range mappings, fake quantization (STE, LSQ, PACT), BN folding."""

from torchslim.quant.fake_quant import PACT, FakeQuantize, LSQQuantize, fake_quantize, round_ste
from torchslim.quant.fold import fold_batchnorm, fold_into
from torchslim.quant.observers import (
    Calibration,
    Mapping,
    Observer,
    QuantSpec,
    affine_qparams,
    symmetric_qparams,
)

__all__ = [
    "PACT",
    "Calibration",
    "FakeQuantize",
    "LSQQuantize",
    "Mapping",
    "Observer",
    "QuantSpec",
    "affine_qparams",
    "fake_quantize",
    "fold_batchnorm",
    "fold_into",
    "round_ste",
    "symmetric_qparams",
]
