from __future__ import annotations

import copy
import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import torchslim as ts
from torchslim.analysis import analyze
from torchslim.errors import ConfigError, PruningError
from torchslim.graph import matches, trace
from torchslim.prune.pruner import build_groups
from torchslim.prune.sensitivity import (
    SensitivityResult,
    escape_selector,
    ratios_for_target,
    sensitivity,
)

# By module object: the package may re-export a function under the same name.
sens_module = importlib.import_module("torchslim.prune.sensitivity")


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    ).eval()


def _fidelity(model: nn.Module, x: torch.Tensor) -> Callable[[nn.Module], float]:
    """Higher is better: minus the mean squared deviation from the original outputs."""
    with torch.no_grad():
        ref = model(x)

    def score(pruned: nn.Module) -> float:
        with torch.no_grad():
            return -float((pruned(x) - ref).pow(2).mean())

    return score


def _param_share(model: nn.Module) -> Callable[[nn.Module], float]:
    """Monotone in the parameters left: the fraction of the original parameter count."""
    total = sum(p.numel() for p in model.parameters())
    return lambda m: sum(p.numel() for p in m.parameters()) / total


def test_one_point_per_group_and_ratio_and_model_untouched(make_net) -> None:
    net = make_net(6)
    x = torch.randn(2, 3, 8, 8)
    before = copy.deepcopy(net.state_dict())
    score = _fidelity(net, x)
    result = sensitivity(net, x, score, ratios=[0.5], progress=False)

    assert set(before) == set(net.state_dict())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    names = list(dict.fromkeys(g.name for g in build_groups(trace(net, x), allow_inner=False)))
    assert [g.name for g in result.groups] == names
    assert result.baseline_macs == analyze(net, x).macs
    assert result.baseline_metric == pytest.approx(score(net)) == 0.0
    for g in result.groups:
        assert g.size > 0 and [p.ratio for p in g.points] == [0.5]
        for p in g.points:
            assert p.error is None and p.macs <= result.baseline_macs
            assert p.loss == pytest.approx(result.baseline_metric - p.metric)
    assert any(p.macs < result.baseline_macs for g in result.groups for p in g.points)


def test_loss_grows_with_ratio_for_a_monotone_metric() -> None:
    model, x = _mlp(), torch.randn(4, 8)
    result = sensitivity(model, x, _param_share(model), ratios=(0.9, 0.1), progress=False)
    assert result.ratios == (0.1, 0.9)  # sorted
    assert [(g.name, g.size) for g in result.groups] == [("0", 16), ("2", 16)]
    assert result.baseline_metric == 1.0
    for g in result.groups:
        low, high = g.points
        assert high.loss >= low.loss and high.loss > 0
        assert high.macs < low.macs < result.baseline_macs


def test_groups_restrict_the_analysis_and_unknown_names_fail() -> None:
    model, x = _mlp(), torch.randn(4, 8)
    result = sensitivity(model, x, _param_share(model), ratios=[0.5], groups=["2"], progress=False)
    assert [g.name for g in result.groups] == ["2"]
    with pytest.raises(ConfigError, match="'3' is not a prunable group"):
        sensitivity(model, x, _param_share(model), groups=["3"], progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratios": [0.5, 0.95]}, "outside"),
        ({"ratios": [0.0]}, "outside"),
        ({"ratios": []}, "at least one ratio"),
        ({"importance": "taylor"}, "gradients"),
        ({"importance": "l3"}, "unknown criterion"),
        ({"groups": []}, "empty"),
    ],
)
def test_config_errors(kwargs: dict, message: str) -> None:
    model, x = _mlp(), torch.randn(4, 8)
    with pytest.raises(ConfigError, match=message):
        sensitivity(model, x, lambda m: 1.0, progress=False, **kwargs)


def test_eval_fn_must_return_a_number() -> None:
    model, x = _mlp(), torch.randn(4, 8)
    with pytest.raises(ConfigError, match="must return a number"):
        sensitivity(model, x, lambda m: "good", progress=False)


def test_report_table_dict_round_trip_and_progress_bar(capsys) -> None:
    model, x = _mlp(), torch.randn(4, 8)
    result = sensitivity(model, x, _param_share(model), ratios=(0.25, 0.5))
    assert "sensitivity" in capsys.readouterr().err  # the tqdm bar
    text = str(result)
    lines = text.splitlines()
    assert "0.25" in lines[1] and "0.5" in lines[1]
    assert lines[3].split()[:2] == ["0", "16"] and lines[4].split()[:2] == ["2", "16"]
    loss = result.group("2").points[1].loss
    assert f"{loss:.4g}" in lines[4]
    data = json.loads(json.dumps(result.to_dict()))
    assert SensitivityResult.from_dict(data) == result
    with pytest.raises(KeyError, match="did you mean"):
        result.group("22")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    model, x = _mlp(), torch.randn(4, 8)
    result = sensitivity(model, x, _param_share(model), ratios=(0.3, 0.6), progress=False)
    path = result.plot(tmp_path / "sens.png")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    # Many groups: only the most sensitive get a legend entry; the plot still renders.
    data = result.to_dict()
    data["groups"] = [dict(data["groups"][0], name=f"g{i}") for i in range(25)]
    many = SensitivityResult.from_dict(data).plot(tmp_path / "many.png", max_legend=5)
    assert many.read_bytes()[:4] == b"\x89PNG"


