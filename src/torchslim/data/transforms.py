"""Augmentations and preprocessing, all through ``torchvision.transforms.v2``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

from torchslim.config import did_you_mean
from torchslim.data.info import DatasetInfo
from torchslim.errors import ConfigError


def _color_jitter(info: DatasetInfo) -> v2.Transform:
    # Hue and saturation are meaningless on grey images.
    if info.in_channels == 1:
        return v2.ColorJitter(brightness=0.3, contrast=0.3)
    return v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05)


# Augmentations applied to images before normalisation; each takes the dataset's info.
_PRE: dict[str, Callable[[DatasetInfo], v2.Transform]] = {
    "random_resized_crop": lambda i: v2.RandomResizedCrop(
        i.image_size,
        scale=(0.35 if i.image_size < 64 else 0.08, 1.0),
        ratio=(3 / 4, 4 / 3),
        antialias=True,
    ),
    "random_crop": lambda i: v2.RandomCrop(i.image_size, padding=max(2, i.image_size // 8)),
    "hflip": lambda i: v2.RandomHorizontalFlip(),
    "vflip": lambda i: v2.RandomVerticalFlip(),
    "rotation": lambda i: v2.RandomRotation(15),
    "affine": lambda i: v2.RandomAffine(
        degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5
    ),
    "color_jitter": _color_jitter,
    "gaussian_blur": lambda i: v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.5))], p=0.5),
}
# Augmentations applied to the normalised float tensor.
_POST: dict[str, Callable[[DatasetInfo], v2.Transform]] = {
    "gaussian_noise": lambda i: v2.GaussianNoise(sigma=0.05, clip=False),
    "random_erasing": lambda i: v2.RandomErasing(p=0.25),
}
AUGMENTATIONS: tuple[str, ...] = (*_PRE, *_POST)

_DEFAULT_AUGMENT = {
    "fashion-mnist": ("random_crop", "hflip"),
    "mnist": ("random_crop",),
    "cifar10": ("random_crop", "hflip"),
}


def build_transforms(
    info: DatasetInfo, *, train: bool, augment: Sequence[str] | None = None
) -> v2.Compose:
    """PIL image or uint8 tensor -> normalised float tensor, with augmentations when training.

    ``augment=None`` picks the dataset's defaults (for ImageFolders: random resized crop and
    flip); ``augment=[]`` disables augmentation. Names: see ``AUGMENTATIONS``.

    Example:
        >>> from torchslim.data import dataset_info
        >>> t = build_transforms(dataset_info("cifar10"), train=True, augment=["hflip"])
        >>> t(torch.zeros(3, 32, 32, dtype=torch.uint8)).dtype
        torch.float32
    """
    names = list(augment) if augment is not None else None
    for name in names or ():
        if name not in AUGMENTATIONS:
            raise ConfigError(
                f"augment: unknown augmentation {name!r}{did_you_mean(name, AUGMENTATIONS)}; "
                f"choose from {list(AUGMENTATIONS)}"
            )
    folder = info.name not in _DEFAULT_AUGMENT
    if names is None:
        names = list(_DEFAULT_AUGMENT.get(info.name, ("random_resized_crop", "hflip")))
    if not train:
        names = []
    steps: list[v2.Transform] = [v2.ToImage()]
    if folder and not (train and "random_resized_crop" in names):
        steps += [v2.Resize(int(info.image_size * 256 / 224), antialias=True)]
        steps += [v2.CenterCrop(info.image_size)]
    if folder:
        steps.append(v2.RGB())
    steps += [_PRE[n](info) for n in names if n in _PRE]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]
    steps += [_POST[n](info) for n in names if n in _POST]
    return v2.Compose(steps)


def mix_transform(
    num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """Batch-level MixUp and/or CutMix (one of them per batch when both are on); ``None`` if off.

    Returns soft targets of shape ``(N, num_classes)``.

    Example:
        >>> mix = mix_transform(10, mixup_alpha=0.2)
        >>> x, y = mix(torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
        >>> tuple(y.shape)
        (4, 10)
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ConfigError("mixup_alpha / cutmix_alpha: must be >= 0")
    choices: list[v2.Transform] = []
    if mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    mix = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    def apply(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mix(inputs, targets)

    return apply
