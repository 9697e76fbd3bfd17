"""Ultralytics YOLO built from its yaml (random weights, nothing downloaded) prunes, keeps its
output structure, saves/loads and exports to ONNX Runtime. ``ultralytics`` is a test/bench
extra only; the full benchmark is ``benchmarks/prune_yolo.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import torchslim as ts

os.environ.setdefault("YOLO_OFFLINE", "1")
pytest.importorskip("ultralytics")

CONSTRUCTOR = "ultralytics.nn.tasks:DetectionModel"


@pytest.mark.parametrize("cfg", ["yolo11n.yaml"])  # v8n: benchmarks/prune_yolo.py
def test_yolo_prunes_and_runs_in_onnx_runtime(cfg: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ts.models.create(CONSTRUCTOR, cfg=cfg, verbose=False).eval()
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        before = model(x)
    ts.prune(model, x, {"ratio": 0.5})
    report = ts.report(model)
    assert report.macs_after < 0.5 * report.macs_before
    with torch.no_grad():
        after = model(x)
    assert after[0].shape == before[0].shape  # (1, 4 + 80 classes, anchors): heads untouched
    assert after[1].keys() == before[1].keys()
    loaded = ts.load(ts.save(model, tmp_path / "yolo.pt")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], after[0])
    export = ts.export_onnx(model, x, tmp_path / "yolo.onnx")
    assert export.max_abs_error is not None and export.max_abs_error < 1e-3
