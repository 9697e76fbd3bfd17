"""The latency look-up table: op shapes from the trace, ORT one-op models, the cache, the fit,
and ``target_latency`` in ``ts.prune``. Timing itself is replaced by deterministic stand-ins
where a test checks arithmetic (speed is for benchmarks/latency_table.py)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

import torchslim as ts
from torchslim.errors import ConfigError
from torchslim.graph.trace import trace
from torchslim.latency import LatencyModel, LatencyTable, OpShape, op_shapes, table_path
from torchslim.prune import PruneConfig
from torchslim.runtime import ort_session


def _op_cost(op: OpShape) -> float:
    """A stand-in for a timed op: proportional to its MACs (ms)."""
    if op.kind == "conv":
        groups = dict(op.attrs)["group"]
        return 1e-6 * math.prod(op.shape) * math.prod(op.weight[:1] + op.weight[2:]) / groups
    return 1e-6 * math.prod(op.shape) * op.weight[-1]


@pytest.fixture
def fake_timing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ops are 'timed' by their MACs; the list collects the keys timed."""
    timed: list[str] = []

    def fake_ms(self: LatencyTable, op: OpShape) -> float:
        if op.key not in self.entries:
            timed.append(op.key)
            self.entries[op.key], self._dirty = _op_cost(op), True
        return self.entries[op.key]

    monkeypatch.setattr(LatencyTable, "ms", fake_ms)
    return timed


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.up = nn.ConvTranspose2d(32, 8, 2, stride=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.pw(torch.relu(self.dw(torch.relu(self.stem(x))))))
        x = self.up(x)
        q = x.flatten(2).transpose(1, 2)  # (N, HW, 8)
        attn = torch.bmm(q, q.transpose(1, 2)).softmax(-1)
        return self.fc(torch.bmm(attn, q).mean(1))


def test_op_shapes_cover_convs_matmuls_and_scale_the_batch() -> None:
    net = _Net().eval()
    graph = trace(net, torch.randn(1, 3, 8, 8))
    ops = op_shapes(graph)
    assert [op.kind for op in ops] == ["conv", "conv", "conv", "conv_transpose", "bmm", "bmm", "mm"]
    assert dict(ops[0].attrs)["strides"] == (2, 2) and dict(ops[1].attrs)["group"] == 16
    assert ops[0].shape == (1, 3, 8, 8) and ops[2].weight == (32, 16, 1, 1)
    assert [op.shape[0] for op in op_shapes(graph, scale=4)] == [4, 4, 4, 4, 4, 4, 4]
    keep = {a: torch.arange(4) for a in graph.prunable()}  # every group down to 4 channels
    pruned = op_shapes(graph, keep)
    assert pruned[2].weight[:2] == (4, 4) and pruned[-1].weight == (4, 4)
    assert dict(pruned[1].attrs)["group"] == 4  # a depthwise conv's groups follow its channels


@pytest.mark.parametrize(
    "layer, x",
    [
        (nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1), torch.randn(2, 4, 9, 9)),
        (nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4), torch.randn(1, 8, 7, 7)),
        (
            nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
            torch.randn(1, 4, 5, 5),
        ),
        (nn.Conv1d(4, 6, 5, padding=2, bias=False), torch.randn(3, 4, 11)),
        (nn.Linear(5, 7), torch.randn(3, 5)),
    ],
)
def test_one_op_onnx_model_matches_the_layer(tmp_path, layer: nn.Module, x: torch.Tensor) -> None:
    (op,) = op_shapes(trace(layer, x))
    path = tmp_path / "op.onnx"
    path.write_bytes(op.onnx_model().SerializeToString())
    session = ort_session(path, 1)
    (y,) = session.run(None, {"x": np.random.randn(*op.shape).astype(np.float32)})
    assert y.shape == tuple(layer(x).shape)


def test_table_times_each_op_once_and_keeps_it_on_disk(tmp_path, monkeypatch, caplog) -> None:
    calls: list[int] = []
    monkeypatch.setattr(LatencyTable, "_time", lambda self, model, feeds: calls.append(1) or 0.5)
    op = OpShape("mm", (2, 8), (8, 4), True)
    table = LatencyTable(threads=1, path=tmp_path / "t.json")
    assert table.ms(op) == 0.5 and table.ms(op) == 0.5 and len(calls) == 1
    table.save()
    other = LatencyTable(threads=1, path=tmp_path / "t.json")
    other.entries["mm|extra"] = 1.0  # another process's entry, merged on save
    other._dirty = True
    other.save()
    again = LatencyTable(threads=1, path=tmp_path / "t.json")
    assert again.ms(op) == 0.5 and len(calls) == 1 and len(again) == 2
    (tmp_path / "t.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="torchslim.latency"):
        broken = LatencyTable(threads=1, path=tmp_path / "t.json")  # unreadable: timed again
    assert len(broken) == 0 and "unreadable" in caplog.text


def test_table_file_is_keyed_by_threads_and_cache_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path))
    one, two = table_path(1), table_path(2)
    assert one != two and one.parent == tmp_path / "latency"
    assert LatencyTable(threads=2).path == two


