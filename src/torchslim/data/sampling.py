"""Stratified subsets, calibration loaders, small subsets held in memory."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from torchslim.data.datasets import targets_of
from torchslim.errors import ConfigError


def stratified_subset(
    dataset: Dataset,
    *,
    per_class: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> Subset:
    """A seeded subset with ``per_class`` samples of every class, or ``fraction`` of each class.

    Example:
        >>> from torchslim.data import get_dataset
        >>> sub = stratified_subset(get_dataset("fashion-mnist", train=False), per_class=5)
        >>> len(sub)
        50
    """
    if (per_class is None) == (fraction is None):
        raise ConfigError("stratified_subset: give exactly one of per_class or fraction")
    if per_class is not None and per_class <= 0:
        raise ConfigError(f"per_class: must be > 0, got {per_class}")
    if fraction is not None and not 0 < fraction <= 1:
        raise ConfigError(f"fraction: must be in (0, 1], got {fraction}")
    targets = targets_of(dataset)
    g = torch.Generator().manual_seed(seed)
    chosen: list[torch.Tensor] = []
    for label in torch.unique(targets).tolist():
        members = torch.nonzero(targets == label).flatten()
        want = per_class if per_class is not None else max(1, round(fraction * len(members)))
        if want > len(members):
            raise ConfigError(
                f"per_class: class {label} has only {len(members)} samples, {want} requested"
            )
        chosen.append(members[torch.randperm(len(members), generator=g)[:want]])
    indices = torch.cat(chosen).sort().values
    return Subset(dataset, indices.tolist())


def calibration_loader(
    dataset: Dataset,
    num_samples: int = 512,
    *,
    batch_size: int = 64,
    seed: int = 0,
    stratified: bool = True,
) -> DataLoader:
    """A deterministic loader of ``num_samples`` (inputs, targets) for PTQ calibration.

    Use evaluation (non-augmenting) transforms on ``dataset``. ``ts.quantize`` accepts it as
    its ``calib_data``.

    Example:
        >>> from torchslim.data import get_dataset
        >>> loader = calibration_loader(get_dataset("fashion-mnist", train=False), 100)
        >>> sum(len(x) for x, _ in loader)
        100
    """
    if not 0 < num_samples <= len(dataset):
        raise ConfigError(f"num_samples: must be in 1..{len(dataset)}, got {num_samples}")
    subset: Dataset
    classes = int(targets_of(dataset).unique().numel()) if stratified else 0
    if stratified and num_samples % classes == 0:
        subset = stratified_subset(dataset, per_class=num_samples // classes, seed=seed)
    else:
        g = torch.Generator().manual_seed(seed)
        subset = Subset(dataset, torch.randperm(len(dataset), generator=g)[:num_samples].tolist())
    return DataLoader(subset, batch_size=batch_size, shuffle=False)


def in_memory(dataset: Dataset, max_bytes: int = 1 << 30) -> Dataset:
    """``dataset`` decoded once into tensors, for a small subset that is read many times (a
    search scores every candidate on the same images). Items must be (image tensor, int label)
    of one shape; anything else, or more than ``max_bytes`` of images, is returned unchanged.
    Random augmentation is drawn once, so pass a dataset with evaluation transforms.

    Example:
        >>> from torchslim.data import get_dataset
        >>> test = get_dataset("fashion-mnist", train=False)
        >>> sub = in_memory(stratified_subset(test, per_class=2))
        >>> type(sub).__name__, tuple(sub[0][0].shape), targets_of(sub).bincount().tolist()
        ('TensorDataset', (1, 28, 28), [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0 or isinstance(dataset, TensorDataset):
        return dataset
    first = dataset[0]
    if not (isinstance(first, tuple | list) and len(first) == 2
            and isinstance(first[0], torch.Tensor) and isinstance(first[1], int)):  # fmt: skip
        return dataset
    if first[0].element_size() * first[0].numel() * n > max_bytes:
        return dataset
    images, labels = [first[0]], [first[1]]
    for i in range(1, n):
        x, y = dataset[i]
        if not isinstance(x, torch.Tensor) or x.shape != first[0].shape:
            return dataset
        images.append(x)
        labels.append(int(y))
    return TensorDataset(torch.stack(images), torch.tensor(labels))
