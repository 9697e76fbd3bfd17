"""One config style: every config is a frozen dataclass that validates on construction as
``from_dict`` does (str enums converted, with a did-you-mean), one config file per subpackage."""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import pytest
import torch
import yaml
from torch import nn

from torchslim.config import from_dict
from torchslim.distill import DistillConfig, LossSpec, MutualConfig
from torchslim.errors import ConfigError
from torchslim.pipeline.spec import DataSpec, ReportSpec, Stage
from torchslim.prune import PruneConfig, RatioMode, SlimmingConfig, SparsityConfig, prune
from torchslim.prune.sensitivity import SensitivityConfig, sensitivity
from torchslim.quant import BinaryConfig, PQConfig, QATConfig, QuantConfig
from torchslim.quant.observers import QuantSpec
from torchslim.train import TrainConfig

CONFIGS = [
    PruneConfig,
    SparsityConfig,
    SensitivityConfig,
    QuantConfig,
    QATConfig,
    QuantSpec,
    PQConfig,
    BinaryConfig,
    TrainConfig,
    LossSpec,
    DistillConfig,
    MutualConfig,
    SlimmingConfig,
    DataSpec,
    ReportSpec,
]


def test_prune_mode_is_checked_on_construction() -> None:
    # PruneConfig(mode="globl") used to be kept as a string and silently prune uniformly
    with pytest.raises(ConfigError, match=r"mode: 'globl' .*did you mean 'global'"):
        PruneConfig(mode="globl")
    with pytest.raises(ConfigError, match="did you mean 'global'"):
        prune(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
                       torch.randn(1, 4), {"mode": "globl"})  # fmt: skip
    assert PruneConfig(mode="global").mode is RatioMode.GLOBAL


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: QuantConfig(act_mapping="afine"), r"act_mapping: .*did you mean 'affine'"),
        (lambda: QATConfig(act_quantizer="pcat"), r"act_quantizer: .*did you mean 'pact'"),
        (lambda: QuantSpec(calibration="mes"), r"calibration: .*did you mean 'mse'"),
        (lambda: PQConfig(method="kmean"), r"method: .*did you mean 'kmeans'"),
        (lambda: BinaryConfig(scaling="xnr"), r"scaling: .*did you mean 'xnor'"),
        (lambda: TrainConfig(optimizer="adamv"), r"optimizer: .*did you mean 'adamw'"),
        (lambda: SparsityConfig(scope="globl"), r"scope: .*did you mean 'global'"),
        (lambda: TrainConfig(epochs="3"), r"epochs: expected an integer"),
        (lambda: PruneConfig(round_to=2.0), r"round_to: expected an integer, got 2.0 \(write 2\)"),
        (lambda: SensitivityConfig(ratios=("a",)), r"ratios\[0\]: expected a number"),
        (lambda: DistillConfig(losses=({"type": "kd", "wieght": 1},)), r"did you mean 'weight'"),
        (lambda: SlimmingConfig(finetune={"epoch": 1}), r"finetune.epoch: .*'epochs'"),
        (lambda: DataSpec(subset="all"), r"subset: expected an integer"),
        (lambda: ReportSpec(batch_sizes=(1, 0)), r"batch_sizes: positive sizes"),
        (lambda: Stage("train", "s", calib="x"), r"calib: expected an integer"),
    ],
)
def test_direct_construction_validates_like_from_dict(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_direct_construction_coerces_like_from_dict() -> None:
    assert PruneConfig(ratio="0.25", ratios={"fc": "1e-1"}).ratios == {"fc": 0.1}
    assert TrainConfig(milestones=[3, 6], schedule="step").milestones == (3, 6)
    assert DistillConfig(losses=[{"type": "kd"}]).losses == (LossSpec("kd"),)
    assert QuantConfig(skip=["fc"]).skip == ("fc",)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_is_frozen_and_its_defaults_are_valid(cls) -> None:
    cfg = cls()
    assert dataclasses.fields(cfg) and cls.__dataclass_params__.frozen
    assert dataclasses.replace(cfg) == cfg


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_configs_live_in_their_subpackage_config_module(cls) -> None:
    package = cls.__module__.rpartition(".")[0]
    assert cls.__module__ == f"{package}.config" or cls in (QuantSpec, DataSpec, ReportSpec)
    # QuantSpec: one quantizer; the recipe's own parts live with the recipe (pipeline.spec)


def test_moved_configs_stay_importable_where_they_were() -> None:
    where = {"prune.pruner": PruneConfig, "prune.sparsity": SparsityConfig,
             "prune.sensitivity": SensitivityConfig, "quant.qat": QATConfig,
             "quant.pq": PQConfig, "quant.binary": BinaryConfig}  # fmt: skip
    for module, cls in where.items():
        assert getattr(importlib.import_module(f"torchslim.{module}"), cls.__name__) is cls


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_sensitivity_takes_its_config_and_the_old_keywords_warn() -> None:
    model, x = _mlp(), torch.randn(4, 8)
    score = lambda m: float(m[0].out_features)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = sensitivity(model, x, score, SensitivityConfig(ratios=(0.5,)), progress=False)
        assert sensitivity(model, x, score, {"ratios": [0.5]}, progress=False) == new
    with pytest.warns(DeprecationWarning, match="pass config=SensitivityConfig"):
        old = sensitivity(model, x, score, ratios=[0.5], importance="l1", progress=False)
    assert old == new
    with pytest.raises(ConfigError, match="not both"):
        sensitivity(model, x, score, {"ratios": [0.5]}, ratios=[0.5], progress=False)
    with pytest.raises(TypeError, match="ratio"):
        sensitivity(model, x, score, ratio=[0.5], progress=False)


def test_no_module_imports_a_private_name_of_another() -> None:
    # qat.py used to import ptq._weight_bits, quant.checks fake_quant._SWITCHABLE
    import ast
    from pathlib import Path

    import torchslim

    found = []
    for path in sorted(Path(torchslim.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchslim"):
                found += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_")]  # fmt: skip
    assert not found
    cfg = QuantConfig(weight_bits=4, first_layer_bits=8, last_layer_bits=6)
    assert [cfg.layer_weight_bits(i, 4) for i in range(4)] == [8, 4, 4, 6]


def test_loss_options_are_typed_like_the_loss_parameters() -> None:
    # YAML 1.1 reads 1e-3 as a string; it used to reach KDLoss as one
    cfg = from_dict(
        DistillConfig, yaml.safe_load("losses: [{type: kd, options: {temperature: 1e-3}}]")
    )
    assert cfg.losses[0].options == {"temperature": 0.001}
    assert LossSpec("l2_logit", options={"temperature": 2}).options["temperature"] == 2.0
    with pytest.raises(ConfigError, match=r"losses\[0\]: options\.alpha: expected a number"):
        from_dict(DistillConfig, {"losses": [{"type": "kd", "options": {"alpha": "high"}}]})
    with pytest.raises(
        ConfigError, match=r"no option 'angle_wieght' \(did you mean 'angle_weight'"
    ):
        LossSpec("rkd", options={"angle_wieght": 1.0})
