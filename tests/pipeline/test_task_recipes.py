"""Recipes for a segmenter and a detector on the generated COCO-format set: every stage trains,
prunes, quantizes and is measured by its task's metric in PyTorch and in ONNX
Runtime (the report's mIoU / mAP columns)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from torchslim.errors import ConfigError
from torchslim.pipeline import compress, parse_recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))

pytest.importorskip("pycocotools")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

QUICK = {"epochs": 1, "batch_size": 4, "progress": False, "seed": 0}


def _recipe(task: str, model: str, tmp: Path, extra: list[dict]) -> dict:
    return {
        "model": {"name": model},
        "data": {
            "name": "fashion-coco",
            "task": task,
            "root": str(tmp / "data"),
            "subset": 8,
            "test_subset": 4,
        },
        "report": {"batch_sizes": [1, 2], "repeats": 2, "html": False},
        "stages": [
            {"name": "baseline", "type": "train", "train": QUICK},
            {"name": "pruned", "type": "prune", "ratio": 0.5, "finetune": QUICK},
            *extra,
        ],
    }


def test_a_segmentation_recipe_reports_miou_in_pytorch_and_onnx_runtime(tmp_path: Path) -> None:
    stages = [{"name": "int8", "type": "quantize", "calib": 8}]
    recipe = _recipe("segmentation", "tiny_detectors:tiny_segmenter", tmp_path, stages)
    result = compress(parse_recipe(recipe), tmp_path / "run", progress=False)
    report = result.report
    assert report.metric == "mIoU" and "mIoU ORT" in report.table()
    rows = {r.stage: r for r in report.rows}
    assert rows["pruned"].macs < 0.5 * rows["baseline"].macs
    assert rows["int8"].int8 and rows["int8"].onnx_bytes < rows["pruned"].onnx_bytes
    for row in rows.values():
        assert 0.0 <= row.accuracy <= 1.0 and 0.0 <= row.ort_accuracy <= 1.0
        assert set(row.latency_ms) == {1, 2}


def test_a_detection_recipe_reports_map_and_times_one_image(tmp_path: Path) -> None:
    stages = [{"name": "int8", "type": "quantize", "calib": 4}]
    recipe = _recipe("detection", "tiny_detectors:tiny_faster_rcnn", tmp_path, stages)
    result = compress(parse_recipe(recipe), tmp_path / "run", progress=False)
    rows = {r.stage: r for r in result.report.rows}
    assert result.report.metric == "mAP"
    assert rows["pruned"].params < rows["baseline"].params
    # int8 backbone and heads, the post-processing in float, in one ONNX file
    assert rows["int8"].int8 and rows["int8"].onnx_bytes < rows["pruned"].onnx_bytes
    for row in rows.values():
        assert 0.0 <= row.ort_accuracy <= 1.0
        assert set(row.latency_ms) == {1}  # the ONNX file takes one image


def test_the_task_must_fit_the_data() -> None:
    with pytest.raises(ConfigError, match="does not go with data 'fashion-mnist'"):
        parse_recipe({"model": {"name": "resnet8"}, "data": {"task": "detection"},
                      "stages": [{"name": "t", "type": "train"}]})  # fmt: skip
    with pytest.raises(ConfigError, match="does not go with data 'fashion-coco'"):
        parse_recipe({"model": {"name": "resnet8"}, "data": {"name": "fashion-coco"},
                      "stages": [{"name": "t", "type": "train"}]})  # fmt: skip