def test_real_timing_of_one_op_is_positive_and_cached(tmp_path) -> None:
    table = LatencyTable(threads=1, path=tmp_path / "t.json", repeats=3, min_seconds=0.0)
    op = OpShape("conv", (1, 8, 16, 16), (8, 8, 3, 3), True,
                 (("dilations", (1, 1)), ("group", 1), ("kernel_shape", (3, 3)),
                  ("pads", (1, 1, 1, 1)), ("strides", (1, 1))))  # fmt: skip
    assert table.ms(op) > 0
    table.save()
    data = json.loads((tmp_path / "t.json").read_text())
    assert op.key in data["entries"] and data["threads"] == 1


def test_calibration_fits_scale_and_offset(tmp_path, fake_timing, monkeypatch) -> None:
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(),
                        nn.Conv2d(16, 8, 3))  # fmt: skip
    x = torch.randn(1, 3, 16, 16)
    graph = trace(net, x)
    lat = LatencyModel(net, x, graph, table=LatencyTable(1, tmp_path / "t.json"))
    atoms = graph.prunable()
    keeps = [None, {a: torch.arange(12) for a in atoms}, {a: torch.arange(6) for a in atoms}]
    truth = {id(k): 2.0 * lat.table_ms(k) + 0.3 for k in keeps}
    built = {}

    def build(keep):
        model = nn.Identity()
        built[id(model)] = truth[id(keep)]
        return model

    monkeypatch.setattr(LatencyModel, "measure_many",
                        lambda self, models, rounds=5: [built[id(m)] for m in models])  # fmt: skip
    lat.calibrate(build, keeps)
    assert lat.a == pytest.approx(2.0) and lat.b == pytest.approx(0.3)
    assert lat.predict_ms(keeps[2]) == pytest.approx(truth[id(keeps[2])])
    assert (tmp_path / "t.json").exists()


def test_prune_to_a_latency_target(tmp_path, fake_timing, monkeypatch) -> None:
    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path))
    monkeypatch.setattr(LatencyModel, "measure_many",
                        lambda self, models, rounds=5: [_whole_model_ms(m, self)
                                                        for m in models])  # fmt: skip
    torch.manual_seed(0)
    model = ts.models.create("resnet20", num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    dense_ms = _whole_model_ms(model, None, x)
    ts.prune(model, x, {"target_latency": 0.5, "latency_batch_size": 4})
    assert _whole_model_ms(model, None, x) / dense_ms == pytest.approx(0.5, abs=0.03)
    assert any(key.startswith("conv|4x") for key in fake_timing)  # timed at batch 4


# 1.04: 4% slower than predicted, inside the 5% a target is held to, but not with room for
# the next measurement's noise: corrected too
@pytest.mark.parametrize("factor", [1.2, 1.04])
def test_a_latency_target_is_verified_by_measuring_it(
    tmp_path, fake_timing, monkeypatch, factor: float
) -> None:
    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path))
    calls = []

    def measure_many(self, models, rounds=5):  # the pruned model measures slower
        calls.append(len(models))
        ms = [_whole_model_ms(m, self) for m in models]
        return ms if len(models) != 2 else [ms[0], factor * ms[1]]

    monkeypatch.setattr(LatencyModel, "measure_many", measure_many)
    torch.manual_seed(0)
    model = ts.models.create("resnet20", num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    dense_ms = _whole_model_ms(model, None, x)
    ts.prune(model, x, {"target_latency": 0.5})
    assert factor * _whole_model_ms(model, None, x) / dense_ms == pytest.approx(0.5, rel=0.06)
    assert calls[0] == 3 and len(calls) >= 3  # calibrated, then measured and corrected
    with pytest.raises(ConfigError, match="verify_latency"):
        PruneConfig(target_latency=0.5, verify_latency=-1)


def _whole_model_ms(model: nn.Module, lat: LatencyModel | None, x: torch.Tensor | None = None):
    """A stand-in for measuring a model whole: its ops' stand-in times plus a fixed overhead."""
    inputs = lat.inputs if lat is not None else (x,)
    return sum(_op_cost(op) for op in op_shapes(trace(model, inputs))) + 0.05


def test_latency_target_config_errors() -> None:
    with pytest.raises(ConfigError, match="not both"):
        PruneConfig(target_macs=0.5, target_latency=0.5)
    with pytest.raises(ConfigError, match="target_latency"):
        PruneConfig(target_latency=1.5)
    with pytest.raises(ConfigError, match="latency_batch_size"):
        PruneConfig(target_latency=0.5, latency_batch_size=0)
