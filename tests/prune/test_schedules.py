from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchslim.analysis import analyze
from torchslim.errors import ConfigError
from torchslim.prune import SlimmingConfig
from torchslim.prune.schedules import (
    BNSparsity,
    SoftFilterPruning,
    iterative_prune,
    network_slimming,
    prune_and_finetune,
)
from torchslim.train import StepContext, Trainer

X = torch.randn(2, 3, 8, 8)
FAST = {"epochs": 1, "batch_size": 16, "lr": 0.01, "progress": False}


def _data(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=g)
    return TensorDataset(x, (x.mean((1, 2, 3)) > 0).long())


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2),
    )  # fmt: skip


def test_one_shot_prunes_then_trains() -> None:
    model, result = prune_and_finetune(_cnn(), X, {"ratio": 0.5}, _data(), _data(16),
                                       train_config=FAST)  # fmt: skip
    assert model[0].out_channels == 8 and len(result.history) == 1


def test_iterative_reaches_the_macs_target_in_steps() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 2),
    )  # fmt: skip
    base = analyze(model, X).macs
    model, results = iterative_prune(
        model, X, {"target_macs": 0.4}, _data(), steps=2, train_config=FAST
    )
    assert len(results) == 2
    assert abs(analyze(model, X).macs / base - 0.4) <= 0.01


def test_soft_pruning_zeroes_each_epoch_and_finalize_removes_exactly_those() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 2))
    sfp = SoftFilterPruning(X, {"ratio": 0.5, "importance": "fpgm"})
    Trainer(model, {**FAST, "epochs": 2}, _data(), callbacks=[sfp]).fit()
    zero_rows = int((model[1].weight.abs().sum(1) == 0).sum())
    assert zero_rows == 16  # zeroed after the last epoch, not yet removed
    model.eval()
    with torch.no_grad():
        before = model(X)
    sfp.finalize(model)
    assert model[1].out_features == 16 and model[3].in_features == 16
    with torch.no_grad():
        torch.testing.assert_close(model(X), before)


def test_bn_sparsity_term_is_weighted_l1_of_gammas() -> None:
    model = _cnn()
    with torch.no_grad():
        model[1].weight.fill_(2.0)
        model[4].weight.fill_(-1.0)
    ctx = StepContext(model, X, torch.zeros(2), None, 0, 0)
    torch.testing.assert_close(BNSparsity(0.01)(ctx), torch.tensor(0.01 * (16 * 2 + 16 * 1)))


def test_network_slimming_prunes_by_global_gamma() -> None:
    config = {"ratio": 0.5, "sparsity": 1e-3, "sparse_train": FAST, "finetune": FAST}
    model, sparse, tuned = network_slimming(_cnn(), X, config, _data())
    assert model[0].out_channels + model[3].out_channels <= 17
    assert "BNSparsity" in "".join(sparse.history[0]) or (sparse.history and tuned.history)


def test_network_slimming_old_keywords_still_work_with_a_warning() -> None:
    from torchslim.prune.schedules import _slimming_config

    with pytest.warns(DeprecationWarning, match="pass one SlimmingConfig"):
        cfg = _slimming_config(0.3, {"sparsity": 1e-3, "finetune_config": FAST})
    assert cfg == SlimmingConfig(ratio=0.3, sparsity=1e-3, finetune=FAST)
    with pytest.raises(TypeError, match="unexpected keyword"):
        _slimming_config(0.3, {"sparsty": 1e-3})
    with pytest.raises(ConfigError, match="sparsity: must be >= 0"):
        SlimmingConfig(sparsity=-1)
    with pytest.raises(ConfigError, match="did you mean 'sparsity'"):
        _slimming_config({"sparsty": 1e-3}, {})
