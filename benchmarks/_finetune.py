"""The fine-tune every row of the search benchmarks gets (no side effects on import: the
benchmarks that pin pruning's ``round_to`` do so themselves)."""

from __future__ import annotations

import time
from typing import Any

from torch import nn

from torchslim.train import Trainer, evaluate


def finetune_and_test(model: nn.Module, train: Any, test: Any, epochs: int, lr: float,
                      seed: int) -> tuple[float, float]:  # fmt: skip
    """(test top-1 in percent, seconds) after every row's fine-tune: ``epochs`` on ``train``,
    SGD with cosine schedule, batch 128, weight decay 5e-4, seeded."""
    cfg = {"epochs": epochs, "lr": lr, "batch_size": 128, "schedule": "cosine",
           "weight_decay": 5e-4, "progress": False, "seed": seed}  # fmt: skip
    start = time.perf_counter()
    Trainer(model, cfg, train, None).fit()
    seconds = time.perf_counter() - start
    return 100 * evaluate(model, test, batch_size=512).accuracy, seconds
