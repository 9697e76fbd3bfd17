"""COCO-format detection and segmentation data: a loader for any COCO set, and a small one made
offline from the embedded Fashion-MNIST items.

The loader is ``torchvision.datasets.CocoDetection`` wrapped for ``torchvision.transforms.v2``
(boxes, masks and labels follow every geometric transform); pycocotools reads the annotation
file and decodes the masks. Both come with the ``detection`` extra:
``pip install "torchslim[detection]"``.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = make_detection_set(tmp, "val", num_images=2, size=64)
    ...     image, target = CocoDetectionSet(paths.images, paths.annotations)[0]
    >>> tuple(image.shape), sorted(target)
    ((3, 64, 64), ['area', 'boxes', 'image_id', 'iscrowd', 'labels', 'masks'])
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from torchslim.config import did_you_mean
from torchslim.data.datasets import FASHION_CLASSES, get_dataset, targets_of
from torchslim.errors import ConfigError

__all__ = [
    "CocoDetectionSet",
    "CocoPaths",
    "CocoSegmentationSet",
    "detection_collate",
    "make_detection_set",
    "optional_import",
]

SPLITS = ("train", "val")
# Semantic maps mark pixels claimed by two instances of different classes with this value (the
# convention of torchvision's segmentation references); losses and mIoU ignore it.
IGNORE_INDEX = 255
_TARGET_KEYS = ("image_id", "boxes", "labels", "masks", "iscrowd", "area")
_FORMAT = 1  # bump when the generated images or annotations change


def optional_import(name: str, extra: str = "detection") -> ModuleType:
    """Import ``name`` (e.g. ``"pycocotools.mask"``), or raise an ``ImportError`` saying which
    torchslim extra installs it.

    Example:
        >>> optional_import("json").__name__
        'json'
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"{name} is needed for detection and segmentation data and metrics but is not "
            f'installed: pip install "torchslim[{extra}]" ({exc})'
        ) from exc


class CocoPaths(NamedTuple):
    """Where a COCO-format split lives: its image folder and its annotation file."""

    images: Path
    annotations: Path


# ----------------------------------------------------------------------------- the generator


def _check_generator_args(
    split: str, num_images: int, size: int, max_objects: int, scale: tuple[float, float]
) -> None:
    if split not in SPLITS:
        raise ConfigError(
            f"split: {split!r} is not one of {list(SPLITS)}{did_you_mean(split, SPLITS)}"
        )
    if num_images < 1 or max_objects < 1:
        raise ConfigError(
            f"num_images and max_objects must be >= 1, got {num_images}, {max_objects}"
        )
    lo, hi = scale
    if not 0 < lo <= hi <= 0.5:
        raise ConfigError(f"scale: expected 0 < low <= high <= 0.5 of the canvas, got {scale}")
    if round(lo * size) < 8:
        raise ConfigError(
            f"size {size} with scale {scale} draws objects under 8 px; enlarge either"
        )


def _place(
    rng: np.random.Generator, side: int, size: int, taken: list[tuple[int, ...]]
) -> tuple[int, int] | None:
    """A top-left corner for a ``side`` square that overlaps no square in ``taken``."""
    for _ in range(20):
        x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
        if all(x + side <= a or a + s <= x or y + side <= b or b + s <= y for a, b, s in taken):
            return x, y
    return None


