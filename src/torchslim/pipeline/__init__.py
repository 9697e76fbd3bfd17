"""Recipes that chain train / distill / prune / sparsify / quantize / QAT / export stages.

Example:
    >>> from torchslim.pipeline import parse_recipe
    >>> r = parse_recipe({"model": {"name": "resnet8"}, "stages": [{"type": "evaluate"}]})
    >>> r.stages[0].name
    'evaluate'
"""

from torchslim.pipeline.recipe import Recipe, apply_overrides, load_recipe, parse_recipe
from torchslim.pipeline.report import Report, StageRow
from torchslim.pipeline.runner import CompressResult, StageError, compress
from torchslim.pipeline.spec import DataSpec, ModelSpec, ReportSpec, Stage
from torchslim.pipeline.stages import STAGE_TYPES, StageType, load_model_file, load_run

__all__ = [
    "STAGE_TYPES",
    "CompressResult",
    "DataSpec",
    "ModelSpec",
    "Recipe",
    "Report",
    "ReportSpec",
    "Stage",
    "StageError",
    "StageRow",
    "StageType",
    "apply_overrides",
    "compress",
    "load_model_file",
    "load_recipe",
    "load_run",
    "parse_recipe",
]
