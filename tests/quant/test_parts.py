"""Quantizing what torch.fx cannot trace as a whole: a detector's parts, checked traces."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import torchslim as ts
from torchslim.quant.parts import traceable_parts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from tiny_detectors import tiny_faster_rcnn

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class _Sneaky(nn.Module):
    """Traces without error down the wrong branch: a Proxy is not a Tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if isinstance(x, torch.Tensor) else self.conv(x) * 0


class _ListModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sneaky = _Sneaky()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
        self.unused = nn.Linear(2, 2)

    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.body(self.sneaky(x[None])) for x in images]


def test_a_wrong_trace_is_refused_and_never_run_parts_are_left_out() -> None:
    parts = traceable_parts(_ListModel(), ([torch.rand(3, 8, 8)],))
    assert sorted(parts) == ["body", "sneaky.conv"]


def test_a_detector_is_quantized_by_its_parts_and_runs_in_onnx_runtime(tmp_path: Path) -> None:
    from torchslim.data import CocoDetectionSet, make_detection_set
    from torchslim.train.tasks import collate

    data = CocoDetectionSet(*make_detection_set(tmp_path, "val", num_images=4, size=64))
    model = tiny_faster_rcnn().eval()
    q = ts.quantize(model, DataLoader(data, batch_size=2, collate_fn=collate), {}, progress=False)
    layers = q.quant_state.layers
    assert {"backbone.0", "backbone.3", "rpn.head.cls_logits.0", "roi_heads.box_head.fc6",
            "roi_heads.box_predictor.cls_score.0"} <= set(layers)  # fmt: skip
    assert type(q.rpn).__name__ == "RegionProposalNetwork"  # the glue stays Python, float
    image = data[0][0]
    with torch.no_grad():
        out = q([image])
    assert set(out[0]) == {"boxes", "labels", "scores"}
    rep = ts.export_onnx(q, ([image],), tmp_path / "q.onnx")
    assert rep.quantized and rep.int8_weights == len(layers)
    from torchslim.export import OnnxModule

    got = OnnxModule(rep.path, task="detection")([image])
    assert got[0]["boxes"].shape[1] == 4
