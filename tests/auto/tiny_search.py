"""A search a test runs in a worker process: ``python tiny_search.py OUT_DIR TRIALS [slow]``.

Every worker draws the same tiny model and data (seeded), so workers share one study."""

from __future__ import annotations

import importlib
import sys
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

import torchslim as ts


def model_and_data() -> tuple[nn.Module, torch.Tensor, TensorDataset]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    ).eval()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return net, torch.randn(1, 1, 8, 8), TensorDataset(x, y)


CONFIG = {"macs": 0.5, "eval_images": 32, "bn_images": 32, "batch_size": 32,
          "heartbeat_seconds": 1, "grace_seconds": 2}  # fmt: skip


if __name__ == "__main__":
    out, trials = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:  # slow trials: time to kill the worker mid-search
        search_module = importlib.import_module("torchslim.auto.space")
        score = search_module.score
        search_module.score = lambda *a: (time.sleep(0.5), score(*a))[1]
    net, x, data = model_and_data()
    res = ts.search(net, x, {**CONFIG, "trials": trials}, data=data, out_dir=out, resume=True,
                    progress=False)  # fmt: skip
    print(res)
