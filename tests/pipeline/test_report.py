from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser import find_browser, screenshot

from torchslim.pipeline import Report, StageRow
from torchslim.pipeline.report import rows_from_json

CHROMIUM = find_browser()


def _report() -> Report:
    def row(stage: str, acc: float, size: int, ms: float, **kw: object) -> StageRow:
        return StageRow(stage=stage, type=kw.pop("type", "train"), input="", accuracy=acc,
                        ort_accuracy=acc, params=size // 4, macs=size * 3, onnx_bytes=size,
                        int8=bool(kw.pop("int8", False)), latency_ms={1: ms, 32: 10 * ms},
                        **kw)  # type: ignore[arg-type]  # fmt: skip

    rows = [
        row("baseline", 0.90, 4_000_000, 2.0),
        row("pruned", 0.89, 2_000_000, 1.2, type="prune",
            channels={f"layer{i}": [64, 32 + i] for i in range(12)}),
        row("pruned_int8", 0.885, 520_000, 0.8, type="quantize", int8=True),
    ]  # fmt: skip
    return Report("test report", "baseline", rows, {"export": "out/model.onnx"})


def test_ratios_are_against_the_baseline_row() -> None:
    rep = _report()
    q = rep.ratios(rep.rows[2])
    assert q["smaller"] == pytest.approx(4_000_000 / 520_000)
    assert q["top1_change"] == pytest.approx(-1.5)
    assert q["speedup_b1"] == pytest.approx(2.5) and q["speedup_b32"] == pytest.approx(2.5)
    table = rep.table()
    assert "| baseline (baseline) |" in table and "7.69x" in table and "-1.50" in table


def test_json_round_trip_and_markdown(tmp_path: Path) -> None:
    rep = _report()
    files = rep.write(tmp_path)
    data = json.loads(files["json"].read_text())
    assert rows_from_json(data["rows"]) == rep.rows
    assert data["rows"][2]["vs_baseline"]["smaller"] == pytest.approx(4_000_000 / 520_000)
    assert "out/model.onnx" in files["md"].read_text()


def test_html_page_is_self_contained_with_its_plots(tmp_path: Path) -> None:
    page = _report().to_html()
    assert page.count("data:image/png;base64,") == 3  # size, latency, channels kept
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", page)  # nothing fetched
    assert page.count("<tr>") == 4


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless browser (Debian: chromium)")
def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    import matplotlib.image

    page = _report().write(tmp_path)["html"]
    shot = screenshot(page, tmp_path / "shot.png", width=1200, height=1400)
    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (1400, 1200)
    ink = (pixels < 0.9).any(axis=-1)
    assert 0.01 < ink.mean() < 0.6  # text, table borders and plots, on a white page
    # matplotlib's default blue marks (scatter points, bars) made it onto the page
    blue = (abs(pixels[..., 0] - 0.12) < 0.1) & (abs(pixels[..., 2] - 0.71) < 0.1)
    assert blue.sum() > 500


def test_demo_summary_shows_paddleslim_as_a_reference_not_a_verdict() -> None:
    from torchslim.pipeline.demo import summary

    base = StageRow("baseline", "train", "", 0.80, 0.80, 100, 1000, 4_000_000, False, {1: 1.0})
    q = StageRow("pruned_int8", "quantize", "pruned", 0.78, 0.78, 50, 500, 500_000, True, {1: 0.5})
    text = summary(Report("demo", "baseline", [base, q]))
    assert "for reference: PaddleSlim MobileNetV1 on ImageNet" in text
    assert "(8.0x) at -2.00 top-1; ORT speed-up b1 2.00x | 17.0 MB -> 2.3 MB" in text
    assert "| met |" not in text and "| no |" not in text and "| yes |" not in text


def test_a_pruned_row_that_is_not_faster_is_warned_about() -> None:
    report = _report()
    assert report.warnings() == []  # pruned: 1.67x faster
    slow = report.rows[1]
    slow.latency_ms = {1: 2.2, 32: 15.0}  # batch 1 slower, batch 32 faster
    (line,) = report.warnings()
    assert line.startswith("warning: pruned has 0.50 of the baseline MACs but runs at 0.91x")
    assert "batch 32" not in line and "round_to" in line
    assert line in report.to_markdown() and line in str(report)
