"""Evaluation shared by the trainer, the CLI and every later stage's report: top-1 accuracy for
classification, COCO mAP for detection and mIoU for segmentation (torchmetrics, with the
``detection`` extra)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from torchslim._tensors import call_model, first_tensor, model_args, module_mode
from torchslim.data.coco import IGNORE_INDEX, optional_import
from torchslim.train.config import Task
from torchslim.train.distributed import all_reduce_sum, current
from torchslim.train.tasks import check_task, collate, segmentation_logits, to_device


@dataclass(frozen=True)
class EvalResult:
    """Mean loss and top-1 accuracy (a fraction in [0, 1]) over ``samples`` samples."""

    loss: float
    accuracy: float
    samples: int
    # The history key of the task's score (higher is better); the trainer tracks its best.
    key: ClassVar[str] = "eval_acc"

    @property
    def metric(self) -> float:
        """The task's score: top-1 accuracy."""
        return self.accuracy

    def metrics(self) -> dict[str, float]:
        """What the trainer records in its history after an evaluation."""
        return {"eval_loss": self.loss, "eval_acc": self.accuracy}

    def __str__(self) -> str:
        return f"top-1 {100 * self.accuracy:.2f}%  loss {self.loss:.4f}  ({self.samples} samples)"


@dataclass(frozen=True)
class DetectionEvalResult:
    """COCO box mAP (torchmetrics ``MeanAveragePrecision``, pycocotools backend) of a detector:
    ``map`` averaged over IoU 0.50:0.95, ``map_50`` and ``map_75`` at one IoU, each in [0, 1]
    (torchmetrics gives -1 when the set holds no ground truth). ``mask_map`` and
    ``mask_map_50`` are the mask mAPs when the model predicts masks and the targets hold them.
    """

    map: float
    map_50: float
    map_75: float
    samples: int
    mask_map: float | None = None
    mask_map_50: float | None = None
    key: ClassVar[str] = "eval_map"

    @property
    def metric(self) -> float:
        """The task's score: box mAP@0.5:0.95."""
        return self.map

    def metrics(self) -> dict[str, float]:
        """What the trainer records in its history after an evaluation."""
        out = {"eval_map": self.map, "eval_map_50": self.map_50, "eval_map_75": self.map_75}
        if self.mask_map is not None:
            out.update(eval_mask_map=self.mask_map, eval_mask_map_50=self.mask_map_50)
        return out

    def __str__(self) -> str:
        text = f"box mAP {100 * self.map:.2f}  mAP@0.5 {100 * self.map_50:.2f}"
        if self.mask_map is not None:
            text += f"  mask mAP {100 * self.mask_map:.2f}"
        return f"{text}  ({self.samples} images)"


@dataclass(frozen=True)
class SegmentationEvalResult:
    """Mean loss, mIoU (torchmetrics ``MulticlassJaccardIndex``, macro: the IoU of every class
    present in the targets or predictions, averaged) and pixel accuracy over ``samples`` images;
    pixels marked ``ignore_index`` count in neither."""

    loss: float
    miou: float
    pixel_accuracy: float
    samples: int
    key: ClassVar[str] = "eval_miou"

    @property
    def metric(self) -> float:
        """The task's score: mIoU."""
        return self.miou

    def metrics(self) -> dict[str, float]:
        """What the trainer records in its history after an evaluation."""
        return {
            "eval_loss": self.loss,
            "eval_miou": self.miou,
            "eval_pixel_acc": self.pixel_accuracy,
        }

    def __str__(self) -> str:
        return (
            f"mIoU {100 * self.miou:.2f}%  pixel acc {100 * self.pixel_accuracy:.2f}%  "
            f"loss {self.loss:.4f}  ({self.samples} images)"
        )