def test_ratios_for_target_meets_the_target_on_a_fresh_copy(make_net) -> None:
    net = make_net(6)  # a residual and a squeeze-excite block: coupled groups
    x = torch.randn(2, 3, 8, 8)
    fresh = copy.deepcopy(net)
    result = sensitivity(net, x, _fidelity(net, x), ratios=(0.5, 0.9), progress=False)
    chosen = ratios_for_target(result, 0.5)

    groups = build_groups(trace(net, x), allow_inner=False)
    modules = dict(net.named_modules())
    for selector, ratio in chosen.items():
        assert 0 <= ratio <= 0.9
        hits = [n for n, m in modules.items() if matches(n, m, selector)]
        assert len(hits) == 1 and hits[0] in {g.name for g in groups}
    ts.prune(fresh, x, {"ratio": 0.0, "ratios": chosen})
    kept = analyze(fresh, x).macs / result.baseline_macs
    assert kept <= 0.5 + 0.01
    assert kept > 0.2  # not pruned far beyond the target
    assert fresh(x).shape == net(x).shape


def test_ratios_for_target_prunes_the_insensitive_group_more() -> None:
    model, x = _mlp(), torch.randn(4, 8)
    # Only the first layer's width matters: group "0" is sensitive, group "2" is not.
    result = sensitivity(model, x, lambda m: m[0].out_features / 16, progress=False)
    assert result.group("2").worst_loss == 0 and result.group("0").worst_loss > 0.5
    chosen = ratios_for_target(result, 0.5)
    assert chosen["2"] > chosen["0"]
    fresh = ts.prune(copy.deepcopy(model), x, {"ratio": 0.0, "ratios": chosen})
    assert fresh[0].out_features == 16  # the sensitive layer was left whole
    assert analyze(fresh, x).macs <= 0.5 * result.baseline_macs


def test_unreachable_target_raises() -> None:
    model, x = _mlp(), torch.randn(4, 8)
    result = sensitivity(model, x, _param_share(model), ratios=(0.5, 0.9), progress=False)
    with pytest.raises(ConfigError, match=r"target_macs 0\.01"):
        ratios_for_target(result, 0.01)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        ratios_for_target(result, 0.0)
    assert all(r == 0 for r in ratios_for_target(result, 1.0).values())


def test_ratios_for_target_needs_the_unpruned_model() -> None:
    model, x = _mlp(), torch.randn(4, 8)
    result = sensitivity(model, x, _param_share(model), ratios=(0.5, 0.9), progress=False)
    loaded = SensitivityResult.from_dict(result.to_dict())
    with pytest.raises(ConfigError, match="no model"):
        ratios_for_target(loaded, 0.6)
    chosen = ratios_for_target(loaded, 0.6, model=model, example_inputs=x)
    assert chosen == ratios_for_target(result, 0.6)
    ts.prune(model, x, {"ratio": 0.5})
    with pytest.raises(ConfigError, match="unpruned model"):
        ratios_for_target(result, 0.6)


def test_a_failing_pruning_is_recorded_and_skipped(monkeypatch) -> None:
    model, x = _mlp(), torch.randn(4, 8)
    real_pruner = sens_module.Pruner

    def flaky(m: nn.Module, inputs: tuple, config: dict) -> object:
        if config["ratios"].get("2") == 0.9:
            raise PruningError("the pruned model no longer runs")
        return real_pruner(m, inputs, config)

    monkeypatch.setattr(sens_module, "Pruner", flaky)
    result = sensitivity(model, x, _param_share(model), ratios=(0.5, 0.9), progress=False)
    failed = result.group("2").points[1]
    assert failed.metric is None and failed.macs is None and "no longer runs" in failed.error
    assert "failed" in str(result).splitlines()[4]
    assert result.group("0").points[1].error is None
    assert not math.isnan(result.group("0").worst_loss)


def test_escape_selector_matches_only_that_name() -> None:
    sel = escape_selector("blocks[0].conv*?")
    assert matches("blocks[0].conv*?", nn.Identity(), sel)
    assert not matches("blocks0.conv12", nn.Identity(), sel)
