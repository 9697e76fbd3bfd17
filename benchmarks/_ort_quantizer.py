"""ONNX Runtime's own static quantizer: the peer the torchslim int8 export is measured against;
and how the quantization benchmarks print the ops ONNX Runtime runs for a file."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def ort_quantize_static(
    fp32: Path, out: Path, batches: Iterable[np.ndarray], *, uint8_activations: bool = False
) -> None:
    """``quant_pre_process`` + ``quantize_static``: QDQ, per-channel; ORT's default int8 types,
    or uint8 activations with 7-bit weights (``reduce_range``, ORT's advice for CPUs without
    VNNI)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    pre = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    extra = {"activation_type": QuantType.QUInt8, "reduce_range": True} if uint8_activations else {}
    quantize_static(
        str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, **extra
    )


def format_kernels(kernels: Counter[str]) -> str:
    """``ts.export.ort_kernels``'s counts as one table cell: ``"Gemm ×1, Relu ×2"``."""
    return ", ".join(f"{op} ×{n}" for op, n in sorted(kernels.items()))
