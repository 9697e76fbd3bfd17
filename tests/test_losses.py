"""Each task loss against a value worked out by hand; gradients, validation, the registry."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchslim.errors import ConfigError
from torchslim.losses import (
    LOSSES,
    CenterLoss,
    DiceLoss,
    FocalLoss,
    GIoULoss,
    IoULoss,
    LabelSmoothingCrossEntropy,
    LovaszSoftmaxLoss,
    ScaledCosineLoss,
    SmoothL1Loss,
    center_loss,
    create_loss,
    dice_loss,
    focal_loss,
    giou_loss,
    iou_loss,
    label_smoothing_cross_entropy,
    lovasz_softmax_loss,
    scaled_cosine_loss,
)

D = torch.float64


def close(actual: Tensor, expected: float, tol: float = 1e-9) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), rtol=tol, atol=tol
    )


# ----------------------------------------------------------------------------- focal


def test_focal_two_class_hand_value() -> None:
    # logits (2, 0.5): p(class 0) = 1 / (1 + e^-1.5)
    p = 1.0 / (1.0 + math.exp(-1.5))
    expected = -((1 - p) ** 2) * math.log(p)
    loss = focal_loss(torch.tensor([[2.0, 0.5]], dtype=D), torch.tensor([0]), gamma=2.0)
    close(loss, expected)


def test_focal_per_class_alpha_and_mean_over_batch() -> None:
    logits = torch.tensor([[2.0, 0.5], [0.0, 1.0]], dtype=D)
    target = torch.tensor([0, 1])
    p0 = 1.0 / (1.0 + math.exp(-1.5))  # sample 0, true class 0
    p1 = 1.0 / (1.0 + math.exp(-1.0))  # sample 1, true class 1
    terms = [
        -0.25 * (1 - p0) ** 3 * math.log(p0),
        -0.75 * (1 - p1) ** 3 * math.log(p1),
    ]
    loss = FocalLoss(gamma=3.0, alpha=[0.25, 0.75], reduction="none")(logits, target)
    torch.testing.assert_close(loss, torch.tensor(terms, dtype=D))
    close(FocalLoss(gamma=3.0, alpha=[0.25, 0.75])(logits, target), sum(terms) / 2)
    close(FocalLoss(gamma=3.0, alpha=[0.25, 0.75], reduction="sum")(logits, target), sum(terms))


def test_focal_scalar_alpha_scales_every_term() -> None:
    logits, target = torch.randn(6, 4, dtype=D), torch.randint(0, 4, (6,))
    torch.testing.assert_close(
        FocalLoss(alpha=0.5)(logits, target), 0.5 * FocalLoss()(logits, target)
    )


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 4)])
def test_focal_gamma_zero_is_cross_entropy(shape: tuple[int, ...]) -> None:
    logits = torch.randn(*shape, dtype=D)
    target = torch.randint(0, 3, (shape[0], *shape[2:]))
    torch.testing.assert_close(
        FocalLoss(gamma=0.0)(logits, target), F.cross_entropy(logits, target)
    )


def test_focal_fractional_gamma_keeps_gradient_finite_at_confident_prediction() -> None:
    logits = torch.tensor([[100.0, -100.0], [0.3, 0.1]], requires_grad=True)
    focal_loss(logits, torch.tensor([0, 1]), gamma=0.5).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_focal_validation() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ConfigError, match="alpha"):
        FocalLoss(alpha=[[0.1, 0.2]])
    with pytest.raises(ValueError, match="3 per-class weights but the logits have 2"):
        FocalLoss(alpha=[0.1, 0.2, 0.7])(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 2\)"):
        FocalLoss()(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        FocalLoss()(torch.zeros(2, 2), torch.tensor([0.0, 1.0]))


# ----------------------------------------------------------------------------- label smoothing


def test_label_smoothing_hand_value() -> None:
    # Two classes, logits (1, 0), true class 0, smoothing 0.2: target distribution (0.9, 0.1).
    log_z = math.log(math.e + 1.0)
    logp = [1.0 - log_z, -log_z]
    expected = -(0.9 * logp[0] + 0.1 * logp[1])
    loss = label_smoothing_cross_entropy(
        torch.tensor([[1.0, 0.0]], dtype=D), torch.tensor([0]), 0.2
    )
    close(loss, expected)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("shape", [(7, 5), (2, 5, 3, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_label_smoothing_agrees_with_torch(
    smoothing: float, shape: tuple[int, ...], reduction: str
) -> None:
    logits = torch.randn(*shape, dtype=D)
    target = torch.randint(0, 5, (shape[0], *shape[2:]))
    ours = LabelSmoothingCrossEntropy(smoothing, reduction=reduction)(logits, target)
    theirs = F.cross_entropy(logits, target, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, "0.1", True])
def test_label_smoothing_rejects_bad_smoothing(smoothing: object) -> None:
    with pytest.raises(ConfigError, match="smoothing"):
        LabelSmoothingCrossEntropy(smoothing)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- center


def test_center_loss_hand_value_and_center_gradient() -> None:
    loss_fn = CenterLoss(num_classes=3, feat_dim=2)
    with torch.no_grad():
        loss_fn.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]))
    features = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    loss = loss_fn(features, torch.tensor([0, 1]))
    close(loss, (0.5 * 25 + 0.5 * 1) / 2, tol=1e-6)  # mean_i 0.5 * ||f_i - c_{y_i}||^2
    loss.backward()
    # d/dc_y of 0.5 * ||f - c_y||^2 / N is -(f - c_y) / N; the unused center gets nothing.
    expected = torch.tensor([[-1.5, -2.0], [0.0, -0.5], [0.0, 0.0]])
    torch.testing.assert_close(loss_fn.centers.grad, expected)


def test_center_loss_sum_and_functional() -> None:
    centers = torch.zeros(2, 3)
    features = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 1.0]])
    close(center_loss(features, torch.tensor([0, 1]), centers, "sum"), 0.5 * 9 + 0.5 * 1, 1e-6)


def test_center_loss_validation() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        CenterLoss(num_classes=0, feat_dim=2)
    with pytest.raises(ValueError, match="features must be"):
        CenterLoss(3, 2)(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        CenterLoss(3, 2)(torch.zeros(2, 2), torch.tensor([0, 3]))


# ----------------------------------------------------------------------------- smooth L1


def test_smooth_l1_hand_value() -> None:
    pred = torch.tensor([0.5, 3.0, -2.0], dtype=D)
    # |d| < 1: 0.5 * d^2 = 0.125; otherwise |d| - 0.5 = 2.5 and 1.5
    close(SmoothL1Loss(beta=1.0)(pred, torch.zeros(3, dtype=D)), (0.125 + 2.5 + 1.5) / 3)
    # beta = 2: 0.5 * 0.25 / 2, 3 - 1, 0.5 * 4 / 2 (|d| = beta takes the linear branch: 2 - 1)
    close(SmoothL1Loss(beta=2.0, reduction="sum")(pred, torch.zeros(3, dtype=D)), 0.0625 + 2 + 1)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
def test_smooth_l1_matches_torch(beta: float) -> None:
    pred, target = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close(
        SmoothL1Loss(beta)(pred, target), nn.SmoothL1Loss(beta=beta)(pred, target)
    )


def test_smooth_l1_refuses_broadcasting_and_bad_beta() -> None:
    with pytest.raises(ValueError, match="no broadcasting"):
        SmoothL1Loss()(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ConfigError, match="beta"):
        SmoothL1Loss(beta=-1.0)


# ----------------------------------------------------------------------------- IoU / GIoU


BOX_CASES = [
    # pred, target, IoU, enclosing-box area, union
    ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7, 9, 7),  # overlap 1, union 4 + 4 - 1
    ((0, 0, 1, 1), (2, 0, 3, 1), 0.0, 3, 2),  # disjoint
    ((0, 0, 4, 4), (1, 1, 2, 2), 1 / 16, 16, 16),  # containment
    ((1, 1, 3, 4), (1, 1, 3, 4), 1.0, 6, 6),  # identical
]


@pytest.mark.parametrize(("pred", "target", "iou", "area_c", "union"), BOX_CASES)
def test_iou_and_giou_hand_values(
    pred: tuple[float, ...], target: tuple[float, ...], iou: float, area_c: float, union: float
) -> None:
    p, t = torch.tensor([pred], dtype=D), torch.tensor([target], dtype=D)
    giou = iou - (area_c - union) / area_c
    close(IoULoss(eps=1e-12)(p, t), 1 - iou, tol=1e-9)
    close(GIoULoss(eps=1e-12)(p, t), 1 - giou, tol=1e-9)


def test_giou_of_the_worked_pair_is_68_over_63() -> None:
    # IoU 1/7, enclosing 3x3 box: GIoU = 1/7 - 2/9 = -5/63
    a, b = torch.tensor([0.0, 0, 2, 2], dtype=D), torch.tensor([1.0, 1, 3, 3], dtype=D)
    close(giou_loss(a, b, eps=1e-12), 68 / 63, tol=1e-9)


def test_box_losses_zero_area_boxes_stay_finite() -> None:
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    for fn in (iou_loss, giou_loss):
        loss = fn(pred, target, reduction="none")
        assert torch.isfinite(loss).all()
        torch.testing.assert_close(loss[0], torch.tensor(1.0))  # two points: IoU 0, GIoU 0
        loss.sum().backward()
        assert pred.grad is not None and torch.isfinite(pred.grad).all()
        pred.grad = None


def test_giou_matches_torchvision_on_random_valid_boxes() -> None:
    from torchvision.ops import generalized_box_iou_loss

    gen = torch.Generator().manual_seed(0)

    def boxes(n: int) -> Tensor:
        xy = torch.rand(n, 2, generator=gen) * 10
        return torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 5 + 0.1], dim=1)

    pred, target = boxes(32), boxes(32)
    torch.testing.assert_close(
        giou_loss(pred, target, reduction="none"),
        generalized_box_iou_loss(pred, target, reduction="none"),
    )


def test_box_losses_keep_leading_dims_and_check_shapes() -> None:
    boxes = torch.tensor([0.0, 0, 1, 1]).expand(2, 3, 4)
    assert IoULoss(reduction="none")(boxes, boxes).shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        IoULoss()(torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="eps"):
        GIoULoss(eps=0.0)


# ----------------------------------------------------------------------------- Dice


MASK = torch.tensor([[[1, 0], [1, 1]]])  # (N=1, 2, 2): three foreground pixels


def test_dice_binary_2x2_hand_value() -> None:
    logits = torch.zeros(1, 1, 2, 2, dtype=D)  # sigmoid = 0.5 everywhere
    # sum(p * g) = 1.5, sum(p) = 2, sum(g) = 3
    close(DiceLoss(smooth=1.0)(logits, MASK), 1 - (2 * 1.5 + 1) / (2 + 3 + 1))
    close(DiceLoss(smooth=0.0)(logits, MASK), 1 - 3 / 5)
    close(DiceLoss(smooth=0.0)(logits, MASK.unsqueeze(1)), 1 - 3 / 5)  # (N, 1, H, W) mask


def test_dice_multiclass_2x2_hand_value() -> None:
    logits = torch.zeros(1, 2, 2, 2, dtype=D)  # softmax = 0.5 for both classes
    # class 0: one pixel, sum(p*g) = 0.5 -> (1 + 1) / (2 + 1 + 1); class 1: 3 pixels -> 4 / 6
    per_class = [1 - 2 / 4, 1 - 4 / 6]
    torch.testing.assert_close(
        dice_loss(logits, MASK, reduction="none"), torch.tensor(per_class, dtype=D)
    )
    close(dice_loss(logits, MASK), sum(per_class) / 2)


def test_dice_perfect_prediction_is_zero() -> None:
    logits = 40.0 * F.one_hot(MASK, 2).permute(0, 3, 1, 2).to(D)
    close(dice_loss(logits, MASK, smooth=0.0, reduction="sum"), 0.0, tol=1e-12)
    # A class absent from the mask and never predicted scores ~0 only thanks to smooth > 0.
    logits = 40.0 * F.one_hot(MASK, 3).permute(0, 3, 1, 2).to(D)
    torch.testing.assert_close(
        dice_loss(logits, MASK, smooth=1.0, reduction="none"), torch.zeros(3, dtype=D)
    )


def test_dice_shape_errors() -> None:
    with pytest.raises(ValueError, match="needs target shape"):
        DiceLoss()(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="binary"):
        DiceLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 3))


# ----------------------------------------------------------------------------- Lovász


def test_lovasz_perfect_prediction_is_zero() -> None:
    target = torch.tensor([[[0, 1], [2, 1]]])
    logits = 50.0 * F.one_hot(target, 3).permute(0, 3, 1, 2).to(D)
    close(LovaszSoftmaxLoss()(logits, target), 0.0, tol=1e-12)


def test_lovasz_worked_three_pixel_example() -> None:
    # Labels (1, 1, 0); p(class 1) = (0.9, 0.4, 0.3). Per class, errors sorted descending are
    # dotted with the increments of 1 - |fg \ top-k| / |fg ∪ top-k|.
    # class 1: errors 0.6 (fg), 0.3 (bg), 0.1 (fg); Jaccard losses 1/2, 2/3, 1 -> 1/2, 1/6, 1/3.
    # class 0: errors 0.6 (bg), 0.3 (fg), 0.1 (bg); Jaccard losses 1/2, 1, 1 -> 1/2, 1/2, 0.
    loss_1 = 0.6 * 0.5 + 0.3 / 6 + 0.1 / 3
    loss_0 = 0.6 * 0.5 + 0.3 * 0.5
    p1 = torch.tensor([0.9, 0.4, 0.3], dtype=D)
    logits = torch.stack([(1 - p1).log(), p1.log()]).unsqueeze(0)  # (1, 2, 3), softmax = p
    close(lovasz_softmax_loss(logits, torch.tensor([[1, 1, 0]])), (loss_0 + loss_1) / 2)


def test_lovasz_hard_prediction_equals_one_minus_mean_iou() -> None:
    target = torch.tensor([[0, 0, 1, 2]])
    predicted = torch.tensor([[0, 1, 1, 1]])
    logits = 60.0 * F.one_hot(predicted, 4).permute(0, 2, 1).to(D)
    # IoU per class: 0 -> 1/2, 1 -> 1/3, 2 -> 0; class 3 is absent and never predicted.
    jaccard_losses = [1 / 2, 2 / 3, 1.0]
    close(lovasz_softmax_loss(logits, target), sum(jaccard_losses) / 3, tol=1e-12)
    close(lovasz_softmax_loss(logits, target, classes="all"), sum(jaccard_losses) / 4, tol=1e-12)


def test_lovasz_ignore_index_drops_pixels() -> None:
    logits = torch.randn(1, 3, 2, 3, dtype=D)
    target = torch.tensor([[[0, 255, 2], [1, 1, 255]]])
    keep = target != 255
    reference = lovasz_softmax_loss(
        logits.permute(0, 2, 3, 1)[keep].T.unsqueeze(0), target[keep].unsqueeze(0)
    )
    torch.testing.assert_close(LovaszSoftmaxLoss(ignore_index=255)(logits, target), reference)


def test_lovasz_all_pixels_ignored_gives_zero_with_gradient() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = LovaszSoftmaxLoss(ignore_index=255)(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad is not None


def test_lovasz_validation() -> None:
    with pytest.raises(ConfigError, match="did you mean 'present'"):
        LovaszSoftmaxLoss(classes="presnt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="C >= 2"):
        LovaszSoftmaxLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


# ----------------------------------------------------------------------------- scaled cosine


@pytest.mark.parametrize(
    ("target", "cos"),
    [((1.0, 1.0), 1 / math.sqrt(2)), ((0.0, 3.0), 0.0), ((-2.0, 0.0), -1.0), ((5.0, 0.0), 1.0)],
)
def test_scaled_cosine_hand_values(target: tuple[float, float], cos: float) -> None:
    pred = torch.tensor([[1.0, 0.0]], dtype=D)
    loss = ScaledCosineLoss(scale=3.0)(pred, torch.tensor([target], dtype=D))
    close(loss, 3.0 * (1 - cos))


def test_scaled_cosine_dim_and_validation() -> None:
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=D)
    # Along dim 0 the columns are (1, 0) vs (1, 0) and (0, 1) vs (0, 1) -> zero loss.
    close(scaled_cosine_loss(pred, pred.clone(), dim=0, reduction="sum"), 0.0)
    with pytest.raises(ValueError, match="must be equal"):
        scaled_cosine_loss(torch.zeros(2, 3), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="scale"):
        ScaledCosineLoss(scale=0.0)


# ----------------------------------------------------------------------------- all losses


def _cls_inputs() -> tuple[Tensor, Tensor]:
    return torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 2])


def _box_inputs() -> tuple[Tensor, Tensor]:
    xy = torch.rand(5, 2) * 4
    pred = torch.cat([xy, xy + 1 + torch.rand(5, 2)], dim=1)
    return pred, pred.detach() + 0.5 * torch.randn(5, 4)


def _seg_inputs() -> tuple[Tensor, Tensor]:
    return torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))


CASES: dict[str, tuple[dict[str, object], Callable[[], tuple[Tensor, Tensor]]]] = {
    "cross_entropy": ({}, _cls_inputs),
    "label_smoothing": ({}, _cls_inputs),
    "focal": ({"alpha": [0.1, 0.2, 0.3, 0.4]}, _cls_inputs),
    "center": ({"num_classes": 4, "feat_dim": 8}, lambda: (torch.randn(6, 8), _cls_inputs()[1])),
    "smooth_l1": ({}, lambda: (torch.randn(3, 5), torch.randn(3, 5))),
    "iou": ({}, _box_inputs),
    "giou": ({}, _box_inputs),
    "dice": ({}, _seg_inputs),
    "lovasz_softmax": ({}, _seg_inputs),
    "scaled_cosine": ({"scale": 2.0}, lambda: (torch.randn(4, 16), torch.randn(4, 16))),
}


def test_registry_is_exactly_the_documented_names() -> None:
    assert set(LOSSES) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_loss_is_a_scalar_with_finite_gradients(name: str) -> None:
    torch.manual_seed(0)
    kwargs, make_inputs = CASES[name]
    loss_fn = create_loss(name, **kwargs)
    assert isinstance(loss_fn, LOSSES[name])
    pred, target = make_inputs()
    pred.requires_grad_(True)
    loss = loss_fn(pred, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "cls",
    [FocalLoss, LabelSmoothingCrossEntropy, SmoothL1Loss, IoULoss, GIoULoss, DiceLoss,
     ScaledCosineLoss],
)  # fmt: skip
def test_bad_reduction_is_a_config_error_with_suggestion(cls: type[nn.Module]) -> None:
    with pytest.raises(
        ConfigError, match=rf"{cls.__name__}: reduction 'meen'.*did you mean 'mean'"
    ):
        cls(reduction="meen")


def test_create_loss_unknown_name_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown loss 'focall' \(did you mean 'focal'\?\)"):
        create_loss("focall")
    with pytest.raises(ConfigError, match="choose one of"):
        create_loss("triplet")


def test_create_loss_unknown_argument_suggests() -> None:
    with pytest.raises(ConfigError, match=r"'gama' \(did you mean 'gamma'\?\)"):
        create_loss("focal", gama=2.0)


def test_create_loss_passes_hyper_parameters() -> None:
    loss = create_loss("cross_entropy", label_smoothing=0.1)
    assert isinstance(loss, nn.CrossEntropyLoss) and loss.label_smoothing == 0.1
    assert create_loss("focal", gamma=1.5).gamma == 1.5  # type: ignore[union-attr]
