from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import TensorDataset

from torchslim.config import from_dict, to_dict
from torchslim.errors import ConfigError
from torchslim.prune.sparsity import (
    GradualSparsity,
    SparsityConfig,
    SparsityScope,
    cubic_sparsity,
    make_permanent,
    sparsify,
    sparsity_report,
)
from torchslim.train import Callback, Trainer


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))


def zeros(weight: torch.Tensor) -> int:
    return int((weight == 0).sum())


def mask_of(module: nn.Module) -> torch.Tensor:
    return module.parametrizations.weight[0].mask


LAYERS = ("conv1", "conv2", "fc")


@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.9])
def test_layerwise_hits_target_and_keeps_largest(target: float) -> None:
    model = tiny_net()
    original = {n: getattr(model, n).weight.detach().clone() for n in LAYERS}
    assert sparsify(model, {"sparsity": target}) is model
    for name in LAYERS:
        weight = getattr(model, name).weight.detach()
        assert abs(zeros(weight) - target * weight.numel()) <= 1, name
        kept = original[name][weight != 0].abs()
        pruned = original[name][weight == 0].abs()
        if len(kept) and len(pruned):
            assert kept.min() >= pruned.max()
        torch.testing.assert_close(weight[weight != 0], original[name][weight != 0])


def test_global_keeps_largest_magnitudes_across_layers() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 9.0]]))
        model[1].weight.copy_(torch.tensor([[10.0, -20.0], [0.5, 40.0]]))
    sparsify(model, {"sparsity": 0.5, "scope": "global"})
    # The 4 largest of all 8 magnitudes are 9, 10, 20, 40.
    assert torch.equal(model[0].weight, torch.tensor([[0.0, 0.0], [0.0, 9.0]]))
    assert torch.equal(model[1].weight, torch.tensor([[10.0, -20.0], [0.0, 40.0]]))


def test_global_sparsity_is_exact_over_all_layers() -> None:
    model = tiny_net()
    sparsify(model, SparsityConfig(sparsity=0.7, scope=SparsityScope.GLOBAL))
    total = sum(getattr(model, n).weight.numel() for n in LAYERS)
    pruned = sum(zeros(getattr(model, n).weight) for n in LAYERS)
    assert pruned == round(0.7 * total)
    per_layer = [zeros(getattr(model, n).weight) / getattr(model, n).weight.numel() for n in LAYERS]
    assert max(per_layer) - min(per_layer) > 0.01  # one threshold, not one fraction per layer


def test_targets_and_ignore_select_modules() -> None:
    model = sparsify(tiny_net(), {"sparsity": 0.5, "targets": ["conv*"], "ignore": ["conv2"]})
    assert parametrize.is_parametrized(model.conv1)
    assert not parametrize.is_parametrized(model.conv2)
    assert not parametrize.is_parametrized(model.fc)
    model = sparsify(tiny_net(), {"sparsity": 0.5, "targets": ["Linear"]})
    assert [n for n in LAYERS if parametrize.is_parametrized(getattr(model, n))] == ["fc"]


def test_2_to_4_keeps_the_two_largest_of_every_group() -> None:
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 16))
    original = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    sparsify(model, {"pattern": "2:4"})
    for layer, before in zip((model[0], model[2]), original, strict=True):
        groups = layer.weight.detach().reshape(layer.weight.shape[0], -1, 4)
        assert ((groups != 0).sum(-1) == 2).all()
        top2 = before.reshape(groups.shape).abs().topk(2, dim=-1).indices.sort(-1).values
        kept = (groups != 0).nonzero()[:, -1].reshape(*groups.shape[:2], 2)
        assert torch.equal(kept, top2)


def test_resparsifying_only_prunes_further() -> None:
    model = mlp()
    sparsify(model, {"sparsity": 0.5})
    first = model[0].weight.detach() == 0
    sparsify(model, {"sparsity": 0.75})
    assert zeros(model[0].weight) == 0.75 * model[0].weight.numel()
    assert (model[0].weight.detach()[first] == 0).all()
    sparsify(model, {"sparsity": 0.25})  # never revives
    assert zeros(model[0].weight) == 0.75 * model[0].weight.numel()


def test_masks_survive_state_dict_round_trip() -> None:
    source = sparsify(tiny_net(0), {"sparsity": 0.6})
    target = sparsify(tiny_net(1), {"sparsity": 0.6})
    assert not torch.equal(mask_of(source.fc), mask_of(target.fc))
    target.load_state_dict(source.state_dict())
    x = torch.randn(3, 2, 4, 4)
    for name in LAYERS:
        assert torch.equal(mask_of(getattr(target, name)), mask_of(getattr(source, name)))
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_masks_survive_deepcopy_and_are_independent() -> None:
    model = sparsify(tiny_net(), {"sparsity": 0.6})
    clone = copy.deepcopy(model)
    x = torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
    mask_of(clone.fc).fill_(False)
    assert zeros(clone.fc.weight) == clone.fc.weight.numel()
    assert zeros(model.fc.weight) == round(0.6 * model.fc.weight.numel())


