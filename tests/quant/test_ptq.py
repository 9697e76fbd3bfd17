from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchslim as ts
from torchslim.errors import ConfigError, InputError, NonFiniteError, UnsupportedOpError
from torchslim.quant import FakeQuantize
from torchslim.quant.ptq import calib_inputs
from torchslim.quant.qmodules import QuantConv2d, QuantLinear
from torchslim.quant.report import sqnr_db


class ResBlockNet(nn.Module):
    """Conv-BN-ReLU stem, a residual block, global pool, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(y) + x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = ResBlockNet()
    net.train()
    with torch.no_grad():  # give BatchNorm real statistics
        for _ in range(5):
            net(torch.randn(16, 3, 12, 12))
    return net.eval()


def _data(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 3, 12, 12, generator=g) for _ in range(n)]


def test_quantize_places_quantizers_and_stays_close_to_float() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q = ts.quantize(net, _data(), {"weight_bits": 8, "act_bits": 8, "per_channel": True},
                    progress=False)  # fmt: skip
    assert q.quant_state.layers == ["stem.0", "conv1", "conv2", "fc"]
    assert isinstance(q.get_submodule("conv1"), QuantConv2d)
    assert isinstance(q.get_submodule("fc"), QuantLinear)
    # the caller's model is untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    x = torch.randn(8, 3, 12, 12)
    with torch.no_grad():
        assert sqnr_db(net(x), q(x)) > 25
    # input, each layer's output after its ReLU, the residual add (after its ReLU), fc input
    acts = {n: m for n, m in q.named_modules() if isinstance(m, FakeQuantize)}
    assert set(acts) == {f"act_quant_{t}" for t in
                         ("x", "stem_2", "relu", "conv2", "relu_1", "flatten")}  # fmt: skip
    # a ReLU output observed as >= 0 uses the full unsigned range
    assert all(m.observer.qrange()[0] == 0 for n, m in acts.items() if "relu" in n)
    report = ts.report(q)
    assert [e.name for e in report.layers] == q.quant_state.layers
    assert all(e.sqnr_db > 20 and e.isolated_db is not None for e in report.layers)
    assert "conv1" in str(report) and report.top1_agreement is not None


def test_lower_bits_give_lower_sqnr() -> None:
    net, data = _net(), _data()
    db = [ts.quantize(net, data, {"weight_bits": b, "act_bits": b}, progress=False)
          .quant_report.model_sqnr_db for b in (8, 4, 2)]  # fmt: skip
    assert db[0] > db[1] > db[2]


def test_calibration_accepts_loaders_of_pairs() -> None:
    xs = torch.randn(16, 3, 12, 12)
    loader = DataLoader(TensorDataset(xs, torch.zeros(16, dtype=torch.long)), batch_size=4)
    assert [b[0].shape[0] for b in calib_inputs(loader, 2)] == [4, 4]
    q = ts.quantize(_net(), loader, {"calib_batches": 2}, progress=False)
    assert q(xs[:2]).shape == (2, 5)
    (keyword,) = calib_inputs([{"x": xs}], 1)  # a dict: keyword inputs (a tokenizer's output)
    assert list(keyword[-1]) == ["x"] and keyword[-1]["x"] is xs
    with pytest.raises(ConfigError, match="batches must be"):
        list(calib_inputs(["text"], 1))
    with pytest.raises(ConfigError, match="no batches"):
        ts.quantize(_net(), [], {}, progress=False)
    with pytest.raises(ConfigError, match="calib_data"):
        ts.quantize(_net(), None, {}, progress=False)


def test_layer_bits_and_a_quantization_without_its_report() -> None:
    net, data = _net(), _data()
    names = ts.quantize(net, data, progress=False).quant_state.layers
    mixed = {"layer_bits": {names[0]: 4}, "reduce_range": False}  # 8 bits on any CPU
    full = ts.quantize(net, data, mixed, progress=False)
    quick = ts.quantize(net, data, mixed, progress=False, report=False)
    specs = [
        m.weight_fake_quant.spec.bits for m in quick.modules() if hasattr(m, "weight_fake_quant")
    ]
    assert specs[0] == 4 and set(specs[1:]) == {8}
    assert quick.quant_report is None and full.quant_report is not None
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(quick(x), full(x))  # the same model, less work


def test_config_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="did you mean 'act_bits'"):
        ts.quantize(_net(), _data(), {"act_bit": 8}, progress=False)
    with pytest.raises(ConfigError, match="skip: selector 'nope'"):
        ts.quantize(_net(), _data(), {"skip": ["nope"]}, progress=False)
    with pytest.raises(ConfigError, match="weight_bits"):
        ts.QuantConfig(weight_bits=1)


def test_skip_and_auto_skip_keep_layers_in_float() -> None:
    net = _net()
    q = ts.quantize(net, _data(), {"skip": ["fc"]}, progress=False)
    assert type(q.get_submodule("fc")) is nn.Linear and "fc" not in q.quant_state.layers
    cfg = {"weight_bits": 4, "act_bits": 4, "per_channel": False}
    ranked = ts.quantize(net, _data(), cfg, progress=False).quant_report
    worst = ranked.most_harmful(1)
    alone = {e.name: e.isolated_db for e in ranked.layers}
    assert alone[worst[0]] == min(alone.values())
    q = ts.quantize(net, _data(), {**cfg, "auto_skip": 1}, progress=False)
    assert q.quant_state.skipped == worst
    assert type(q.get_submodule(worst[0])) in (nn.Conv2d, nn.Linear)
    assert [e.name for e in q.quant_report.layers if e.in_float] == worst
    assert q.quant_report.model_sqnr_db > ranked.model_sqnr_db


def test_bias_correction_removes_the_mean_output_shift() -> None:
    net, data = _net(), _data(6)
    cfg = {"weight_bits": 3, "per_channel": False}
    plain = ts.quantize(net, data, cfg, progress=False)
    corrected = ts.quantize(net, data, {**cfg, "bias_correction": True}, progress=False)

    def shift(model: nn.Module) -> torch.Tensor:
        outs = []
        h = model.get_submodule("conv1").register_forward_hook(
            lambda m, a, o: outs.append(o.mean((0, 2, 3)))
        )
        with torch.no_grad():
            for x in data:
                model(x)
        h.remove()
        return torch.stack(outs).mean(0)

    ref = shift(_folded(net))  # the float reference, with the same BN folding
    err_plain = (shift(plain) - ref).abs().mean()
    err_corr = (shift(corrected) - ref).abs().mean()
    assert err_corr < 0.5 * err_plain


def _folded(net: nn.Module) -> nn.Module:
    import copy

    from torchslim.quant import fold_batchnorm

    f = copy.deepcopy(net)
    fold_batchnorm(f)
    return f


def test_dynamic_quantization_needs_no_calibration() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    q = ts.quantize(mlp, None, {"dynamic": True})
    assert q.quant_state.layers == ["0", "2"]
    x = torch.randn(6, 16)
    with torch.no_grad():
        assert sqnr_db(mlp(x), q(x)) > 25
    with pytest.raises(ConfigError, match=r"no nn\.Linear"):
        ts.quantize(nn.Sequential(nn.Conv2d(1, 1, 1)), None, {"dynamic": True})


def test_smoothquant_moves_activation_outliers_into_the_weights(tmp_path) -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 4)).eval()
    with torch.no_grad():
        mlp[0].weight[[3, 17]] *= 60  # two outlier channels set the per-tensor input range
    data = [torch.randn(32, 16) for _ in range(4)]
    plain = ts.quantize(mlp, data, {"dynamic": True})
    smooth = ts.quantize(mlp, data, {"dynamic": True, "smooth": 0.5})
    assert "input_smooth" in dict(smooth[1].named_buffers())
    x = torch.randn(64, 16)
    with torch.no_grad():
        assert sqnr_db(mlp(x), smooth(x)) > sqnr_db(mlp(x), plain(x)) + 6
    report = ts.export_onnx(smooth, x, tmp_path / "smooth.onnx")
    assert report.max_abs_error < 1e-2 * float(mlp(x).abs().max())
    with pytest.raises(ConfigError, match="calib_data"):
        ts.quantize(mlp, None, {"dynamic": True, "smooth": 0.5})
    static = ts.quantize(mlp, data, {"smooth": 0.5}, report=False)  # static smooths too
    assert any("smooth" in m._buffers for m in static.modules())


def test_dynamic_auto_skip_keeps_the_most_harmful_linear_float() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)).eval()
    with torch.no_grad():
        mlp[0].weight[5] *= 100  # the second layer's input: one channel sets its range
    data = [torch.randn(32, 16) for _ in range(3)]
    q = ts.quantize(mlp, data, {"dynamic": True, "auto_skip": 1})
    assert q.quant_state.skipped == ["1"] and q.quant_state.layers == ["0", "2"]
    table = ts.report(q)
    assert [e.name for e in table.layers if e.in_float] == ["1"]
    plain = ts.quantize(mlp, data, {"dynamic": True})
    x = torch.randn(64, 16)
    with torch.no_grad():
        assert sqnr_db(mlp(x), q(x)) > sqnr_db(mlp(x), plain(x)) + 6
    with pytest.raises(ConfigError, match="auto_skip: needs calib_data"):
        ts.quantize(mlp, None, {"dynamic": True, "auto_skip": 1})


def test_untraceable_model_names_the_way_out() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else x

    # the branch that runs on the calibration data holds no layer: nothing traceable to quantize
    with pytest.raises(UnsupportedOpError, match="dynamic=True"):
        ts.quantize(Branchy(), [-torch.rand(2, 4)], {}, progress=False)
    assert ts.quantize(Branchy(), None, {"dynamic": True}).quant_state.layers == ["fc"]
    # where the layer runs, it is quantized as a part; the branch stays Python
    model = Branchy().eval()
    q = ts.quantize(model, [torch.rand(2, 4)], {}, progress=False)
    assert q.quant_state.layers == ["fc.0"]
    x = torch.rand(3, 4)
    with torch.no_grad():
        assert torch.equal(q(-x), -x) and sqnr_db(model(x), q(x)) > 20


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "mobilenet_v2",
        "mobilenet_v3_small",  # squeeze-excitation blocks, as in EfficientNet
        # the same path at 80 layers, several times the others' time: in the slow set
        pytest.param("efficientnet_b0", marks=pytest.mark.slow),
    ],
)
def test_torchvision_models_quantize_and_export(name: str, tmp_path: object) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10)
    data = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    with torch.no_grad():  # BatchNorm statistics of real activations, so outputs are not ~0
        for x in data:
            model(x)
    model.eval()
    # report=False: the per-layer table runs the model once per layer (tested on small nets)
    q = ts.quantize(model, data, {}, progress=False, report=False)
    assert len(q.quant_state.layers) > 10
    report = ts.export_onnx(q, data[0], tmp_path / f"{name}.onnx")
    assert report.quantized and report.int8_weights == len(q.quant_state.layers)
    with torch.no_grad():
        scale = q(data[0]).abs().max().item()
    # ORT's int8 kernels round requantization and sigmoid differently from PyTorch's float
    # emulation: one-step differences add up over EfficientNet's 80 layers
    assert report.max_abs_error < 0.25 * scale and report.top1_agreement >= 0.75


@pytest.mark.parametrize(("reduce", "qmax"), [(True, 63), (False, 127)])
def test_reduce_range_uses_7_bit_weights(reduce: bool, qmax: int) -> None:
    q = ts.quantize(_net(), _data(), {"reduce_range": reduce}, progress=False)
    spec = q.get_submodule("conv1").weight_fake_quant.spec
    assert spec.qrange[1] == qmax
    cfg = ts.QuantConfig(reduce_range=reduce, weight_bits=4)
    assert cfg.weight_spec().bits == 4  # only 8-bit weights are narrowed


def test_first_and_last_layer_bits_cover_weights_and_inputs() -> None:
    cfg = {"weight_bits": 4, "act_bits": 4, "first_layer_bits": 8, "last_layer_bits": 6,
           "reduce_range": False}  # fmt: skip
    q = ts.quantize(_net(), _data(), cfg, progress=False)
    bits = {n: m.spec.bits for n, m in q.named_modules() if isinstance(m, FakeQuantize)}
    assert bits["act_quant_x"] == 8 and bits["act_quant_flatten"] == 6
    assert {bits[n] for n in ("act_quant_stem_2", "act_quant_relu", "act_quant_conv2")} == {4}
    weight = {n: q.get_submodule(n).weight_fake_quant.spec.bits for n in q.quant_state.layers}
    assert weight == {"stem.0": 8, "conv1": 4, "conv2": 4, "fc": 6}
    qat = ts.prepare_qat(_net(), {**cfg, "act_quantizer": "pact"})
    assert qat.get_submodule("act_quant_x").bits == 8


def test_layer_act_bits_set_the_bits_of_a_layers_input() -> None:
    cfg = {"layer_act_bits": {"conv1": 4, "f*": 6}, "reduce_range": False}
    q = ts.quantize(_net(), _data(), cfg, progress=False)
    bits = {n: m.spec.bits for n, m in q.named_modules() if isinstance(m, FakeQuantize)}
    inputs = q.quant_state.layer_input
    assert (bits[inputs["conv1"]], bits[inputs["fc"]], bits[inputs["stem.0"]]) == (4, 6, 8)
    qat = ts.prepare_qat(_net(), {**cfg, "act_quantizer": "pact"})
    assert qat.get_submodule(qat.quant_state.layer_input["conv1"]).bits == 4
    with pytest.raises(ConfigError, match="layer_act_bits: 'nope' matches no quantized layer"):
        ts.quantize(_net(), _data(), {"layer_act_bits": {"nope": 4}}, progress=False)
    with pytest.raises(ConfigError, match=r"layer_act_bits\.conv1: must be in 2\.\.8"):
        ts.QuantConfig(layer_act_bits={"conv1": 16})


def _mlp_with_overflow() -> nn.Module:
    """Layer '2' overflows: its weights are finite but its outputs are not."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 2)).eval()  # fmt: skip
    with torch.no_grad():
        net[2].weight.fill_(1e38)
    return net


