"""``ts.export_onnx``: float ONNX for float models, QDQ int8 ONNX for quantized ones.

A fake-quantized model exports (TorchScript exporter, opset ``runtime.OPSET``) to QuantizeLinear +
DequantizeLinear pairs. The file is then rewritten so it is really int8:

* every ``QuantizeLinear`` applied to a constant (a weight) is computed ahead of time and its
  result stored as an int8 initializer — the float weight leaves the file;
* the bias of a Conv/Gemm whose input and weight are dequantized is stored as int32 with scale
  ``s_input * s_weight`` (what ONNX Runtime's ``QLinearConv``/``QGemm`` fusions expect).

The written file is then run in ONNX Runtime and compared with the PyTorch model.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes  # ONNX's own dependency: the numpy dtype of INT4 tensors
import numpy as np
import onnx
import onnx.version_converter
import torch
from onnx import helper, numpy_helper
from torch import nn
from torch.utils._pytree import tree_flatten
from torch.utils.data import DataLoader

from torchslim._tensors import (
    Kwargs,
    call_model,
    input_names,
    input_tuple,
    module_mode,
    ordered_kwargs,
    split_inputs,
)
from torchslim.errors import TorchslimError
from torchslim.export.masks import finite_attention_masks
from torchslim.quant.fake_quant import (
    DynamicQuantize,
    FakeQuantize,
    is_quantized,
)
from torchslim.quant.qmodules import (
    QuantEmbedding,
    QuantLinear,
    onnx_int8_table,
    onnx_int8_weight,
)
from torchslim.quant.weight_only import WeightOnlyLinear, onnx_nbits_weight
from torchslim.runtime import OPSET, exportable, ort_feed, ort_session

log = logging.getLogger("torchslim.export")


class ExportError(TorchslimError, RuntimeError):
    """Export failed, or the exported file does not compute what the model computes."""


@dataclass
class ExportReport:
    """What was written and how closely ONNX Runtime reproduces the PyTorch model."""

    path: Path
    file_bytes: int
    quantized: bool
    int8_weights: int  # initializers stored as 8-bit integers
    max_abs_error: float | None = None  # ORT vs PyTorch on the example inputs
    top1_agreement: float | None = None  # argmax agreement (2-D outputs)
    int4_weights: int = 0  # weight tensors of 4-bit layers, stored packed as ONNX INT4
    nbits_layers: int = 0  # weight-only layers written as com.microsoft::MatMulNBits
    # activations quantized at run time (DynamicQuantizeLinear nodes), and ahead of it
    # (QuantizeLinear nodes: static QDQ)
    dynamic_quantizers: int = 0
    static_quantizers: int = 0

    def __str__(self) -> str:
        kind = "float"
        if self.quantized:
            kinds = {"int8 QDQ": self.static_quantizers, "dynamic int8": self.dynamic_quantizers}
            kind = " and ".join(k for k, n in kinds.items() if n) or "int8 weights"
        if self.nbits_layers:
            kind = f"{self.nbits_layers} MatMulNBits weight-only layers"
        parity = ""
        if self.max_abs_error is not None:
            parity = f"; ORT vs PyTorch max |diff| {self.max_abs_error:.3g}"
            if self.top1_agreement is not None:
                parity += f", top-1 agreement {self.top1_agreement:.3f}"
        int4 = f", {self.int4_weights} int4" if self.int4_weights else ""
        return f"{self.path} ({kind}, {self.file_bytes:,} bytes, {self.int8_weights} int8" \
               f"{int4} weight tensors{parity})"  # fmt: skip


def export_onnx(
    model: nn.Module,
    example_inputs: Any,
    path: str | Path,
    *,
    check: bool = True,
    dynamic_batch: bool = True,
    opset: int = OPSET,
    compact: bool = True,
    low_bit: str = "int4",
) -> ExportReport:
    """Write ``model`` as ONNX (int8 QDQ when it is quantized) and check it in ONNX Runtime.

    The file is written to a temporary name and renamed, so a failed export never leaves a
    half-written file at ``path``. With ``check=True`` the example inputs run through ONNX
    Runtime and the report holds the max difference and top-1 agreement with PyTorch.
    Weight-only layers (``ts.quantize(..., {"weight_only": True})``) become
    ``com.microsoft::MatMulNBits`` nodes holding the packed 4/8-bit weights, their scales and
    zero points (:func:`nbits_weight_bytes` counts those bytes).
    ``compact=True`` stores each repeated constant once and gives tensors short names instead
    of the exporter's module paths (which, for a small int8 model, take a fifth of the file);
    ``compact=False`` keeps the readable names for debugging. Weights of layers quantized to
    2-4 bits are stored packed as ONNX ``INT4`` (``low_bit="int4"``, the default: the file holds
    the bits; the file's opset becomes 21, and ONNX Runtime dequantizes those weights once at
    session start and runs the layers in float) or on a finer int8 grid (``low_bit="int8"``:
    twice the bytes, run by the int8 kernels).

    Example:
        >>> import tempfile, torch, torchslim as ts
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
        >>> with tempfile.TemporaryDirectory() as d:
        ...     rep = ts.export_onnx(net, torch.randn(2, 4), f"{d}/m.onnx")
        >>> rep.max_abs_error < 1e-5
        True
    """
    if low_bit not in ("int4", "int8"):
        raise ValueError(f"low_bit must be 'int4' or 'int8', got {low_bit!r}")
    path = Path(path)
    inputs = input_tuple(example_inputs)
    quantized = is_quantized(model)
    weight_only = any(isinstance(m, WeightOnlyLinear) for m in model.modules())
    custom = {MS_DOMAIN: 1} if weight_only else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    names = input_names(model, inputs)
    args, kwargs = split_inputs(inputs)
    keyword = [v for v in ordered_kwargs(model, kwargs).values() if isinstance(v, torch.Tensor)]
    tensors = [*args, *keyword]
    # A batch axis only where every input is a batched tensor (a detector takes a list of
    # images, whose first axis is their channels); token ids and masks (integer, 2-D) also
    # get a sequence axis.
    batched = all(isinstance(t, torch.Tensor) for t in tensors)
    axes = None
    if dynamic_batch and batched:
        axes = {n: {0: "batch", 1: "sequence"} if t.ndim == 2 and not t.is_floating_point()
                else {0: "batch"} for n, t in zip(names, tensors, strict=True)}  # fmt: skip
    try:
        with (
            module_mode(model, training=False),
            torch.no_grad(),
            warnings.catch_warnings(),
            _constant_qparams(model),
        ):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            if axes is not None:
                axes["output"] = {0: "batch"}
            module, args = exportable(model, inputs)
            torch.onnx.export(module, args, str(tmp), opset_version=opset, dynamo=False,
                              input_names=names, output_names=["output"],
                              dynamic_axes=axes, custom_opsets=custom)  # fmt: skip
        proto = onnx.load(str(tmp))
        if finite_attention_masks(proto.graph):
            _prune_unused(proto.graph)  # the -inf constants the masks no longer read
        int8 = int4 = 0
        nbits = sum(n.op_type == "MatMulNBits" for n in proto.graph.node)
        if quantized:
            fold_weight_quantization(proto)
            int4 = pack_int4_weights(proto) if low_bit == "int4" else 0
            quantize_biases(proto)
            quantize_pool_outputs(proto.graph)
            int8 = count_int8_weights(proto.graph)
            if any(n.op_type == "DynamicQuantizeLinear" for n in proto.graph.node):
                share_dynamic_quantizers(proto.graph)
            if compact:
                half_float_vectors(proto.graph)
            if int4 and opset < INT4_OPSET:  # DequantizeLinear takes INT4 from opset 21 on
                proto = onnx.version_converter.convert_version(proto, INT4_OPSET)
        if compact and not _has_subgraphs(proto.graph):  # If/Loop bodies read outer names
            share_constants(proto.graph)
            compact_names(proto.graph)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, TorchslimError):
            raise
        raise ExportError(f"export_onnx: exporting {type(model).__name__} failed: "
                          f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    ops = [n.op_type for n in proto.graph.node]
    report = ExportReport(path, path.stat().st_size, quantized, int8, int4_weights=int4,
                          nbits_layers=nbits, dynamic_quantizers=ops.count("DynamicQuantizeLinear"),
                          static_quantizers=ops.count("QuantizeLinear"))  # fmt: skip
    if check:
        report.max_abs_error, report.top1_agreement = ort_parity(model, inputs, path)
    return report


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in graph.node for a in n.attribute)  # fmt: skip


@contextlib.contextmanager
def _constant_qparams(model: nn.Module) -> Iterator[None]:
    """Compute every scale and zero point outside the trace, so they export as constants."""
    frozen = []
    nbits = []
    for m in model.modules():
        if isinstance(m, WeightOnlyLinear):  # packed codes made here: constants of the file
            if m.weight_fake_quant.enabled:
                m.onnx_nbits = onnx_nbits_weight(m)
                nbits.append(m)
            continue
        if isinstance(m, FakeQuantize) and m.observer.min_val.numel():
            m.qparams()
        wq = getattr(m, "weight_fake_quant", None)
        if wq is not None and wq.enabled and isinstance(getattr(m, "weight", None), torch.Tensor):
            original = m.weight.data
            m.weight.data = wq.freeze(original)
            frozen.append((m, wq, original))
            dynamic = getattr(m, "input_fake_quant", None)
            if (isinstance(m, QuantLinear) and isinstance(dynamic, DynamicQuantize)
                    and dynamic.enabled and dynamic.bits == 8):  # fmt: skip
                # int8 weight made here, outside the trace, so it exports as a constant
                m.onnx_int8 = onnx_int8_weight(m)
            elif isinstance(m, QuantEmbedding):  # int8 rows gathered, then dequantized
                m.onnx_int8 = onnx_int8_table(m)
    try:
        yield
    finally:
        for m in nbits:
            m.__dict__.pop("onnx_nbits", None)
        for m, wq, original in frozen:
            wq.frozen = None
            m.weight.data = original
            m.__dict__.pop("onnx_int8", None)


def ort_parity(model: nn.Module, inputs: tuple[torch.Tensor, ...],
               path: Path) -> tuple[float, float | None]:  # fmt: skip
    """Max |ORT - PyTorch| over the first output, and top-1 agreement for 2-D outputs."""
    session = ort_session(path)
    got = session.run(None, ort_feed(session, inputs))[0]
    with torch.no_grad():
        out = call_model(model.eval(), inputs)
    ref = next(t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
    ref = ref.detach().cpu().numpy()
    err = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
    batched = all(isinstance(t, torch.Tensor) for t in inputs)  # logits, not boxes
    agree = float((got.argmax(1) == ref.argmax(1)).mean()) if ref.ndim == 2 and batched else None
    return err, agree


class OnnxModule(nn.Module):
    """An ONNX file in ONNX Runtime as a module, so that :func:`torchslim.train.evaluate`
    measures it exactly as it measures the PyTorch model: logits (a classifier, a segmenter's
    first output), or, for ``task="detection"``, one dict of ``boxes``, ``labels`` and
    ``scores`` per image of the list it is given (a detector's file takes one image). Keyword
    tensors (a tokenizer's output) feed the inputs of those names; the first output (an
    encoder's token states) is returned.

    Example:
        >>> import tempfile, torch, torchslim as ts
        >>> net = torch.nn.Linear(4, 2).eval()
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = ts.export_onnx(net, torch.randn(1, 4), f"{d}/m.onnx")
        ...     ort_net = OnnxModule(f"{d}/m.onnx")
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(ort_net(x), net(x), atol=1e-5)
        True
    """

    def __init__(self, path: str | Path, *, task: str = "classification",
                 threads: int | None = None) -> None:  # fmt: skip
        super().__init__()
        self.session = ort_session(path, threads)
        self.task = task
        self.names = [i.name for i in self.session.get_inputs()]

    def _run(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        feed = {n: t.detach().cpu().numpy() for n, t in zip(self.names, tensors, strict=True)}
        return [torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed)]

    def forward(self, *inputs: Any, **keywords: Any) -> Any:
        if keywords:
            feed = ort_feed(self.session, (*inputs, Kwargs(keywords)))
            return torch.from_numpy(np.asarray(self.session.run(None, feed)[0]))
        if self.task == "detection":
            outs = [self._run(image) for image in inputs[0]]
            return [{"boxes": o[0], "labels": o[1], "scores": o[2]} for o in outs]
        return self._run(*inputs)[0]


def ort_kernels(path: str | Path, *, level: str = "all") -> collections.Counter[str]:
    """How many of each op ONNX Runtime runs for a file, after its graph optimisations
    (``level``: "basic", "extended" or "all"): shows whether int8 layers became integer kernels.

    Example:
        >>> import tempfile, torch, torchslim as ts
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = ts.export_onnx(torch.nn.Linear(4, 2), torch.randn(1, 4), f"{d}/m.onnx")
        ...     sorted(ort_kernels(f"{d}/m.onnx"))
        ['Gemm']
    """
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        ort_session(path, level=level, optimized_model_path=optimized)
        graph = onnx.load(str(optimized)).graph
    return collections.Counter(n.op_type for n in graph.node)


def evaluate_onnx(path: str | Path, data: Any, *, batch_size: int = 256,
                  threads: int | None = None) -> float:  # fmt: skip
    """Top-1 accuracy of an ONNX classifier in ONNX Runtime on a dataset of (input, label).

    Example:
        >>> import tempfile, torch, torchslim as ts
        >>> from torch.utils.data import TensorDataset
        >>> net = torch.nn.Linear(4, 2).eval()
        >>> data = TensorDataset(torch.randn(6, 4), torch.zeros(6, dtype=torch.long))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = ts.export_onnx(net, torch.randn(1, 4), f"{d}/m.onnx")
        ...     0.0 <= evaluate_onnx(f"{d}/m.onnx", data) <= 1.0
        True
    """
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    right = total = 0
    for x, y in loader:
        logits = session.run(None, {name: x.numpy()})[0]
        right += int((logits.argmax(1) == y.numpy()).sum())
        total += len(y)
    return right / max(total, 1)


# ---- the int8 rewrite -------------------------------------------------------------------------


def constant_values(graph: onnx.GraphProto, max_size: int | None = None) -> dict[str, np.ndarray]:
    """Values of the initializers and ``Constant`` nodes (those of at most ``max_size``
    elements, if given), and of the ``Identity`` copies of them."""

    def fits(dims: Any) -> bool:
        return max_size is None or math.prod(dims) <= max_size

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if fits(t.dims)}
    for node in graph.node:
        attr = node.attribute[0] if node.op_type == "Constant" and node.attribute else None
        if attr is not None and attr.name == "value" and fits(attr.t.dims):
            values[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input[0] in values:  # deduplicated constants
            values[node.output[0]] = values[node.input[0]]
    return values


def _axis(node: onnx.NodeProto) -> int:
    for a in node.attribute:
        if a.name == "axis":
            return int(a.i)
    return 1


def _broadcast(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return param.reshape(shape)


def quantize_array(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear on a constant: round half to even, saturate to the zero point's type.

    Example:
        >>> quantize_array(np.array([0.25, 0.35, 9.0], np.float32), np.array(0.1, np.float32),
        ...                np.array(0, np.int8), 1).tolist()
        [2, 4, 90]
    """
    info = np.iinfo(zero.dtype)
    s = _broadcast(scale.astype(np.float32), x.ndim, axis)
    z = _broadcast(zero.astype(np.int32), x.ndim, axis)
    q = np.rint(x.astype(np.float32) / s) + z
    return np.clip(q, info.min, info.max).astype(zero.dtype)


def fold_weight_quantization(model: onnx.ModelProto) -> int:
    """Replace ``QuantizeLinear(constant)`` by its int8 result; returns how many were folded."""
    graph = model.graph
    consts = constant_values(graph)
    folded, drop = 0, []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in consts:
            continue
        if len(node.input) < 3 or node.input[1] not in consts or node.input[2] not in consts:
            continue
        x, scale, zero = (consts[n] for n in node.input[:3])
        q = quantize_array(x, scale, zero, _axis(node))
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        drop.append(node)
        folded += 1
    for node in drop:
        graph.node.remove(node)
    _prune_unused(graph)
    return folded


INT4_OPSET = 21  # the first opset whose DequantizeLinear reads INT4 tensors


def pack_int4_weights(model: onnx.ModelProto) -> int:
    """Store the folded integer weights of 2-4-bit layers as ONNX ``INT4`` (two per byte)
    instead of int8; returns how many tensors were packed.

    A weight is packed when every value and its zero point fit in ``[-8, 7]``: an 8-bit layer's
    per-channel grid always reaches ±63 or more, so only layers quantized at 4 bits or fewer
    qualify. ONNX Runtime dequantizes them once when the session starts (its int8 kernels do
    not take 4-bit weights); the file holds the bits the layer was quantized to.

    Example:
        >>> from onnx import helper, TensorProto
        >>> w = numpy_helper.from_array(np.array([[-8, 7], [1, 0]], np.int8), "w")
        >>> s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
        >>> z = numpy_helper.from_array(np.array(0, np.int8), "z")
        >>> dq = helper.make_node("DequantizeLinear", ["w", "s", "z"], ["y"])
        >>> g = helper.make_graph([dq], "g", [], [helper.make_tensor_value_info(
        ...     "y", TensorProto.FLOAT, [2, 2])], [w, s, z])
        >>> m = helper.make_model(g)
        >>> pack_int4_weights(m), m.graph.initializer[0].data_type == TensorProto.INT4
        (1, True)
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts = constant_values(graph)
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    packed = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        weight = inits[node.input[0]]
        if weight.data_type != onnx.TensorProto.INT8 or len(weight.dims) < 2:
            continue
        if users.get(node.input[0], 0) != 1:
            continue  # shared with another node: leave it as it is
        q = numpy_helper.to_array(weight)
        zero_name = node.input[2] if len(node.input) > 2 else ""
        zero = consts.get(zero_name)
        if zero_name and zero is None:
            continue  # a zero point computed at run time
        if zero is None:
            zero = np.zeros(0, np.int8)
        if q.min(initial=0) < -8 or q.max(initial=0) > 7 or np.abs(zero).max(initial=0) > 7:
            continue
        weight.CopyFrom(numpy_helper.from_array(q.astype(ml_dtypes.int4), weight.name))
        if zero_name:  # a zero point of its own, of the weight's type
            new_zero = f"{weight.name}_zero_int4"
            graph.initializer.append(numpy_helper.from_array(zero.astype(ml_dtypes.int4), new_zero))
            node.input[2] = new_zero
        packed += 1
    _prune_unused(graph)
    return packed


def count_int8_weights(graph: onnx.GraphProto) -> int:
    """Weight tensors (two or more dims) stored as 8-bit integers, initializers or constants
    (not the packed weights of ``MatMulNBits``, whose bytes hold 4-bit codes too)."""
    packed = {n.input[1] for n in graph.node if n.op_type == "MatMulNBits"}
    tensors = [t for t in graph.initializer if t.name not in packed]
    tensors += [a.t for n in graph.node if n.op_type == "Constant" and n.output[0] not in packed
                for a in n.attribute if a.name == "value"]  # fmt: skip
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return sum(t.data_type in eight_bit and len(t.dims) >= 2 for t in tensors)


MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib operators (MatMulNBits)


@dataclass
class NBitsBytes:
    """The weight bytes of a file's ``MatMulNBits`` layers: as stored (packed codes, scales,
    zero points) against the float32 ``K x N`` weights they replace.

    Example:
        >>> print(NBitsBytes(layers=2, float_bytes=4096, quantized_bytes=640))
        2 MatMulNBits layers: 640 weight bytes vs 4,096 in float32 (0.156x)
    """

    layers: int
    float_bytes: int
    quantized_bytes: int

    @property
    def ratio(self) -> float:
        return self.quantized_bytes / self.float_bytes if self.float_bytes else math.nan

    def __str__(self) -> str:
        return f"{self.layers} MatMulNBits layers: {self.quantized_bytes:,} weight bytes vs " \
               f"{self.float_bytes:,} in float32 ({self.ratio:.3f}x)"  # fmt: skip


def nbits_weight_bytes(model: str | Path | onnx.ModelProto) -> NBitsBytes:
    """The bytes of every ``MatMulNBits`` node's B, scales and zero points in an ONNX file
    (torchslim's export or ONNX Runtime's ``MatMulNBitsQuantizer``), and the bytes of the float32
    ``K x N`` weights they stand for. The bias is float in both and not counted.

    Example:
        >>> import tempfile, torch, torchslim as ts
        >>> net = torch.nn.Sequential(torch.nn.Linear(64, 32))
        >>> q = ts.quantize(net, None, {"weight_only": True, "weight_bits": 4, "group_size": 32})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = ts.export_onnx(q, torch.randn(2, 64), f"{d}/m.onnx")
        ...     print(nbits_weight_bytes(f"{d}/m.onnx"))
        1 MatMulNBits layers: 1,312 weight bytes vs 8,192 in float32 (0.160x)
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    graph = proto.graph
    sizes = {t.name: _tensor_bytes(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            sizes[node.output[0]] = _tensor_bytes(node.attribute[0].t)
    layers = float_bytes = stored = 0
    for node in graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        layers += 1
        float_bytes += 4 * attrs["K"] * attrs["N"]
        stored += sum(sizes.get(name, 0) for name in node.input[1:4] if name)
    return NBitsBytes(layers, float_bytes, stored)


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return math.prod(tensor.dims) * itemsize


def quantize_biases(model: onnx.ModelProto) -> int:
    """Store Conv/Gemm float biases as int32 with scale ``s_input * s_weight``."""
    graph = model.graph
    consts = constant_values(graph)
    producer = {o: n for n in graph.node for o in n.output}
    count, position = 0, 0
    new_nodes: list[onnx.NodeProto] = []
    for node in list(graph.node):
        new_nodes.append(node)
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i == 0 for a in node.attribute):
            continue  # weight laid out [in, out]: its per-channel axis is not the bias axis
        dq_x, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        bias = consts.get(node.input[2])
        if bias is None or not all(d is not None and d.op_type == "DequantizeLinear"
                                   for d in (dq_x, dq_w)):  # fmt: skip
            continue
        s_x, s_w = consts.get(dq_x.input[1]), consts.get(dq_w.input[1])
        if s_x is None or s_w is None or s_x.size != 1:
            continue
        packed = next((t for t in graph.initializer if t.name == dq_w.input[0]), None)
        if packed is not None and packed.data_type == onnx.TensorProto.INT4:
            continue  # run in float (no int8 kernel takes 4-bit weights): the bias stays exact
        _refine_weight_scales(graph, dq_w, consts)
        _widen_weight_scales(graph, dq_w, s_x, bias, consts)
        s_w = consts[dq_w.input[1]]
        scale = (s_x.astype(np.float64).reshape(()) * s_w.astype(np.float64)).astype(np.float32)
        scale = np.broadcast_to(scale, bias.shape).copy() if scale.size > 1 else scale
        q = np.clip(np.rint(bias.astype(np.float64) / scale), -(2**31), 2**31 - 1)
        base = f"{node.input[2]}_int32_{position}"
        position += 1
        graph.initializer.extend([
            numpy_helper.from_array(q.astype(np.int32), base),
            numpy_helper.from_array(scale.astype(np.float32), base + "_scale"),
        ])  # fmt: skip
        attrs = {"axis": 0} if scale.size > 1 else {}
        # no zero point: it defaults to 0 of the input's type (int32)
        dq = helper.make_node("DequantizeLinear", [base, base + "_scale"], [base + "_dq"],
                              name=base + "_DequantizeLinear", **attrs)  # fmt: skip
        new_nodes.insert(len(new_nodes) - 1, dq)
        node.input[2] = base + "_dq"
        count += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    _prune_unused(graph)
    return count


# Finest weight grid the int8 kernels take without risking int16 saturation of u8*s8 pairs on
# CPUs without VNNI (ONNX Runtime's reduce_range level: 7-bit weights).
_REFINED_QMAX = 63


def _refine_weight_scales(graph: onnx.GraphProto, dq_w: onnx.NodeProto,
                          consts: dict[str, np.ndarray]) -> None:  # fmt: skip
    """Store low-bit weights on a finer int8 grid so the int32 bias loses nothing.

    The fused int8 kernels add the bias on the accumulator's grid ``s_x * s_w``. For 2–4-bit
    weights ``s_w`` is coarse and rounding the bias to it shifts every output of the channel
    (at 2 bits by up to a fifth of an activation step). Multiplying the integer weights by a
    power of two ``k`` and dividing their scale by ``k`` leaves every dequantized weight exactly
    as it was and makes the bias grid ``k`` times finer.
    """
    inits = {t.name: t for t in graph.initializer}
    w_name, s_name = dq_w.input[0], dq_w.input[1]
    zero = consts.get(dq_w.input[2]) if len(dq_w.input) > 2 else None
    if w_name not in inits or s_name not in consts or (zero is not None and np.any(zero != 0)):
        return
    q = numpy_helper.to_array(inits[w_name])
    if q.dtype != np.int8:
        return
    axis = _axis(dq_w)
    s_w = consts[s_name]
    if s_w.size > 1:
        reduce = tuple(d for d in range(q.ndim) if d != axis % q.ndim)
        peak = np.abs(q.astype(np.int32)).max(axis=reduce)
    else:
        peak = np.abs(q.astype(np.int32)).max(initial=0).reshape(s_w.shape)
    k = 2.0 ** np.floor(np.log2(_REFINED_QMAX / np.maximum(peak, 1)))
    k = np.maximum(k, 1.0).reshape(s_w.shape)
    if np.all(k == 1.0):
        return
    new_q = (q.astype(np.int32) * _broadcast(k, q.ndim, axis)).astype(np.int8)
    new_s = (s_w.astype(np.float32) / k.astype(np.float32)).astype(np.float32)
    suffix = f"_refined_{len(graph.initializer)}"  # new names: the old tensors may be shared
    graph.initializer.extend([numpy_helper.from_array(new_q, w_name + suffix),
                              numpy_helper.from_array(new_s, s_name + suffix)])  # fmt: skip
    dq_w.input[0], dq_w.input[1] = w_name + suffix, s_name + suffix
    consts[s_name + suffix] = new_s


def _widen_weight_scales(graph: onnx.GraphProto, dq_w: onnx.NodeProto, s_x: np.ndarray,
                         bias: np.ndarray, consts: dict[str, np.ndarray]) -> None:  # fmt: skip
    """Make ``bias / (s_x * s_w)`` fit in int32 by widening the weight scale where it does not.

    It does not fit for channels whose weights are all ~0 but whose bias is not (a BatchNorm
    with γ ≈ 0 folded into the conv): their tiny scale is raised and their int8 weights
    re-rounded on the wider grid (they stay ~0).
    """
    s_w = consts[dq_w.input[1]].astype(np.float64)
    limit = (2**31 - 1) * 0.5
    need = np.abs(bias.astype(np.float64)) / (float(s_x.reshape(())) * limit)
    if s_w.size == 1:
        need = need.max(initial=0.0)
    if not np.any(need > s_w):
        return
    new_s = np.maximum(s_w, need).astype(np.float32)
    inits = {t.name: t for t in graph.initializer}
    w_name = dq_w.input[0]
    if w_name not in inits:
        return
    if inits[w_name].data_type != onnx.TensorProto.INT8:
        return  # a packed 4-bit weight: its grid is not widened
    q = numpy_helper.to_array(inits[w_name]).astype(np.float64)
    axis = _axis(dq_w)
    ratio = _broadcast(s_w / new_s, q.ndim, axis)
    info = np.iinfo(numpy_helper.to_array(inits[w_name]).dtype)
    requant = np.clip(np.rint(q * ratio), info.min, info.max)
    dtype = numpy_helper.to_array(inits[w_name]).dtype
    inits[w_name].CopyFrom(numpy_helper.from_array(requant.astype(dtype), w_name))
    scale_name = f"{w_name}_scale"  # a new name: the old constant may be shared
    graph.initializer.append(numpy_helper.from_array(new_s.reshape(s_w.shape), scale_name))
    dq_w.input[1] = scale_name
    consts[scale_name] = new_s.reshape(s_w.shape)
    log.info("export: widened %d weight scale(s) of %s so its bias fits in int32",
             int(np.sum(need > s_w)), w_name)  # fmt: skip


_POOLS = ("GlobalAveragePool", "AveragePool", "MaxPool", "GlobalMaxPool")
_PASS_THROUGH = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


def quantize_pool_outputs(graph: onnx.GraphProto) -> int:
    """Quantize a pooling output right away where only reshapes separate it from a quantizer.

    ``DQ -> GlobalAveragePool -> Flatten -> Q`` (a classifier head) runs the pool in float;
    inserting ``Q -> DQ`` with the downstream quantizer's parameters right after the pool lets
    ONNX Runtime fuse it into an int8 ``QLinearGlobalAveragePool``. Values are unchanged:
    reshapes move no values, so quantizing before or after them rounds the same way. Returns
    how many pools were rewritten.
    """
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    count = 0
    for pool in [n for n in graph.node if n.op_type in _POOLS]:
        src = producer.get(pool.input[0])
        if src is None or src.op_type != "DequantizeLinear" or len(pool.output) != 1:
            continue
        name, quant = pool.output[0], None
        while name not in outputs and len(consumers.get(name, [])) == 1:
            nxt = consumers[name][0]
            if nxt.op_type == "QuantizeLinear" and len(nxt.input) == 3:
                quant = nxt
                break
            if nxt.op_type not in _PASS_THROUGH or nxt.input[0] != name:
                break
            name = nxt.output[0]
        if quant is None or quant.input[0] == pool.output[0]:
            continue  # no quantizer downstream, or it already follows the pool directly
        scale, zero = quant.input[1], quant.input[2]
        _hoist_constants(graph, [scale, zero], producer)
        out = pool.output[0]
        q = helper.make_node("QuantizeLinear", [f"{out}_pool_q_in", scale, zero], [f"{out}_pool_q"])
        dq = helper.make_node("DequantizeLinear", [f"{out}_pool_q", scale, zero], [out])
        pool.output[0] = f"{out}_pool_q_in"
        at = list(graph.node).index(pool) + 1
        graph.node.insert(at, dq)
        graph.node.insert(at, q)
        count += 1
    return count


def _hoist_constants(
    graph: onnx.GraphProto, names: list[str], producer: dict[str, onnx.NodeProto]
) -> None:
    """Move the nodes making constant ``names`` (``Constant``, ``Identity`` of one) to the top."""
    chain: list[onnx.NodeProto] = []
    todo = list(names)
    while todo:
        node = producer.get(todo.pop())
        if node is None or node in chain or node.op_type not in ("Constant", "Identity"):
            continue
        chain.append(node)
        todo.extend(node.input)
    for node in chain:  # inputs were appended after their consumers: insert in this order
        graph.node.remove(node)
        graph.node.insert(0, node)


def share_constants(graph: onnx.GraphProto) -> int:
    """Keep one ``Constant`` node per distinct value (the exporter writes one per use, e.g. the
    same scale for a QuantizeLinear and its DequantizeLinear); returns how many were removed."""
    first: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    rename: dict[str, str] = {}
    for node in list(graph.node):
        if (
            node.op_type != "Constant"
            or len(node.attribute) != 1
            or node.attribute[0].name != "value"
        ):
            continue
        tensor = node.attribute[0].t
        key = (tensor.data_type, tuple(tensor.dims), numpy_helper.to_array(tensor).tobytes())
        if key in first:
            rename[node.output[0]] = first[key]
            graph.node.remove(node)
        else:
            first[key] = node.output[0]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    return len(rename)


def share_dynamic_quantizers(graph: onnx.GraphProto) -> int:
    """One ``DynamicQuantizeLinear`` per tensor: the exporter writes one per Linear, so the
    query, key and value projections each quantize the same input again (ONNX Runtime's own
    quantizer shares it). Returns how many were removed.

    Example:
        >>> dq = lambda i: helper.make_node("DynamicQuantizeLinear", ["x"], [f"q{i}", f"s{i}",
        ...                                 f"z{i}"])
        >>> g = helper.make_graph([dq(0), dq(1)], "g", [], [])
        >>> share_dynamic_quantizers(g), len(g.node)
        (1, 1)
    """
    first: dict[str, onnx.NodeProto] = {}
    rename: dict[str, str] = {}
    for node in list(graph.node):
        if node.op_type != "DynamicQuantizeLinear":
            continue
        kept = first.setdefault(node.input[0], node)
        if kept is not node:
            rename.update(zip(node.output, kept.output, strict=True))
            graph.node.remove(node)
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
    return len(rename) // 3


# the ops whose float vector inputs half_float_vectors stores as float16 (a DequantizeLinear's
# float input is its scale: the data is integer)
_HALF_READERS = {"Mul", "Add", "LayerNormalization", "DequantizeLinear"}


def half_float_vectors(graph: onnx.GraphProto, *, min_size: int = 16) -> int:
    """Store float32 vectors (constants or initializers of at least ``min_size`` elements)
    that only ``Mul``, ``Add``, ``LayerNormalization`` and ``DequantizeLinear`` nodes read and
    whose values float16 holds exactly (an int8 model's biases, weight and smoothing scales
    and LayerNorm parameters: ``ts.quantize`` makes them so)
    as float16, cast back to float32 in the graph: the same values in half the bytes (a
    MiniLM's 0.17 MB of them take 0.09 MB); ONNX Runtime folds the ``Cast`` once at session
    start, so the kernels see float32. Returns how many vectors were converted.

    Example:
        >>> b = numpy_helper.from_array(np.ones(32, np.float32), "b")
        >>> g = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"])], "g", [], [],
        ...                       initializer=[b])
        >>> half_float_vectors(g), g.initializer[0].data_type == onnx.TensorProto.FLOAT16
        (1, True)
    """
    readers: dict[str, set[str]] = collections.defaultdict(set)
    for node in graph.node:
        for name in node.input:
            readers[name].add(node.op_type)
    outputs = {v.name for v in graph.output}

    def wanted(tensor: onnx.TensorProto, name: str) -> bool:
        if (tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) != 1
                or tensor.dims[0] < min_size or name in outputs or not readers[name]
                or not readers[name] <= _HALF_READERS):  # fmt: skip
            return False
        array = numpy_helper.to_array(tensor)
        return bool(np.array_equal(array.astype(np.float16).astype(np.float32), array))

    def halve(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), name)

    def cast(name: str) -> onnx.NodeProto:
        return helper.make_node("Cast", [f"{name}_f16"], [name], to=onnx.TensorProto.FLOAT)

    casts = []  # the initializers' casts: before every node
    for tensor in graph.initializer:
        if wanted(tensor, tensor.name):
            casts.append(cast(tensor.name))
            tensor.CopyFrom(halve(tensor, f"{tensor.name}_f16"))
    count = len(casts)
    for node in list(graph.node):
        if node.op_type != "Constant" or node.attribute[0].name != "value":
            continue
        name = node.output[0]
        if wanted(node.attribute[0].t, name):
            node.attribute[0].t.CopyFrom(halve(node.attribute[0].t, ""))
            node.output[0] = f"{name}_f16"
            graph.node.insert(list(graph.node).index(node) + 1, cast(name))
            count += 1
    for node in reversed(casts):
        graph.node.insert(0, node)
    return count


