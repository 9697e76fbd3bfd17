"""A tiny training run driven by the trainer tests (kill/resume and torchrun).

Usage: python tiny_run.py OUT_DIR [--resume] [--kill-at-step N] [--ckpt-every N]
Writes OUT_DIR/final_rank{R}.pt with the final weights of every rank.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchslim.train import Callback, Trainer, seed_everything


def tiny_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def tiny_data(n: int = 96) -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return TensorDataset(x, y)


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, step: int, logs: object) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-at-step", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    seed_everything(0)
    model = tiny_model()
    config = {
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.05,
        "warmup_epochs": 1,
        "mixup_alpha": float(os.environ.get("TINY_MIXUP", "0.2")),
        "checkpoint_every_steps": args.ckpt_every,
        "num_workers": args.workers,
        "progress": False,
    }
    callbacks = [KillAt(args.kill_at_step)] if args.kill_at_step else []
    trainer = Trainer(
        model, config, tiny_data(), tiny_data(32), out_dir=args.out, callbacks=callbacks
    )
    trainer.fit(resume=args.resume)
    rank = trainer.dist.rank
    torch.save(model.state_dict(), os.path.join(args.out, f"final_rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1:])
