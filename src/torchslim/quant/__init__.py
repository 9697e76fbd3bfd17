"""Quantization: observers and range mappings (PTQ, QAT, binary and PQ build on these)."""

from torchslim.quant.observers import (
    Calibration,
    Mapping,
    Observer,
    QuantSpec,
    affine_qparams,
    symmetric_qparams,
)

__all__ = [
    "Calibration",
    "Mapping",
    "Observer",
    "QuantSpec",
    "affine_qparams",
    "symmetric_qparams",
]