def _draw_image(
    rng: np.random.Generator,
    items: Dataset,
    labels: np.ndarray,
    size: int,
    max_objects: int,
    scale: tuple[float, float],
    threshold: float,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One RGB canvas and its (label, mask) objects; objects never overlap."""
    from PIL import Image

    background = rng.integers(0, 80, 3).astype(np.float32)
    canvas = background + rng.normal(0.0, 6.0, (size, size, 3)).astype(np.float32)
    objects: list[tuple[int, np.ndarray]] = []
    taken: list[tuple[int, ...]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        index = int(rng.integers(len(labels)))
        side = round(float(rng.uniform(*scale)) * size)
        colour = rng.integers(120, 256, 3).astype(np.float32)
        corner = _place(rng, side, size, taken)
        if corner is None:
            continue
        item = Image.fromarray(np.asarray(items[index][0], dtype=np.uint8))
        alpha = np.asarray(item.resize((side, side), Image.BILINEAR), dtype=np.float32) / 255
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[corner[1] : corner[1] + side, corner[0] : corner[0] + side] = alpha > threshold
        if not mask.any():
            continue
        x, y = corner
        region = canvas[y : y + side, x : x + side]
        canvas[y : y + side, x : x + side] = (
            region * (1 - alpha[..., None]) + colour * alpha[..., None]
        )
        taken.append((x, y, side))
        objects.append((int(labels[index]) + 1, mask))
    return np.clip(canvas, 0, 255).round().astype(np.uint8), objects


def _annotation(
    mask_api: ModuleType, mask: np.ndarray, ann_id: int, image_id: int, category: int
) -> dict[str, Any]:
    rle = mask_api.encode(np.asfortranarray(mask))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()},
        "area": float(mask_api.area(rle)),
        "bbox": [float(v) for v in mask_api.toBbox(rle)],
        "iscrowd": 0,
    }


def make_detection_set(
    root: str | os.PathLike,
    split: str = "train",
    *,
    num_images: int = 64,
    size: int = 128,
    seed: int = 0,
    max_objects: int = 4,
    scale: tuple[float, float] = (0.2, 0.5),
    threshold: float = 0.2,
) -> CocoPaths:
    """Write a deterministic COCO-format detection set of Fashion-MNIST items on larger canvases.

    Each of ``num_images`` RGB ``size`` x ``size`` PNG images (noisy background of a random
    colour) holds 1 to ``max_objects`` non-overlapping items, each scaled to ``scale`` of the
    canvas side and tinted a random colour. An object's class is its Fashion-MNIST label; COCO
    category ids are ``label + 1`` (0 stays background), named by the Fashion-MNIST classes. Its
    mask is the item's pixels brighter than ``threshold``, stored as COCO RLE; ``bbox`` and
    ``area`` come from the mask (pycocotools). The ``train`` split draws the Fashion-MNIST
    training items, ``val`` the test items. Files: ``root/SPLIT/images/*.png`` and
    ``root/SPLIT/instances.json``. The same arguments give the same bytes; a split already
    written with the same arguments is returned as it is, other arguments rewrite it.

    Example:
        >>> import json, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     paths = make_detection_set(tmp, "train", num_images=2, size=64, seed=1)
        ...     coco = json.loads(paths.annotations.read_text())
        >>> len(coco["images"]), coco["categories"][0]["name"]
        (2, 'T-shirt/top')
    """
    _check_generator_args(split, num_images, size, max_objects, tuple(scale))
    params = {
        "format": _FORMAT,
        "split": split,
        "num_images": num_images,
        "size": size,
        "seed": seed,
        "max_objects": max_objects,
        "scale": list(scale),
        "threshold": threshold,
    }
    folder = Path(root).expanduser() / split
    paths = CocoPaths(folder / "images", folder / "instances.json")
    folder.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(folder.parent / f".{split}.lock")):
        if _written_with(paths.annotations, params):
            return paths
        mask_api = optional_import("pycocotools.mask")
        items = get_dataset("fashion-mnist", train=split == "train", transform=np.asarray)
        labels = targets_of(items).numpy()
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=folder.parent))
        try:
            coco = _write_split(tmp, params, items, labels, mask_api)
            (tmp / "instances.json").write_text(json.dumps(coco), encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _written_with(annotations: Path, params: dict[str, Any]) -> bool:
    try:
        info = json.loads(annotations.read_text(encoding="utf-8"))["info"]
    except (OSError, ValueError, KeyError):
        return False
    return info.get("torchslim") == params


def _write_split(
    folder: Path, params: dict[str, Any], items: Dataset, labels: np.ndarray, mask_api: ModuleType
) -> dict[str, Any]:
    from PIL import Image

    (folder / "images").mkdir()
    rng = np.random.default_rng([params["seed"], SPLITS.index(params["split"])])
    images, annotations = [], []
    for image_id in range(1, params["num_images"] + 1):
        canvas, objects = _draw_image(
            rng,
            items,
            labels,
            params["size"],
            params["max_objects"],
            tuple(params["scale"]),
            params["threshold"],
        )
        name = f"{image_id:06d}.png"
        Image.fromarray(canvas).save(folder / "images" / name, format="PNG")
        size = params["size"]
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for category, mask in objects:
            annotations.append(
                _annotation(mask_api, mask, len(annotations) + 1, image_id, category)
            )
    categories = [
        {"id": i + 1, "name": name, "supercategory": "fashion"}
        for i, name in enumerate(FASHION_CLASSES)
    ]
    info = {
        "description": "Fashion-MNIST items on larger canvases, made by "
        "torchslim.data.coco.make_detection_set (Fashion-MNIST: MIT License, Zalando SE)",
        "torchslim": params,
    }
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


# ----------------------------------------------------------------------------- the loaders


def _empty_target(image_id: int, height: int, width: int) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, height, width, dtype=torch.uint8),
        "iscrowd": torch.zeros(0, dtype=torch.int64),
        "area": torch.zeros(0),
    }


class CocoDetectionSet(Dataset):
    """A COCO-format detection set: ``(image, target)`` with a float CHW image in [0, 1].

    ``target`` is a dict of plain tensors: ``boxes`` (N, 4) float xyxy in pixels, ``labels``
    (N,) int64 category ids, ``masks`` (N, H, W) uint8 (with ``masks=True``), ``iscrowd`` (N,)
    int64, ``area`` (N,) float and ``image_id`` (int) - the structure torchvision's detection
    models and torchmetrics' ``MeanAveragePrecision`` take. An image without annotations has
    N = 0. ``transforms`` is a ``torchvision.transforms.v2`` transform of ``(image, target)``,
    applied after the image became a float tensor (flips, crops and resizes move boxes and
    masks with it). Batch it with :func:`detection_collate` (the trainer does so itself).

    ``num_classes`` is the largest category id + 1 (0 is background), what a torchvision
    detector's ``num_classes`` must be; ``classes`` maps category ids to names.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     data = CocoDetectionSet(*make_detection_set(tmp, "val", num_images=2, size=64))
        ...     image, target = data[0]
        >>> data.num_classes, target["boxes"].shape[1], target["labels"].dtype
        (11, 4, torch.int64)
    """

    def __init__(
        self,
        images: str | os.PathLike,
        annotations: str | os.PathLike,
        transforms: Callable | None = None,
        *,
        masks: bool = True,
    ) -> None:
        optional_import("pycocotools.coco")
        from torchvision import datasets
        from torchvision.transforms import v2

        steps = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        joint = v2.Compose([*steps, *([transforms] if transforms is not None else [])])
        keys = set(_TARGET_KEYS) - (set() if masks else {"masks"})
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            base = datasets.CocoDetection(str(images), str(annotations), transforms=joint)
        self.coco = base.coco
        self.ids: list[int] = list(base.ids)
        self._data = datasets.wrap_dataset_for_transforms_v2(base, target_keys=keys)
        self.masks = masks
        cats = self.coco.loadCats(self.coco.getCatIds())
        self.classes: dict[int, str] = {int(c["id"]): str(c["name"]) for c in cats}
        self.num_classes = max(self.classes, default=0) + 1

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self._data[index]
        image = image.as_subclass(torch.Tensor)
        height, width = image.shape[-2:]
        out = _empty_target(int(self.ids[index]), height, width)
        if "boxes" not in target:  # the v2 wrapper's form of an image without annotations
            return image, (out if self.masks else _without_masks(out))
        out["boxes"] = target["boxes"].as_subclass(torch.Tensor).to(torch.float32)
        out["labels"] = torch.as_tensor(target["labels"], dtype=torch.int64)
        out["iscrowd"] = torch.as_tensor(target["iscrowd"], dtype=torch.int64)
        out["area"] = torch.as_tensor(target["area"], dtype=torch.float32)
        if self.masks:
            out["masks"] = target["masks"].as_subclass(torch.Tensor).to(torch.uint8)
            return image, out
        return image, _without_masks(out)


def _without_masks(target: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in target.items() if k != "masks"}


class CocoSegmentationSet(Dataset):
    """The semantic-segmentation view of a COCO-format set: ``(image, class map)``.

    The class map is an (H, W) int64 tensor holding each pixel's category id (0 =
    background, so Fashion-MNIST label ``k`` is ``k + 1``); a pixel claimed by instances of two
    different classes is :data:`IGNORE_INDEX` (255). ``transforms`` act on ``(image, target)``
    as in :class:`CocoDetectionSet`, before the instance masks become the map. ``num_classes``
    (largest category id + 1) is the width a segmentation model's output needs.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     data = CocoSegmentationSet(*make_detection_set(tmp, "val", num_images=2, size=64))
        ...     image, classes = data[0]
        >>> tuple(classes.shape), classes.dtype, int(classes.max()) < data.num_classes
        ((64, 64), torch.int64, True)
    """

    def __init__(
        self,
        images: str | os.PathLike,
        annotations: str | os.PathLike,
        transforms: Callable | None = None,
    ) -> None:
        self.instances = CocoDetectionSet(images, annotations, transforms, masks=True)
        self.classes = self.instances.classes
        self.num_classes = self.instances.num_classes

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.instances[index]
        masks = target["masks"].bool()
        class_map = torch.zeros(image.shape[-2:], dtype=torch.int64)
        if len(masks):
            labels = target["labels"].view(-1, 1, 1)
            class_map = (masks * labels).amax(dim=0)
            lowest = torch.where(masks, labels, torch.iinfo(torch.int64).max).amin(dim=0)
            class_map[masks.any(dim=0) & (lowest != class_map)] = IGNORE_INDEX
        return image, class_map


def detection_collate(batch: Sequence[Sequence[Any]]) -> tuple[list[Any], ...]:
    """Batch detection samples as lists: ``(list of images, list of target dicts, ...)``.

    Images may differ in size and targets in their number of objects, so nothing is stacked;
    this is what torchvision's detection models take.

    Example:
        >>> images, targets = detection_collate([(torch.zeros(3, 4, 4), {"boxes": 1})] * 2)
        >>> len(images), targets[1]
        (2, {'boxes': 1})
    """
    return tuple(list(column) for column in zip(*batch, strict=True))


FASHION_COCO = "fashion-coco"
COCO_PREFIX = "coco:"
# The generated set a recipe gets by name: images per split, and their side.
FASHION_COCO_IMAGES = {"train": 600, "val": 150}
FASHION_COCO_SIZE = 128


def is_coco_name(name: str) -> bool:
    """Whether a dataset name means a COCO-format set: ``fashion-coco`` (generated offline)
    or ``coco:PATH`` (a folder with ``train/`` and ``val/``, each ``images/`` +
    ``instances.json``, the layout :func:`make_detection_set` writes).

    Example:
        >>> is_coco_name("fashion-coco"), is_coco_name("coco:/data/mine"), is_coco_name("mnist")
        (True, True, False)
    """
    return name == FASHION_COCO or name.startswith(COCO_PREFIX)


def coco_paths(name: str, split: str, root: str | os.PathLike | None = None) -> CocoPaths:
    """The images folder and annotation file of a named COCO-format set's ``split``; the
    generated ``fashion-coco`` is written on first use (under ``root``, default
    ``cache_dir()/fashion-coco``).

    Example:
        >>> coco_paths("coco:/data/mine", "val").annotations.as_posix()
        '/data/mine/val/instances.json'
    """
    if split not in SPLITS:
        raise ConfigError(f"split: one of {list(SPLITS)}, got {split!r}")
    if name == FASHION_COCO:
        from torchslim.data.datasets import cache_dir

        folder = Path(root).expanduser() if root is not None else cache_dir() / FASHION_COCO
        return make_detection_set(folder, split, num_images=FASHION_COCO_IMAGES[split],
                                  size=FASHION_COCO_SIZE)  # fmt: skip
    if not name.startswith(COCO_PREFIX):
        raise ConfigError(f"{name!r} is not a COCO-format set name ({FASHION_COCO} or coco:PATH)")
    folder = Path(name[len(COCO_PREFIX) :]).expanduser() / split
    return CocoPaths(folder / "images", folder / "instances.json")


def coco_dataset(
    name: str, split: str, task: str, root: str | os.PathLike | None = None
) -> CocoDetectionSet | CocoSegmentationSet:
    """A named COCO-format set's ``split`` for ``task`` (``detection``: boxes, labels and
    masks per image; ``segmentation``: a class map per image).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = make_detection_set(tmp, "val", num_images=2, size=64)
        ...     data = coco_dataset(f"coco:{tmp}", "val", "segmentation")
        ...     tuple(data[0][1].shape)
        (64, 64)
    """
    paths = coco_paths(name, split, root)
    if not paths.annotations.is_file():
        from torchslim.errors import DataNotFoundError

        raise DataNotFoundError(
            f"{name}: no {paths.annotations} (expected SPLIT/images/ and SPLIT/instances.json "
            f"for the splits {list(SPLITS)})"
        )
    if task == "detection":
        return CocoDetectionSet(*paths)
    if task == "segmentation":
        return CocoSegmentationSet(*paths)
    raise ConfigError(f"a COCO-format set serves detection or segmentation, not {task!r}")
