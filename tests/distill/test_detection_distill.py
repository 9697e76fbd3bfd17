"""Feature distillation of a pruned detector from its unpruned self, through the one trainer
(the detection losses plus a FitNet term on the backbone's features)."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest

import torchslim as ts
from torchslim.distill import fit_distillation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from tiny_detectors import tiny_faster_rcnn

pytest.importorskip("pycocotools")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_a_pruned_detector_distils_its_features_from_the_unpruned_one(tmp_path: Path) -> None:
    from torchslim.data import CocoDetectionSet, make_detection_set

    data = CocoDetectionSet(*make_detection_set(tmp_path, "val", num_images=4, size=64))
    teacher = tiny_faster_rcnn().eval()
    student = copy.deepcopy(teacher)
    ts.prune(student, ([data[0][0]],), {"ratio": 0.5})
    assert student.backbone[0].out_channels == 8
    cfg = {
        "losses": [{"type": "fitnet", "student": ["backbone.0", "backbone"]}],
        "train": {"epochs": 1, "batch_size": 2, "progress": False, "seed": 0},
    }
    result = fit_distillation(student, teacher, data, cfg, eval_data=data)
    final = result.final
    assert math.isfinite(final["fitnet"]) and final["fitnet"] > 0
    assert {"loss_classifier", "loss_box_reg", "eval_map"} <= final.keys()
    assert math.isclose(final["train_loss"], final["task_loss"] + final["fitnet"], rel_tol=1e-4)


def test_a_pruned_detector_distils_its_region_proposals_with_det_head(tmp_path: Path) -> None:
    """det_head on the RPN: objectness (sigmoid, one "class" per anchor) and box deltas per
    feature-map cell, the deltas weighted by the teacher's objectness."""
    from torchslim.data import CocoDetectionSet, make_detection_set

    data = CocoDetectionSet(*make_detection_set(tmp_path, "val", num_images=4, size=64))
    teacher = tiny_faster_rcnn().eval()
    student = copy.deepcopy(teacher)
    ts.prune(student, ([data[0][0]],), {"ratio": 0.5})
    head = ["rpn.head.cls_logits", "rpn.head.bbox_pred"]
    cfg = {
        "losses": [{"type": "det_head", "student": head,
                    "options": {"activation": "sigmoid", "background": None}}],
        "train": {"epochs": 1, "batch_size": 2, "progress": False, "seed": 0},
    }  # fmt: skip
    final = fit_distillation(student, teacher, data, cfg).final
    assert math.isfinite(final["det_head"]) and final["det_head"] > 0
    assert math.isclose(final["train_loss"], final["task_loss"] + final["det_head"], rel_tol=1e-4)
