"""Pruning schedules through the one trainer: one-shot, iterative, soft (SFP), network slimming.

Example:
    >>> # prune to half the MACs in 3 steps with a 1-epoch fine-tune after each
    >>> # iterative_prune(model, x, {"target_macs": 0.5, "importance": "fpgm"}, train, test,
    >>> #                 steps=3, train_config={"epochs": 1})
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchslim._tensors import Inputs
from torchslim.analysis import analyze
from torchslim.config import from_dict, to_dict
from torchslim.errors import ConfigError
from torchslim.prune.apply import Keep
from torchslim.prune.config import SlimmingConfig
from torchslim.prune.importance import Group
from torchslim.prune.pruner import PruneConfig, Pruner, select_channels
from torchslim.train import Callback, StepContext, TrainConfig, Trainer, TrainResult

ConfigLike = PruneConfig | Mapping[str, Any] | None


def _finetune(
    model: nn.Module,
    train_data: Dataset | DataLoader,
    eval_data: Dataset | DataLoader | None,
    train_config: TrainConfig | Mapping[str, Any] | None,
    out_dir: str | Path | None,
    **kwargs: Any,
) -> TrainResult:
    return Trainer(model, train_config, train_data, eval_data, out_dir=out_dir, **kwargs).fit(
        resume=out_dir is not None
    )


def prune_and_finetune(
    model: nn.Module,
    example_inputs: Inputs,
    config: ConfigLike,
    train_data: Dataset | DataLoader,
    eval_data: Dataset | DataLoader | None = None,
    *,
    train_config: TrainConfig | Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
) -> tuple[nn.Module, TrainResult]:
    """One-shot: prune once, then fine-tune with the foundation trainer.

    Example:
        >>> # model, result = prune_and_finetune(model, x, {"ratio": 0.5}, train, test,
        >>> #                                    train_config={"epochs": 2, "lr": 0.01})
    """
    Pruner(model, example_inputs, config).prune()
    return model, _finetune(model, train_data, eval_data, train_config, out_dir)


def _step_config(config: PruneConfig, steps: int, step: int) -> PruneConfig:
    """The config of step ``step`` (0-based) so that ``steps`` steps compound to ``config``."""
    keep = 1 - config.ratio
    per_step = 1 - keep ** (1 / steps)
    changes: dict[str, Any] = {"ratio": per_step}
    if config.ratios:
        changes["ratios"] = {k: 1 - (1 - v) ** (1 / steps) for k, v in config.ratios.items()}
    if config.target_macs is not None:
        # Each step removes the same fraction of what the previous step left.
        changes["target_macs"] = config.target_macs ** ((step + 1) / steps)
    return dataclasses.replace(config, **changes)


def iterative_prune(
    model: nn.Module,
    example_inputs: Inputs,
    config: ConfigLike,
    train_data: Dataset | DataLoader,
    eval_data: Dataset | DataLoader | None = None,
    *,
    steps: int = 3,
    train_config: TrainConfig | Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
) -> tuple[nn.Module, list[TrainResult]]:
    """Prune in ``steps`` steps that compound to ``config``, fine-tuning after each.

    With ``target_macs`` each step's target is relative to the *original* MACs, so the last
    step lands on the target; with ``ratio`` each step removes ``1 - (1-ratio)^(1/steps)`` of
    the channels that remain.
    """
    cfg = from_dict(PruneConfig, config)
    if steps < 1:
        raise ConfigError(f"steps: must be >= 1, got {steps}")
    results = []
    base_macs = analyze(model, example_inputs, shapes_only=True).macs
    for step in range(steps):
        step_cfg = _step_config(cfg, steps, step)
        if step_cfg.target_macs is not None:  # the step's target is relative to the original
            now = analyze(model, example_inputs, shapes_only=True).macs
            step_cfg = dataclasses.replace(
                step_cfg, target_macs=min(0.999, step_cfg.target_macs * base_macs / now)
            )
        Pruner(model, example_inputs, step_cfg).prune()
        sub = Path(out_dir) / f"step{step + 1}" if out_dir is not None else None
        results.append(_finetune(model, train_data, eval_data, train_config, sub))
    return model, results


class SoftFilterPruning(Callback):
    """FPGM/SFP soft pruning: zero the least important filters after every epoch, keep them
    trainable (they may recover), and remove the finally selected ones with :meth:`finalize`.

    Example:
        >>> # sfp = SoftFilterPruning(x, {"ratio": 0.4, "importance": "fpgm"})
        >>> # Trainer(model, cfg, train, callbacks=[sfp]).fit(); sfp.finalize(model)
    """

    def __init__(self, example_inputs: Inputs, config: ConfigLike) -> None:
        self.example_inputs = example_inputs
        self.config = from_dict(PruneConfig, config)

    def _select(self, model: nn.Module) -> tuple[Pruner, Any, list[Group], Keep]:
        pruner = Pruner(model, self.example_inputs, self.config)
        graph, groups, scores = pruner.graph_and_scores()
        return pruner, graph, groups, select_channels(groups, scores, self.config, 1.0)

    @staticmethod
    def _zero(groups: list[Group], keep: Keep) -> int:
        norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
        zeroed = 0
        with torch.no_grad():
            for g in groups:
                drop = torch.ones(g.size, dtype=torch.bool)
                drop[keep[g.id]] = False
                idx = torch.nonzero(drop).flatten()
                for m in g.parameters():
                    filt = m.is_producer or (
                        m.name.endswith("bias") and not isinstance(m.module, norms)
                    )
                    if filt:
                        m.param.data.movedim(m.dim, 0)[m.positions[idx].reshape(-1)] = 0
                zeroed += len(idx)
        return zeroed

    def zero(self, model: nn.Module) -> int:
        """Zero the filters (output-channel slices) that pruning would remove now."""
        _, _, groups, keep = self._select(model)
        return self._zero(groups, keep)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        self.zero(trainer.model)

    def finalize(self, model: nn.Module) -> nn.Module:
        """Select one last time and remove exactly the filters that selection zeroes."""
        pruner, graph, groups, keep = self._select(model)
        self._zero(groups, keep)
        pruner.apply(graph, groups, keep)
        return model


@dataclasses.dataclass
class BNSparsity:
    """Network slimming's sparsity term: ``weight * Σ|γ|`` over BatchNorm scales.

    Pass it to ``Trainer(extra_losses=[BNSparsity(1e-4)])``; afterwards prune with
    ``{"importance": "bn_gamma", "mode": "global", "ratio": r}``: one threshold over all groups
    on |γ| divided by its group's mean |γ| (see :class:`~torchslim.prune.RatioMode`), not on the
    raw γ as in Liu et al.
    """

    weight: float = 1e-4

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        gammas = [
            m.weight
            for m in ctx.model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
        ]
        if not gammas:
            raise ConfigError("BNSparsity: the model has no BatchNorm scales to sparsify")
        return self.weight * sum(g.abs().sum() for g in gammas)


def network_slimming(
    model: nn.Module,
    example_inputs: Inputs,
    config: SlimmingConfig | Mapping[str, Any] | float,
    train_data: Dataset | DataLoader,
    eval_data: Dataset | DataLoader | None = None,
    **deprecated: Any,
) -> tuple[nn.Module, TrainResult, TrainResult]:
    """Liu et al. 2017: train with L1 on BN-γ, prune ``ratio`` of the channels, fine-tune.

    ``config`` is a :class:`SlimmingConfig` (or its fields as a dict). The pruning is
    ``{"importance": "bn_gamma", "mode": "global"}``: each group's |γ| is divided by the
    group's mean |γ| and one threshold over all groups removes ``ratio`` of all channels (each
    group at most ``max_ratio``), so a channel is judged against its own group's γ. Liu et al.
    threshold the raw γ instead. Returns the pruned model and the two trainings' results.

    The older form ``network_slimming(model, x, ratio, train, sparsity=...,
    sparse_train_config=..., finetune_config=...)`` still works with a DeprecationWarning.

    Example:
        >>> # model, sparse, tuned = network_slimming(model, x, {"ratio": 0.5, "sparsity": 1e-4,
        >>> #     "sparse_train": {"epochs": 30}, "finetune": {"epochs": 10}}, train, test)
    """
    cfg = _slimming_config(config, deprecated)
    sparse = _finetune(model, train_data, eval_data, cfg.sparse_train, None,
                       extra_losses=[BNSparsity(cfg.sparsity)])  # fmt: skip
    Pruner(model, example_inputs, cfg.prune_config).prune()
    return model, sparse, _finetune(model, train_data, eval_data, cfg.finetune, None)


_OLD_SLIMMING_KEYWORDS = {
    "sparsity": "sparsity",
    "sparse_train_config": "sparse_train",
    "finetune_config": "finetune",
}


def _slimming_config(config: Any, deprecated: dict[str, Any]) -> SlimmingConfig:
    """The config of :func:`network_slimming`, also from its deprecated ratio + keywords."""
    unknown = set(deprecated) - set(_OLD_SLIMMING_KEYWORDS)
    if unknown:
        raise TypeError(f"network_slimming() got unexpected keyword arguments {sorted(unknown)}")
    if not deprecated and not isinstance(config, int | float):
        return from_dict(SlimmingConfig, config)
    warnings.warn(
        "network_slimming(model, x, ratio, ..., sparsity=, sparse_train_config=, "
        "finetune_config=) is deprecated; pass one SlimmingConfig (or a dict of its fields: "
        "ratio, sparsity, sparse_train, finetune)",
        DeprecationWarning,
        stacklevel=3,
    )
    if isinstance(config, int | float):
        values: dict[str, Any] = {"ratio": config}
    else:
        values = to_dict(from_dict(SlimmingConfig, config))
    values.update({_OLD_SLIMMING_KEYWORDS[k]: v for k, v in deprecated.items() if v is not None})
    return from_dict(SlimmingConfig, values)


__all__ = [
    "BNSparsity",
    "SlimmingConfig",
    "SoftFilterPruning",
    "iterative_prune",
    "network_slimming",
    "prune_and_finetune",
]
