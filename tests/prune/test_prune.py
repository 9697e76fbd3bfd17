from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import torchslim as ts
from torchslim.errors import ConfigError, PruningError, UnsupportedOpError
from torchslim.graph.execution import ShapesOnly
from torchslim.prune import PruneConfig, Pruner, prune
from torchslim.reports import report as prune_report

# The fast subset of the torchvision sweep (the full list runs in benchmarks/prune_sweep.py).
TORCHVISION = {
    "resnet18": 64,
    "mobilenet_v2": 64,
    "mobilenet_v3_small": 64,
    "efficientnet_b0": 64,
    "densenet121": 64,
    "shufflenet_v2_x0_5": 64,
    "convnext_tiny": 64,
    "regnet_y_400mf": 64,
    "googlenet": 64,
    "inception_v3": 96,
    "squeezenet1_0": 64,
    "vit_b_32": 224,
    "swin_t": 64,
    "swin_v2_t": 64,  # its packed q/k/v bias is sliced before use
}


def _tv(name: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = (
        {"aux_logits": False, "init_weights": False}
        if name in ("googlenet", "inception_v3")
        else {}
    )
    return torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs).eval()


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_half_channels_runs_with_same_output_shape(
    name: str, check_report: Callable[[nn.Module, torch.Tensor], None]
) -> None:
    model = _tv(name)
    x = torch.randn(1, 3, TORCHVISION[name], TORCHVISION[name])
    prune(model, x, {"ratio": 0.5})
    report = prune_report(model)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    assert report.params_ratio < 0.7 and report.macs_ratio < 0.5
    assert report.channels_after <= 0.55 * report.channels_before
    check_report(model, x)  # predicted from the trace = measured on the pruned model


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5",
                                  "regnet_y_400mf"])  # fmt: skip
def test_torchvision_dead_channels_removed_exactly(name: str) -> None:
    from torchslim.graph import trace
    from torchslim.prune.pruner import build_groups

    model = _tv(name)
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    with torch.no_grad():
        for group in build_groups(trace(model, x), allow_inner=False):
            dead = torch.randperm(group.size)[: group.size // 2]
            for m in group.members:
                m.param.data.movedim(m.dim, 0)[m.positions[dead].reshape(-1)] = 0
        before = model(x)
    prune(model, x, {"ratio": 0.5, "importance": "l1"})
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-3, atol=1e-4)


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4),
    )  # fmt: skip


X = torch.randn(2, 3, 8, 8)


def test_public_call_shape_and_report() -> None:
    model = _cnn()
    same = ts.prune(model, X, {"ratio": 0.5})
    assert same is model
    assert model[0].out_channels == 8 and model[3].in_channels == 8 and model[4].num_features == 16
    assert model[8].in_features == 16
    text = str(prune_report(model))
    assert "16 -> 8" in text and "total: params" in text
    assert prune_report(model).to_dict()["layers"][0]["channels_after"] == 8


def test_round_to_and_max_ratio() -> None:
    model = _cnn()
    prune(model, X, {"ratio": 0.7, "round_to": 8})
    assert model[0].out_channels == 8 and model[3].out_channels == 16


@pytest.mark.parametrize("lanes", [8, 16])
def test_default_round_to_is_the_cpu_vector_width(
    monkeypatch: pytest.MonkeyPatch, lanes: int
) -> None:
    monkeypatch.setenv("TORCHSLIM_VECTOR_FLOATS", str(lanes))  # as on AVX2 / AVX-512
    assert PruneConfig().round_to == lanes and PruneConfig(round_to=1).round_to == 1
    model = torchvision.models.resnet18(num_classes=10)
    prune(model, torch.randn(1, 3, 64, 64), {"target_macs": 0.5})
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % lanes == 0 for c in convs)
    assert any(c.out_channels < 64 for c in convs)
    with pytest.raises(ConfigError, match="round_to"):
        PruneConfig(round_to=0)


