"""Distributed data parallel under ``torchrun`` (gloo on CPU, nccl on GPU) and the data order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Without ``WORLD_SIZE > 1`` this is a no-op returning rank 0 of 1.

    Example:
        >>> init_distributed().world_size  # not under torchrun
        1
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def current() -> DistInfo:
    """The rank and world size of an already initialised process group (or 0 of 1)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
        )
    return DistInfo()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (identity when not distributed)."""
    if not current().enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class EpochSampler(Sampler[int]):
    """Seeded per-epoch order, sharded over ranks, that can start part-way into an epoch.

    The permutation depends only on ``(seed, epoch)``, so a resumed run sees exactly the
    batches the interrupted one would have; ``start`` skips samples already consumed on this
    rank without loading them. Shards are padded to equal length (as DistributedSampler does)
    so every rank runs the same number of steps.

    Example:
        >>> list(EpochSampler(6, seed=0, epoch=0, shuffle=False, rank=1, world_size=2))
        [1, 3, 5]
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        epoch: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        self.n, self.seed, self.epoch, self.shuffle = n, seed, epoch, shuffle
        self.rank, self.world_size, self.start = rank, world_size, start
        self.per_rank = -(-n // world_size)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        padded = order + order[: self.per_rank * self.world_size - self.n]
        return iter(padded[self.rank :: self.world_size][self.start :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)
