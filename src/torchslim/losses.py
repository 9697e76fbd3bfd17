"""Task losses for the trainer: classification, metric learning, box regression, segmentation.

Each loss is a small ``nn.Module`` whose constructor takes the hyper-parameters and whose
``forward(pred, target)`` returns a scalar by default; most also exist as a plain function.
``reduction`` is one of ``"mean"``, ``"sum"``, ``"none"`` wherever a per-element loss exists.
Bad hyper-parameters raise :class:`~torchslim.errors.ConfigError`; tensors of the wrong shape or
dtype raise ``ValueError`` naming the loss and the shapes involved.

``LOSSES`` is the closed name registry of :func:`create_loss`, which builds one by name (the
trainer's task loss is passed as ``Trainer(loss_fn=...)``; recipes train with cross-entropy).

Example:
    >>> import torch
    >>> loss = create_loss("focal", gamma=2.0)
    >>> loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])).shape
    torch.Size([])
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchslim.config import did_you_mean
from torchslim.errors import ConfigError

__all__ = [
    "LOSSES",
    "CenterLoss",
    "DiceLoss",
    "FocalLoss",
    "GIoULoss",
    "IoULoss",
    "LabelSmoothingCrossEntropy",
    "LovaszSoftmaxLoss",
    "Reduction",
    "ScaledCosineLoss",
    "SmoothL1Loss",
    "center_loss",
    "create_loss",
    "dice_loss",
    "focal_loss",
    "giou_loss",
    "iou_loss",
    "label_smoothing_cross_entropy",
    "lovasz_softmax_loss",
    "scaled_cosine_loss",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS: tuple[str, ...] = get_args(Reduction)
# Below this, (1 - p_t) ** gamma has an infinite derivative for gamma < 1; clamping keeps it finite.
_FOCAL_BASE_MIN = 1e-12


# ----------------------------------------------------------------------------- validation helpers


def _check_reduction(reduction: str, where: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ConfigError(
            f"{where}: reduction {reduction!r} is not one of {list(_REDUCTIONS)}"
            f"{did_you_mean(str(reduction), _REDUCTIONS)}"
        )


def _check_number(
    value: float, where: str, *, low: float, strict: bool, high: float | None = None
) -> None:
    bad_type = isinstance(value, bool) or not isinstance(value, (int, float))
    too_low = not bad_type and (value <= low if strict else value < low)
    too_high = not bad_type and high is not None and value >= high
    if bad_type or too_low or too_high:
        bounds = f"{'>' if strict else '>='} {low}" + (f" and < {high}" if high is not None else "")
        raise ConfigError(f"{where} must be a number {bounds}, got {value!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_same_shape(pred: Tensor, target: Tensor, where: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{where}: pred shape {tuple(pred.shape)} and target shape {tuple(target.shape)} "
            "must be equal (no broadcasting)"
        )


def _check_labels(
    logits: Tensor, target: Tensor, where: str, ignore_index: int | None = None
) -> None:
    """Logits (N, C, *) against integer labels (N, *) with values in [0, C)."""
    if logits.dim() < 2:
        raise ValueError(f"{where}: logits must be (N, C, *), got shape {tuple(logits.shape)}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"{where}: target must hold integer class indices, got {target.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{where}: logits shape {tuple(logits.shape)} needs target shape {expected}, "
            f"got {tuple(target.shape)}"
        )
    labels = target if ignore_index is None else target[target != ignore_index]
    # An out-of-range label would otherwise fail deep inside gather/one_hot (or as a CUDA assert).
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        lo, hi = int(labels.min()), int(labels.max())
        raise ValueError(
            f"{where}: class labels must be in [0, {logits.shape[1]}), got values in [{lo}, {hi}]"
        )


def _upcast(x: Tensor) -> Tensor:
    # Softmax/log terms in fp16/bf16 (e.g. under autocast) lose too much; float64 stays float64.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _Loss(nn.Module):
    """Holds and validates ``reduction``; errors name the concrete subclass."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_reduction(reduction, type(self).__name__)
        self.reduction = reduction


