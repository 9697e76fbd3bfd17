"""Optimizers and learning-rate schedules built from a TrainConfig."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from torchslim.train.config import OptimizerName, Schedule, TrainConfig


def scaled_lr(config: TrainConfig, world_size: int = 1) -> float:
    """The learning rate after the linear scaling rule (Goyal et al. 2017).

    Example:
        >>> scaled_lr(TrainConfig(lr=0.1, batch_size=512, lr_base_batch_size=256))
        0.2
    """
    if config.lr_base_batch_size is None:
        return config.lr
    return config.lr * config.batch_size * world_size / config.lr_base_batch_size


def param_groups(
    modules: Iterable[nn.Module], weight_decay: float, no_bias_decay: bool
) -> list[dict]:
    """Split parameters into decayed and not decayed groups.

    With ``no_bias_decay`` every parameter of one dimension or less (biases, norm scales and
    shifts) is excluded from weight decay.

    Example:
        >>> groups = param_groups([nn.Linear(2, 2)], 1e-4, True)
        >>> [len(g["params"]) for g in groups]
        [1, 1]
    """
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if no_bias_decay and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    modules: Iterable[nn.Module], config: TrainConfig, world_size: int = 1
) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over ``modules``' trainable parameters.

    Example:
        >>> opt = build_optimizer([nn.Linear(2, 2)], TrainConfig(optimizer="adamw", lr=1e-3))
        >>> type(opt).__name__
        'AdamW'
    """
    groups = param_groups(modules, config.weight_decay, config.no_bias_decay)
    lr = scaled_lr(config, world_size)
    if config.optimizer is OptimizerName.SGD:
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step ``s``: linear warm-up, then cosine/step/constant.

    Example:
        >>> f = lr_factor(TrainConfig(epochs=2, warmup_epochs=1), steps_per_epoch=10)
        >>> round(f(4), 2), f(10), round(f(19), 3)  # the last step is 9/10 into the cosine
        (0.5, 1.0, 0.024)
    """
    total = max(1, config.epochs * steps_per_epoch)
    warmup = round(config.warmup_epochs * steps_per_epoch)
    floor = config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule is Schedule.COSINE:
            progress = (step - warmup) / max(1, total - warmup)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if config.schedule is Schedule.STEP:
            epoch = step // steps_per_epoch
            return max(floor, config.gamma ** sum(epoch >= m for m in config.milestones))
        return 1.0

    return factor
