from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from torchslim.cli import main
from torchslim.errors import ConfigError, RunFolderError
from torchslim.pipeline import StageError, compress, load_run, parse_recipe

QUIET = {"batch_size": 50, "progress": False, "lr": 0.05}


def _tiny(finetune_epochs: int = 1) -> dict:
    return {
        "description": "tiny",
        "model": {"name": "smallcnn"},
        "data": {"subset": 200, "test_subset": 100, "augment": []},
        "report": {"batch_sizes": [1, 4], "repeats": 2},
        "stages": [
            {"type": "train", "name": "base", "train": {"epochs": 1, **QUIET}},
            {"type": "prune", "name": "pruned", "ratio": 0.5,
             "finetune": {"epochs": finetune_epochs, **QUIET}},
            {"type": "quantize", "name": "pruned_int8", "calib": 32},
            {"type": "export", "input": "pruned_int8"},
        ],
    }  # fmt: skip


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns
            for p in (out / "stages").glob("*/*") if p.is_file()}  # fmt: skip


def test_compress_runs_stages_and_writes_reports(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = compress(parse_recipe(_tiny()), out, progress=False)
    rows = {r.stage: r for r in res.report.rows}
    assert list(rows) == ["base", "pruned", "pruned_int8"]
    base, pruned, q = rows["base"], rows["pruned"], rows["pruned_int8"]
    assert pruned.macs < 0.5 * base.macs and pruned.params < 0.6 * base.params
    assert pruned.channels and all(a <= b for b, a in pruned.channels.values())
    assert q.int8 and not pruned.int8 and q.onnx_bytes < 0.35 * pruned.onnx_bytes
    assert all(r.ort_accuracy is not None and set(r.latency_ms) == {1, 4} for r in rows.values())
    assert res.report.ratios(q)["smaller"] == pytest.approx(base.onnx_bytes / q.onnx_bytes)
    # files: the reports, the resolved recipe, every stage's model and ONNX, the export
    data = json.loads((out / "report.json").read_text())
    assert [r["stage"] for r in data["rows"]] == list(rows)
    assert "| pruned_int8 |" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # size, latency, channels of 'pruned'
    assert parse_recipe(yaml.safe_load((out / "recipe.yaml").read_text())) == parse_recipe(_tiny())
    assert (out / "pruned_int8.onnx").stat().st_size == q.onnx_bytes
    for i, name in enumerate(["base", "pruned", "pruned_int8"]):
        folder = out / "stages" / f"{i:02d}-{name}"
        assert (folder / "done.json").exists() and (folder / "model.onnx").exists()
    assert set(res.models) == {"base", "pruned", "pruned_int8"}
    # the train stage's checkpoint names its model, as `torchslim train`'s does
    model, meta = load_run(out / "stages" / "00-base" / "train")
    assert meta["model"] == "smallcnn" and meta["data"] == "fashion-mnist"
    torch.testing.assert_close(model.state_dict(), res.models["base"].state_dict())

    # no pickled modules: the quantized stage lives in its ONNX file, recomputed on resume
    assert not list(out.rglob("*.module.pt"))
    # a finished run is not overwritten by accident; --resume recomputes nothing
    with pytest.raises(RunFolderError, match=r"already holds a run \(4 stage folders, 4 finished"):
        compress(parse_recipe(_tiny()), out, progress=False)
    before = _mtimes(out)
    again = compress(parse_recipe(_tiny()), out, resume=True, progress=False)
    assert _mtimes(out) == before
    assert [r.top1 for r in again.report.rows] == [r.top1 for r in res.report.rows]
    q_again = again.models["pruned_int8"].eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(q_again(x), res.models["pruned_int8"].eval()(x))
    # a stage that changed since it ran is not silently reused
    changed = _tiny()
    changed["stages"][1]["ratio"] = 0.3
    with pytest.raises(ConfigError, match=r"stages\.1 \(pruned\) differs"):
        compress(parse_recipe(changed), out, resume=True, progress=False)


def test_a_failing_stage_names_itself_and_keeps_earlier_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _tiny()
    raw["stages"][1]["ignore"] = ["no_such_layer*"]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    with pytest.raises(StageError, match=r"stage 1 \(pruned, prune\) failed: .*no_such_layer"):
        compress(parse_recipe(raw), out, progress=False)
    assert (out / "stages" / "00-base" / "done.json").exists()
    assert not (out / "stages" / "01-pruned" / "done.json").exists()
    assert main(["compress", str(path), "--out", str(tmp_path / "run2")]) == 2
    assert "stage 1 (pruned, prune) failed" in capsys.readouterr().err


# The longest test (a 40-epoch fine-tune, killed and resumed in a subprocess). The default run
# keeps its parts: skipping finished stages on resume (test_compress_runs_stages_and_writes_
# reports) and a killed trainer resuming mid-epoch to the same weights (tests/train, distill).
@pytest.mark.slow
def test_sigkill_during_the_prune_finetune_then_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_tiny(finetune_epochs=40)))
    out = tmp_path / "run"
    ckpt = out / "stages" / "01-pruned" / "finetune" / "last.pt"
    cmd = [sys.executable, "-m", "torchslim.cli", "compress", str(path), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ckpt.exists(), "the fine-tune never checkpointed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "stages" / "01-pruned" / "done.json").exists()
    base_files = {k: v for k, v in _mtimes(out).items() if k.startswith("00-base")}
    assert main(["compress", str(path), "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "base: finished earlier" in err and "resumed from" in err
    assert {k: v for k, v in _mtimes(out).items() if k.startswith("00-base")} == base_files
    history = (out / "stages" / "01-pruned" / "finetune" / "metrics.jsonl").read_text()
    assert len(history.splitlines()) == 40
    assert (out / "stages" / "02-pruned_int8" / "done.json").exists()


def test_prune_stage_with_sensitivity_derived_ratios(tmp_path: Path) -> None:
    raw = _tiny()
    raw["stages"][1] = {"type": "prune", "name": "pruned", "target_macs": 0.6,
                        "sensitivity": {"ratios": [0.3, 0.6]}}  # fmt: skip
    raw["stages"] = raw["stages"][:2]
    res = compress(parse_recipe(raw), tmp_path / "run", progress=False)
    base, pruned = res.report.rows
    assert pruned.macs <= 0.6 * base.macs
    assert pruned.sensitivity and all(set(c) <= {"0.3", "0.6"} for c in pruned.sensitivity.values())
    page = (tmp_path / "run" / "report.html").read_text()
    assert "sensitivity curves (pruned)" in page and page.count("data:image/png;base64,") == 4
    with pytest.raises(ConfigError, match=r"stages\.1\.sensitivity: needs target_macs"):
        parse_recipe({**raw, "stages": [raw["stages"][0], {"type": "prune", "sensitivity": {}}]})


def test_compress_holds_its_folder_and_overwrite_starts_afresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from test_run_folder import hold_folder

    raw = {
        "model": {"name": "smallcnn"},
        "data": {"test_subset": 20},
        "report": {"latency": False},
        "stages": [{"type": "evaluate", "name": "fresh"}],
    }
    path, out = tmp_path / "r.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(raw))
    holder = hold_folder(out)
    try:
        assert main(["compress", str(path), "--out", str(out)]) == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    stale = out / "stages" / "07-old"
    stale.mkdir(parents=True)
    assert main(["compress", str(path), "--out", str(out)]) == 2
    assert "already holds a run (1 stage folders, 0 finished)" in capsys.readouterr().err
    assert main(["compress", str(path), "--out", str(out), "--overwrite"]) == 0
    assert not stale.exists() and (out / "stages" / "00-fresh" / "done.json").exists()


def test_the_quantize_stage_calibrates_on_every_image_it_asks_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchslim.quant
    from torchslim.pipeline.stages import STAGE_TYPES, Context

    seen = {}

    def fake_quantize(model, calib, config, progress=True):
        seen["batches"], seen["limit"] = len(calib), config.calib_batches
        return model

    monkeypatch.setattr(torchslim.quant, "quantize", fake_quantize)
    recipe = parse_recipe({"model": {"name": "smallcnn"},
                           "stages": [{"type": "quantize", "calib": 2112}]})  # fmt: skip
    STAGE_TYPES["quantize"].run(Context(recipe), recipe.stages[0], torch.nn.Linear(1, 1), tmp_path)
    assert seen == {"batches": 33, "limit": 33}  # the config's default cap (32) used to drop one
