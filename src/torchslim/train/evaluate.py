"""Top-1 evaluation shared by the trainer, the CLI and every later stage's report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from torchslim._tensors import module_mode
from torchslim.train.distributed import all_reduce_sum, current


@dataclass(frozen=True)
class EvalResult:
    """Mean loss and top-1 accuracy (a fraction in [0, 1]) over ``samples`` samples."""

    loss: float
    accuracy: float
    samples: int

    def __str__(self) -> str:
        return f"top-1 {100 * self.accuracy:.2f}%  loss {self.loss:.4f}  ({self.samples} samples)"


def split_batch(batch: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` from a batch, or a clear error for anything else."""
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        f"expected batches of (inputs, targets), got {type(batch).__name__}"
        f"{' of length ' + str(len(batch)) if isinstance(batch, (list, tuple)) else ''}; "
        "wrap the dataset so that each item is an (input, label) pair"
    )


def correct_count(outputs: torch.Tensor, targets: torch.Tensor) -> int:
    """Number of top-1 hits; soft (mixup) targets count by their arg-max."""
    labels = targets.argmax(dim=-1) if targets.ndim == outputs.ndim else targets
    return int((outputs.argmax(dim=-1) == labels).sum())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
    channels_last: bool = False,
) -> EvalResult:
    """Top-1 accuracy and mean loss of ``model`` on ``data`` (sharded over ranks under DDP).

    The model is put in eval mode and its training flag restored afterwards.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> argmax = nn.Linear(4, 4, bias=False)
        >>> _ = nn.init.eye_(argmax.weight)  # scores each class by its own input
        >>> x = torch.randn(100, 4)
        >>> res = evaluate(argmax, TensorDataset(x, x.argmax(1)))
        >>> res.accuracy, res.samples
        (1.0, 100)
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    info = current()
    if isinstance(data, DataLoader):
        loader = data
    else:
        if info.enabled:
            data = Subset(data, list(range(info.rank, len(data), info.world_size)))
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    loss_sum, correct, seen = 0.0, 0, 0
    with module_mode(model, training=False):
        bar = tqdm(loader, desc="eval", leave=False, disable=True if not progress else None)
        for batch in bar:
            inputs, targets = split_batch(batch)
            inputs, targets = inputs.to(device), targets.to(device)
            if channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            outputs = model(inputs)
            loss_sum += float(loss_fn(outputs, targets)) * len(targets)
            correct += correct_count(outputs, targets)
            seen += len(targets)
    loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], device)
    seen = int(seen)
    return EvalResult(loss=loss_sum / max(seen, 1), accuracy=correct / max(seen, 1), samples=seen)
