"""Recipes that chain train / distill / prune / sparsify / quantize / QAT / export stages.

Example:
    >>> from torchslim.pipeline import parse_recipe
    >>> r = parse_recipe({"model": {"name": "resnet8"}, "stages": [{"type": "evaluate"}]})
    >>> r.stages[0].name
    'evaluate'
"""

from torchslim.pipeline.recipe import (
    DataSpec,
    ModelSpec,
    Recipe,
    ReportSpec,
    Stage,
    apply_overrides,
    load_recipe,
    parse_recipe,
)
from torchslim.pipeline.report import Report, StageRow
from torchslim.pipeline.runner import CompressResult, StageError, compress
from torchslim.pipeline.stages import load_model_file, load_run

__all__ = [
    "CompressResult",
    "DataSpec",
    "ModelSpec",
    "Recipe",
    "Report",
    "ReportSpec",
    "Stage",
    "StageError",
    "StageRow",
    "apply_overrides",
    "compress",
    "load_model_file",
    "load_recipe",
    "load_run",
    "parse_recipe",
]