def test_symbolic_trace_keeps_masks() -> None:
    model = sparsify(mlp(), {"sparsity": 0.5})
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(5, 8)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    assert "call_module" in str(traced.graph)
    mask_of(model[2]).fill_(False)  # the traced graph calls the same masked modules
    torch.testing.assert_close(traced(x), model[2].bias.expand(5, 4), rtol=0, atol=0)


def _data(n: int = 128) -> TensorDataset:
    torch.manual_seed(0)
    x = torch.randn(n, 8)
    return TensorDataset(x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long())


TRAIN = {"epochs": 1, "batch_size": 16, "progress": False, "device": "cpu"}


def test_pruned_weights_stay_zero_through_training() -> None:
    model = sparsify(mlp(), {"sparsity": 0.5})
    before = {i: model[i].weight.detach().clone() for i in (0, 2)}
    result = Trainer(model, {**TRAIN, "weight_decay": 0.01}, _data()).fit()
    assert result.history[0]["step"] == 8
    for i in (0, 2):
        weight = model[i].weight.detach()
        assert torch.equal(weight == 0, before[i] == 0)  # same zeros, nothing revived
        assert not torch.equal(weight, before[i])  # but the kept weights did train


def test_cubic_sparsity_hand_computed() -> None:
    kw = {"final": 0.8, "start": 0, "end": 100, "frequency": 10}
    assert cubic_sparsity(0, **kw) == 0.0
    assert cubic_sparsity(25, **kw) == pytest.approx(0.8 * (1 - 0.8**3))  # t = 20
    assert cubic_sparsity(50, **kw) == pytest.approx(0.7)  # 0.8 - 0.8 * 0.5**3
    assert cubic_sparsity(59, **kw) == pytest.approx(0.7)
    assert cubic_sparsity(90, **kw) == pytest.approx(0.8 - 0.8 * 0.1**3)
    assert cubic_sparsity(100, **kw) == 0.8
    assert cubic_sparsity(10**6, **kw) == 0.8
    late = {"final": 0.9, "initial": 0.5, "start": 10, "end": 30, "frequency": 5}
    assert cubic_sparsity(9, **late) == 0.0  # dense before the schedule starts
    assert cubic_sparsity(10, **late) == pytest.approx(0.5)
    assert cubic_sparsity(22, **late) == pytest.approx(0.9 - 0.4 * 0.5**3)  # t = 20
    with pytest.raises(ConfigError, match="end > start"):
        cubic_sparsity(0, final=0.5, start=10, end=10)


class Probe(Callback):
    def __init__(self) -> None:
        self.seen: dict[int, float] = {}

    def on_step_end(self, trainer: Trainer, step: int, logs: object) -> None:
        weight = trainer.model[0].weight
        self.seen[step] = zeros(weight) / weight.numel()


def test_gradual_callback_follows_the_cubic_schedule() -> None:
    cfg = {"sparsity": 0.75, "schedule": "cubic", "start_step": 0, "end_step": 6, "frequency": 2}
    model, probe = mlp(), Probe()
    Trainer(model, TRAIN, _data(), callbacks=[GradualSparsity(cfg), probe]).fit()
    expected = {s: cubic_sparsity(s, final=0.75, end=6, frequency=2) for s in range(1, 9)}
    assert expected[2] == pytest.approx(0.75 * (1 - (2 / 3) ** 3))
    numel = model[0].weight.numel()
    for step, level in expected.items():
        assert probe.seen[step] == pytest.approx(round(level * numel) / numel), step
    assert probe.seen[8] == 0.75


def test_make_permanent_leaves_plain_modules_with_same_outputs() -> None:
    model = sparsify(tiny_net(), {"sparsity": 0.5})
    param = model.fc.parametrizations.weight.original
    x = torch.randn(3, 2, 4, 4)
    expected = model(x)
    assert make_permanent(model) is model
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    assert model.fc.weight is param  # optimizers holding it keep working
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any(name.endswith("mask") for name, _ in model.named_buffers())
    assert all(type(getattr(model, n)) in (nn.Conv2d, nn.Linear) for n in LAYERS)
    assert zeros(model.fc.weight) == model.fc.weight.numel() // 2
    tiny_net(3).load_state_dict(model.state_dict())  # plain keys again