def compact_names(graph: onnx.GraphProto) -> None:
    """Short names instead of module paths: tensors ``t01z``, nodes ``n01z`` (base 36); the
    graph's inputs and outputs keep theirs.

    The names have one width per family, so appending characters to one never gives another:
    tools that derive new names that way (ONNX Runtime's quantizer names the copy of a shared
    bias ``t3`` as ``t30``) cannot collide with a tensor of the file. Every node gets a unique
    name, since tools look nodes up by name (the same quantizer rewires "the node named ''"
    as every unnamed node at once).

    Example:
        >>> g = helper.make_graph(
        ...     [helper.make_node("Relu", ["x"], ["model.relu.out"], name="/relu/Relu")],
        ...     "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        ...     [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
        >>> compact_names(g); (g.node[0].name, list(g.node[0].output))
        ('n0', ['t0'])
    """
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    seen = [t.name for t in graph.initializer]
    seen += [n for node in graph.node for n in (*node.input, *node.output)]
    seen += [v.name for v in graph.value_info]
    order = [n for n in dict.fromkeys(seen) if n and n not in keep]
    width = len(np.base_repr(max(len(order), len(graph.node), 1) - 1, 36))
    names = {name: f"t{np.base_repr(i, 36).lower():0>{width}}" for i, name in enumerate(order)}

    def short(name: str) -> str:
        return names.get(name, name)

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{np.base_repr(i, 36).lower():0>{width}}"
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for info in graph.value_info:
        info.name = short(info.name)


def _prune_unused(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)
