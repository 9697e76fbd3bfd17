"""ts.report(model): one way to get what prune / sparsify / quantize did."""

from __future__ import annotations

import gc
import inspect
import weakref

import pytest
import torch
from torch import nn

import torchslim as ts
from torchslim.errors import ConfigError


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(),
                         nn.LazyLinear(3))  # fmt: skip


def test_entry_calls_are_plain_functions_and_packages_stay_importable() -> None:
    assert inspect.isfunction(ts.prune) and inspect.isfunction(ts.distill)
    from torchslim.distill import DistillConfig
    from torchslim.prune import PruneConfig

    assert PruneConfig().ratio >= 0 and DistillConfig() is not None


def test_every_entry_call_reports_through_ts_report() -> None:
    x = torch.randn(1, 1, 10, 10)
    model = ts.models.create("smallcnn", num_classes=10, in_channels=1)
    assert ts.prune(model, torch.randn(1, 1, 28, 28), {"ratio": 0.5}) is model
    assert type(ts.report(model)).__name__ == "PruneReport"
    assert ts.sparsify(model, {"sparsity": 0.5}) is model  # in place, like prune
    assert type(ts.report(model)).__name__ == "SparsityReport"  # the latest call
    assert type(ts.report(model, "prune")).__name__ == "PruneReport"
    with pytest.warns(DeprecationWarning, match=r"ts\.report"):
        assert ts.prune_report(model) is ts.report(model, "prune")

    float_model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3))
    q = ts.quantize(float_model, [(x,)], {"calib_batches": 1}, progress=False)
    assert q is not float_model  # a new model; the float one is untouched
    assert type(ts.report(q)).__name__ == "QuantReport" and ts.report(q) is q.quant_report
    with pytest.raises(ConfigError, match="Sequential has no quantize report"):
        ts.report(float_model, "quantize")


def test_a_model_without_reports_and_a_bad_method_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"Linear has no report; reports belong to"):
        ts.report(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"method 'prun' is not one of"):
        ts.report(nn.Linear(2, 2), "prun")


def test_reports_do_not_keep_models_alive() -> None:
    model = nn.Sequential(nn.Linear(8, 8))
    ts.sparsify(model, {"sparsity": 0.5})
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