def test_make_permanent_keeps_a_later_parametrization() -> None:
    class Double(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    model = sparsify(mlp(), {"sparsity": 0.5})
    parametrize.register_parametrization(model[0], "weight", Double())
    expected = model[0].weight.detach().clone()
    make_permanent(model)
    assert [type(p).__name__ for p in model[0].parametrizations.weight] == ["Double"]
    torch.testing.assert_close(model[0].weight, expected, rtol=0, atol=0)


def test_report_matches_hand_counts() -> None:
    model = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(64, 4, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0]]))
        model[1].weight.zero_()
        model[1].weight[2, 7] = 5.0
    report = sparsity_report(model)
    small, big = report.layers
    assert (small.name, small.type, small.shape) == ("0", "Linear", (2, 4))
    assert (small.params, small.nonzeros, small.sparsity) == (8, 3, 5 / 8)
    # dense 8*4 = 32; csr 3*4 + 3*4 + 3*4 = 36; bitmask 3*4 + 1 = 13; 2:4 fits: 4*4 + 1 = 17
    assert (small.dense_bytes, small.sparse_bytes, small.format) == (32, 13, "bitmask")
    # dense 1024; csr 4 + 4 + 5*4 = 28; bitmask 4 + 32 = 36; 2:4 = 128*4 + 32 = 544
    assert (big.nonzeros, big.dense_bytes, big.sparse_bytes, big.format) == (1, 1024, 28, "csr")
    total = report.total
    assert (total.params, total.nonzeros, total.dense_bytes, total.sparse_bytes) == (
        264,
        4,
        1056,
        41,
    )
    assert total.sparsity == pytest.approx(260 / 264)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["total"]["sparse_bytes"] == 41
    assert data["layers"][1]["format"] == "csr"
    text = str(report)
    assert "bitmask" in text and "csr" in text
    assert text.splitlines()[-1].startswith("total") and "25.76x smaller" in text


def test_report_prices_2_to_4_in_its_own_format() -> None:
    model = sparsify(nn.Sequential(nn.Linear(16, 8)), {"pattern": "2:4"})
    row = sparsity_report(model).layers[0]
    # 64 kept fp32 values + 2 index bits each = 256 + 16 bytes
    assert (row.nonzeros, row.format, row.sparse_bytes, row.dense_bytes) == (64, "2:4", 272, 512)
    assert "ParametrizedLinear" not in str(sparsity_report(model))


def test_config_from_dict_round_trips_and_defaults() -> None:
    cfg = from_dict(SparsityConfig, {"pattern": " 2 : 4 ", "ignore": ["fc"]})
    assert (cfg.pattern, cfg.nm, cfg.target) == ("2:4", (2, 4), 0.5)
    assert from_dict(SparsityConfig, to_dict(cfg)) == cfg
    assert SparsityConfig().target == 0.5
    assert SparsityConfig(pattern="1:4").target == 0.75


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sparsty": 0.5}, "did you mean 'sparsity'"),
        ({"sparsity": 1.0}, r"sparsity: .*\[0, 1\)"),
        ({"sparsity": -0.1}, r"sparsity: .*\[0, 1\)"),
        ({"scope": "globl"}, "did you mean 'global'"),
        ({"pattern": "4:2"}, "pattern: '4:2'"),
        ({"pattern": "unstructred"}, "did you mean 'unstructured'"),
        ({"pattern": "2:4", "sparsity": 0.6}, "fixes it at 0.5"),
        ({"pattern": "2:4", "scope": "global"}, "scope: 'global'"),
        ({"schedule": "cubic", "sparsity": 0.5}, "end_step"),
        ({"sparsity": 0.5, "initial_sparsity": 0.6}, "initial_sparsity"),
    ],
)
def test_bad_configs_raise_config_error(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sparsify(mlp(), config)


@pytest.mark.parametrize("field", ["targets", "ignore"])
def test_selector_matching_nothing_names_it_and_lists_modules(field: str) -> None:
    model = tiny_net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=rf"{field}: selector 'encoder\.\*'") as info:
        sparsify(model, {"sparsity": 0.5, field: ["encoder.*"]})
    assert "'conv1', 'conv2', 'fc'" in str(info.value)
    assert model.state_dict().keys() == before.keys()  # nothing half-applied


def test_m_not_dividing_the_group_dim_names_the_module() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 6), nn.Conv1d(6, 2, 1))
    with pytest.raises(ConfigError, match=r"2:4: module '2' has 6 weights per output row"):
        sparsify(model, {"pattern": "2:4"})
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    sparsify(model, {"pattern": "2:4", "ignore": ["2"]})
    assert ((model[1].weight.detach().reshape(6, 1, 4) != 0).sum(-1) == 2).all()


def test_nothing_left_to_sparsify_is_an_error() -> None:
    with pytest.raises(ConfigError, match="nothing left to sparsify"):
        sparsify(mlp(), {"ignore": ["Linear"]})
    assert math.isclose(SparsityConfig(sparsity=0.25).sparsity_at(12345), 0.25)
