"""What differs between classification, detection and segmentation in the one trainer: how a
batch is recognised, collated and moved, and how the task loss is computed.

* classification: ``(inputs (N, ...), labels (N,))``; ``loss_fn(outputs, labels)``.
* detection (torchvision's convention): ``(list of CHW float images, list of target dicts)``
  with ``boxes`` (n, 4) float xyxy, ``labels`` (n,) int64 and optionally ``masks`` (n, H, W)
  uint8. In train mode the model is called as ``model(images, targets)`` and returns a dict of
  losses, which are summed (each one is logged). With a ``loss_fn`` the model is called as
  ``model(images)`` and ``loss_fn(outputs, targets)`` gives the loss (a tensor or a dict of named
  ones) - where :class:`~torchslim.losses.GIoULoss` or
  :class:`~torchslim.losses.SmoothL1Loss` fit a custom head.
* segmentation: ``(images (N, C, H, W), class maps (N, H, W) int64)``; the model returns logits
  ``(N, K, h, w)`` or torchvision's ``{"out": logits, "aux": logits}`` (``aux`` weighted 0.5),
  resized to the map when their size differs; the loss is :func:`segmentation_loss` unless a
  ``loss_fn`` is given.

Example:
    >>> import torch
    >>> infer_task(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)).value
    'segmentation'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from torchslim.data.coco import IGNORE_INDEX, detection_collate
from torchslim.errors import ConfigError
from torchslim.losses import create_loss
from torchslim.train.config import Task

__all__ = [
    "AUX_WEIGHT",
    "check_task",
    "collate",
    "infer_task",
    "segmentation_logits",
    "segmentation_loss",
    "task_forward",
    "to_device",
]

# torchvision's segmentation references weight the auxiliary classifier's loss by 0.5.
AUX_WEIGHT = 0.5
LossTerms = dict[str, torch.Tensor]


def _is_detection_target(target: object) -> bool:
    return isinstance(target, Mapping) and "boxes" in target


def infer_task(inputs: Any, targets: Any) -> Task:
    """The task a sample or a batch is for, from its structure.

    No target (None) means unlabelled; target dicts with ``boxes`` (or a list of them) mean
    detection; an integer target whose last two dimensions are those of the image means
    segmentation; anything else classification.

    Example:
        >>> import torch
        >>> infer_task([torch.zeros(3, 8, 8)], [{"boxes": torch.zeros(0, 4)}]).value
        'detection'
        >>> infer_task(torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])).value
        'classification'
    """
    if targets is None:
        return Task.UNLABELLED
    if _is_detection_target(targets):
        return Task.DETECTION
    if isinstance(targets, (list, tuple)) and targets and _is_detection_target(targets[0]):
        return Task.DETECTION
    if (
        isinstance(inputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and inputs.ndim >= 3
        and targets.ndim == inputs.ndim - 1
        and not targets.is_floating_point()
        and targets.shape[-2:] == inputs.shape[-2:]
        and targets.shape[:-2] == inputs.shape[:-3]
    ):
        return Task.SEGMENTATION
    return Task.CLASSIFICATION


_EXPECTED = {
    Task.DETECTION: "(list of CHW images, list of dicts with 'boxes' and 'labels')",
    Task.SEGMENTATION: "(images (N, C, H, W), integer class maps (N, H, W))",
    Task.CLASSIFICATION: "(inputs (N, ...), class indices (N,))",
    Task.UNLABELLED: "inputs only (a tensor or a dict of keyword tensors per item, no label)",
}


def check_task(task: Task | str, inputs: Any, targets: Any) -> Task:
    """``task`` resolved against a batch: ``auto`` becomes what the batch is; a named task that
    the batch does not fit is a :class:`~torchslim.errors.ConfigError`.

    Example:
        >>> import torch
        >>> check_task("auto", torch.zeros(2, 4), torch.tensor([0, 1])).value
        'classification'
    """
    task, found = Task(task), infer_task(inputs, targets)
    if task is Task.AUTO or task is found:
        return found
    if task is Task.CLASSIFICATION and found is Task.SEGMENTATION:
        return task  # e.g. per-position labels of a sequence model: the loss decides
    raise ConfigError(
        f"task: {task.value!r} expects batches of {_EXPECTED[task]}, but the data gives "
        f"{found.value} batches; set task to 'auto' or {found.value!r}, or fix the dataset"
    )


def collate(batch: Sequence[Any]) -> Any:
    """The trainer's collate function: :func:`~torchslim.data.coco.detection_collate` for
    samples whose target is a dict with ``boxes``, PyTorch's ``default_collate`` otherwise.

    Example:
        >>> import torch
        >>> collate([(torch.zeros(2), 0), (torch.ones(2), 1)])[1]
        tensor([0, 1])
    """
    first = batch[0] if len(batch) else None
    if isinstance(first, (list, tuple)) and len(first) >= 2 and _is_detection_target(first[1]):
        return detection_collate(batch)
    return default_collate(batch)


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors in ``obj`` (nested lists, tuples and dicts) moved to ``device``; the rest as is.

    Example:
        >>> import torch
        >>> to_device([{"boxes": torch.zeros(1, 4), "image_id": 3}], torch.device("cpu"))[0]
        {'boxes': tensor([[0., 0., 0., 0.]]), 'image_id': 3}
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def segmentation_logits(outputs: Any, size: Sequence[int]) -> tuple[torch.Tensor, Any]:
    """``(logits, aux logits or None)`` of a segmentation model's output, resized (bilinear) to
    ``size`` when they differ: plain logits, or torchvision's ``{"out": ..., "aux": ...}``.

    Example:
        >>> import torch
        >>> out, aux = segmentation_logits({"out": torch.zeros(1, 3, 4, 4)}, (8, 8))
        >>> tuple(out.shape), aux
        ((1, 3, 8, 8), None)
    """
    if isinstance(outputs, Mapping):
        if "out" not in outputs:
            raise TypeError(
                f"a segmentation model returning a dict must hold 'out' (logits), got keys "
                f"{sorted(outputs)}"
            )
        logits, aux = outputs["out"], outputs.get("aux")
    else:
        logits, aux = outputs, None

    def fit(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

    return fit(logits), fit(aux)


class _SegmentationLoss(nn.Module):
    """Cross-entropy plus weighted Dice / Lovász terms, returned by name."""

    def __init__(self, terms: Mapping[str, tuple[nn.Module, float]]) -> None:
        super().__init__()
        self.losses = nn.ModuleDict({name: loss for name, (loss, _) in terms.items()})
        self.weights = {name: weight for name, (_, weight) in terms.items()}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> LossTerms:
        return {
            name: self.weights[name] * loss(logits, target) for name, loss in self.losses.items()
        }


def segmentation_loss(
    *,
    cross_entropy: float = 1.0,
    dice: float = 0.0,
    lovasz: float = 0.0,
    label_smoothing: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> nn.Module:
    """The segmentation task loss: weighted cross-entropy, Dice and Lovász-Softmax terms.

    Built from :func:`torchslim.losses.create_loss`; a weight of 0 leaves its term out. The
    module returns a dict of the weighted terms, which the trainer sums and logs one by one.
    Pixels equal to ``ignore_index`` are ignored by the cross-entropy and Lovász terms; Dice
    counts every pixel, so keep ``dice=0`` for maps that hold ``ignore_index``.

    Example:
        >>> import torch
        >>> loss = segmentation_loss(dice=0.5)
        >>> terms = loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
        >>> sorted(terms), round(float(terms["cross_entropy"]), 4)
        (['cross_entropy', 'dice'], 1.0986)
    """
    specs = {
        "cross_entropy": (
            cross_entropy,
            {"ignore_index": ignore_index, "label_smoothing": label_smoothing},
        ),
        "dice": (dice, {}),
        "lovasz_softmax": (lovasz, {"ignore_index": ignore_index}),
    }
    for name, (weight, _) in specs.items():
        if weight < 0:
            raise ConfigError(f"segmentation_loss: the {name} weight must be >= 0, got {weight}")
    terms = {n: (create_loss(n, **kw), float(w)) for n, (w, kw) in specs.items() if w > 0}
    if not terms:
        raise ConfigError("segmentation_loss: every weight is 0; give at least one term")
    return _SegmentationLoss(terms)


def _as_terms(value: Any, name: str) -> LossTerms:
    if isinstance(value, Mapping):
        return dict(value)
    return {name: value}


def task_forward(
    task: Task,
    model: nn.Module,
    inputs: Any,
    targets: Any,
    loss_fn: Callable[[Any, Any], Any] | None,
) -> tuple[Any, LossTerms]:
    """Run ``model`` on a detection or segmentation batch: ``(outputs, named loss terms)``.

    Detection without a ``loss_fn`` calls ``model(images, targets)`` and takes the dict of
    losses it returns (the outputs are that dict); otherwise the outputs are ``model(inputs)``
    and the terms come from ``loss_fn``. Their sum is the task loss.

    Example:
        >>> import torch
        >>> model = torch.nn.Conv2d(3, 2, 1)
        >>> _, terms = task_forward(Task.SEGMENTATION, model, torch.zeros(1, 3, 4, 4),
        ...                         torch.zeros(1, 4, 4, dtype=torch.long), segmentation_loss())
        >>> round(float(terms["cross_entropy"]), 4) >= 0
        True
    """
    if task is Task.DETECTION and loss_fn is None:
        losses = model(inputs, targets)
        if not isinstance(losses, Mapping):
            raise TypeError(
                f"a detection model called in train mode as model(images, targets) must return "
                f"a dict of losses (torchvision's convention), got {type(losses).__name__}; "
                "or pass Trainer(loss_fn=...) to compute the loss from model(images)"
            )
        return losses, dict(losses)
    if loss_fn is None:
        raise ConfigError(f"the {task.value} task needs a loss_fn")
    outputs = model(inputs)
    if task is not Task.SEGMENTATION:
        return outputs, _as_terms(loss_fn(outputs, targets), "task_loss")
    logits, aux = segmentation_logits(outputs, targets.shape[-2:])
    terms = _as_terms(loss_fn(logits, targets), "loss_out")
    if aux is not None:
        aux_terms = loss_fn(aux, targets)
        if isinstance(aux_terms, Mapping):
            terms.update({f"aux_{k}": AUX_WEIGHT * v for k, v in aux_terms.items()})
        else:
            terms["loss_aux"] = AUX_WEIGHT * aux_terms
    return outputs, terms
