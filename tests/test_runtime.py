"""Latency (PyTorch and ONNX Runtime) and ONNX Runtime sessions (torchslim.runtime)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.runtime import (
    CpuInfo,
    cpu_info,
    export_for_latency,
    measure_latency,
    round_robin_latency,
    vector_floats,
)


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_latency_reports_positive_median(backend: str) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    res = measure_latency(model, torch.randn(3, 1, 8, 8), backend=backend, warmup=1, repeats=3)
    assert res.backend == backend and res.repeats == 3 and res.batch_size == 3
    assert 0 < res.min_ms <= res.median_ms <= res.p90_ms
    assert "median" in str(res)


def test_latency_min_seconds_times_more_runs() -> None:
    res = measure_latency(nn.Linear(4, 4), torch.randn(1, 4), repeats=2, min_seconds=0.02)
    # two runs of a tiny layer take microseconds: it keeps timing until 20 ms or 100 x repeats
    assert res.repeats > 2
    assert res.repeats * res.mean_ms >= 20 or res.repeats == 200


def test_latency_keeps_each_submodules_mode() -> None:
    # a model in training with a frozen BatchNorm: timing must not unfreeze it
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).train()
    model[1].eval()
    measure_latency(model, torch.randn(2, 1, 8, 8), warmup=1, repeats=2)
    assert [m.training for m in model] == [True, False]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TorchScript is deprecated
def test_latency_of_frozen_torchscript_module() -> None:
    # a frozen ScriptModule has no ``training`` attribute; timing it must still work
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    frozen = torch.jit.freeze(torch.jit.script(model))
    res = measure_latency(frozen, torch.randn(1, 1, 8, 8), warmup=1, repeats=2)
    assert res.median_ms > 0


def test_latency_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backend"):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), backend="tvm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), repeats=0)


def test_round_robin_latency_times_every_file_on_every_input(tmp_path) -> None:
    x = torch.randn(1, 8)
    paths = {name: export_for_latency(nn.Linear(8, 8).eval(), (x,), tmp_path / f"{name}.onnx")
             for name in ("a", "b")}  # fmt: skip
    ms = round_robin_latency(paths, [x, x + 1], rounds=2, repeats=(3, 2))
    assert list(ms) == ["a", "b"] and all(len(v) == 2 and min(v) > 0 for v in ms.values())
    with pytest.raises(ValueError):  # one repeat count per input
        round_robin_latency(paths, [x], repeats=(3, 2))


def test_round_robin_latency_reduces_the_rounds_as_asked(monkeypatch) -> None:
    import itertools
    from types import SimpleNamespace

    import torchslim.runtime as runtime

    medians = itertools.cycle([3.0, 1.0, 2.0])  # three rounds of one file: 3, 1, 2 ms
    monkeypatch.setattr(runtime, "measure_latency",
                        lambda *a, **k: SimpleNamespace(median_ms=next(medians)))  # fmt: skip
    x = torch.randn(1, 8)
    assert round_robin_latency({"a": "a.onnx"}, [x], rounds=3) == {"a": [2.0]}
    assert round_robin_latency({"a": "a.onnx"}, [x], rounds=3, reduce=min) == {"a": [1.0]}


def test_one_opset_and_one_session_factory(tmp_path) -> None:
    import onnx

    import torchslim as ts
    from torchslim.export import ort_kernels
    from torchslim.runtime import OPSET, ort_session

    net = nn.Linear(4, 2).eval()
    ts.export_onnx(net, torch.randn(1, 4), tmp_path / "a.onnx")
    export_for_latency(net, (torch.randn(1, 4),), tmp_path / "b.onnx")
    for name in ("a.onnx", "b.onnx"):
        opsets = {o.domain: o.version for o in onnx.load(str(tmp_path / name)).opset_import}
        assert opsets[""] == OPSET
    ort_session(tmp_path / "a.onnx", level="basic", optimized_model_path=tmp_path / "o.onnx")
    assert (tmp_path / "o.onnx").stat().st_size > 0
    assert sorted(ort_kernels(tmp_path / "a.onnx", level="basic")) == ["Gemm"]
    with pytest.raises(ValueError, match="level must be one of"):
        ort_session(tmp_path / "a.onnx", level="max")


@pytest.mark.parametrize(
    ("machine", "flags", "lanes"),
    [
        ("x86_64", {"sse2", "avx", "avx2", "avx512f", "avx512_vnni"}, 16),
        ("x86_64", {"sse2", "avx", "avx2", "fma"}, 8),
        ("x86_64", {"sse2", "avx"}, 4),
        ("aarch64", {"asimd", "fp"}, 8),
        ("riscv64", set(), 1),
    ],
)
def test_vector_width_from_cpu_flags(machine: str, flags: set[str], lanes: int) -> None:
    assert CpuInfo("cpu", machine, frozenset(flags)).vector_floats == lanes


def test_vector_floats_env_overrides_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHSLIM_VECTOR_FLOATS", "8")
    assert vector_floats() == 8
    monkeypatch.setenv("TORCHSLIM_VECTOR_FLOATS", "")
    assert vector_floats() == cpu_info().vector_floats
    monkeypatch.setenv("TORCHSLIM_VECTOR_FLOATS", "wide")
    with pytest.raises(ValueError, match="TORCHSLIM_VECTOR_FLOATS"):
        vector_floats()


def test_cpu_info_reads_this_machine() -> None:
    info = cpu_info()
    assert info.model and info.machine
    assert info.label.startswith(info.model)


@pytest.mark.parametrize(
    ("flags", "lacks"), [({"avx2"}, True), ({"avx2", "avx_vnni"}, False), (set(), False)]
)
def test_vnni_detection_reads_cpu_info(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], lacks: bool
) -> None:
    from torchslim.quant import config

    monkeypatch.setattr(config, "cpu_info", lambda: CpuInfo("cpu", "x86_64", frozenset(flags)))
    assert config.cpu_lacks_vnni() is lacks
