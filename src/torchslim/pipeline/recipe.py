"""Recipes: a model, a dataset and a list of stages, as dataclasses; YAML is their serialisation.

A stage's YAML mapping holds its ``type``, its own keys (``name``, ``input``, ...) and, flattened
beside them, the fields of its method's config (``ratio`` of :class:`~torchslim.PruneConfig`,
``weight_bits`` of :class:`~torchslim.QuantConfig`...), so ``--set stages.2.ratio=0.4`` reads
the way the YAML does. Every error names the key path, e.g. ``stages.2.ratoi: unknown key (did
you mean 'ratio'?)``, and all the problems of a recipe are reported together, one per line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from torchslim.config import Problems, did_you_mean, from_dict, parse_yaml, to_dict, with_source
from torchslim.data.text import CORPORA
from torchslim.errors import ConfigError
from torchslim.models.hf import hf_source, is_hf_name, looks_local
from torchslim.pipeline.spec import INITIAL, DataSpec, ModelSpec, ReportSpec, Stage
from torchslim.pipeline.stages import STAGE_TYPES
from torchslim.pipeline.text import TEXT_PREFIX, is_text_name
from torchslim.prune.sensitivity import SensitivityConfig
from torchslim.train.config import TrainConfig

# Stage keys whose values are dataclasses of their own.
_NESTED = {"model": ModelSpec, "train": TrainConfig, "finetune": TrainConfig,
                "sensitivity": SensitivityConfig}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """A whole compression run. Build it with :func:`load_recipe` / :func:`parse_recipe`.

    ``baseline`` names the stage whose result the report compares every other row with
    (default: the first stage that yields a model).

    Example:
        >>> r = parse_recipe({"model": {"name": "resnet8"}, "stages": [
        ...     {"type": "train", "train": {"epochs": 1}},
        ...     {"type": "prune", "ratio": 0.5}]})
        >>> [s.name for s in r.stages], r.stages[1].config.ratio
        (['train', 'prune'], 0.5)
    """

    model: ModelSpec = field(
        metadata={"missing": "give model: {name: resnet20}, or model: {checkpoint: RUN_FOLDER}"}
    )
    stages: tuple[Stage, ...]
    data: DataSpec = field(default_factory=DataSpec)
    baseline: str | None = None
    report: ReportSpec = field(default_factory=ReportSpec)
    description: str = ""  # the report's title

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def baseline_name(self) -> str | None:
        if self.baseline is not None:
            return self.baseline
        return next((s.name for s in self.stages if STAGE_TYPES[s.type].makes_model), None)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "description": self.description,
            "model": to_dict(self.model),
            "data": to_dict(self.data),
            "baseline": self.baseline,
            "report": to_dict(self.report),
            "stages": [s.to_dict() for s in self.stages],
        }
        return {k: v for k, v in out.items() if v not in (None, "")}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _parse_stage(raw: Any, index: int, names: set[str]) -> Stage:
    """One stage from its YAML mapping; every problem of it is reported in one error.

    ``names`` holds the names of the earlier stages; this stage's name is added to it even when
    the stage has other problems, so later stages are checked against the names the user meant.
    """
    where = f"stages.{index}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with a type, got {raw!r}")
    kind_name = raw.get("type")
    if kind_name is None:
        raise ConfigError(f"{where}.type: missing (one of {', '.join(STAGE_TYPES)})")
    if kind_name not in STAGE_TYPES:
        hint = did_you_mean(str(kind_name), STAGE_TYPES)
        raise ConfigError(f"{where}.type: {kind_name!r} is not one of {list(STAGE_TYPES)}{hint}")
    kind = STAGE_TYPES[kind_name]
    own = {"type", "name", "input", *kind.keys}
    method_fields = (
        {f.name for f in dataclasses.fields(kind.config) if f.init} if kind.config else set()
    )
    problems = Problems()
    stage_args: dict[str, Any] = {}
    method_args: dict[str, Any] = {}
    for key, value in raw.items():
        if key in own:
            stage_args[key] = value
        elif key in method_fields:
            method_args[key] = value
        else:
            hint = did_you_mean(str(key), own | method_fields)
            problems.add(f"{where}.{key}: unknown key for a {kind_name} stage{hint}")
    name = stage_args.get("name", kind_name)
    if not isinstance(name, str) or not name or "/" in name or name == INITIAL:
        problems.add(f"{where}.name: expected a plain name other than '{INITIAL}'")
    elif name in names and "name" in stage_args:
        problems.add(f"{where}.name: {name!r} is already the name of an earlier stage")
    elif name in names:
        name = f"{name}-{index}"
    names.add(name)
    stage_args["name"] = name
    for key, value in list(stage_args.items()):
        path = f"{where}.{key}"
        if key in _NESTED and value is not None:
            with problems.collect():
                stage_args[key] = from_dict(_NESTED[key], value, path)
        elif key in ("calib", "reconstruct") and (isinstance(value, bool)
                                                  or not isinstance(value, int)):  # fmt: skip
            problems.add(f"{path}: expected an integer, got {value!r}")
        elif key == "teacher" and isinstance(value, list) and value:
            if not all(isinstance(v, str) for v in value):
                problems.add(f"{path}: expected stage names or files, got {value!r}")
            stage_args[key] = tuple(value)
        elif key in ("input", "teacher", "path") and not isinstance(value, str):
            problems.add(f"{path}: expected a string, got {value!r}")
    if kind.config is not None:
        with problems.collect():
            stage_args["config"] = from_dict(kind.config, method_args, where)
    config = stage_args.get("config")
    if "sensitivity" in stage_args and config is not None and config.target_macs is None:
        problems.add(f"{where}.sensitivity: needs target_macs (the MACs to keep)")
    if kind_name == "distill" and "teacher" not in stage_args:
        problems.add(f"{where}.teacher: a distill stage needs a teacher (stage or file)")
    problems.raise_if_any(where)
    try:
        return Stage(**stage_args)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_references(recipe: Recipe, base_dir: Path, problems: Problems) -> None:
    known = {INITIAL}
    for i, stage in enumerate(recipe.stages):
        if stage.input is not None and stage.input not in known:
            hint = did_you_mean(stage.input, known)
            problems.add(f"stages.{i}.input: no earlier stage named {stage.input!r}{hint}")
        for teacher in stage.teachers:
            if teacher not in known and not (base_dir / teacher).exists():
                hint = did_you_mean(teacher, known)
                problems.add(f"stages.{i}.teacher: {teacher!r} is neither an earlier stage nor "
                             f"an existing file{hint}")  # fmt: skip
        if stage.model is not None and stage.model.checkpoint is not None:
            _check_path(stage.model.checkpoint, base_dir, f"stages.{i}.model.checkpoint", problems)
        if STAGE_TYPES[stage.type].makes_model:
            known.add(stage.name)
    if recipe.baseline is not None and recipe.baseline not in known - {INITIAL}:
        hint = did_you_mean(recipe.baseline, known)
        problems.add(f"baseline: no stage named {recipe.baseline!r}{hint}")
    _check_inputs(recipe, base_dir, problems)
    _check_text_stages(recipe, problems)


# What a text recipe cannot do: its sentences have no labels (nothing to train or fine-tune
# on) and the search / sensitivity analyses score classifiers.
_TEXT_TYPES_REFUSED = ("train", "qat", "search")


def _check_text_stages(recipe: Recipe, problems: Problems) -> None:
    text = is_text_name(recipe.data.name)
    if not text:
        for where, spec in _model_specs(recipe):
            if is_hf_name(spec.name):
                problems.add(f"{where}.name: {spec.name} is a Hugging Face model, which goes "
                             "with text data (data: {name: text:python-docs}), not "
                             f"{recipe.data.name}")  # fmt: skip
        return
    why = "text has no labels; a text recipe trains by distillation (a distill stage)"
    for i, stage in enumerate(recipe.stages):
        where = f"stages.{i}"
        if stage.type in _TEXT_TYPES_REFUSED:
            problems.add(f"{where}.type: a {stage.type} stage does not take text data ({why})")
        for key in ("finetune", "sensitivity"):
            if getattr(stage, key, None) is not None:
                problems.add(f"{where}.{key}: not with text data ({why})")
        if stage.type == "distill" and stage.config.finetune is not None:
            problems.add(f"{where}.finetune: not with text data ({why})")


def _model_specs(recipe: Recipe) -> list[tuple[str, ModelSpec]]:
    specs = [("model", recipe.model)]
    specs += [(f"stages.{i}.model", s.model) for i, s in enumerate(recipe.stages) if s.model]
    return [(where, spec) for where, spec in specs if spec.name is not None]


def _check_inputs(recipe: Recipe, base_dir: Path, problems: Problems) -> None:
    """The recipe's starting checkpoint, a local hf: folder, the data folder and text files
    exist (stages aside)."""
    if recipe.model.checkpoint is not None:
        _check_path(recipe.model.checkpoint, base_dir, "model.checkpoint", problems)
    if is_hf_name(recipe.model.name):
        source = hf_source(recipe.model.name)  # type: ignore[arg-type]
        if looks_local(source) and not (base_dir / source).exists():
            problems.add(f"model.name: {recipe.model.name}: no folder {source}")
    data = recipe.data.name
    if is_text_name(data):
        corpus = data[len(TEXT_PREFIX) :]
        if corpus not in CORPORA and not (base_dir / corpus).is_file():
            problems.add(f"data.name: {data}: neither an embedded corpus "
                         f"({', '.join(sorted(CORPORA))}) nor a text file")  # fmt: skip
        if recipe.data.train_text is not None:
            _check_path(recipe.data.train_text, base_dir, "data.train_text", problems)
        return
    folder = data.split(":", 1)[1] if data.startswith("imagefolder:") else None
    if folder is None and (os.sep in data or data.startswith(".")):
        folder = data
    if folder is not None:
        _check_path(folder, base_dir, "data.name", problems)


def _check_path(path: str, base_dir: Path, where: str, problems: Problems) -> None:
    if not (base_dir / path).exists():
        problems.add(f"{where}: {path} does not exist")


def parse_recipe(raw: Any, base_dir: str | Path = ".") -> Recipe:
    """Build a :class:`Recipe` from plain data (what ``yaml.safe_load`` returns).

    Relative paths (checkpoints, data folders, teacher files) are relative to ``base_dir``, the
    working directory the run starts in. Every problem of the recipe (unknown keys, bad values,
    in any section or stage) is reported in one :class:`~torchslim.errors.ConfigError`, one line
    each; references between stages are checked once the stages themselves are valid.

    Example:
        >>> r = parse_recipe({"model": {"name": "resnet8"},
        ...                   "stages": [{"type": "quantize", "weight_bits": 4}]})
        >>> r.stages[0].config.weight_bits, r.stages[0].calib
        (4, 512)
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a recipe is a mapping with a stages list, got {type(raw).__name__}")
    problems = Problems()
    allowed = {f.name for f in dataclasses.fields(Recipe)}
    for key in raw:
        if key not in allowed:
            problems.add(f"{key}: unknown key{did_you_mean(str(key), allowed)}")
    rest = {k: v for k, v in raw.items() if k in allowed and k != "stages"}
    recipe = None
    with problems.collect():
        recipe = from_dict(Recipe, {**rest, "stages": ()})
    stages_raw = raw.get("stages")
    stages: list[Stage] = []
    stages_ok = False
    if not isinstance(stages_raw, Sequence) or isinstance(stages_raw, str) or not stages_raw:
        problems.add("stages: expected a non-empty list of stages")
    else:
        names: set[str] = set()
        for i, s in enumerate(stages_raw):
            with problems.collect():
                stages.append(_parse_stage(s, i, names))
        stages_ok = len(stages) == len(stages_raw)
    if recipe is not None:
        recipe = dataclasses.replace(recipe, stages=tuple(stages))
        if stages_ok:
            _check_references(recipe, Path(base_dir), problems)
        else:  # references to a stage that failed to parse would only add noise
            _check_inputs(recipe, Path(base_dir), problems)
    problems.raise_if_any("the recipe")
    assert recipe is not None  # no problems: from_dict returned
    return recipe


