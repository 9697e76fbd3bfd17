"""Datasets via torchvision: embedded Fashion-MNIST, MNIST, CIFAR-10, any ImageFolder."""

from __future__ import annotations

import fcntl
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from torchslim.config import did_you_mean
from torchslim.data.info import DatasetInfo
from torchslim.data.transforms import build_transforms
from torchslim.errors import ConfigError, DataNotFoundError

EMBEDDED = Path(__file__).parent / "embedded"
CIFAR10_ARCHIVE = "cifar10-jpeg.tar.gz"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")  # fmt: skip
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")  # fmt: skip


_KNOWN = {
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), FASHION_CLASSES),
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), tuple("0123456789")),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), CIFAR10_CLASSES
    ),
}
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def cache_dir() -> Path:
    """Where torchslim keeps data: ``$TORCHSLIM_DATA`` or ``~/.cache/torchslim/data``.

    Example:
        >>> cache_dir().name in ("data",) or True
        True
    """
    env = os.environ.get("TORCHSLIM_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "torchslim" / "data"


def _folder_of(name: str) -> Path | None:
    if name.startswith("imagefolder:"):
        return Path(name.split(":", 1)[1]).expanduser()
    if name not in _KNOWN and Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    return None


def _check_name(name: str) -> None:
    if name not in _KNOWN and _folder_of(name) is None:
        raise ConfigError(
            f"unknown dataset {name!r}{did_you_mean(name, _KNOWN)}; use one of {sorted(_KNOWN)}, "
            "an existing folder, or imagefolder:PATH"
        )


def dataset_info(name: str) -> DatasetInfo:
    """Classes, channels, image size and normalisation of a dataset name.

    For an ImageFolder the classes are read from the folder; images are taken as RGB at 224 px.

    Example:
        >>> dataset_info("fashion-mnist").num_classes
        10
    """
    _check_name(name)
    if name in _KNOWN:
        return _KNOWN[name]
    folder = _folder_of(name)
    split = next((folder / s for s in ("train", "val", "test") if (folder / s).is_dir()), folder)
    if not split.is_dir():
        raise DataNotFoundError(f"image folder {folder} does not exist")
    classes = tuple(sorted(d.name for d in split.iterdir() if d.is_dir()))
    if not classes:
        raise DataNotFoundError(f"{split} holds no class sub-folders (expected CLASS/IMAGE files)")
    return DatasetInfo(str(folder), len(classes), 3, 224, *_IMAGENET_STATS, classes)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    # Two processes (e.g. torchrun ranks) preparing the same cache must not interleave.
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")  # fmt: skip


def _idx_root(name: str, source_raw: Path) -> Path:
    """A root torchvision can read for an IDX dataset, without writing next to the source.

    Extracted files are read in place; .gz files are copied into the cache once and
    torchvision verifies and extracts them there (no network involved).
    """
    folder = "FashionMNIST" if name == "fashion-mnist" else "MNIST"
    if all((source_raw / f).is_file() for f in IDX_FILES):
        return source_raw.parent.parent
    root = cache_dir() / name
    raw = root / folder / "raw"
    with _locked(root):
        raw.mkdir(parents=True, exist_ok=True)
        for f in IDX_FILES:
            gz = source_raw / f"{f}.gz"
            if not (raw / f).is_file() and not (raw / gz.name).is_file() and gz.is_file():
                tmp = raw / f".{gz.name}.tmp"
                shutil.copyfile(gz, tmp)
                os.replace(tmp, raw / gz.name)
        _torchvision_mnist(name, root, train=True, download=True)
    return root


def _torchvision_mnist(name: str, root: Path, train: bool, download: bool = False) -> Dataset:
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST
    return cls(str(root), train=train, download=download)


def _idx_dataset(name: str, root: str | os.PathLike | None, train: bool, download: bool) -> Dataset:
    folder = "FashionMNIST" if name == "fashion-mnist" else "MNIST"
    if name == "fashion-mnist" and root is None:
        return _torchvision_mnist(name, _idx_root(name, EMBEDDED / name / folder / "raw"), train)
    looked = [base / folder / "raw" for base in _candidates(root, name)]
    for raw in looked:
        if any(raw.glob("*-ubyte*")):
            return _torchvision_mnist(name, _idx_root(name, raw), train)
    if download:
        with _locked(cache_dir() / name):
            return _torchvision_mnist(name, cache_dir() / name, train, download=True)
    raise _not_found(
        name,
        looked,
        f"put the four IDX .gz files in ROOT/{folder}/raw and pass root=ROOT (--data-root ROOT), "
        "set TORCHSLIM_DATA, or pass download=True where the network allows",
    )


def _not_found(name: str, looked: Sequence[Path], how: str) -> DataNotFoundError:
    paths = ", ".join(str(p) for p in looked)
    return DataNotFoundError(f"{name} data not found (looked in: {paths}); {how}")


def _candidates(root: str | os.PathLike | None, sub: str) -> list[Path]:
    if root is not None:
        return [Path(root).expanduser()]
    env = os.environ.get("TORCHSLIM_DATA")
    roots = [Path(env).expanduser()] if env else []
    roots.append(cache_dir())
    return list(dict.fromkeys([*(r / sub for r in roots), *roots]))


def _cifar10(
    root: str | os.PathLike | None, train: bool, download: bool
) -> tuple[Dataset, Callable | None]:
    from torchvision import datasets

    split = "train" if train else "test"
    looked: list[Path] = []
    for base in _candidates(root, "cifar10"):
        if base.is_file() and base.name.endswith(".tar.gz"):
            base = _extract_cifar(base)
        looked.append(base)
        if (base / "cifar-10-batches-py").is_dir():
            return datasets.CIFAR10(str(base), train=train), None
        for folder in (base / split, base / "cifar10" / split, base / "cifar10-jpeg" / split):
            if folder.is_dir():
                return datasets.ImageFolder(str(folder)), None
        if (base / CIFAR10_ARCHIVE).is_file():
            return datasets.ImageFolder(str(_extract_cifar(base / CIFAR10_ARCHIVE) / split)), None
    if download:
        target = looked[0] if looked else cache_dir() / "cifar10"
        return datasets.CIFAR10(str(target), train=train, download=True), None
    raise _not_found(
        "CIFAR-10",
        looked,
        f"pass root= (--data-root) pointing at torchvision's cifar-10-batches-py, an ImageFolder "
        f"layout ROOT/{split}/CLASS/*.jpg or {CIFAR10_ARCHIVE}; or set TORCHSLIM_DATA",
    )


def _extract_cifar(archive: Path) -> Path:
    target = cache_dir() / "cifar10-jpeg"
    with _locked(target):
        if not (target / "test").is_dir():
            tmp = target / ".extracting"
            shutil.rmtree(tmp, ignore_errors=True)
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            inner = next((p for p in tmp.rglob("train") if p.is_dir()), None)
            if inner is None:
                raise DataNotFoundError(f"{archive} has no train/ folder")
            for split in ("train", "test"):
                os.replace(inner.parent / split, target / split)
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _image_folder(folder: Path, train: bool) -> Dataset:
    from torchvision import datasets

    names = ("train",) if train else ("val", "test")
    for name in names:
        if (folder / name).is_dir():
            return datasets.ImageFolder(str(folder / name))
    if folder.is_dir() and not any((folder / n).is_dir() for n in ("train", "val", "test")):
        return datasets.ImageFolder(str(folder))
    raise _not_found(
        f"image folder ({'train' if train else 'val/test'} split)",
        [folder / n for n in names],
        "lay the images out as PATH/train/CLASS/*.jpg and PATH/val/CLASS/*.jpg",
    )


class _Transformed(Dataset):
    """Applies a transform to the images of a dataset that yields (PIL image, label)."""

    def __init__(self, base: Dataset, transform: Callable | None) -> None:
        self.base, self.transform = base, transform
        self.targets = targets_of(base)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[object, int]:
        image, label = self.base[index]
        return (self.transform(image) if self.transform else image), int(label)


def get_dataset(
    name: str,
    *,
    train: bool,
    root: str | os.PathLike | None = None,
    transform: Callable | None = None,
    augment: Sequence[str] | None = None,
    download: bool = False,
) -> Dataset:
    """Load a dataset split as (normalised CxHxW float tensor, int label) pairs.

    ``name`` is ``"fashion-mnist"`` (embedded, always available), ``"mnist"``, ``"cifar10"``,
    ``"imagefolder:PATH"`` or an existing folder. ``transform=None`` builds the default
    transforms (with ``augment`` names, or the dataset's default augmentations, for training).

    Example:
        >>> test = get_dataset("fashion-mnist", train=False)
        >>> len(test), tuple(test[0][0].shape)
        (10000, (1, 28, 28))
    """
    info = dataset_info(name)
    if name in ("fashion-mnist", "mnist"):
        base = _idx_dataset(name, root, train, download)
    elif name == "cifar10":
        base, _ = _cifar10(root, train, download)
    else:
        base = _image_folder(_folder_of(name), train)
    if transform is None:
        transform = build_transforms(info, train=train, augment=augment)
    return _Transformed(base, transform)


def targets_of(dataset: Dataset) -> torch.Tensor:
    """The label of every sample, read without decoding any image.

    Example:
        >>> targets_of(get_dataset("fashion-mnist", train=False)).bincount().tolist()[:2]
        [1000, 1000]
    """
    if isinstance(dataset, Subset):
        return targets_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is None and hasattr(dataset, "tensors"):
        targets = dataset.tensors[-1]
    if targets is None:
        raise TypeError(
            f"{type(dataset).__name__} exposes no .targets; give it a .targets list of labels"
        )
    return torch.as_tensor(targets, dtype=torch.long)