AnyEvalResult = EvalResult | DetectionEvalResult | SegmentationEvalResult


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
    loss_fn: Callable[[Any, Any], Any] | None = None,
    progress: bool = False,
    channels_last: bool = False,
    task: Task | str = Task.AUTO,
    ignore_index: int = IGNORE_INDEX,
) -> AnyEvalResult:
    """Evaluate ``model`` on ``data`` for its task (sharded over ranks under DDP).

    Classification gives an :class:`EvalResult` (top-1 accuracy, mean loss), detection a
    :class:`DetectionEvalResult` (COCO mAP), segmentation a :class:`SegmentationEvalResult`
    (mIoU, pixel accuracy, mean loss); ``task="auto"`` reads the task from the first batch (see
    :func:`torchslim.train.tasks.infer_task`). ``loss_fn`` defaults to cross-entropy (ignoring
    ``ignore_index`` pixels in segmentation); a detector reports no loss, as torchvision's
    return detections, not losses, in eval mode. A ``Dataset`` is batched by
    :func:`torchslim.train.tasks.collate`. The model is put in eval mode and its training flag
    restored afterwards.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> argmax = nn.Linear(4, 4, bias=False)
        >>> _ = nn.init.eye_(argmax.weight)  # scores each class by its own input
        >>> x = torch.randn(100, 4)
        >>> res = evaluate(argmax, TensorDataset(x, x.argmax(1)))
        >>> res.accuracy, res.samples
        (1.0, 100)
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    info = current()
    if isinstance(data, DataLoader):
        loader = data
    else:
        if info.enabled:
            data = Subset(data, list(range(info.rank, len(data), info.world_size)))
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)
    batches: Iterator[Any] = iter(loader)
    first = next(batches, None)
    task = Task(task)
    if first is not None:
        task = check_task(task, *split_batch(first))
        batches = itertools.chain([first], batches)
    try:
        total = len(loader)
    except TypeError:  # an iterable-style dataset of unknown length
        total = None
    with module_mode(model, training=False):
        bar = tqdm(
            batches,
            total=total,
            desc="eval",
            leave=False,
            disable=True if not progress else None,
        )
        if task is Task.DETECTION:
            return _evaluate_detection(model, bar, device)
        if task is Task.SEGMENTATION:
            loss_fn = loss_fn or nn.CrossEntropyLoss(ignore_index=ignore_index)
            return _evaluate_segmentation(model, bar, device, loss_fn, ignore_index, channels_last)
        return _evaluate_classification(model, bar, device, loss_fn, channels_last)


def _evaluate_classification(
    model: nn.Module,
    batches: Iterable[Any],
    device: torch.device,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    channels_last: bool,
) -> EvalResult:
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    loss_sum, correct, seen = 0.0, 0, 0
    for batch in batches:
        inputs, targets = split_batch(batch)
        inputs, targets = to_device(inputs, device), targets.to(device)
        if channels_last and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        # keyword inputs (a tokenizer's dict) as keywords; a Hugging Face output's logits
        outputs = first_tensor(call_model(model, model_args(inputs)))
        loss_sum += float(loss_fn(outputs, targets)) * len(targets)
        correct += correct_count(outputs, targets)
        seen += len(targets)
    loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], device)
    seen = int(seen)
    return EvalResult(loss=loss_sum / max(seen, 1), accuracy=correct / max(seen, 1), samples=seen)


def _box_target(target: Mapping[str, Any], masks: bool) -> dict[str, torch.Tensor]:
    """What MeanAveragePrecision reads of a target: boxes, labels, iscrowd (and masks)."""
    out = {"boxes": target["boxes"].float(), "labels": target["labels"].long()}
    if "iscrowd" in target:
        out["iscrowd"] = torch.as_tensor(target["iscrowd"]).long()
    if masks:
        out["masks"] = target["masks"].bool()
    return out


def _box_prediction(pred: Mapping[str, Any], masks: bool) -> dict[str, torch.Tensor]:
    out = {
        "boxes": pred["boxes"].float(),
        "scores": pred["scores"].float(),
        "labels": pred["labels"].long(),
    }
    if masks:  # Mask R-CNN: (n, 1, H, W) probabilities
        m = pred["masks"]
        out["masks"] = (m[:, 0] if m.ndim == 4 else m) > 0.5
    return out


def _evaluate_detection(
    model: nn.Module, batches: Iterable[Any], device: torch.device
) -> DetectionEvalResult:
    detection = optional_import("torchmetrics.detection")
    optional_import("pycocotools")
    metric, masks, seen = None, False, 0
    for batch in batches:
        images, targets = split_batch(batch)
        preds = model(to_device(list(images), device))
        if metric is None:
            masks = "masks" in preds[0] and "masks" in targets[0] if preds else False
            iou_type = ("bbox", "segm") if masks else ("bbox",)
            metric = detection.MeanAveragePrecision(
                box_format="xyxy", iou_type=iou_type, backend="pycocotools"
            ).to(device)
        metric.update(
            [_box_prediction(p, masks) for p in preds],
            [_box_target(to_device(t, device), masks) for t in targets],
        )
        seen += len(images)
    if metric is None:
        raise ValueError("evaluate: the detection data is empty")
    (seen,) = all_reduce_sum([seen], device)
    res = metric.compute()
    box = "bbox_" if masks else ""

    def get(name: str) -> float:
        return float(res[name])

    return DetectionEvalResult(
        map=get(f"{box}map"),
        map_50=get(f"{box}map_50"),
        map_75=get(f"{box}map_75"),
        samples=int(seen),
        mask_map=get("segm_map") if masks else None,
        mask_map_50=get("segm_map_50") if masks else None,
    )


def _evaluate_segmentation(
    model: nn.Module,
    batches: Iterable[Any],
    device: torch.device,
    loss_fn: Callable[[Any, Any], Any],
    ignore_index: int,
    channels_last: bool,
) -> SegmentationEvalResult:
    classification = optional_import("torchmetrics.classification")
    metric = None
    loss_sum, correct, counted, seen = 0.0, 0, 0, 0
    for batch in batches:
        images, targets = split_batch(batch)
        images, targets = images.to(device), targets.to(device)
        if channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        logits, _ = segmentation_logits(model(images), targets.shape[-2:])
        if metric is None:
            metric = classification.MulticlassJaccardIndex(
                num_classes=logits.shape[1], average="macro", ignore_index=ignore_index
            ).to(device)
        loss = loss_fn(logits, targets)
        loss = sum(loss.values()) if isinstance(loss, Mapping) else loss
        loss_sum += float(loss) * len(targets)
        preds = logits.argmax(dim=1)
        metric.update(preds, targets)
        valid = targets != ignore_index
        correct += int(((preds == targets) & valid).sum())
        counted += int(valid.sum())
        seen += len(targets)
    if metric is None:
        raise ValueError("evaluate: the segmentation data is empty")
    loss_sum, correct, counted, seen = all_reduce_sum([loss_sum, correct, counted, seen], device)
    return SegmentationEvalResult(
        loss=loss_sum / max(seen, 1),
        miou=float(metric.compute()),
        pixel_accuracy=correct / max(counted, 1),
        samples=int(seen),
    )