def _alpha_tensor(alpha: float | Sequence[float] | Tensor | None) -> Tensor | None:
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        _check_number(alpha, "FocalLoss: alpha", low=0.0, strict=False)
        return torch.tensor(float(alpha))
    try:
        tensor = torch.as_tensor(alpha, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(
            f"FocalLoss: alpha must be None, a number or a sequence of per-class weights, "
            f"got {alpha!r}"
        ) from None
    if tensor.dim() != 1 or not bool((tensor >= 0).all()):
        raise ConfigError(f"FocalLoss: alpha must be a 1-D list of weights >= 0, got {alpha!r}")
    return tensor


# ----------------------------------------------------------------------------- classification


def focal_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Multi-class focal loss (Lin et al. 2017): ``-alpha_t * (1 - p_t) ** gamma * log(p_t)``.

    ``p_t`` is the softmax probability of the true class. ``alpha`` is ``None`` (weight 1), a
    number (one weight for every sample) or per-class weights indexed by the target.
    ``gamma=0`` and ``alpha=None`` give plain cross-entropy. Logits are (N, C, *) and targets
    integer labels (N, *); ``"mean"`` averages over every sample/position.

    Example:
        >>> import torch
        >>> round(float(focal_loss(torch.zeros(1, 2), torch.tensor([0]), gamma=2.0)), 4)
        0.1733
    """
    _check_number(gamma, "focal_loss: gamma", low=0.0, strict=False)
    _check_reduction(reduction, "focal_loss")
    _check_labels(logits, target, "focal_loss")
    # Tensors (e.g. FocalLoss's buffer) are used as given to avoid a copy and a sync per step.
    alpha_t = alpha if isinstance(alpha, Tensor) else _alpha_tensor(alpha)
    if alpha_t is not None and alpha_t.dim() > 1:
        raise ValueError(f"focal_loss: alpha must be a number or 1-D, got {tuple(alpha_t.shape)}")
    logp_t = F.log_softmax(_upcast(logits), dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    base = (-torch.expm1(logp_t)).clamp_min(_FOCAL_BASE_MIN)  # 1 - p_t, accurate near p_t = 1
    loss = -(base**gamma) * logp_t
    if alpha_t is not None:
        alpha_t = alpha_t.to(loss.device)
        if alpha_t.dim() == 1:
            if alpha_t.numel() != logits.shape[1]:
                raise ValueError(
                    f"focal_loss: alpha has {alpha_t.numel()} per-class weights but the logits "
                    f"have {logits.shape[1]} classes"
                )
            alpha_t = alpha_t[target]
        loss = loss * alpha_t
    return _reduce(loss, reduction)


class FocalLoss(_Loss):
    """Multi-class focal loss on logits and integer targets; see :func:`focal_loss`.

    Example:
        >>> import torch
        >>> loss = FocalLoss(gamma=2.0, alpha=[0.25, 0.75])
        >>> loss(torch.randn(8, 2), torch.randint(0, 2, (8,))).dim()
        0
    """

    alpha: Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | Tensor | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(reduction)
        _check_number(gamma, "FocalLoss: gamma", low=0.0, strict=False)
        self.gamma = float(gamma)
        # A buffer so that .to(device) moves the class weights with the module.
        self.register_buffer("alpha", _alpha_tensor(alpha), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha, self.reduction)


def label_smoothing_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float = 0.1, reduction: Reduction = "mean"
) -> Tensor:
    """Cross-entropy against ``(1 - smoothing) * one_hot + smoothing / C``.

    Per sample this is ``(1 - s) * (-log p_y) + s * mean_c(-log p_c)``, the same value as
    ``F.cross_entropy(logits, target, label_smoothing=s)``.

    Example:
        >>> import torch
        >>> round(float(label_smoothing_cross_entropy(torch.zeros(1, 4), torch.tensor([2]))), 4)
        1.3863
    """
    _check_number(
        smoothing, "label_smoothing_cross_entropy: smoothing", low=0, strict=False, high=1
    )
    _check_reduction(reduction, "label_smoothing_cross_entropy")
    _check_labels(logits, target, "label_smoothing_cross_entropy")
    logp = F.log_softmax(_upcast(logits), dim=1)
    nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)
    uniform = -logp.mean(dim=1)
    return _reduce((1.0 - smoothing) * nll + smoothing * uniform, reduction)


class LabelSmoothingCrossEntropy(_Loss):
    """Cross-entropy with label smoothing; see :func:`label_smoothing_cross_entropy`.

    Example:
        >>> import torch
        >>> LabelSmoothingCrossEntropy(0.1)(torch.randn(4, 10), torch.arange(4)).dim()
        0
    """

    def __init__(self, smoothing: float = 0.1, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        _check_number(
            smoothing, "LabelSmoothingCrossEntropy: smoothing", low=0, strict=False, high=1
        )
        self.smoothing = float(smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return label_smoothing_cross_entropy(logits, target, self.smoothing, self.reduction)


# ----------------------------------------------------------------------------- metric learning


def center_loss(
    features: Tensor, labels: Tensor, centers: Tensor, reduction: Reduction = "mean"
) -> Tensor:
    """Center loss (Wen et al. 2016): per sample ``0.5 * ||f_i - c_{y_i}||_2^2``.

    ``features`` is (N, D), ``labels`` integer (N,), ``centers`` (K, D). With ``"mean"`` the
    result is ``(1 / N) * sum_i 0.5 * ||f_i - c_{y_i}||^2`` (the paper sums instead of averaging,
    which is ``reduction="sum"``).

    Example:
        >>> import torch
        >>> float(center_loss(torch.tensor([[3.0, 4.0]]), torch.tensor([0]), torch.zeros(1, 2)))
        12.5
    """
    _check_reduction(reduction, "center_loss")
    if features.dim() != 2 or centers.dim() != 2 or features.shape[1] != centers.shape[1]:
        raise ValueError(
            f"center_loss: features must be (N, D) and centers (K, D), got features "
            f"{tuple(features.shape)} and centers {tuple(centers.shape)}"
        )
    # Reuse the label checks by viewing the centers as "logits" with K classes.
    _check_labels(features.new_empty(features.shape[0], centers.shape[0]), labels, "center_loss")
    diff = features - centers[labels]
    return _reduce(0.5 * diff.pow(2).sum(dim=1), reduction)


class CenterLoss(_Loss):
    """Center loss with learnable class centers ``self.centers`` of shape (num_classes, feat_dim).

    The loss is ``mean_i 0.5 * ||f_i - c_{y_i}||^2`` (see :func:`center_loss`). The centers are
    an ``nn.Parameter`` trained by the optimizer, typically in their own param group with a larger
    learning rate and no weight decay, and the loss is added to the task loss with a small weight.

    Example:
        >>> import torch
        >>> loss = CenterLoss(num_classes=10, feat_dim=2)
        >>> loss(torch.randn(4, 2), torch.tensor([0, 1, 2, 3])).dim()
        0
    """

    def __init__(self, num_classes: int, feat_dim: int, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        for name, value in (("num_classes", num_classes), ("feat_dim", feat_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"CenterLoss: {name} must be an integer >= 1, got {value!r}")
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return center_loss(features, labels, self.centers, self.reduction)


def scaled_cosine_loss(
    pred: Tensor,
    target: Tensor,
    scale: float = 1.0,
    dim: int = -1,
    eps: float = 1e-8,
    reduction: Reduction = "mean",
) -> Tensor:
    """``scale * (1 - cos(pred, target))`` along ``dim``, e.g. for regressing embeddings.

    The per-vector loss lies in ``[0, 2 * scale]``: 0 for parallel vectors, ``scale`` for
    orthogonal ones. ``eps`` guards the norms of zero vectors (as in ``F.cosine_similarity``).

    Example:
        >>> import torch
        >>> float(scaled_cosine_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 2.0))
        2.0
    """
    _check_number(scale, "scaled_cosine_loss: scale", low=0.0, strict=True)
    _check_number(eps, "scaled_cosine_loss: eps", low=0.0, strict=True)
    _check_reduction(reduction, "scaled_cosine_loss")
    _check_same_shape(pred, target, "scaled_cosine_loss")
    cos = F.cosine_similarity(pred, target, dim=dim, eps=eps)
    return _reduce(scale * (1.0 - cos), reduction)


class ScaledCosineLoss(_Loss):
    """Scaled cosine-similarity loss ``scale * (1 - cos(pred, target))``; see
    :func:`scaled_cosine_loss`.

    Example:
        >>> import torch
        >>> ScaledCosineLoss(scale=5.0)(torch.randn(4, 16), torch.randn(4, 16)).dim()
        0
    """

    def __init__(
        self, scale: float = 1.0, dim: int = -1, eps: float = 1e-8, reduction: Reduction = "mean"
    ) -> None:
        super().__init__(reduction)
        _check_number(scale, "ScaledCosineLoss: scale", low=0.0, strict=True)
        _check_number(eps, "ScaledCosineLoss: eps", low=0.0, strict=True)
        self.scale, self.dim, self.eps = float(scale), dim, float(eps)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return scaled_cosine_loss(pred, target, self.scale, self.dim, self.eps, self.reduction)


# ----------------------------------------------------------------------------- regression and boxes


class SmoothL1Loss(_Loss):
    """Smooth-L1 (Huber-like): ``0.5 * d**2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 * beta``.

    A thin wrapper over ``F.smooth_l1_loss`` that validates ``beta`` (``0`` gives plain L1) and
    refuses mismatched shapes instead of broadcasting them.

    Example:
        >>> import torch
        >>> float(SmoothL1Loss(beta=1.0)(torch.tensor([0.5, 3.0]), torch.zeros(2)))
        1.3125
    """

    def __init__(self, beta: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        _check_number(beta, "SmoothL1Loss: beta", low=0.0, strict=False)
        self.beta = float(beta)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_same_shape(pred, target, "SmoothL1Loss")
        return F.smooth_l1_loss(pred, target, reduction=self.reduction, beta=self.beta)


def _box_terms(pred: Tensor, target: Tensor, where: str) -> tuple[Tensor, Tensor, Tensor]:
    """Intersection, union and enclosing-box area of (x1, y1, x2, y2) boxes (..., 4)."""
    _check_same_shape(pred, target, where)
    if pred.dim() == 0 or pred.shape[-1] != 4:
        raise ValueError(f"{where}: boxes must have shape (..., 4), got {tuple(pred.shape)}")
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    # Inverted boxes (x2 < x1) count as zero area rather than a negative one.
    area_p = (px2 - px1).clamp_min(0) * (py2 - py1).clamp_min(0)
    area_t = (tx2 - tx1).clamp_min(0) * (ty2 - ty1).clamp_min(0)
    iw = (torch.minimum(px2, tx2) - torch.maximum(px1, tx1)).clamp_min(0)
    ih = (torch.minimum(py2, ty2) - torch.maximum(py1, ty1)).clamp_min(0)
    inter = iw * ih
    union = area_p + area_t - inter
    cw = (torch.maximum(px2, tx2) - torch.minimum(px1, tx1)).clamp_min(0)
    ch = (torch.maximum(py2, ty2) - torch.minimum(py1, ty1)).clamp_min(0)
    return inter, union, cw * ch


def iou_loss(
    pred: Tensor, target: Tensor, eps: float = 1e-7, reduction: Reduction = "mean"
) -> Tensor:
    """``1 - IoU`` of paired axis-aligned boxes (x1, y1, x2, y2), ``IoU = inter / (union + eps)``.

    Disjoint boxes give loss 1 with zero gradient (use :func:`giou_loss` to pull them together);
    ``eps`` keeps two zero-area boxes finite (loss 1).

    Example:
        >>> import torch
        >>> a, b = torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 3, 3])
        >>> round(float(iou_loss(a, b)), 4)  # IoU = 1 / 7
        0.8571
    """
    _check_number(eps, "iou_loss: eps", low=0.0, strict=True)
    _check_reduction(reduction, "iou_loss")
    inter, union, _ = _box_terms(pred, target, "iou_loss")
    return _reduce(1.0 - inter / (union + eps), reduction)


def giou_loss(
    pred: Tensor, target: Tensor, eps: float = 1e-7, reduction: Reduction = "mean"
) -> Tensor:
    """``1 - GIoU`` (Rezatofighi et al. 2019) of paired boxes (x1, y1, x2, y2).

    ``GIoU = IoU - (C - union) / (C + eps)`` with ``C`` the area of the smallest enclosing box;
    the loss lies in ``[0, 2]`` and still has a gradient when the boxes do not overlap.

    Example:
        >>> import torch
        >>> a, b = torch.tensor([0.0, 0, 1, 1]), torch.tensor([2.0, 0, 3, 1])
        >>> round(float(giou_loss(a, b)), 4)  # IoU 0, enclosing area 3, union 2
        1.3333
    """
    _check_number(eps, "giou_loss: eps", low=0.0, strict=True)
    _check_reduction(reduction, "giou_loss")
    inter, union, enclosing = _box_terms(pred, target, "giou_loss")
    giou = inter / (union + eps) - (enclosing - union) / (enclosing + eps)
    return _reduce(1.0 - giou, reduction)


class _BoxLoss(_Loss):
    def __init__(self, eps: float = 1e-7, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        _check_number(eps, f"{type(self).__name__}: eps", low=0.0, strict=True)
        self.eps = float(eps)


class IoULoss(_BoxLoss):
    """``1 - IoU`` for paired (x1, y1, x2, y2) boxes ``(..., 4)``; see :func:`iou_loss`.

    Example:
        >>> import torch
        >>> loss = IoULoss()(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[0.0, 0, 2, 1]]))
        >>> round(float(loss), 4)
        0.5
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return iou_loss(pred, target, self.eps, self.reduction)


