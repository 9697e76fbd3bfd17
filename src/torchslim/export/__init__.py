"""Export: ONNX files (int8 QDQ for quantized models) checked by running them in ONNX Runtime."""

from torchslim.export.onnx import (
    ExportError,
    ExportReport,
    OnnxModule,
    evaluate_onnx,
    export_onnx,
    ort_kernels,
)
from torchslim.runtime import ort_session

__all__ = [
    "ExportError",
    "ExportReport",
    "OnnxModule",
    "evaluate_onnx",
    "export_onnx",
    "ort_kernels",
    "ort_session",
]