def test_per_layer_ratios_by_selector() -> None:
    model = _cnn()
    prune(model, X, {"ratio": 0.0, "ratios": {"3": 0.75}})
    assert model[0].out_channels == 16 and model[3].out_channels == 8


def test_global_mode_prunes_the_weak_layer_more() -> None:
    model = _cnn()
    with torch.no_grad():
        model[3].weight.mul_(0.01)  # layer 3's filters are all tiny
    prune(model, X, {"ratio": 0.4, "mode": "global"})
    assert model[3].out_channels < 32 * 0.6 and model[0].out_channels > 16 * 0.6


def test_target_macs_lands_within_one_percent() -> None:
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    base = ts.analyze(model, x).macs
    prune(model, x, {"target_macs": 0.5})
    assert abs(ts.analyze(model, x).macs / base - 0.5) <= 0.01


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_target_macs_keeps_round_to_multiples(name: str) -> None:
    # the fine single-channel stage of the MACs search used to ignore round_to (169, 341...)
    model = torchvision.models.get_model(name, num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    base = ts.analyze(model, x).macs
    prune(model, x, {"target_macs": 0.5, "round_to": 8})
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs[1:])  # the stem may be smaller
    assert abs(ts.analyze(model, x).macs / base - 0.5) <= 0.03


