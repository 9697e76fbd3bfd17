"""``torchslim compress``: run a recipe's stages in order, checkpoint each, resume, report.

Layout of ``OUT``::

    recipe.yaml                 the resolved recipe (overrides applied, defaults filled in)
    report.md / .json / .html   rewritten after every stage
    stages/NN-NAME/             one folder per stage
        model.pt                its result (float models; quantized ones live in model.onnx and
                                are recomputed from their input on --resume)
        hf/                     instead of model.pt for a Hugging Face model: save_pretrained's
                                folder and the tokenizer (hf:OUT/stages/NN-NAME/hf loads it)
        model.onnx              the export the report measured (int8 QDQ when quantized)
        train/ finetune/ ...    the trainer's checkpoints while the stage trains
        done.json               written last: the stage is finished (config + measured row)
    NAME.onnx                   what export stages write (or their ``path``)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.analysis import analyze
from torchslim.errors import ConfigError, TorchslimError
from torchslim.export import OnnxModule, evaluate_onnx, export_onnx
from torchslim.export.onnx import is_quantized
from torchslim.pipeline.recipe import Recipe, load_recipe
from torchslim.pipeline.report import (
    METRIC_NAMES,
    Report,
    StageRow,
    fidelity_fields,
    metric_text,
    rows_from_json,
)
from torchslim.pipeline.spec import INITIAL, ReportSpec, Stage
from torchslim.pipeline.stages import (
    STAGE_TYPES,
    Context,
    load_model_file,
    save_stage_model,
    stage_input,
    stage_model_file,
)
from torchslim.runtime import measure_latency, round_robin_latency
from torchslim.train import evaluate
from torchslim.train.checkpoint import atomic_write_text
from torchslim.train.config import Task
from torchslim.train.run_folder import claim_run_folder

log = logging.getLogger("torchslim.pipeline")
_MIN_TIMED_S = 0.5  # time at least this much per latency figure


class StageError(TorchslimError, RuntimeError):
    """A stage failed; the results of the stages before it are intact on disk."""


@dataclass
class CompressResult:
    """The report and every stage's model (by stage name) of a finished run."""

    out_dir: Path
    report: Report
    models: dict[str, nn.Module]


def _measure(ctx: Context, stage: Stage, model: nn.Module, folder: Path, seconds: float,
             extra: dict[str, Any]) -> StageRow:  # fmt: skip
    spec = ctx.recipe.report
    model.eval()
    task = ctx.task.value
    stats = analyze(model, ctx.example_one)
    onnx_path = folder / "model.onnx"
    export = export_onnx(model, ctx.example, onnx_path)
    if ctx.text is not None:  # sentence embeddings against the starting model's
        ort_model = OnnxModule(onnx_path, threads=spec.threads)
        fid, ort_fid = ctx.fidelity(model), ctx.fidelity(ort_model)
        accuracy, ort_acc = fid.cosine_mean, ort_fid.cosine_mean
        extra = {**extra, "fidelity": fidelity_fields(fid, ort_fid)}
    elif ctx.task is Task.CLASSIFICATION:
        accuracy = evaluate(model, ctx.test_set, batch_size=256, task=task).metric
        ort_acc = evaluate_onnx(onnx_path, ctx.test_set, threads=spec.threads)
    else:  # the file in ONNX Runtime, through the same metric code as the PyTorch model
        accuracy = evaluate(model, ctx.test_set, batch_size=256, task=task).metric
        ort_model = OnnxModule(onnx_path, task=task, threads=spec.threads)
        ort_acc = evaluate(ort_model, ctx.test_set, batch_size=16, device="cpu", task=task).metric
    latency: dict[int, float] = {}
    if spec.latency:
        for bs in _batch_sizes(ctx):
            latency[bs] = round(_latency_ms(onnx_path, ctx.example_batch(bs), spec), 4)
    return StageRow(stage=stage.name, type=stage.type, input=stage.input or "", accuracy=accuracy,
                    ort_accuracy=ort_acc, params=stats.params, macs=stats.macs,
                    onnx_bytes=export.file_bytes, int8=is_quantized(model), latency_ms=latency,
                    seconds=round(seconds, 2), **extra)  # fmt: skip


