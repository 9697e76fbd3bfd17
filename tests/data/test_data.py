from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from torchslim.data import (
    AUGMENTATIONS,
    build_transforms,
    calibration_loader,
    dataset_info,
    get_dataset,
    in_memory,
    mix_transform,
    stratified_subset,
    targets_of,
)
from torchslim.data.datasets import EMBEDDED
from torchslim.errors import ConfigError, DataNotFoundError


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHSLIM_DATA", str(tmp_path_factory.getbasetemp() / "data-cache"))


def test_embedded_fashion_mnist_is_complete_and_normalised() -> None:
    train = get_dataset("fashion-mnist", train=True, augment=[])
    test = get_dataset("fashion-mnist", train=False)
    assert len(train) == 60_000 and len(test) == 10_000
    assert targets_of(train).bincount().tolist() == [6000] * 10
    x, y = test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 9  # ankle boot
    batch = torch.stack([test[i][0] for i in range(500)])
    assert abs(batch.mean().item()) < 0.2 and 0.8 < batch.std().item() < 1.2
    assert (EMBEDDED / "fashion-mnist" / "LICENSE").read_text().startswith("The MIT License")


@pytest.mark.parametrize("name", AUGMENTATIONS)
@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_each_augmentation_keeps_shape_and_dtype(name: str, dataset: str) -> None:
    info = dataset_info(dataset)
    transform = build_transforms(info, train=True, augment=[name])
    torch.manual_seed(0)
    shape = (info.in_channels, info.image_size, info.image_size)
    image = torch.randint(0, 256, shape, dtype=torch.uint8)
    outs = [transform(image) for _ in range(4)]
    for out in outs:
        assert out.shape == shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    plain = build_transforms(info, train=False)(image)
    assert any(not torch.equal(out, plain) for out in outs), f"{name} never changed the image"


def test_eval_transforms_ignore_augmentations() -> None:
    info = dataset_info("cifar10")
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor(info.mean).view(3, 1, 1), torch.tensor(info.std).view(3, 1, 1)
    expected = (image.float() / 255 - mean) / std  # the plain eval transform: scale, normalise
    torch.testing.assert_close(build_transforms(info, train=False)(image), expected)
    t = build_transforms(info, train=False, augment=["hflip", "random_erasing"])
    for _ in range(8):  # a flip or an erasing that slipped in would show within a few draws
        torch.testing.assert_close(t(image), expected)


def test_unknown_augmentation_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean 'hflip'"):
        build_transforms(dataset_info("mnist"), train=True, augment=["hfilp"])


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mixup_cutmix_keep_shapes_and_give_soft_targets(mixup: float, cutmix: float) -> None:
    mix = mix_transform(10, mixup_alpha=mixup, cutmix_alpha=cutmix)
    assert mix is not None
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    mx, my = mix(x, y)
    assert mx.shape == x.shape and mx.dtype == x.dtype
    assert my.shape == (8, 10) and torch.allclose(my.sum(1), torch.ones(8))
    assert mix_transform(10) is None


def test_stratified_subset_is_balanced_and_seeded() -> None:
    test = get_dataset("fashion-mnist", train=False)
    a = stratified_subset(test, per_class=7, seed=1)
    b = stratified_subset(test, per_class=7, seed=1)
    c = stratified_subset(test, per_class=7, seed=2)
    assert targets_of(a).bincount().tolist() == [7] * 10
    assert a.indices == b.indices and a.indices != c.indices
    assert len(stratified_subset(test, fraction=0.01)) == 100
    with pytest.raises(ConfigError, match="exactly one"):
        stratified_subset(test)
    with pytest.raises(ConfigError, match="only 1000 samples"):
        stratified_subset(test, per_class=1001)


def test_calibration_loader_is_deterministic() -> None:
    test = get_dataset("fashion-mnist", train=False)
    first = [y for _, y in calibration_loader(test, 64, batch_size=16, seed=3)]
    second = [y for _, y in calibration_loader(test, 64, batch_size=16, seed=3)]
    assert len(first) == 4 and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(ConfigError, match="num_samples"):
        calibration_loader(test, 0)


def test_in_memory_keeps_every_item_and_leaves_what_it_cannot_hold() -> None:
    sub = stratified_subset(get_dataset("fashion-mnist", train=False), per_class=3, seed=1)
    held = in_memory(sub)
    assert isinstance(held, torch.utils.data.TensorDataset) and len(held) == len(sub)
    for i in (0, 7, len(sub) - 1):
        assert torch.equal(held[i][0], sub[i][0]) and int(held[i][1]) == sub[i][1]
    assert torch.equal(targets_of(held), targets_of(sub))
    assert in_memory(sub, max_bytes=1000) is sub  # too big: read lazily as before
    boxes = [(torch.zeros(3, 4, 4), {"boxes": torch.zeros(0, 4)})]  # not (image, int label)
    assert in_memory(boxes) is boxes  # type: ignore[arg-type]


def test_mnist_from_a_root_path(tmp_path: Path) -> None:
    # Fake MNIST IDX files (the real ones live outside the repo): torchvision parses the format.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 20), ("t10k", 10)):
        header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        images = header + bytes(range(256)) * (n * 784 // 256) + bytes(n * 784 % 256)
        labels = (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(i % 10 for i in range(n))
        (raw / f"{split}-images-idx3-ubyte").write_bytes(images)
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(labels)
    ds = get_dataset("mnist", train=False, root=tmp_path)
    assert len(ds) == 10 and ds[3][1] == 3 and ds[3][0].shape == (1, 28, 28)


def _jpeg_folder(root: Path, classes: tuple[str, ...], per_class: int, size: int) -> None:
    for split in ("train", "test"):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), (k * 20, i * 10, 100)).save(folder / f"{i}.jpg")


def test_cifar10_from_imagefolder_jpeg_layout(tmp_path: Path) -> None:
    classes = ("airplane", "automobile", "bird")
    _jpeg_folder(tmp_path / "cifar", classes, 2, 32)
    ds = get_dataset("cifar10", train=True, root=tmp_path / "cifar")
    assert len(ds) == 6 and ds[0][0].shape == (3, 32, 32) and targets_of(ds).tolist()[-1] == 2


def test_any_imagefolder_resized_to_224(tmp_path: Path) -> None:
    _jpeg_folder(tmp_path, ("cat", "dog"), 2, 50)
    shutil.move(tmp_path / "test", tmp_path / "val")
    info = dataset_info(f"imagefolder:{tmp_path}")
    assert info.classes == ("cat", "dog") and info.num_classes == 2
    ds = get_dataset(f"imagefolder:{tmp_path}", train=False)
    assert ds[0][0].shape == (3, 224, 224)
    train = get_dataset(str(tmp_path), train=True)
    assert train[0][0].shape == (3, 224, 224)


def test_missing_data_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=str(tmp_path)) as info:
        get_dataset("cifar10", train=True, root=tmp_path)
    assert "--data-root" in str(info.value)
    with pytest.raises(DataNotFoundError, match="IDX"):
        get_dataset("mnist", train=True, root=tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'mnist'"):
        get_dataset("mnsit", train=True)