class GIoULoss(_BoxLoss):
    """``1 - GIoU`` for paired (x1, y1, x2, y2) boxes ``(..., 4)``; see :func:`giou_loss`.

    Example:
        >>> import torch
        >>> loss = GIoULoss()(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[0.0, 0, 2, 1]]))
        >>> round(float(loss), 4)
        0.5
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return giou_loss(pred, target, self.eps, self.reduction)


# ----------------------------------------------------------------------------- segmentation


def _dice_inputs(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Probabilities and one-hot targets, both (N, C, *)."""
    if logits.dim() >= 2 and logits.shape[1] == 1:
        if target.dim() == logits.dim() - 1:
            target = target.unsqueeze(1)
        _check_same_shape(logits, target, "dice_loss (binary, C=1)")
        probs = torch.sigmoid(_upcast(logits))
        return probs, target.to(probs.dtype)
    _check_labels(logits, target, "dice_loss")
    probs = F.softmax(_upcast(logits), dim=1)
    one_hot = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    return probs, one_hot


def dice_loss(
    logits: Tensor, target: Tensor, smooth: float = 1.0, reduction: Reduction = "mean"
) -> Tensor:
    """Soft Dice loss per class, ``1 - (2 * sum(p * g) + smooth) / (sum(p) + sum(g) + smooth)``.

    Multi-class: logits (N, C, *) with C >= 2 and integer mask (N, *), softmax over C against the
    one-hot mask. Binary: logits (N, 1, *) and a mask of 0/1 (or soft [0, 1]) values shaped
    (N, *) or (N, 1, *), sigmoid. Sums
    run over the batch and all spatial positions, giving one loss per class; ``reduction``
    combines the classes (``"none"`` returns the (C,) vector). Keep ``smooth > 0`` when a class
    can be absent from a batch: with ``smooth=0`` such a class always costs ~1.

    Example:
        >>> import torch
        >>> mask = torch.tensor([[[1, 0], [1, 1]]])
        >>> round(float(dice_loss(torch.zeros(1, 1, 2, 2), mask)), 4)  # 1 - (3 + 1) / (5 + 1)
        0.3333
    """
    _check_number(smooth, "dice_loss: smooth", low=0.0, strict=False)
    _check_reduction(reduction, "dice_loss")
    probs, one_hot = _dice_inputs(logits, target)
    dims = (0, *range(2, probs.dim()))
    inter = (probs * one_hot).sum(dims)
    denom = probs.sum(dims) + one_hot.sum(dims)
    # With smooth=0 a class absent from mask and prediction is 0/0; the clamp makes it loss 1.
    dice = (2.0 * inter + smooth) / (denom + smooth).clamp_min(1e-7)
    return _reduce(1.0 - dice, reduction)