def test_nan_calibration_batch_is_refused_naming_the_batch() -> None:
    data = _data()
    data[2][1, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"calib_data batch 2 \(the 3rd\).* 1 NaN value"):
        ts.quantize(_net(), data, {}, progress=False)


@pytest.mark.parametrize("mapping", ["symmetric", "saturating", "affine"])
def test_infinite_activation_is_refused_naming_the_layer_that_made_it(mapping: str) -> None:
    data = [torch.randn(8, 4) for _ in range(2)]
    pattern = r"batch 0 .*layer '2' \(\w*Linear\) turned finite inputs into infinite.*layer '4'"
    with pytest.raises(NonFiniteError, match=pattern):
        ts.quantize(_mlp_with_overflow(), data, {"act_mapping": mapping}, progress=False)


@pytest.mark.parametrize("dynamic", [False, True])
def test_nan_weight_is_refused_naming_the_parameter(dynamic: bool) -> None:
    net = _net()
    with torch.no_grad():
        net.conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"parameter 'conv1\.weight' holds 1 NaN value"):
        ts.quantize(net, None if dynamic else _data(), {"dynamic": dynamic}, progress=False)


def test_calibration_batch_of_the_wrong_shape_names_batch_shape_and_module() -> None:
    data = _data()
    data[1] = torch.randn(8, 4, 12, 12)
    pattern = (
        r"calib_data batch 1 \(the 2nd\) \(shape \(8, 4, 12, 12\), torch\.float32\): "
        r"module 'stem\.0' \(\w*Conv2d\) rejected it \(RuntimeError: [^\n]*3 channels"
    )
    with pytest.raises(InputError, match=pattern):
        ts.quantize(_net(), data, {}, progress=False)