def test_ignore_keeps_a_module_whole_and_unknown_selector_fails() -> None:
    model = _cnn()
    prune(model, X, {"ratio": 0.5, "ignore": ["0"]})
    assert model[0].out_channels == 16 and model[3].out_channels == 16
    with pytest.raises(ConfigError, match="matches no module"):
        prune(_cnn(), X, {"ignore": ["conv_that_is_not_there"]})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"ratoi": 0.5}, "did you mean 'ratio'"),
        ({"ratio": 1.5}, "ratio"),
        ({"importance": "fpmg"}, "did you mean .fpgm."),
        ({"target_macs": 2}, "target_macs"),
        ({"ratios": {"nothing*": 0.5}}, "matches no module"),
    ],
)
def test_bad_config_is_a_clear_error(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prune(_cnn(), X, config)


def test_fpgm_drops_the_filter_nearest_the_median() -> None:
    lin = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        lin[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
        lin[0].bias.zero_()
        lin[2].weight.fill_(1.0)
    prune(lin, torch.randn(1, 2), {"ratio": 0.34, "importance": "fpgm"})
    torch.testing.assert_close(lin[0].weight, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_bn_gamma_uses_the_norm_scale() -> None:
    model = _cnn()
    with torch.no_grad():
        model[1].weight.copy_(torch.arange(16.0))
    prune(model, X, {"ratio": 0.5, "importance": "bn_gamma"})
    torch.testing.assert_close(model[1].weight, torch.arange(8.0, 16.0))


def test_taylor_needs_data_and_uses_gradients() -> None:
    with pytest.raises(ConfigError, match="data="):
        prune(_cnn(), X, {"importance": "taylor"})
    data = [(torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))) for _ in range(2)]
    model = prune(
        _cnn(), X, {"importance": "taylor"}, data=data, loss_fn=nn.functional.cross_entropy
    )
    assert model[0].out_channels == 8


class _TopK(torch.autograd.Function):
    """A custom autograd function: its ops are seen, the function itself is not."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.topk(2, dim=1).values.sum(1, keepdim=True)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class _Spectrum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(x, dim=1).real


class _Top(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.topk(1, dim=1).values.mean()


class _Unknown(nn.Module):
    """Three conv groups: ``a`` meets topk (unknown channel behaviour), ``b`` an fft inside
    ``odd``, ``c`` only known ops."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.odd = _Spectrum()
        self.c, self.fc = nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        y = torch.relu(self.b(y)) + _TopK.apply(y)
        y = y + self.odd(y)
        return self.fc(torch.relu(self.c(y)).mean((2, 3)))


def test_an_unknown_op_freezes_what_it_touches_and_the_rest_is_pruned() -> None:
    model = _Unknown()
    x = torch.randn(2, 3, 8, 8)
    prune(model, x, {"ratio": 0.5})
    assert model(x).shape == (2, 2)
    assert model.a.out_channels == 16 and model.b.out_channels == 16  # topk and fft touch them
    assert model.c.out_channels == 8
    report = ts.report(model)
    assert any("aten.topk" in op for op in report.unknown_ops)
    assert any("aten._fft" in op and "'odd'" in op for op in report.unknown_ops)
    assert "kept whole, unknown op: aten.topk" in str(report)


def test_strict_raises_on_an_unknown_op_and_its_suggested_ignore_works() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.post = nn.Conv2d(3, 8, 1), _Top()
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.fc(y.mean((2, 3))) + self.post(y)

    with pytest.raises(
        UnsupportedOpError, match=r"aten\.topk in module 'post' \(_Top\).*ignore=\['post'\]"
    ):
        prune(Odd(), X, {"ratio": 0.5, "strict": True})
    model = prune(Odd(), X, {"ratio": 0.5, "strict": True, "ignore": ["post"]})
    assert model(X).shape == (2, 2)


class _Tie(nn.Module):
    """``b``'s output is reshaped with a width read from ``a``'s output; ``c`` is free. With
    ``hidden`` the width goes through arithmetic (``// 1``), which the trace cannot follow, so
    pruning ``a`` or ``b`` alone breaks the forward."""

    def __init__(self, hidden: bool) -> None:
        super().__init__()
        self.hidden = hidden
        self.a, self.b, self.c = (nn.Conv2d(3, 16, 3, padding=1) for _ in range(3))
        self.fc, self.fc2 = nn.Linear(16, 2), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, z = self.a(x), self.b(x)
        width = y.shape[1] // 1 if self.hidden else y.shape[1]
        z = z.reshape(x.shape[0], width, z.shape[2] * z.shape[3]).mean(2)
        return self.fc(z) + self.fc2(self.c(x).mean((2, 3))) + y.mean()


def test_a_size_read_from_one_tensor_to_reshape_another_ties_their_channels() -> None:
    model, x = _Tie(hidden=False), torch.randn(1, 3, 8, 8)
    prune(model, x, {"ratio": 0.5})
    assert model(x).shape == (1, 2) and not ts.report(model).repaired
    assert (model.a.out_channels, model.b.out_channels, model.c.out_channels) == (8, 8, 8)
    graph = ts.graph.trace(_Tie(hidden=False), x)
    (group,) = [a for a in graph.prunable() if ("a.weight", 0) in graph.members(a)]
    assert ("b.weight", 0) in graph.members(group)


def test_channel_shuffle_reading_its_own_width_is_not_over_tied() -> None:
    from torchvision.models.shufflenetv2 import channel_shuffle

    class Shuffle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(channel_shuffle(self.conv(x), 2))

    graph = ts.graph.trace(Shuffle(), X)
    # the view back to the width it read: groups x channels per group, neither frozen
    sizes = sorted(graph.spaces.spaces[a].size for a in graph.prunable(allow_inner=True))
    assert sizes == [2, 8]


def test_a_pruning_that_breaks_the_model_is_repaired() -> None:
    Tie = partial(_Tie, hidden=True)
    model, x = Tie(), torch.randn(1, 3, 8, 8)
    prune(model, x, {"ratio": 0.5, "ratios": {"a": 0.25}})
    assert model(x).shape == (1, 2)
    assert (model.a.out_channels, model.b.out_channels, model.c.out_channels) == (16, 16, 8)
    report = ts.report(model)
    assert [g for g, _ in report.repaired] == ["a", "b"]
    assert "shape '[1, 12, 64]' is invalid" in report.repaired[0][1]
    assert "kept whole, pruning it broke the model: a" in str(report)
    with pytest.raises(PruningError, match="restored"):
        prune(Tie(), x, {"ratio": 0.5, "ratios": {"a": 0.25}, "strict": True})


def test_hard_coded_width_is_kept_and_a_pruning_that_removes_nothing_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The shapes-only check after pruning catches it.
    from torchslim.prune import pruner

    forwards = []
    monkeypatch.setattr(pruner, "ShapesOnly", lambda: forwards.append(1) or ShapesOnly())

    class Hard(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x).mean((2, 3))
            return self.fc(y.reshape(-1, 8))  # 8 is a constant of the code

    model = Hard()
    with pytest.warns(UserWarning, match="ts.prune removed nothing"):
        prune(model, X, {"ratio": 0.5})
    assert model.conv.weight.shape == (8, 3, 1, 1) and model(X).shape == (2, 2)
    assert ts.report(model).repaired[0][0] == "conv"
    assert len(forwards) == 1  # one group: the failing pruning is the culprit, no bisection
    with pytest.raises(PruningError, match="restored"):
        prune(model, X, {"ratio": 0.5, "strict": True})
    assert model.conv.weight.shape == (8, 3, 1, 1)


def test_repair_starts_from_the_failing_module_and_its_repeats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torchslim.prune import pruner

    forwards = []
    monkeypatch.setattr(pruner, "ShapesOnly", lambda: forwards.append(1) or ShapesOnly())

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.free1, self.free2 = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 8, 1)
            self.inner, self.gate = nn.Conv2d(8, 16, 1), nn.Linear(16, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.free2(self.free1(x).relu())
            g = self.inner(x).mean((2, 3)).reshape(-1, 16)  # 16: a constant of the code
            return x * self.gate(g)[..., None, None]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.blocks = nn.Sequential(*(Block() for _ in range(4)))
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    model = Net()
    prune(model, X, {"ratio": 0.5})
    assert model(X).shape == (2, 2)
    report = ts.report(model)
    assert sorted(g for g, _ in report.repaired) == [f"blocks.{i}.inner" for i in range(4)]
    assert report.repaired[0][1].startswith("in module 'blocks.0.gate': RuntimeError")
    assert all(b.free1.out_channels == 8 and b.inner.out_channels == 16 for b in model.blocks)
    # The failing module's groups first, then one try for each repeat of the culprit: far
    # fewer forwards than a bisection over all 9 groups in each of 4 rounds (about 20).
    assert len(forwards) <= 10


def test_an_lstm_in_the_middle_is_kept_whole_and_the_rest_pruned() -> None:
    class ConvLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.mid = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 1)
            self.lstm = nn.LSTM(16, 12, batch_first=True)
            self.fc = nn.Linear(12, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seq = self.mid(self.conv(x).relu()).flatten(2).transpose(1, 2)  # (B, HW, C)
            return self.fc(self.lstm(seq)[0][:, -1])

    model = ConvLSTM()
    with torch.no_grad():
        before = model(X).shape
    prune(model, X, {"ratio": 0.5})
    assert model(X).shape == before
    assert model.conv.out_channels == 8  # pruned
    assert model.mid.out_channels == 16 and model.lstm.hidden_size == 12  # what the LSTM touches
    assert any("lstm" in op for op in ts.report(model).unknown_ops)


def test_split_sizes_kept_on_the_module_follow_the_pruning() -> None:
    class Mixed(nn.Module):  # MixNet-style: unequal pieces, their sizes in a list attribute
        def __init__(self) -> None:
            super().__init__()
            self.splits = [4, 12]
            self.convs = nn.ModuleList(nn.Conv2d(n, n, 3, padding=1, groups=n) for n in (4, 12))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parts = torch.split(x, self.splits, 1)
            return torch.cat([c(p) for c, p in zip(self.convs, parts, strict=True)], 1)

    class Stage(nn.Module):  # CSP-style: equal halves of a width the module keeps
        def __init__(self) -> None:
            super().__init__()
            self.expand_chs = 16
            self.conv_exp, self.conv_b = nn.Conv2d(3, 16, 1), nn.Conv2d(8, 8, 3, padding=1)
            self.conv_mix, self.mixed = nn.Conv2d(16, 16, 1), Mixed()
            self.conv_out = nn.Conv2d(32, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = self.conv_exp(x).split(self.expand_chs // 2, dim=1)
            y = torch.cat([a, self.conv_b(b)], 1)
            return self.conv_out(torch.cat([y, self.mixed(self.conv_mix(y).relu())], 1))

    model = nn.Sequential(Stage(), nn.Flatten(1), nn.LazyLinear(2))
    model(X)
    prune(model, X, {"ratio": 0.5})
    stage = model[0]
    assert model(X).shape == (2, 2) and not ts.report(model).repaired
    assert stage.conv_exp.out_channels == 8 and stage.expand_chs == 8
    assert stage.mixed.splits == [2, 6] and stage.mixed.convs[1].out_channels == 6


def test_frozen_batchnorm_of_pretrained_detector_backbones_shrinks() -> None:
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    model = torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    prune(model, x, {"ratio": 0.5})
    assert model(x).shape == (1, 10) and not ts.report(model).repaired
    bn = model.layer1[0].bn1
    assert (
        bn.weight.shape == bn.bias.shape == bn.running_mean.shape == bn.running_var.shape == (32,)
    )


def test_pruner_config_accepts_dataclass() -> None:
    pruner = Pruner(_cnn(), X, PruneConfig(ratio=0.25))
    assert pruner.prune().weight_shapes()["0.weight"] == (12, 3, 3, 3)


def _task_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, weights_backbone=None).eval()


def _structure(out: Any) -> Any:
    """Containers, keys and tensor ranks (a detector's box count depends on its scores)."""
    if isinstance(out, torch.Tensor):
        return out.ndim, tuple(out.shape[1:])
    if isinstance(out, (list, tuple)):
        return [_structure(o) for o in out]
    return {k: _structure(v) for k, v in out.items()}


@pytest.mark.parametrize(
    ("name", "example", "heads"),
    [
        ("fasterrcnn_mobilenet_v3_large_320_fpn", ([torch.rand(3, 320, 320)],),
         ["roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
          "rpn.head.cls_logits", "rpn.head.bbox_pred"]),
        ("ssdlite320_mobilenet_v3_large", ([torch.rand(3, 320, 320)],),
         [f"head.{h}_head.module_list.{i}.1" for h in ("classification", "regression")
          for i in range(6)]),
        ("lraspp_mobilenet_v3_large", (torch.rand(1, 3, 224, 224),),
         ["classifier.low_classifier", "classifier.high_classifier"]),
    ],
)  # fmt: skip
def test_torchvision_task_models_prune_with_their_heads_whole(
    name: str, example: tuple, heads: list[str]
) -> None:
    model = _task_model(name)
    widths = {h: model.get_submodule(h).weight.shape[0] for h in heads}
    with torch.no_grad():
        before = _structure(model(*example))
    macs = ts.analyze(model, example).macs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a detector reads scores: traced on real values
        prune(model, example, {"ratio": 0.5})
    with torch.no_grad():
        assert _structure(model(*example)) == before
    assert ts.analyze(model, example).macs < 0.6 * macs
    assert {h: model.get_submodule(h).weight.shape[0] for h in heads} == widths


def test_the_ignore_a_strict_error_suggests_works_on_a_detector() -> None:
    model, x = _task_model("fasterrcnn_mobilenet_v3_large_320_fpn"), ([torch.rand(3, 320, 320)],)
    with pytest.raises(UnsupportedOpError, match=r"ignore=\['rpn'\]"):
        prune(model, x, {"ratio": 0.5, "strict": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prune(model, x, {"ratio": 0.5, "strict": True, "ignore": ["rpn", "roi_heads"]})
    assert ts.report(model).macs_ratio < 0.95 and len(model(*x)) == 1


def test_instance_norm_without_affine_weights_takes_its_pruned_width() -> None:
    # RAFT's encoders: InstanceNorm2d has no tensor along the channels, so its num_features
    # used to keep the old width (and warn on every call)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.InstanceNorm2d(16), nn.ReLU(), nn.Conv2d(16, 4, 3)
    )
    prune(model, X, {"ratio": 0.5})
    assert model[1].num_features == model[0].out_channels == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model(X).shape[1] == 4