class DiceLoss(_Loss):
    """Soft Dice loss for segmentation (multi-class softmax or binary sigmoid); see
    :func:`dice_loss`.

    Example:
        >>> import torch
        >>> DiceLoss()(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))).dim()
        0
    """

    def __init__(self, smooth: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        _check_number(smooth, "DiceLoss: smooth", low=0.0, strict=False)
        self.smooth = float(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return dice_loss(logits, target, self.smooth, self.reduction)


def _check_lovasz_args(classes: str, ignore_index: int | None, where: str) -> None:
    if classes not in ("present", "all"):
        raise ConfigError(
            f"{where}: classes must be 'present' or 'all', got {classes!r}"
            f"{did_you_mean(str(classes), ('present', 'all'))}"
        )
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise ConfigError(f"{where}: ignore_index must be an integer or None, got {ignore_index!r}")


def _lovasz_grad(fg_sorted: Tensor) -> Tensor:
    """Gradient of the Jaccard loss extension w.r.t. errors sorted in decreasing order (P, C)."""
    gts = fg_sorted.sum(dim=0)
    inter = gts - fg_sorted.cumsum(dim=0)
    union = gts + (1.0 - fg_sorted).cumsum(dim=0)  # >= 1 at every row, so no division by 0
    jaccard = 1.0 - inter / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)


def lovasz_softmax_loss(
    logits: Tensor,
    target: Tensor,
    classes: Literal["present", "all"] = "present",
    ignore_index: int | None = None,
) -> Tensor:
    """Lovász-Softmax loss (Berman et al. 2018) over all pixels of the batch, flattened.

    For each class c the pixel errors ``|1[y = c] - p_c|`` are sorted in decreasing order and
    dotted with the increments of the Jaccard loss, which is the Lovász extension of
    ``1 - IoU_c``; the result is averaged over the classes present in ``target`` (``"present"``)
    or over every class (``"all"``). For hard 0/1 predictions it equals ``1 - mean IoU``.
    Logits are (N, C, *) with C >= 2, target integer (N, *); ``ignore_index`` pixels are dropped.
    If no class is present the loss is 0 (still attached to the graph).

    Example:
        >>> import torch
        >>> target = torch.tensor([[0, 1, 1]])
        >>> logits = 20.0 * torch.nn.functional.one_hot(target, 2).permute(0, 2, 1).float()
        >>> round(float(lovasz_softmax_loss(logits, target)), 4)  # perfect prediction
        0.0
    """
    _check_lovasz_args(classes, ignore_index, "lovasz_softmax_loss")
    _check_labels(logits, target, "lovasz_softmax_loss", ignore_index)
    if logits.shape[1] < 2:
        raise ValueError("lovasz_softmax_loss: needs C >= 2 classes; softmax over one is constant")
    num_classes = logits.shape[1]
    probs = F.softmax(_upcast(logits), dim=1).movedim(1, -1).reshape(-1, num_classes)
    labels = target.reshape(-1)
    if ignore_index is not None:
        keep = labels != ignore_index
        probs, labels = probs[keep], labels[keep]
    fg = (labels.unsqueeze(1) == torch.arange(num_classes, device=labels.device)).to(probs.dtype)
    errors_sorted, perm = torch.sort((fg - probs).abs(), dim=0, descending=True)
    per_class = (errors_sorted * _lovasz_grad(fg.gather(0, perm))).sum(dim=0)
    # A masked mean rather than indexing keeps this free of host-device syncs.
    weight = (
        (fg.sum(dim=0) > 0).to(probs.dtype) if classes == "present" else torch.ones_like(per_class)
    )
    return (per_class * weight).sum() / weight.sum().clamp_min(1.0)


class LovaszSoftmaxLoss(nn.Module):
    """Lovász-Softmax segmentation loss; see :func:`lovasz_softmax_loss`.

    Example:
        >>> import torch
        >>> loss = LovaszSoftmaxLoss(ignore_index=255)
        >>> loss(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))).dim()
        0
    """

    def __init__(
        self, ignore_index: int | None = None, classes: Literal["present", "all"] = "present"
    ) -> None:
        super().__init__()
        _check_lovasz_args(classes, ignore_index, "LovaszSoftmaxLoss")
        self.ignore_index, self.classes = ignore_index, classes

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return lovasz_softmax_loss(logits, target, self.classes, self.ignore_index)


# ----------------------------------------------------------------------------- registry

LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "label_smoothing": LabelSmoothingCrossEntropy,
    "focal": FocalLoss,
    "center": CenterLoss,
    "smooth_l1": SmoothL1Loss,
    "iou": IoULoss,
    "giou": GIoULoss,
    "dice": DiceLoss,
    "lovasz_softmax": LovaszSoftmaxLoss,
    "scaled_cosine": ScaledCosineLoss,
}


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name`` in :data:`LOSSES` with hyper-parameters ``kwargs``.

    Unknown names and unknown keyword arguments raise ``ConfigError`` with a did-you-mean.

    Example:
        >>> create_loss("label_smoothing", smoothing=0.2).smoothing
        0.2
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise ConfigError(
            f"unknown loss {name!r}{did_you_mean(str(name), LOSSES)}; "
            f"choose one of {sorted(LOSSES)}"
        )
    cls = LOSSES[name]
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"loss {name!r}: unknown argument {key!r}{did_you_mean(key, accepted)}; "
                f"it accepts {accepted}"
            )
    return cls(**kwargs)
