"""Weight-only int4/int8 quantization: group-wise grids, GPTQ, and the MatMulNBits export run
in ONNX Runtime."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto
from torch import nn

import torchslim as ts
from torchslim.errors import ConfigError
from torchslim.export.onnx import nbits_weight_bytes
from torchslim.quant import QATConfig, QuantConfig
from torchslim.quant.fake_quant import set_quantizers
from torchslim.quant.ptq import calib_forward, calib_inputs
from torchslim.quant.weight_only import (
    WeightOnlyLinear,
    WeightOnlyQuantize,
    _next_hessians,
    dequantize_groups,
    group_qparams,
    int8_blocks,
    onnx_nbits_weight,
    pack_nbits,
    quantize_groups,
    unpack_nbits,
)

WEIGHT_ONLY = {"weight_only": True, "weight_bits": 4, "group_size": 32}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(80, 64), nn.ReLU(), nn.Linear(64, 16, bias=False)).eval()


def _float_weights(path: str) -> list[str]:
    """Float tensors of two or more dims in the file (a float weight left behind)."""
    graph = onnx.load(path).graph
    tensors = list(graph.initializer)
    tensors += [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute]
    return [t.name for t in tensors if t.data_type == TensorProto.FLOAT and len(t.dims) >= 2]


def _ops(path: str) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


def test_group_grid_round_trips_and_bounds_the_error() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 70)  # 70: the last group of 32 is partial
    scale, zero = group_qparams(w, 4, 32)
    assert scale.shape == zero.shape == (6, 3)
    codes = quantize_groups(w, scale, zero, 4, 32)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15
    back = dequantize_groups(codes, scale, zero, 32)
    per_column = scale.repeat_interleave(32, 1)[:, :70]
    assert bool(((back - w).abs() <= per_column / 2 + 1e-6).all())
    assert torch.equal(unpack_nbits(pack_nbits(codes, 4, 32, pad=zero), 4, 70), codes)
    assert torch.equal(unpack_nbits(pack_nbits(codes, 8, 32, pad=zero), 8, 70), codes)


@pytest.mark.parametrize("level", [4, 1])
def test_forward_is_the_dequantized_weight(level: int) -> None:
    net = _mlp()
    q = ts.quantize(net, None, {**WEIGHT_ONLY, "accuracy_level": level}, progress=False)
    layer = q[0]
    assert isinstance(layer, WeightOnlyLinear)
    x = torch.randn(3, 80)
    w = dequantize_groups(layer.weight_fake_quant.codes, layer.weight_fake_quant.scale,
                          layer.weight_fake_quant.zero, 32)  # fmt: skip
    x_in = int8_blocks(x, 32) if level == 4 else x
    torch.testing.assert_close(layer(x), F.linear(x_in, w, layer.bias))
    set_quantizers(q, enabled=False)  # the float weight is kept: disabled, it is the float net
    torch.testing.assert_close(q(x), net(x))


@pytest.mark.parametrize(("bits", "group", "level"), [(4, 32, 4), (8, 16, 4), (4, 128, 1)])
def test_mlp_exports_matmulnbits_that_ort_runs(tmp_path, bits: int, group: int,
                                               level: int) -> None:  # fmt: skip
    cfg = {"weight_only": True, "weight_bits": bits, "group_size": group, "accuracy_level": level}
    q = ts.quantize(_mlp(), None, cfg, progress=False)
    assert q.quant_state.layers == ["0", "2"] and q.quant_report is None
    rep = ts.export_onnx(q, torch.randn(5, 80), tmp_path / "m.onnx")
    assert rep.max_abs_error < 1e-4, rep
    assert rep.nbits_layers == 2 and "MatMulNBits" in str(rep)
    assert _ops(str(tmp_path / "m.onnx")).count("MatMulNBits") == 2
    assert _float_weights(str(tmp_path / "m.onnx")) == []  # no float copy of a weight
    size = nbits_weight_bytes(tmp_path / "m.onnx")
    assert size.float_bytes == 4 * (80 * 64 + 64 * 16)
    assert size.ratio < (0.3 if bits == 4 else 0.4), size


def test_packed_tensors_have_matmulnbits_shapes() -> None:
    layer = nn.Linear(80, 6)
    q = WeightOnlyQuantize.round_to_nearest(layer.weight, bits=4, group_size=32)
    from torchslim.quant.weight_only import to_weight_only

    packed, scales, zeros = onnx_nbits_weight(to_weight_only(layer, q))
    assert packed.shape == (6, 3, 16) and packed.dtype == torch.uint8
    assert scales.shape == (18,) and zeros.shape == (12,)  # 3 groups: 2 bytes of zero points


def _tiny(kind: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64)  # fmt: skip
        model = transformers.BertModel(config)
    else:  # GPT-2's Linears are transformers' Conv1D (weight [in, out])
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100,
                                         bos_token_id=0, eos_token_id=0,
                                         use_cache=False)  # fmt: skip
        model = transformers.GPT2Model(config)
    ids = torch.randint(0, 100, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    return model.eval(), {"input_ids": ids, "attention_mask": mask}


LINEARS = {"bert": 13, "gpt2": 8}  # BERT: 6 per layer and the pooler; GPT-2: 4 Conv1D per layer


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
@pytest.mark.parametrize(("bits", "group", "algorithm"),
                         [(4, 32, "rtn"), (8, 16, "rtn"), (4, 16, "gptq")])  # fmt: skip
def test_transformers_quantize_and_export(tmp_path, kind: str, bits: int, group: int,
                                          algorithm: str) -> None:  # fmt: skip
    model, inputs = _tiny(kind)
    cfg = {"weight_only": True, "weight_bits": bits, "group_size": group, "algorithm": algorithm}
    q = ts.quantize(model, [inputs, inputs], cfg, progress=False)
    assert len(q.quant_state.layers) == LINEARS[kind]
    assert all(isinstance(q.get_submodule(n), WeightOnlyLinear) for n in q.quant_state.layers)
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state
        out = q(**inputs).last_hidden_state
    assert F.cosine_similarity(ref.flatten(), out.flatten(), 0) > 0.98
    assert q.quant_report.model_sqnr_db > (20 if bits == 4 else 35)
    rep = ts.export_onnx(q, inputs, tmp_path / "m.onnx")
    assert rep.max_abs_error < 1e-3, rep
    assert _ops(str(tmp_path / "m.onnx")).count("MatMulNBits") == LINEARS[kind]
    size = nbits_weight_bytes(tmp_path / "m.onnx")
    assert size.layers == LINEARS[kind]
    if bits == 4:
        assert size.ratio < 0.3, size


def test_gpt2_conv1d_becomes_an_equivalent_linear() -> None:
    model, inputs = _tiny("gpt2")
    q = ts.quantize(model, None, WEIGHT_ONLY, progress=False)
    layer = q.get_submodule("h.0.attn.c_attn")
    assert isinstance(layer, WeightOnlyLinear) and layer.weight.shape == (96, 32)
    torch.testing.assert_close(layer.weight, model.h[0].attn.c_attn.weight.t())
    set_quantizers(q, enabled=False)
    with torch.no_grad():
        torch.testing.assert_close(q(**inputs).last_hidden_state,
                                   model(**inputs).last_hidden_state)  # fmt: skip


def test_skip_keeps_layers_float(tmp_path) -> None:
    model, inputs = _tiny("bert")
    q = ts.quantize(model, None, {**WEIGHT_ONLY, "skip": ["pooler.*"]}, progress=False)
    assert q.quant_state.skipped == ["pooler.dense"]
    assert type(q.pooler.dense) is nn.Linear
    ts.export_onnx(q, inputs, tmp_path / "m.onnx")
    assert _ops(str(tmp_path / "m.onnx")).count("MatMulNBits") == 12
    with pytest.raises(ConfigError, match="skip"):
        ts.quantize(model, None, {**WEIGHT_ONLY, "skip": ["decoder.*"]}, progress=False)


def test_gptq_measures_layers_that_share_an_input_together() -> None:
    model, inputs = _tiny("bert")
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    hessians = _next_hessians(model, names, list(calib_inputs([inputs], 1)), calib_forward)
    prefix = "encoder.layer.0.attention.self."
    assert sorted(hessians) == [prefix + "key", prefix + "query", prefix + "value"]
    assert hessians[prefix + "key"].shape == (32, 32)


def test_gptq_beats_round_to_nearest_on_correlated_inputs() -> None:
    torch.manual_seed(0)
    mix = torch.randn(8, 128)

    def batch() -> torch.Tensor:  # 128 features driven by 8 factors, plus a little noise
        return torch.randn(256, 8) @ mix + 0.05 * torch.randn(256, 128)

    net = nn.Sequential(nn.Linear(128, 64)).eval()
    calib = [batch() for _ in range(4)]
    test = batch()
    errors = {}
    for algorithm in ("rtn", "gptq"):
        cfg = {**WEIGHT_ONLY, "algorithm": algorithm, "accuracy_level": 1}
        q = ts.quantize(net, calib, cfg, progress=False)
        with torch.no_grad():
            errors[algorithm] = float((q(test) - net(test)).pow(2).mean())
    assert errors["gptq"] < 0.5 * errors["rtn"], errors


def test_act_order_helps_where_a_few_correlated_channels_dominate(tmp_path) -> None:
    torch.manual_seed(0)
    mix, scale = torch.randn(32, 128), torch.ones(128)
    scale[torch.randperm(128)[:6]] = 10.0  # a few outlier input channels

    def batch() -> torch.Tensor:
        return (torch.randn(256, 32) @ mix + 0.3 * torch.randn(256, 128)) * scale

    net = nn.Sequential(nn.Linear(128, 64)).eval()
    calib, test = [batch() for _ in range(16)], batch()
    errors, models = {}, {}
    for order in (False, True):
        cfg = {**WEIGHT_ONLY, "algorithm": "gptq", "act_order": order, "accuracy_level": 1}
        models[order] = ts.quantize(net, calib, cfg, progress=False, report=False)
        with torch.no_grad():
            errors[order] = float((models[order](test) - net(test)).pow(2).mean())
    assert errors[True] < errors[False], errors
    # its groups are contiguous as ever: MatMulNBits runs it as the PyTorch model does
    report = ts.export_onnx(models[True], test, tmp_path / "ordered.onnx")
    assert _ops(str(tmp_path / "ordered.onnx")).count("MatMulNBits") == 1
    assert report.max_abs_error < 1e-3 * float(net(test).abs().max())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**WEIGHT_ONLY, "group_size": 48}, "group_size: a power of two >= 16"),
        ({**WEIGHT_ONLY, "group_size": 8}, "group_size: a power of two >= 16"),
        ({**WEIGHT_ONLY, "dynamic": True}, "weight_only and dynamic: choose one"),
        ({**WEIGHT_ONLY, "weight_bits": 3}, "weight_bits: weight_only takes 4 or 8 bits"),
        ({**WEIGHT_ONLY, "layer_bits": {"0": 2}}, r"layer_bits.0: weight_only takes 4 or 8"),
        ({**WEIGHT_ONLY, "bias_correction": True}, "bias_correction: not available"),
        ({**WEIGHT_ONLY, "accuracy_level": 2}, "accuracy_level: 0 or 1"),
        ({"group_size": 32}, r"group_size=32: apply to weight-only quantization; set weight_only"),
        ({"algorithm": "gptq"}, "algorithm='gptq': apply to weight-only"),
        ({**WEIGHT_ONLY, "act_order": True}, "act_order: orders GPTQ's columns"),
    ],
)
def test_config_errors(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuantConfig(**config)


def test_gptq_needs_calibration_data() -> None:
    with pytest.raises(ConfigError, match="algorithm='gptq': needs calib_data"):
        ts.quantize(_mlp(), None, {**WEIGHT_ONLY, "algorithm": "gptq"}, progress=False)
    with pytest.raises(ConfigError, match="weight_only: not available for QAT"):
        QATConfig(weight_only=True, weight_bits=4)


def test_layer_bits_mix_int4_and_int8(tmp_path) -> None:
    q = ts.quantize(_mlp(), None, {**WEIGHT_ONLY, "layer_bits": {"2": 8}}, progress=False)
    assert (q[0].weight_fake_quant.bits, q[2].weight_fake_quant.bits) == (4, 8)
    rep = ts.export_onnx(q, torch.randn(2, 80), tmp_path / "m.onnx")
    assert rep.max_abs_error < 1e-4
    bits = [a.i for n in onnx.load(str(tmp_path / "m.onnx")).graph.node
            if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"]  # fmt: skip
    assert bits == [4, 8]