class _ReadsItsFirstLayer(nn.Module):
    """Untraceable as a whole (a branch on a value), reading its first layer's weight in
    forward, as Hugging Face's ViT does with its patch embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.abs().max()) > 1e6:
            x = x / 1e6
        return self.body(self.proj(x.to(self.proj.weight.dtype)))


def test_a_skipped_lone_layer_is_left_as_it_is_for_a_model_that_reads_it() -> None:
    torch.manual_seed(0)
    model = _ReadsItsFirstLayer().eval()
    x = torch.randn(4, 3, 8, 8)
    qmodel = ts.quantize(model, [x], {"skip": ["proj"]}, progress=False)
    assert type(qmodel.proj) is nn.Conv2d
    assert torch.allclose(qmodel(x), model(x), atol=0.1)


def _residual_mlp() -> nn.Module:
    """Blocks adding small updates to a residual stream with outlier channels, as a
    transformer's: an update below half an int8 step of the stream is lost when the sum is
    quantized."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 16)
            with torch.no_grad():
                self.down.weight.mul_(0.05)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.down(torch.relu(self.up(x)))

    torch.manual_seed(0)
    return nn.Sequential(*[Block() for _ in range(6)], nn.Linear(16, 4)).eval()


def _outlier_inputs(n: int = 64) -> torch.Tensor:
    x = torch.randn(n, 16)
    x[:, :2] *= 30  # two outlier channels
    return x


