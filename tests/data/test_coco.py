from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from torchslim.data import (
    CocoDetectionSet,
    CocoSegmentationSet,
    detection_collate,
    make_detection_set,
)
from torchslim.data.coco import IGNORE_INDEX, optional_import
from torchslim.data.datasets import FASHION_CLASSES
from torchslim.errors import ConfigError

pytest.importorskip("pycocotools")
# pycocotools' mask decoding under NumPy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHSLIM_DATA", str(tmp_path_factory.getbasetemp() / "data-cache"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fashion-coco")
    make_detection_set(root, "train", num_images=6, size=96, seed=3)
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(generated: Path, tmp_path: Path) -> None:
    again = make_detection_set(tmp_path / "a", "train", num_images=6, size=96, seed=3)
    assert _files(again.images.parent) == _files(generated / "train")
    other = make_detection_set(tmp_path / "b", "train", num_images=6, size=96, seed=4)
    assert _files(other.images) != _files(generated / "train" / "images")
    val = make_detection_set(tmp_path / "a", "val", num_images=6, size=96, seed=3)
    assert _files(val.images) != _files(again.images)  # val draws the Fashion-MNIST test items


def test_an_existing_split_is_kept_and_other_arguments_rewrite_it(tmp_path: Path) -> None:
    paths = make_detection_set(tmp_path, "val", num_images=2, size=64)
    stamp = paths.annotations.stat().st_mtime_ns
    assert make_detection_set(tmp_path, "val", num_images=2, size=64) == paths
    assert paths.annotations.stat().st_mtime_ns == stamp
    make_detection_set(tmp_path, "val", num_images=3, size=64)
    assert len(json.loads(paths.annotations.read_text())["images"]) == 3
    assert len(list(paths.images.iterdir())) == 3


def test_annotations_are_valid_coco_with_boxes_from_the_masks(generated: Path) -> None:
    from pycocotools import mask as mask_api
    from pycocotools.coco import COCO

    with redirect_stdout(io.StringIO()):
        coco = COCO(str(generated / "train" / "instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(FASHION_CLASSES)
    assert len(coco.getImgIds()) == 6
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        image = Image.open(generated / "train" / "images" / info["file_name"])
        assert image.size == (96, 96) and image.mode == "RGB"
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= 4
        taken = np.zeros((96, 96), dtype=bool)
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann["bbox"]
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert min(x, y) >= 0 and max(x + w, y + h) <= 96
            assert ann["area"] == mask.sum() == mask_api.area(ann["segmentation"])
            assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 10
            assert not (taken & mask).any()  # objects never overlap
            taken |= mask


def test_detection_loader_structure(generated: Path) -> None:
    data = CocoDetectionSet(generated / "train" / "images", generated / "train" / "instances.json")
    assert len(data) == 6 and data.num_classes == 11 and data.classes[1] == "T-shirt/top"
    image, target = data[0]
    n = len(target["boxes"])
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert target["image_id"] == 1
    assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].dtype == torch.int64 and target["labels"].shape == (n,)
    assert target["masks"].shape == (n, 96, 96) and target["masks"].dtype == torch.uint8
    assert target["iscrowd"].tolist() == [0] * n
    torch.testing.assert_close(target["area"], target["masks"].sum((1, 2)).float())
    for box, mask in zip(target["boxes"], target["masks"], strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert box.tolist() == [float(v) for v in expected]
    images, targets = detection_collate([data[0], data[1]])
    assert len(images) == len(targets) == 2 and targets[1]["image_id"] == 2


def test_transforms_move_boxes_and_masks_together(generated: Path) -> None:
    paths = (generated / "train" / "images", generated / "train" / "instances.json")
    image, target = CocoDetectionSet(*paths)[0]
    flipped, moved = CocoDetectionSet(*paths, v2.RandomHorizontalFlip(p=1.0))[0]
    torch.testing.assert_close(flipped, image.flip(-1))
    torch.testing.assert_close(moved["masks"], target["masks"].flip(-1))
    torch.testing.assert_close(moved["boxes"][:, [0, 2]], 96 - target["boxes"][:, [2, 0]])
    _, plain = CocoDetectionSet(*paths, masks=False)[0]
    assert "masks" not in plain and plain["boxes"].shape == target["boxes"].shape


def test_segmentation_view_paints_each_mask_with_its_category(generated: Path) -> None:
    paths = (generated / "train" / "images", generated / "train" / "instances.json")
    _, target = CocoDetectionSet(*paths)[2]
    data = CocoSegmentationSet(*paths)
    image, classes = data[2]
    assert classes.shape == image.shape[1:] and classes.dtype == torch.int64
    expected = torch.zeros(96, 96, dtype=torch.int64)
    for mask, label in zip(target["masks"], target["labels"], strict=True):
        expected[mask.bool()] = label
    assert torch.equal(classes, expected) and data.num_classes == 11


def test_overlapping_instances_of_two_classes_are_ignored(tmp_path: Path) -> None:
    from pycocotools import mask as mask_api

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "1.png")
    masks = [np.zeros((8, 8), dtype=np.uint8) for _ in range(3)]
    masks[0][0:4, 0:4] = 1
    masks[1][2:6, 2:6] = 1  # overlaps the first, another class
    masks[2][6:8, 6:8] = 1
    anns = []
    for i, (mask, category) in enumerate(zip(masks, (1, 2, 2), strict=True)):
        rle = mask_api.encode(np.asfortranarray(mask))
        anns.append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": category,
                "iscrowd": 0,
                "segmentation": {"size": [8, 8], "counts": rle["counts"].decode()},
                "area": float(mask.sum()),
                "bbox": [float(v) for v in mask_api.toBbox(rle)],
            }
        )
    coco = {
        "images": [{"id": 1, "file_name": "1.png", "width": 8, "height": 8}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    _, classes = CocoSegmentationSet(tmp_path, tmp_path / "ann.json")[0]
    assert classes[0, 0] == 1 and classes[5, 5] == 2 and classes[7, 7] == 2
    assert classes[3, 3] == IGNORE_INDEX and classes[7, 0] == 0


def test_an_image_without_annotations_has_empty_targets(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 6, 3), dtype=np.uint8)).save(tmp_path / "1.png")
    coco = {
        "images": [{"id": 7, "file_name": "1.png", "width": 6, "height": 8}],
        "annotations": [],
        "categories": [{"id": 3, "name": "c"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    data = CocoDetectionSet(tmp_path, tmp_path / "ann.json")
    image, target = data[0]
    assert image.shape == (3, 8, 6) and target["image_id"] == 7 and data.num_classes == 4
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 8, 6)
    _, classes = CocoSegmentationSet(tmp_path, tmp_path / "ann.json")[0]
    assert classes.shape == (8, 6) and not classes.any()


def test_bad_generator_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        make_detection_set(tmp_path, "trian")
    with pytest.raises(ConfigError, match="scale"):
        make_detection_set(tmp_path, scale=(0.4, 0.9))
    with pytest.raises(ConfigError, match="under 8 px"):
        make_detection_set(tmp_path, size=32)


def test_a_missing_extra_names_the_install_command() -> None:
    with pytest.raises(ImportError, match=r'pip install "torchslim\[detection\]"'):
        optional_import("torchslim_no_such_module")
