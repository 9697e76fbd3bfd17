"""Detection and segmentation through the one trainer, on the generated Fashion-MNIST COCO set."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tiny_detectors import tiny_faster_rcnn
from torch import nn
from torch.utils.data import Subset

from torchslim.data import CocoDetectionSet, CocoSegmentationSet, make_detection_set
from torchslim.errors import CheckpointError, ConfigError
from torchslim.losses import GIoULoss, SmoothL1Loss
from torchslim.train import (
    Callback,
    DetectionEvalResult,
    SegmentationEvalResult,
    TrainConfig,
    Trainer,
    evaluate,
    segmentation_loss,
)
from torchslim.train import checkpoint as ckpt_io
from torchslim.train.tasks import check_task, collate, infer_task

pytest.importorskip("pycocotools")
pytest.importorskip("torchmetrics")
# pycocotools' mask decoding under NumPy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = 64
CFG = {"batch_size": 2, "lr": 0.01, "progress": False, "device": "cpu", "seed": 0}


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCHSLIM_DATA", str(tmp_path_factory.getbasetemp() / "data-cache"))
        yield make_detection_set(tmp_path_factory.mktemp("coco"), "val", num_images=4, size=SIZE)


def test_tasks_are_read_from_the_data(coco: tuple[Path, Path]) -> None:
    det, seg = CocoDetectionSet(*coco), CocoSegmentationSet(*coco)
    assert infer_task(*det[0]).value == "detection"
    assert infer_task(*seg[0]).value == "segmentation"
    images, targets = collate([det[0], det[1]])
    assert isinstance(images, list) and infer_task(images, targets).value == "detection"
    images, maps = collate([seg[0], seg[1]])
    assert maps.shape == (2, SIZE, SIZE) and infer_task(images, maps).value == "segmentation"
    assert infer_task(torch.zeros(2, 3, 8, 8), torch.tensor([1, 2])).value == "classification"
    with pytest.raises(ConfigError, match=r"expects batches of .* detection batches"):
        check_task("segmentation", [det[0][0]], [det[0][1]])


def test_mixup_is_refused_for_detection_and_segmentation() -> None:
    with pytest.raises(ConfigError, match="mixup_alpha/cutmix_alpha"):
        TrainConfig(task="detection", mixup_alpha=0.2)
    with pytest.raises(ConfigError, match="did you mean 'segmentation'"):
        TrainConfig(task="segmentatoin")


class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, step: int, logs: object) -> None:
        if step == self.step:
            raise KeyboardInterrupt


def test_a_detector_trains_reports_coco_map_and_resumes(
    coco: tuple[Path, Path], tmp_path: Path
) -> None:
    data = CocoDetectionSet(*coco)
    val = Subset(data, [0, 1])
    cfg = {**CFG, "epochs": 2, "checkpoint_every_steps": 1}
    trainer = Trainer(tiny_faster_rcnn(), cfg, data, val, out_dir=tmp_path / "full")
    result = trainer.fit()
    first, last = result.history
    assert trainer.task.value == "detection" and result.metric == "eval_map"
    for row in result.history:
        assert 0.0 <= row["eval_map"] <= row["eval_map_50"] <= 1.0
        assert math.isfinite(row["train_loss"]) and "train_acc" not in row
        parts = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
        assert math.isclose(sum(row[k] for k in parts), row["train_loss"], rel_tol=1e-5)
    assert last["train_loss"] < first["train_loss"]
    assert result.best_metric == max(first["eval_map"], last["eval_map"])
    with open(tmp_path / "full" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"eval_map", "loss_classifier"} <= rows[0].keys()
    res = trainer.evaluate()
    assert isinstance(res, DetectionEvalResult) and res.samples == 2 and res.mask_map is None
    assert res.map == pytest.approx(last["eval_map"]) and "box mAP" in str(res)

    # Interrupted in the middle of epoch 2, then resumed: the same run.
    cut = tmp_path / "cut"
    stopped = Trainer(tiny_faster_rcnn(), cfg, data, val, out_dir=cut, callbacks=[_StopAt(4)])
    with pytest.raises(KeyboardInterrupt):
        stopped.fit()
    assert ckpt_io.load_checkpoint(cut / "last.pt")["global_step"] == 3
    model = tiny_faster_rcnn()
    resumed = Trainer(model, cfg, data, val, out_dir=cut).fit(resume=True)
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(result.history)
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_a_torchvision_mobilenet_detector_trains_one_step(coco: tuple[Path, Path]) -> None:
    from torchvision.models import detection

    torch.manual_seed(0)
    model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=11,
        min_size=SIZE,
        max_size=SIZE,
        rpn_pre_nms_top_n_test=50,
        rpn_post_nms_top_n_test=20,
        box_batch_size_per_image=32,
    )
    data = Subset(CocoDetectionSet(*coco), [0, 1])
    result = Trainer(model, {**CFG, "epochs": 1}, data, data).fit()
    assert math.isfinite(result.final["train_loss"]) and 0 <= result.final["eval_map"] <= 1


class _OneBox(nn.Module):
    """A custom detector: one box and class per image, trained with torchslim's box losses."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.Flatten())
        self.box = nn.LazyLinear(4)
        self.cls = nn.LazyLinear(11)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        feats = self.features(torch.stack(images))
        xy, wh = self.box(feats).sigmoid().split(2, dim=1)
        boxes = torch.cat([xy * SIZE / 2, xy * SIZE / 2 + wh * SIZE / 2], dim=1)
        logits = self.cls(feats)
        return [
            {
                "boxes": b[None],
                "scores": lg.softmax(0).max()[None],
                "labels": lg.argmax()[None],
                "logits": lg,
            }
            for b, lg in zip(boxes, logits, strict=True)
        ]


