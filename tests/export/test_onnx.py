from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import torchslim as ts
from torchslim.errors import ConfigError
from torchslim.export import ExportError, ort_kernels
from torchslim.export.onnx import quantize_array


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 16, 16))
    return net.eval()


def _calib(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(8, 3, 16, 16, generator=g) for _ in range(n)]


def test_float_export_matches_pytorch(tmp_path: Path) -> None:
    net = _convnet()
    report = ts.export_onnx(net, torch.randn(4, 3, 16, 16), tmp_path / "f.onnx")
    assert not report.quantized and report.int8_weights == 0
    assert report.max_abs_error < 1e-4 and report.top1_agreement == 1.0
    # the batch dimension is dynamic
    session = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((7, 3, 16, 16), np.float32)})[0].shape == (7, 10)


class _Masked(nn.Module):
    """Takes keyword tensors and a flag, as Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, scale: float = 1.0,
                hidden: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
        out = self.fc(x * mask.unsqueeze(-1)) * scale
        return {"out": out, "hidden": x} if hidden else {"out": out}


def test_keyword_inputs_export_in_signature_order_with_flags_as_constants(tmp_path: Path) -> None:
    x, mask = torch.randn(2, 5, 4), (torch.rand(2, 5) > 0.3).float()
    inputs = {"scale": 2.0, "mask": mask, "x": x}  # any order; scale is not a tensor
    report = ts.export_onnx(_Masked().eval(), inputs, tmp_path / "m.onnx")
    assert report.max_abs_error < 1e-5
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [i.name for i in session.get_inputs()] == ["x", "mask"]
    assert [i.shape[0] for i in session.get_inputs()] == ["batch", "batch"]
    assert ts.measure_latency(_Masked().eval(), inputs, backend="ort", repeats=2).batch_size == 2


def test_int8_export_stores_int8_weights_runs_int8_kernels_and_matches(tmp_path: Path) -> None:
    net = _convnet()
    q = ts.quantize(net, _calib(), {}, progress=False)
    x = torch.randn(16, 3, 16, 16)
    report = ts.export_onnx(q, x, tmp_path / "q.onnx")
    float_report = ts.export_onnx(net, x, tmp_path / "f.onnx", check=False)
    model = onnx.load(str(tmp_path / "q.onnx"))
    kinds = {t.name: t.data_type for t in model.graph.initializer}
    int8 = [n for n, k in kinds.items() if k == onnx.TensorProto.INT8]
    assert report.int8_weights == len(int8) == 4
    # no float copy of any weight is left in the file (float tensors are per-channel scales
    # only, at most one value per output channel); biases are int32
    floats = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT]  # fmt: skip
    assert all(f.ndim <= 1 and f.size <= 64 for f in floats)
    assert sum(k == onnx.TensorProto.INT32 for k in kinds.values()) >= 4
    assert report.file_bytes < 0.35 * float_report.file_bytes
    ops = ort_kernels(tmp_path / "q.onnx", level="extended")
    assert ops["QLinearConv"] == 3 and ops["QGemm"] + ops["QLinearMatMul"] == 1
    # the classifier head's pooling runs in int8 too (no float island before the Linear)
    assert ops["QLinearGlobalAveragePool"] == 1 and ops["GlobalAveragePool"] == 0
    # ORT's integer kernels agree with the fake-quantized PyTorch model
    with torch.no_grad():
        out = q(x)
    assert report.top1_agreement == 1.0
    assert report.max_abs_error < 0.02 * float(out.abs().max())


@pytest.mark.parametrize("bits", [4, 2])
def test_sub_8_bit_models_export_in_8_bit_containers(tmp_path: Path, bits: int) -> None:
    q = ts.quantize(_convnet(), _calib(), {"weight_bits": bits, "act_bits": bits},
                    progress=False)  # fmt: skip
    x = torch.randn(8, 3, 16, 16)
    report = ts.export_onnx(q, x, tmp_path / "q.onnx", low_bit="int8")
    with torch.no_grad():
        out = q(x)
    # one grid step is 1/15 (4 bits) or 1/3 (2 bits) of a range: allow a few rounding flips
    assert report.top1_agreement >= 0.75
    assert report.max_abs_error < (0.1 if bits == 4 else 0.3) * float(out.abs().max())
    model = onnx.load(str(tmp_path / "q.onnx"))
    weights = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.INT8]  # fmt: skip
    # each output channel holds at most 2**bits levels, stored on a finer int8 grid that still
    # fits ONNX Runtime's 7-bit weight range
    assert weights and all(np.abs(w).max() <= 63 for w in weights)
    assert all(len(np.unique(c)) <= 2**bits for w in weights for c in w.reshape(len(w), -1))


@pytest.mark.parametrize("low_bit", ["int8", "int4"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_low_bit_weights_keep_the_bias_exact_in_onnx_runtime(
    tmp_path: Path, seed: int, low_bit: str
) -> None:
    # The int8 kernels add the bias on the grid s_input * s_weight; at 2 bits that grid is
    # coarse, and rounding the bias to it flipped whole output steps (ORT vs PyTorch diff ~2)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten()).eval()
    with torch.no_grad():
        net[0].bias.uniform_(-1, 1)
    calib = [torch.randn(8, 3, 16, 16) for _ in range(4)]
    q = ts.quantize(net, calib, {"weight_bits": 2, "act_bits": 2}, progress=False)
    report = ts.export_onnx(q, torch.randn(32, 3, 16, 16), tmp_path / "q.onnx", low_bit=low_bit)
    assert report.max_abs_error < 1e-5


def test_4_bit_layers_are_stored_as_int4_and_the_file_shrinks(tmp_path: Path) -> None:
    net, calib, x = _convnet(), _calib(), torch.randn(8, 3, 16, 16)
    mixed = ts.quantize(net, calib, {"layer_bits": {"3": 4, "6": 4}}, progress=False)
    eight = ts.quantize(net, calib, {}, progress=False)
    reports = {
        "int8": ts.export_onnx(eight, x, tmp_path / "int8.onnx"),
        "mixed": ts.export_onnx(mixed, x, tmp_path / "mixed.onnx"),
        "containers": ts.export_onnx(mixed, x, tmp_path / "c.onnx", low_bit="int8"),
    }
    assert reports["mixed"].int4_weights == 2 and reports["mixed"].int8_weights == 2
    assert reports["containers"].int4_weights == 0 and reports["int8"].int4_weights == 0
    model = onnx.load(str(tmp_path / "mixed.onnx"))
    int4 = [t for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.INT4 and len(t.dims) >= 2]  # fmt: skip
    assert sorted(math.prod(t.dims) for t in int4) == [32 * 64 * 9, 64 * 64 * 9]
    assert all(len(t.raw_data) == (math.prod(t.dims) + 1) // 2 for t in int4)  # 2 per byte
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21
    saved = (32 * 64 * 9 + 64 * 64 * 9) // 2  # the two layers' weights, at half a byte each
    assert reports["int8"].file_bytes - reports["mixed"].file_bytes >= 0.9 * saved
    assert reports["mixed"].top1_agreement == 1.0
    with torch.no_grad():
        assert reports["mixed"].max_abs_error < 0.05 * float(mixed(x).abs().max())
    with pytest.raises(ValueError, match="low_bit"):
        ts.export_onnx(mixed, x, tmp_path / "bad.onnx", low_bit="int2")
    with pytest.raises(ConfigError, match="matches no quantized layer"):
        ts.quantize(net, calib, {"layer_bits": {"2": 4}}, progress=False)  # "2" is a ReLU


def test_compact_export_shares_constants_and_shortens_names(tmp_path: Path) -> None:
    q = ts.quantize(_convnet(), _calib(), {}, progress=False)
    x = torch.randn(4, 3, 16, 16)
    small = ts.export_onnx(q, x, tmp_path / "small.onnx")
    full = ts.export_onnx(q, x, tmp_path / "full.onnx", compact=False)
    assert small.file_bytes < full.file_bytes
    assert small.max_abs_error == pytest.approx(full.max_abs_error, abs=1e-6)
    graph = onnx.load(str(tmp_path / "small.onnx")).graph
    values = [onnx.numpy_helper.to_array(n.attribute[0].t).tobytes()
              for n in graph.node if n.op_type == "Constant"]  # fmt: skip
    assert len(values) == len(set(values))  # each distinct constant stored once
    assert [i.name for i in graph.input] == ["input"] and graph.output[0].name == "output"
    assert all(len(t.name) <= 8 for t in graph.initializer)


def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvals(x).real  # no ONNX symbolic

    with pytest.raises(ExportError, match="Bad"):
        ts.export_onnx(Bad(), torch.randn(2, 3, 3), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_quantize_array_follows_onnx_rounding_and_saturation() -> None:
    x = np.array([[0.05, 0.15, -0.25], [1.0, 100.0, -100.0]], np.float32)
    q = quantize_array(x, np.array([0.1, 1.0], np.float32), np.array([0, 0], np.int8), 0)
    assert q.tolist() == [[0, 2, -2], [1, 100, -100]]
    u = quantize_array(x[1], np.array(1.0, np.float32), np.array(128, np.uint8), 1)
    assert u.tolist() == [129, 228, 28] and u.dtype == np.uint8


def test_bias_of_a_dead_channel_still_fits_int32(tmp_path: Path) -> None:
    # a channel whose weights are ~0 but whose bias is not (a folded BatchNorm with gamma ~ 0)
    net = _convnet()
    with torch.no_grad():
        net[0].weight[5].fill_(1e-12)
        net[0].bias[5] = 0.5
    q = ts.quantize(net, _calib(), {}, progress=False)
    report = ts.export_onnx(q, torch.randn(8, 3, 16, 16), tmp_path / "q.onnx")
    with torch.no_grad():
        out = q(torch.randn(8, 3, 16, 16))
    assert report.max_abs_error < 0.02 * float(out.abs().max())


def test_dynamic_quantized_model_exports_int8_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    q = ts.quantize(mlp, None, {"dynamic": True})
    report = ts.export_onnx(q, torch.randn(8, 256), tmp_path / "dyn.onnx")
    assert report.int8_weights == 2 and report.top1_agreement == 1.0
    assert report.max_abs_error < 1e-4
    assert "dynamic int8" in str(report) and "QDQ" not in str(report)  # what the file holds
    float_bytes = ts.export_onnx(mlp, torch.randn(8, 256), tmp_path / "f.onnx").file_bytes
    assert report.file_bytes < 0.3 * float_bytes
    # ONNX Runtime runs each layer as one integer kernel, not a float Gemm on dequantized data
    ops = ort_kernels(tmp_path / "dyn.onnx", level="extended")
    assert ops["DynamicQuantizeMatMul"] == 2
    assert ops["Gemm"] + ops["FusedGemm"] + ops["MatMul"] == 0


class _QKV(nn.Module):
    """Three Linears reading one normalized input (attention's query, key and value)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(64)
        self.q, self.k, self.v = (nn.Linear(64, 64) for _ in range(3))
        with torch.no_grad():  # a bias element under float16's smallest normal
            self.q.bias[0] = 1e-6
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.q(x) * self.k(x) + self.v(x)


@pytest.mark.parametrize("smooth", [0.0, 0.5])
def test_a_dynamic_int8_file_quantizes_a_shared_input_once_and_halves_its_vectors(
    tmp_path: Path, smooth: float
) -> None:
    torch.manual_seed(0)
    net, x = _QKV().eval(), torch.randn(4, 10, 64)
    q = ts.quantize(net, [x], {"dynamic": True, "smooth": smooth}, progress=False)
    report = ts.export_onnx(q, x, tmp_path / "qkv.onnx")
    full = ts.export_onnx(q, x, tmp_path / "full.onnx", compact=False)
    assert report.max_abs_error < 1e-4  # the same numbers as the PyTorch model
    graph = onnx.load(str(tmp_path / "qkv.onnx")).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    # one quantizer for the three (smoothed: after the one smoothing Mul they share)
    assert ops["DynamicQuantizeLinear"] == 1 and ops["Mul"] == 7 + (1 if smooth else 0)
    halves = [n for n in graph.node if n.op_type == "Constant"
              and n.attribute[0].t.data_type == onnx.TensorProto.FLOAT16]  # fmt: skip
    halves += [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    # per Linear: its weight scales and bias; the LayerNorm's weight and bias (and one
    # smoothing vector, stored once)
    assert len(halves) == 3 * 2 + 2 + (1 if smooth else 0)
    assert report.file_bytes < full.file_bytes
    kernels = ort_kernels(tmp_path / "qkv.onnx", level="extended")  # integer kernels still
    assert kernels["DynamicQuantizeMatMul"] + kernels["MatMulIntegerToFloat"] == 3
    assert kernels["MatMul"] + kernels["Gemm"] == 0


def test_a_static_int8_file_stores_its_linear_vectors_as_float16(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net, x = _QKV().eval(), torch.randn(4, 10, 64)
    q = ts.quantize(net, [x], {"smooth": 0.5}, progress=False, report=False)
    report = ts.export_onnx(q, x, tmp_path / "qkv.onnx")
    full = ts.export_onnx(q, x, tmp_path / "full.onnx", compact=False)
    assert report.max_abs_error < 1e-3 and report.file_bytes < full.file_bytes
    graph = onnx.load(str(tmp_path / "qkv.onnx")).graph
    halves = [n for n in graph.node if n.op_type == "Constant"
              and n.attribute[0].t.data_type == onnx.TensorProto.FLOAT16]  # fmt: skip
    halves += [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    # per Linear its weight scales and bias, the LayerNorm's two, the one smoothing vector
    assert len(halves) == 3 * 2 + 2 + 1
    kernels = ort_kernels(tmp_path / "qkv.onnx", level="extended")  # integer kernels still
    assert kernels["MatMulIntegerToFloat"] + kernels["QLinearMatMul"] == 3, kernels
    assert kernels["MatMul"] + kernels["Gemm"] == 0


def test_dynamic_export_handles_token_inputs_and_missing_bias(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(32, 64, bias=False), nn.GELU(), nn.Linear(64, 8)).eval()
    q = ts.quantize(net, None, {"dynamic": True, "per_channel": False})
    report = ts.export_onnx(q, torch.randn(2, 7, 32), tmp_path / "tok.onnx")
    assert report.int8_weights == 2
    with torch.no_grad():
        scale = float(q(torch.randn(2, 7, 32)).abs().max())
    assert report.max_abs_error < 1e-4 * max(scale, 1.0)


def test_token_scaled_dynamic_linear_exports_as_an_integer_kernel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 8)).eval()
    x = torch.randn(2, 7, 32)
    x[1, 2] *= 100
    q = ts.quantize(net, None, {"dynamic": True, "token_scale_layers": ["2"]})
    report = ts.export_onnx(q, x, tmp_path / "tok.onnx")
    with torch.no_grad():
        scale = float(q(x).abs().max())
    assert report.int8_weights == 2 and report.max_abs_error < 1e-4 * max(scale, 1.0)
    plain = ts.quantize(net, None, {"dynamic": True})
    ts.export_onnx(plain, x, tmp_path / "plain.onnx")
    ops = {name: collections.Counter(n.op_type for n in onnx.load(str(tmp_path / name)).graph.node)
           for name in ("tok.onnx", "plain.onnx")}  # fmt: skip
    added = ops["tok.onnx"] - ops["plain.onnx"]
    assert added["ReduceMax"] == 1 and added["Div"] == 1  # one layer's per-token range
    kernels = ort_kernels(tmp_path / "tok.onnx", level="extended")
    assert kernels["DynamicQuantizeMatMul"] + kernels["MatMulIntegerToFloat"] == 2, kernels
    assert kernels["MatMul"] + kernels["Gemm"] == 0


class _Batches:
    """A CalibrationDataReader for ONNX Runtime's quantizer: two random batches."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        g = torch.Generator().manual_seed(5)
        self._it = iter([{"input": torch.randn(shape, generator=g).numpy()} for _ in range(2)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_default_float_export_is_accepted_by_onnx_tools(tmp_path: Path, arch: str) -> None:
    # The compact names once let ORT's quantizer name a shared bias's copy ("t3" + "0") like
    # an existing activation ("t30"): quantize_static raised KeyError or wrote a broken file.
    import torchvision
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    ts.export_onnx(net, x, tmp_path / "fp.onnx", check=False)
    model = onnx.load(str(tmp_path / "fp.onnx"))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    quant_pre_process(str(tmp_path / "fp.onnx"), str(tmp_path / "pre.onnx"))
    quantize_static(str(tmp_path / "pre.onnx"), str(tmp_path / "q.onnx"), _Batches(x.shape),
                    quant_format=QuantFormat.QDQ, per_channel=True)  # fmt: skip
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    qops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert qops.count("DequantizeLinear") > 2 * convs  # every conv: weight, input and bias
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": x.numpy()})[0]
    assert out.shape == (1, 1000) and np.isfinite(out).all()
    names = [n.name for n in model.graph.node]  # tools look nodes up by name
    assert all(names) and len(set(names)) == len(names)


def test_a_detector_taking_a_list_of_images_exports_and_times(tmp_path: Path) -> None:
    # A list input (no batch axis to make dynamic), data-dependent control flow (If nodes,
    # whose bodies read outer names: the file is not compacted), boxes as output.
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from tiny_detectors import tiny_faster_rcnn

    from torchslim.runtime import measure_latency

    model = tiny_faster_rcnn().eval()
    images = [torch.rand(3, 64, 64)]
    report = ts.export_onnx(model, (images,), tmp_path / "det.onnx")
    assert report.top1_agreement is None  # boxes, not logits
    graph = onnx.load(str(tmp_path / "det.onnx")).graph
    channels = graph.input[0].type.tensor_type.shape.dim[0]
    assert len(graph.input) == 1 and channels.dim_value == 3  # not a dynamic "batch" axis
    session = ort.InferenceSession(str(tmp_path / "det.onnx"))
    boxes = session.run(None, {"input": images[0].numpy()})[0]
    assert boxes.ndim == 2 and boxes.shape[1] == 4
    latency = measure_latency(tmp_path / "det.onnx", (images,), backend="ort", repeats=2)
    assert latency.median_ms > 0