def test_static_int8_of_a_linear_model_quantizes_layer_inputs_only_by_default() -> None:
    model, x = _residual_mlp(), _outlier_inputs()
    ref = model(x)
    errors = {}
    for placement in ("all", "inputs", "auto"):
        q = ts.quantize(model, [x], {"act_placement": placement}, progress=False, report=False)
        quantizers = [n for n, m in q.named_modules() if isinstance(m, FakeQuantize)]
        errors[placement] = float((q(x) - ref).abs().mean())
        if placement != "all":  # one quantizer per distinct layer input, none on the sums
            assert len(quantizers) == 13, quantizers
    assert errors["auto"] == errors["inputs"] < errors["all"]


def test_static_smoothquant_scales_each_linear_input_then_quantizes_it(tmp_path) -> None:
    from torchslim.quant.fake_quant import SmoothQuantize, set_quantizers

    model, x = _residual_mlp(), _outlier_inputs()
    q = ts.quantize(model, [x], {"smooth": 0.5}, progress=False, report=False)
    layers = [n for n, m in q.named_modules() if type(m).__name__ == "QuantLinear"]
    inputs = q.quant_state.layer_input
    assert layers and all(isinstance(q.get_submodule(inputs[n]), SmoothQuantize) for n in layers)
    set_quantizers(q, enabled=False)  # in float, smoothing changes nothing
    assert torch.allclose(q(x), model(x), atol=1e-4)
    set_quantizers(q, enabled=True)
    report = ts.export_onnx(q, x[:2], tmp_path / "smooth.onnx")
    assert report.max_abs_error < 1e-3
    with pytest.raises(ConfigError, match="post-training"):
        ts.prepare_qat(model, {"smooth": 0.5}, [x])