def apply_overrides(raw: Any, overrides: Sequence[str]) -> Any:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to plain recipe data; list
    items are picked by index or by their ``name`` (``stages.pruned.target_macs=0.4``).

    Example:
        >>> apply_overrides({"stages": [{"type": "prune", "ratio": 0.5}]}, ["stages.0.ratio=0.4"])
        {'stages': [{'type': 'prune', 'ratio': 0.4}]}
    """
    for text in overrides:
        path, sep, value_text = text.partition("=")
        if not sep or not path:
            raise ConfigError(f"--set {text!r}: expected key.path=value")
        keys = path.split(".")
        node = raw
        for depth, key in enumerate(keys[:-1]):
            node = _child(node, key, ".".join(keys[: depth + 1]))
        last = keys[-1]
        value = parse_yaml(value_text, f"--set {path}")
        if isinstance(node, list):
            node[_index(node, last, path)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {path}: {'.'.join(keys[:-1])} is not a mapping or list")
    return raw


def _index(node: list, key: str, where: str) -> int:
    """A list position: an integer, or the ``name`` of a stage (``stages.pruned.ratio``)."""
    names = [item.get("name") if isinstance(item, dict) else None for item in node]
    if key in names:
        return names.index(key)
    if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
        hint = did_you_mean(key, [n for n in names if isinstance(n, str)])
        raise ConfigError(f"--set {where}: {key!r} is neither an index of the {len(node)}-item "
                          f"list nor the name of one of its items{hint}")  # fmt: skip
    return int(key)


def _child(node: Any, key: str, where: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, where)]
    if isinstance(node, dict):
        if key not in node:
            node[key] = {}
        return node[key]
    raise ConfigError(f"--set {where}: not a mapping or list")


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe YAML file (``yaml.safe_load``), apply ``--set`` overrides and check it.

    Errors name the file and the key path: ``recipe.yaml: stages.2.ratoi: unknown key (did you
    mean 'ratio'?)``; several problems read ``3 problems in recipe.yaml:`` and one per line.

    Example:
        >>> from torchslim.pipeline.demo import demo_path
        >>> r = load_recipe(demo_path(), ["data.subset=1000"])
        >>> r.data.subset, [s.name for s in r.stages][:2]
        (1000, ['baseline', 'teacher'])
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file")
    raw = parse_yaml(path.read_text(), str(path))
    try:
        return parse_recipe(apply_overrides(raw, overrides))
    except ConfigError as exc:
        raise with_source(exc, str(path)) from None
