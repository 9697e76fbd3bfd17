"""Small detectors for the tests: torchvision's real detection losses and post-processing at
a fraction of a MobileNet's cost."""

from __future__ import annotations

import torch
from torch import nn


def tiny_faster_rcnn(size: int = 64, num_classes: int = 11) -> nn.Module:
    """torchvision's Faster R-CNN on a two-layer backbone: the real detection losses and
    post-processing at a fraction of a MobileNet's cost."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    backbone.out_channels = 32
    return FasterRCNN(
        backbone,
        min_size=size,
        max_size=size,
        rpn_anchor_generator=AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(32 * 7 * 7, 64),
        box_predictor=FastRCNNPredictor(64, num_classes),
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=32,
        rpn_post_nms_top_n_test=50,
    )


def tiny_segmenter(num_classes: int = 11) -> nn.Module:
    """A dilated two-conv FCN returning ``{"out": logits}`` as torchvision's segmenters do."""

    class TinySegmenter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.BatchNorm2d(16), nn.ReLU(),
            )  # fmt: skip
            self.head = nn.Conv2d(16, num_classes, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": self.head(self.body(x))}

    torch.manual_seed(0)
    return TinySegmenter()
