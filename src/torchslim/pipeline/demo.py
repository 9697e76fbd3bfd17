"""``torchslim demo``: the built-in recipe and its table beside PaddleSlim's MobileNetV1 one."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from torchslim.pipeline.recipe import Recipe, load_recipe
from torchslim.pipeline.report import Report
from torchslim.tables import markdown_table

# --quick: the same stages on 5,000 training / 2,000 test images with 3 epochs instead of 4 (a
# smoke run of the whole pipeline in 2-3 minutes on 2 cores; its accuracies are far from converged)
QUICK = (
    "data.subset=5000",
    "data.test_subset=2000",
    "report.repeats=10",
    "stages.baseline.train.epochs=3",
    "stages.teacher.train.epochs=3",
    "stages.distilled.train.epochs=3",
    "stages.pruned.finetune.epochs=1",
    "stages.distilled_int8.calib=256",
    "stages.pruned_int8.calib=256",
)

# PaddleSlim's MobileNetV1 ImageNet figures (its model-zoo table): FP32 17.0 MB baseline
PADDLESLIM = {
    "distilled_int8": "17.0 MB -> 4.8 MB (3.5x) at +1.06 top-1",
    "pruned_int8": "17.0 MB -> 2.3 MB (7.4x) at -1.71 top-1 (-50% FLOPs)",
}


def demo_path() -> Path:
    """The packaged demo recipe (also at ``recipes/demo.yaml`` in the repository)."""
    return Path(str(resources.files("torchslim.pipeline") / "recipes" / "demo.yaml"))


def demo_recipe(quick: bool = False, overrides: tuple[str, ...] = ()) -> Recipe:
    """The demo recipe, with the quick settings and then ``overrides`` applied.

    Example:
        >>> demo_recipe(quick=True).data.subset
        5000
    """
    return load_recipe(demo_path(), (*(QUICK if quick else ()), *overrides))


def summary(report: Report) -> str:
    """The report's table plus the two compressed rows beside PaddleSlim's figures for the
    same recipes (a reference column: another model, dataset and framework, not a target).

    Example:
        Not run with the tests: even the quick demo trains four models (about 2 minutes of CPU).

        >>> print(summary(compress(demo_recipe(quick=True), "runs/q").report))  # doctest: +SKIP
    """
    header = ("row", "torchslim (this run)", "for reference: PaddleSlim MobileNetV1 on ImageNet")
    rows = []
    base = report.base()
    for row in report.rows:
        if row.stage not in PADDLESLIM or base is None:
            continue
        r = report.ratios(row)
        smaller, change = r.get("smaller"), r.get("top1_change")
        if smaller is None or change is None:
            continue
        ours = (f"{base.onnx_bytes / 2**20:.3f} MiB -> {row.onnx_bytes / 2**20:.3f} MiB "
                f"({smaller:.1f}x) at {change:+.2f} top-1")  # fmt: skip
        speed = ", ".join(f"b{bs} {v:.2f}x" for bs in sorted(row.latency_ms)
                          if (v := r.get(f"speedup_b{bs}")) is not None)  # fmt: skip
        rows.append((row.stage, f"{ours}; ORT speed-up {speed}", PADDLESLIM[row.stage]))
    return "\n".join([report.table(), "", *markdown_table(header, rows)])