def _box_losses(outputs: list[dict], targets: list[dict]) -> dict[str, torch.Tensor]:
    pred = torch.stack([o["boxes"][0] for o in outputs])
    true = torch.stack([t["boxes"][0] for t in targets])
    logits = torch.stack([o["logits"] for o in outputs])
    labels = torch.stack([t["labels"][0] for t in targets])
    return {
        "giou": GIoULoss()(pred, true),
        "smooth_l1": SmoothL1Loss(beta=1.0)(pred / SIZE, true / SIZE),
        "classes": nn.functional.cross_entropy(logits, labels),
    }


def test_a_custom_detector_trains_with_torchslim_box_losses(coco: tuple[Path, Path]) -> None:
    data = CocoDetectionSet(*coco, masks=False)
    model = _OneBox()
    model(torch.zeros(1, 3, SIZE, SIZE).unbind(0))  # materialise the lazy layers
    cfg = {**CFG, "epochs": 3, "lr": 0.05, "task": "detection"}
    result = Trainer(model, cfg, data, data, loss_fn=_box_losses).fit()
    assert {"giou", "smooth_l1", "classes", "task_loss"} <= result.final.keys()
    assert result.history[-1]["giou"] < result.history[0]["giou"]
    assert 0 <= result.final["eval_map"] <= 1


def test_lraspp_trains_with_dice_and_lovasz_and_reports_miou(coco: tuple[Path, Path]) -> None:
    from torchvision.models import segmentation

    torch.manual_seed(0)
    model = segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=11
    )
    data = Subset(CocoSegmentationSet(*coco), [0, 1])
    loss = segmentation_loss(dice=0.5, lovasz=0.5)
    result = Trainer(model, {**CFG, "epochs": 1}, data, data, loss_fn=loss).fit()
    row = result.final
    assert result.metric == "eval_miou" and 0 <= row["eval_miou"] <= 1
    assert 0 <= row["eval_pixel_acc"] <= 1 and math.isfinite(row["eval_loss"])
    terms = row["cross_entropy"] + row["dice"] + row["lovasz_softmax"]
    assert math.isclose(terms, row["train_loss"], rel_tol=1e-5)


class _TinySegmenter(nn.Module):
    """torchvision's output convention ({"out", "aux"}) at half the input resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())
        self.out, self.aux = nn.Conv2d(16, 11, 1), nn.Conv2d(16, 11, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"out": self.out(h), "aux": self.aux(h)}


def test_segmentation_resizes_logits_and_weights_the_aux_head(coco: tuple[Path, Path]) -> None:
    torch.manual_seed(0)
    data = CocoSegmentationSet(*coco)
    model = _TinySegmenter()
    result = Trainer(model, {**CFG, "epochs": 4, "lr": 0.2}, data, data).fit()
    first, last = result.history[0], result.history[-1]
    terms = first["cross_entropy"] + first["aux_cross_entropy"]  # aux weighted 0.5
    assert math.isclose(terms, first["train_loss"], rel_tol=1e-5)
    assert math.isclose(first["task_loss"], first["train_loss"], rel_tol=1e-5)
    assert last["train_loss"] < first["train_loss"]
    res = evaluate(model, data, batch_size=2)
    assert isinstance(res, SegmentationEvalResult) and res.samples == 4
    assert res.miou == pytest.approx(last["eval_miou"]) and 0 < res.pixel_accuracy <= 1


def test_a_checkpoint_from_before_the_task_field_resumes(tmp_path: Path) -> None:
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    cfg = {"epochs": 2, "batch_size": 4, "progress": False, "device": "cpu"}
    Trainer(nn.Linear(4, 2), {**cfg, "epochs": 1}, data, out_dir=tmp_path).fit()
    ckpt = ckpt_io.load_checkpoint(tmp_path / "last.pt")
    del ckpt["config"]["task"]
    ckpt_io.save_verified(ckpt, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="epochs: 1 -> 2"):  # other changes still count
        Trainer(nn.Linear(4, 2), cfg, data, out_dir=tmp_path).fit(resume=True)
    result = Trainer(nn.Linear(4, 2), {**cfg, "epochs": 1}, data, out_dir=tmp_path).fit(resume=True)
    assert len(result.history) == 1 and result.metric == "eval_acc"


class _Oracle(nn.Module):
    """Answers each evaluation batch, in data order, with the ground truth."""

    def __init__(self, answers: list) -> None:
        super().__init__()
        self.answers, self.weight = iter(answers), nn.Parameter(torch.zeros(1))

    def forward(self, images: object) -> object:
        return next(self.answers)


def test_perfect_predictions_score_map_1_and_miou_1(coco: tuple[Path, Path]) -> None:
    det, seg = CocoDetectionSet(*coco), CocoSegmentationSet(*coco)
    truth = [det[i][1] for i in range(len(det))]
    preds = [{**t, "scores": torch.ones(len(t["boxes"]))} for t in truth]
    res = evaluate(_Oracle([preds[:2], preds[2:]]), det, batch_size=2)
    assert (res.map, res.map_50, res.mask_map, res.samples) == (1.0, 1.0, 1.0, 4)
    wrong = [{**p, "labels": p["labels"] % 10 + 1} for p in preds]  # every class shifted
    assert evaluate(_Oracle([wrong]), det, batch_size=4).map == 0.0
    maps = torch.stack([seg[i][1] for i in range(len(seg))])
    logits = nn.functional.one_hot(maps, 11).permute(0, 3, 1, 2).float() * 20
    res = evaluate(_Oracle([{"out": logits}]), seg, batch_size=4)
    assert (res.miou, res.pixel_accuracy) == (1.0, 1.0) and res.loss < 1e-6