def test_static_smoothquant_linears_reading_one_tensor_share_one_scaled_quantizer(
    tmp_path,
) -> None:
    import onnx

    from torchslim.quant.fake_quant import SmoothQuantize

    class QKV(nn.Module):  # three Linears reading one tensor, as an attention block's
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = nn.Linear(16, 8), nn.Linear(16, 8), nn.Linear(16, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.q(x) * self.k(x) + self.v(x)

    torch.manual_seed(0)
    model, x = QKV().eval(), _outlier_inputs()
    q = ts.quantize(model, [x], {"smooth": 0.5}, progress=False, report=False)
    smoothers = [m for m in q.modules() if isinstance(m, SmoothQuantize)]
    assert len(smoothers) == 1
    assert set(q.quant_state.layer_input.values()) == {"smooth_quant_x"}
    with torch.no_grad():
        assert sqnr_db(model(x), q(x)) > 25
    path = tmp_path / "qkv.onnx"
    ts.export_onnx(q, x[:2], path)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Mul") == 2 and ops.count("QuantizeLinear") == 1, ops  # q * k, the smoothing


class _QKV(nn.Module):
    """Three Linears reading one input, as an attention block's query, key and value."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x) * self.k(x) + self.v(x)


def test_smooth_layers_smooths_only_the_selected_linears() -> None:
    from torchslim.quant.fake_quant import SmoothQuantize

    model, x = _residual_mlp(), _outlier_inputs()
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = linears[-1]
    static = ts.quantize(model, [x], {"smooth": 0.5, "smooth_layers": [chosen]},
                         progress=False, report=False)  # fmt: skip
    inputs = static.quant_state.layer_input
    smoothed = [n for n in static.quant_state.layers
                if isinstance(static.get_submodule(inputs[n]), SmoothQuantize)]  # fmt: skip
    assert smoothed == [chosen]
    dynamic = ts.quantize(model, [x], {"dynamic": True, "smooth": 0.5, "smooth_layers": [chosen]},
                          progress=False, report=False)  # fmt: skip
    assert [n for n in linears if "input_smooth" in dict(dynamic.get_submodule(n).named_buffers())
            ] == [chosen]  # fmt: skip
    q = ts.quantize(_QKV().eval(), [torch.randn(16, 8)], {"dynamic": True, "smooth": 0.5,
                    "smooth_layers": ["k"]}, progress=False, report=False)  # fmt: skip
    # k alone of the three readers of one input: it alone is smoothed
    assert [k for k in "qkv" if "input_smooth" in dict(getattr(q, k).named_buffers())] == ["k"]
    with pytest.raises(ConfigError, match="smooth_layers: selector 'nope' matches no"):
        ts.quantize(model, [x], {"smooth": 0.5, "smooth_layers": ["nope"]}, report=False)
    with pytest.raises(ConfigError, match="smooth_layers: set smooth"):
        ts.quantize(model, [x], {"smooth_layers": [chosen]}, report=False)


def test_token_scale_layers_take_each_tokens_own_range() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4)).eval()
    x = torch.randn(2, 12, 16)
    x[0, 3] *= 200  # one outlier token: per batch, it sets every token's int8 step
    plain = ts.quantize(mlp, None, {"dynamic": True})
    tokens = ts.quantize(mlp, None, {"dynamic": True, "token_scale_layers": ["Linear"]})
    assert tokens[0].input_fake_quant.per_token and tokens[2].input_fake_quant.per_token
    first = ts.quantize(mlp, None, {"dynamic": True, "token_scale_layers": ["0"]})
    assert first[0].input_fake_quant.per_token and not first[2].input_fake_quant.per_token
    with torch.no_grad():
        ref, rest = mlp(x), torch.ones(2, 12, dtype=torch.bool)
        rest[0, 3] = False  # the other tokens: lost in the outlier's range without it
        assert sqnr_db(ref[rest], tokens(x)[rest]) > sqnr_db(ref[rest], plain(x)[rest]) + 20
    with pytest.raises(ConfigError, match="token_scale_layers: selector 'nope' matches no"):
        ts.quantize(mlp, None, {"dynamic": True, "token_scale_layers": ["nope"]})
    with pytest.raises(ConfigError, match="token_scale_layers: scales the run-time range"):
        ts.quantize(mlp, [x], {"token_scale_layers": ["0"]}, report=False)


def test_auto_token_scale_picks_the_linear_whose_input_has_outlier_tokens() -> None:
    from torchslim.quant.report import token_scale_gains

    torch.manual_seed(0)
    # LayerNorm evens the tokens out: only the first Linear reads an outlier token
    net = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4)).eval()
    x = torch.randn(2, 12, 16)
    x[0, 3] *= 200
    cfg = {"dynamic": True, "embedding_bits": 0}
    gains = token_scale_gains(net, ts.quantize(net, None, cfg), [(x,)])
    assert gains["0"] > 10 > abs(gains["2"])
    q = ts.quantize(net, [x], {**cfg, "auto_token_scale": 1}, report=False)
    assert q[0].input_fake_quant.per_token and not q[2].input_fake_quant.per_token
    assert q.quant_state.config.token_scale_layers == ("0",)  # what was chosen is recorded
    # a layer already named is kept and not scored again; the k more come from the rest
    both = ts.quantize(net, [x], {**cfg, "token_scale_layers": ["2"], "auto_token_scale": 1},
                       report=False)  # fmt: skip
    assert both.quant_state.config.token_scale_layers == ("2", "0")
    with pytest.raises(ConfigError, match="auto_token_scale: needs calib_data"):
        ts.quantize(net, None, {**cfg, "auto_token_scale": 1})
    with pytest.raises(ConfigError, match="auto_token_scale: scales the run-time range"):
        ts.quantize(net, [x], {"auto_token_scale": 1}, report=False)
    with pytest.raises(ConfigError, match="auto_token_scale: a number of layers >= 0"):
        ts.quantize(net, [x], {**cfg, "auto_token_scale": -1}, report=False)


@pytest.mark.parametrize("scaled", [{"token_scale_layers": ["2"]}, {"auto_token_scale": 2}])
def test_a_per_token_linear_that_auto_skip_keeps_float_is_dropped_from_the_scaled(
    scaled: dict,
) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    with torch.no_grad():  # an outlier channel into the last Linear: the most harmful one
        net[0].weight[0] *= 300
        net[0].bias[0] = 50
    x = torch.randn(2, 12, 16)
    q = ts.quantize(net, [x], {"dynamic": True, "auto_skip": 1, **scaled}, report=False)
    assert q.quant_state.layers == ["0"] and isinstance(q[2], nn.Linear)  # "2" kept float
    assert "2" not in q.quant_state.config.token_scale_layers
    again = ts.quantize(net, [x], q.quant_state.config, report=False)  # rebuilds as recorded
    assert again.quant_state.layers == ["0"]


def test_static_int8_stores_embedding_tables_int8_per_row(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(1000, 32), nn.Linear(32, 4)).eval()
    ids = torch.randint(0, 1000, (8, 6))
    sizes = {}
    for bits, scales in ((0, "row"), (8, "row"), (8, "column")):
        cfg = {"embedding_bits": bits, "embedding_scales": scales}
        q = ts.quantize(model, [ids], cfg, progress=False, report=False)
        assert q.quant_state.embeddings == (["0"] if bits else [])
        report = ts.export_onnx(q, ids[:2], tmp_path / f"e{bits}{scales}.onnx")
        assert report.max_abs_error < 1e-2
        sizes[bits, scales] = report.file_bytes
    # the table's bytes: 4 -> 1 per value, plus 1,000 row scales or 32 column scales
    assert sizes[8, "row"] < 0.35 * sizes[0, "row"]
    assert sizes[8, "row"] - sizes[8, "column"] > 4 * (1000 - 32) - 200
