"""Quantization: observers and range mappings, fake quantization (STE, LSQ, PACT), BN folding,
PTQ, QAT, weight-only int4/int8 (RTN, GPTQ), binary networks and product quantization."""

from torchslim.quant.binary import BinaryConfig, binarize, binary_size, save_packed
from torchslim.quant.config import ActPlacement, QuantConfig, WeightOnlyAlgorithm
from torchslim.quant.fake_quant import (
    PACT,
    DynamicQuantize,
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
from torchslim.quant.pq import PQConfig, pq_size, product_quantize, save_pq
from torchslim.quant.ptq import QuantReport, QuantState, calibrate, quantize
from torchslim.quant.qat import QATConfig, convert, prepare_qat
from torchslim.quant.weight_only import (
    WeightOnlyLinear,
    WeightOnlyQuantize,
    dequantize_groups,
    gptq_quantize,
    group_qparams,
    quantize_groups,
)

__all__ = [
    "PACT",
    "ActPlacement",
    "BinaryConfig",
    "Calibration",
    "DynamicQuantize",
    "FakeQuantize",
    "LSQQuantize",
    "Mapping",
    "Observer",
    "PQConfig",
    "QATConfig",
    "QuantConfig",
    "QuantReport",
    "QuantSpec",
    "QuantState",
    "WeightOnlyAlgorithm",
    "WeightOnlyLinear",
    "WeightOnlyQuantize",
    "WeightQuantize",
    "affine_qparams",
    "binarize",
    "binary_size",
    "calibrate",
    "convert",
    "dequantize_groups",
    "fake_quantize",
    "fold_batchnorm",
    "fold_into",
    "gptq_quantize",
    "group_qparams",
    "pq_size",
    "prepare_qat",
    "product_quantize",
    "quantize",
    "quantize_groups",
    "round_ste",
    "save_packed",
    "save_pq",
    "symmetric_qparams",
    "weight_qparams",
]
