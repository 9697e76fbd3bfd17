"""The one trainer used for fine-tuning, distillation and QAT."""

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchslim.train.checkpoint import atomic_save, load_checkpoint, seed_everything
from torchslim.train.config import OptimizerName, Precision, Schedule, TrainConfig
from torchslim.train.distributed import DistInfo, EpochSampler, init_distributed
from torchslim.train.evaluate import EvalResult, evaluate
from torchslim.train.schedules import build_optimizer, lr_factor, param_groups, scaled_lr
from torchslim.train.trainer import Callback, StepContext, Trainer, TrainResult

__all__ = [
    "Callback",
    "DistInfo",
    "EpochSampler",
    "EvalResult",
    "OptimizerName",
    "Precision",
    "Schedule",
    "StepContext",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "atomic_save",
    "build_optimizer",
    "evaluate",
    "init_distributed",
    "load_checkpoint",
    "lr_factor",
    "param_groups",
    "scaled_lr",
    "seed_everything",
    "train",
]


def train(
    model: nn.Module,
    train_data: Dataset | DataLoader,
    config: TrainConfig | Mapping[str, Any] | None = None,
    eval_data: Dataset | DataLoader | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Train ``model`` in one call; ``kwargs`` go to :class:`Trainer` (out_dir, callbacks...).

    Example:
        >>> result = train(model, train_set, {"epochs": 3}, eval_data=test_set)  # doctest: +SKIP
        >>> result.final["eval_acc"]  # doctest: +SKIP
        0.91
    """
    return Trainer(model, config, train_data, eval_data, **kwargs).fit()