def _latency_ms(path: Path, x: torch.Tensor, spec: ReportSpec) -> float:
    return measure_latency(path, x, backend="ort", threads=spec.threads, repeats=spec.repeats,
                           min_seconds=_MIN_TIMED_S).median_ms  # fmt: skip


def _interleaved_latency(report: Report, files: dict[str, Path], ctx: Context,
                         rounds: int = 3) -> None:  # fmt: skip
    """Re-time every row's ONNX file round-robin (median of the rounds), so drift of the
    machine hits all rows alike instead of whichever stage ran then; the ratios use these."""
    spec = ctx.recipe.report
    sizes = _batch_sizes(ctx)
    log.info("timing the %d models again, interleaved (%d rounds)", len(report.rows), rounds)
    ms = round_robin_latency({row.stage: files[row.stage] for row in report.rows},
                             [ctx.example_batch(bs) for bs in sizes], rounds=rounds,
                             repeats=spec.repeats, threads=spec.threads,
                             min_seconds=_MIN_TIMED_S)  # fmt: skip
    for row in report.rows:
        row.latency_ms = {bs: round(m, 4) for bs, m in zip(sizes, ms[row.stage],
                                                            strict=True)}  # fmt: skip


def _batch_sizes(ctx: Context) -> list[int]:
    """The report's batch sizes; a detector's ONNX file takes one image (batch 1 only)."""
    sizes = list(ctx.recipe.report.batch_sizes)
    return [1] if ctx.task is Task.DETECTION else sizes


def _existing_run(out: Path) -> str | None:
    stages = out / "stages"
    if not stages.is_dir():
        return None
    names = sorted(p.name for p in stages.iterdir())
    done = sum((stages / n / "done.json").exists() for n in names)
    return f"{len(names)} stage folders, {done} finished" if names else None


def _clear_run(out: Path) -> None:
    """``overwrite``: remove the previous run's stages and reports before starting afresh."""
    shutil.rmtree(out / "stages", ignore_errors=True)
    for name in ("report.md", "report.json", "report.html", "recipe.yaml"):
        (out / name).unlink(missing_ok=True)


def _finished(folder: Path, stage: Stage, index: int) -> dict[str, Any] | None:
    done = folder / "done.json"
    if not done.exists():
        return None
    record = json.loads(done.read_text())
    if record.get("stage") != stage.to_dict():
        raise ConfigError(f"stages.{index} ({stage.name}) differs from the one that ran in "
                          f"{folder}; use another --out (or delete that folder to redo "
                          "it)")  # fmt: skip
    return record


