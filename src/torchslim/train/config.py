"""The trainer's typed config."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from torchslim.config import check_fields
from torchslim.errors import ConfigError


class OptimizerName(str, enum.Enum):
    SGD = "sgd"
    ADAMW = "adamw"


class Schedule(str, enum.Enum):
    COSINE = "cosine"
    STEP = "step"
    CONSTANT = "constant"


class Task(str, enum.Enum):
    """What the model learns; ``auto`` reads it from the first batch (see ``train.tasks``)."""

    AUTO = "auto"
    CLASSIFICATION = "classification"  # (N, C, ...) inputs, (N,) class indices
    DETECTION = "detection"  # lists of CHW images and of target dicts with boxes and labels
    SEGMENTATION = "segmentation"  # (N, C, H, W) inputs, (N, H, W) class maps
    # inputs only (a tensor, or a dict of keyword tensors such as a tokenizer's output): no
    # task loss, the model learns from extra losses alone (distillation on unlabelled text)
    UNLABELLED = "unlabelled"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    AMP = "amp"  # bf16 autocast on CPU, fp16 autocast + GradScaler on CUDA
    BF16 = "bf16"  # bf16 autocast on any device, no scaler


# Fields that may differ between a checkpoint and the run resuming it: they change how the
# run is shown or fed, never what it computes.
RESUMABLE_CHANGES = frozenset({"progress", "num_workers", "device", "log_every"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything the trainer does, as data. Accepts the dataclass or a dict of its fields.

    Example:
        >>> cfg = TrainConfig(epochs=5, lr=0.05, schedule="cosine", warmup_epochs=1)
        >>> cfg.schedule.value
        'cosine'
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: OptimizerName = OptimizerName.SGD
    lr: float = 0.1
    # Linear scaling rule: the applied lr is lr * (batch_size * world_size) / lr_base_batch_size.
    lr_base_batch_size: int | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_bias_decay: bool = True
    schedule: Schedule = Schedule.COSINE
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    zero_gamma: bool = False
    grad_clip_norm: float | None = None
    precision: Precision = Precision.FP32
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    eval_every: int = 1
    checkpoint_every_steps: int = 0
    max_steps_per_epoch: int | None = None
    channels_last: bool = False
    device: str = "auto"
    progress: bool = True
    log_every: int = 50
    task: Task = Task.AUTO

    def __post_init__(self) -> None:
        check_fields(self)
        self._check()

    def _check(self) -> None:
        positive = ("epochs", "batch_size", "lr", "eval_every", "log_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        non_negative = (
            "weight_decay",
            "warmup_epochs",
            "mixup_alpha",
            "cutmix_alpha",
            "num_workers",
            "checkpoint_every_steps",
            "momentum",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"warmup_epochs: {self.warmup_epochs} exceeds epochs={self.epochs}; "
                "shorten the warm-up or train longer"
            )
        if self.schedule is Schedule.STEP and not self.milestones:
            raise ConfigError(
                "milestones: the 'step' schedule needs epochs to decay at, e.g. [30, 60]"
            )
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError(
                f"milestones: must be strictly increasing, got {list(self.milestones)}"
            )
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ConfigError(f"grad_clip_norm: must be > 0 or null, got {self.grad_clip_norm}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch <= 0:
            raise ConfigError("max_steps_per_epoch: must be > 0 or null")
        if self.lr_base_batch_size is not None and self.lr_base_batch_size <= 0:
            raise ConfigError("lr_base_batch_size: must be > 0 or null")
        mixing = self.mixup_alpha > 0 or self.cutmix_alpha > 0
        if mixing and self.task in (Task.DETECTION, Task.SEGMENTATION):
            raise ConfigError(
                f"mixup_alpha/cutmix_alpha: mix classification labels; set them to 0 for the "
                f"{self.task.value} task"
            )

    def replace(self, **changes: object) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
