"""The one trainer used for fine-tuning, distillation and QAT, for classification, detection
and segmentation."""

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchslim.train.checkpoint import atomic_save, load_checkpoint, seed_everything
from torchslim.train.config import OptimizerName, Precision, Schedule, Task, TrainConfig
from torchslim.train.distributed import DistInfo, EpochSampler, init_distributed
from torchslim.train.evaluate import (
    DetectionEvalResult,
    EvalResult,
    SegmentationEvalResult,
    evaluate,
)
from torchslim.train.schedules import build_optimizer, lr_factor, param_groups, scaled_lr
from torchslim.train.tasks import segmentation_loss
from torchslim.train.trainer import Callback, StepContext, Trainer, TrainResult

__all__ = [
    "Callback",
    "DetectionEvalResult",
    "DistInfo",
    "EpochSampler",
    "EvalResult",
    "OptimizerName",
    "Precision",
    "Schedule",
    "SegmentationEvalResult",
    "StepContext",
    "Task",
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
    "segmentation_loss",
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
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(64, 4)
        >>> data = TensorDataset(x, (x.sum(1) > 0).long())  # a linearly separable task
        >>> cfg = {"epochs": 3, "batch_size": 16, "lr": 0.5, "progress": False}
        >>> result = train(nn.Linear(4, 2), data, cfg, eval_data=data)
        >>> result.final["eval_acc"] > 0.8
        True
    """
    return Trainer(model, config, train_data, eval_data, **kwargs).fit()