def compress(
    recipe: Recipe | str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: tuple[str, ...] = (),
    progress: bool = True,
) -> CompressResult:
    """Run every stage of ``recipe`` in order; each checkpoints its result under ``out_dir``.

    ``resume=True`` skips finished stages (loading their results) and continues the interrupted
    one from its trainer's last checkpoint. A failing stage raises :class:`StageError` naming
    it; earlier stages' results stay on disk. The report (Markdown, JSON, HTML) is rewritten
    after every stage. ``overrides`` (``key.path=value``) apply when ``recipe`` is a file.
    ``out_dir`` is locked while the run writes there; a folder that holds a run is refused
    unless ``resume`` continues it or ``overwrite`` deletes it first.

    Example:
        Not run with the tests: the demo recipe trains on Fashion-MNIST for about 10 minutes
        (tests/pipeline runs tiny recipes through ``compress``).

        >>> res = compress("recipes/demo.yaml", "runs/demo")  # doctest: +SKIP
        >>> print(res.report)  # doctest: +SKIP
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    out = Path(out_dir)
    with claim_run_folder(out, existing=lambda: _existing_run(out), resume=resume,
                          overwrite=overwrite):  # fmt: skip
        if overwrite and not resume:
            _clear_run(out)
        return _run(recipe, out, resume, progress)


def _run(recipe: Recipe, out: Path, resume: bool, progress: bool) -> CompressResult:
    atomic_write_text(recipe.to_yaml(), out / "recipe.yaml")
    ctx = Context(recipe, resume=resume, progress=progress, out_dir=out)
    report = Report(recipe.description or "torchslim compression report", recipe.baseline_name,
                    metric=METRIC_NAMES[recipe.data.task])  # fmt: skip
    files: dict[str, Path] = {}  # stage -> the ONNX file its row measured
    for i, stage in enumerate(recipe.stages):
        kind = STAGE_TYPES[stage.type]
        folder = out / "stages" / f"{i:02d}-{stage.name}"
        files[stage.name] = folder / "model.onnx"
        record = _finished(folder, stage, i) if resume else None
        if record is not None and not kind.makes_model and Path(record["file"]).exists():
            report.artifacts[stage.name] = record["file"]
            continue
        if record is not None and kind.makes_model:
            ctx.models[stage.name] = _finished_model(ctx, stage, i, folder)
            report.rows.extend(rows_from_json([record["row"]]))
            ctx.previous = stage.name
            continue
        log.info("stage %d/%d %s (%s)", i + 1, len(recipe.stages), stage.name, stage.type)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            t0 = time.perf_counter()
            model, extra = kind.run(ctx, stage, stage_input(ctx, stage, ctx.previous), folder)
            seconds = time.perf_counter() - t0
            if not kind.makes_model:
                report.artifacts[stage.name] = extra["file"]
                atomic_write_text(json.dumps({"stage": stage.to_dict(), **extra}),
                                  folder / "done.json")  # fmt: skip
                continue
            save_stage_model(model, folder, ctx.tokenizer if ctx.text is not None else None)
            row = _measure(ctx, stage, model, folder, seconds, extra)
        except TorchslimError as exc:
            raise StageError(f"stage {i} ({stage.name}, {stage.type}) failed: {exc}") from exc
        except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
            raise StageError(f"stage {i} ({stage.name}, {stage.type}) failed: "
                             f"{type(exc).__name__}: {exc}; earlier results are in "
                             f"{out / 'stages'}") from exc  # fmt: skip
        ctx.models[stage.name] = model
        report.rows.append(row)
        atomic_write_text(json.dumps({"stage": stage.to_dict(), "row": asdict(row)}, indent=2),
                          folder / "done.json")  # fmt: skip
        report.write(out, html_page=recipe.report.html)
        log.info("stage %s: %s", stage.name, _summary(row, report.metric))
        ctx.previous = stage.name
    if recipe.report.latency and len(report.rows) > 1:
        _interleaved_latency(report, files, ctx)
    report.write(out, html_page=recipe.report.html)
    return CompressResult(out, report, {k: v for k, v in ctx.models.items() if k != INITIAL})


def _finished_model(ctx: Context, stage: Stage, index: int, folder: Path) -> nn.Module:
    """A finished stage's model on ``--resume``: loaded from its file, or (quantized models,
    which are not stored as files) recomputed from its input; the trainer of a QAT stage
    resumes from its finished checkpoint, so no training is repeated."""
    total, model_file = len(ctx.recipe.stages), stage_model_file(folder)
    if model_file is not None:
        log.info("stage %d/%d %s: finished earlier, loading %s", index + 1, total, stage.name,
                 model_file)  # fmt: skip
        return load_model_file(model_file)
    log.info("stage %d/%d %s: finished earlier, recomputing its quantized model from its input",
             index + 1, total, stage.name)  # fmt: skip
    try:
        kind = STAGE_TYPES[stage.type]
        return kind.run(ctx, stage, stage_input(ctx, stage, ctx.previous), folder)[0]
    except TorchslimError as exc:
        raise StageError(
            f"stage {index} ({stage.name}): recomputing on resume failed: {exc}"
        ) from exc


def _summary(row: StageRow, metric: str = "top-1") -> str:
    acc = metric_text(row.top1, metric)
    if row.fidelity:
        acc += f", top-10 overlap {100 * row.fidelity['ort_top10_overlap']:.1f}%"
    return (f"{metric} {acc}, {row.params:,} params, {row.macs:,} MACs, "
            f"{row.onnx_bytes:,} bytes ONNX")  # fmt: skip
