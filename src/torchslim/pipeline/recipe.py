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
from torchslim.distill.config import DistillConfig
from torchslim.errors import ConfigError
from torchslim.prune.pruner import PruneConfig
from torchslim.prune.sensitivity import SensitivityConfig
from torchslim.prune.sparsity import SparsityConfig
from torchslim.quant.config import QuantConfig
from torchslim.quant.qat import QATConfig
from torchslim.train.config import TrainConfig

INITIAL = "model"  # the stage name that refers to the recipe's starting model


@dataclass(frozen=True)
class ModelSpec:
    """The model a recipe (or a train/distill stage) starts from.

    ``name`` is a zoo or torchvision name built fresh with ``args``; ``checkpoint`` loads a
    ``torchslim train`` run folder, its ``last.pt``, or a ``ts.save`` file instead.
    """

    name: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.checkpoint is None):
            raise ConfigError("give exactly one of name (a fresh model) or checkpoint (a file)")


@dataclass(frozen=True)
class DataSpec:
    """The dataset every stage trains, calibrates and evaluates on.

    ``name``: fashion-mnist (embedded), mnist, cifar10, or ``imagefolder:PATH``;
    ``subset``/``test_subset``: stratified training subset / first test images (0: all).
    """

    name: str = "fashion-mnist"
    root: str | None = None
    subset: int = 0
    test_subset: int = 0
    augment: tuple[str, ...] | None = None
    seed: int = 0


@dataclass(frozen=True)
class ReportSpec:
    """What the report measures for every stage's model: ONNX Runtime latency at each batch
    size with ``threads`` intra-op threads, the median of ``repeats`` runs (more when they take
    under half a second in all), and whether to draw the HTML page."""

    latency: bool = True
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int = 2
    repeats: int = 20
    html: bool = True


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: ``model -> model`` (export writes a file, evaluate only measures).

    ``input`` names the stage whose result this one starts from (default: the previous stage;
    ``model`` is the recipe's starting model). ``model`` (train, distill) starts from a fresh
    model instead; ``teacher`` (distill) is a stage name or a checkpoint path; ``train`` is the
    training of train/qat stages, ``finetune`` the optional fine-tune after prune/sparsify;
    ``calib`` the calibration images of quantize/qat; ``path`` the file of an export stage;
    ``sensitivity`` (prune, with ``target_macs``) derives per-layer ratios from a sensitivity
    analysis on the test data instead of one uniform ratio.
    ``config`` holds the method's config (its fields sit beside these keys in YAML).
    """

    type: str
    name: str
    input: str | None = None
    model: ModelSpec | None = None
    teacher: str | None = None
    train: TrainConfig | None = None
    finetune: TrainConfig | None = None
    calib: int = 512
    path: str | None = None
    sensitivity: SensitivityConfig | None = None
    config: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: stage keys plus the method config's fields, defaults left out."""
        kind = KINDS[self.type]
        out: dict[str, Any] = {"type": self.type, "name": self.name}
        for key in sorted(kind.keys):
            value = getattr(self, key)
            default = _STAGE_DEFAULTS[key]
            if value is not None and value != default:
                out[key] = to_dict(value) if dataclasses.is_dataclass(value) else value
        if self.input is not None:
            out["input"] = self.input
        if kind.config is not None and self.config is not None:
            defaults = to_dict(kind.config())
            out.update({k: v for k, v in to_dict(self.config).items() if defaults.get(k) != v})
        return out


@dataclass(frozen=True)
class _Kind:
    keys: frozenset[str]  # stage keys besides type/name/input
    config: type | None = None  # method config whose fields are flattened into the stage


KINDS: dict[str, _Kind] = {
    "train": _Kind(frozenset({"model", "train"})),
    "distill": _Kind(frozenset({"model", "teacher"}), DistillConfig),
    "prune": _Kind(frozenset({"finetune", "sensitivity"}), PruneConfig),
    "sparsify": _Kind(frozenset({"finetune"}), SparsityConfig),
    "quantize": _Kind(frozenset({"calib"}), QuantConfig),
    "qat": _Kind(frozenset({"calib", "train"}), QATConfig),
    "export": _Kind(frozenset({"path"})),
    "evaluate": _Kind(frozenset()),
}
_STAGE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Stage)}
_STAGE_TYPES = {"model": ModelSpec, "train": TrainConfig, "finetune": TrainConfig,
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
    description: str = ""

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def baseline_name(self) -> str | None:
        if self.baseline is not None:
            return self.baseline
        return next((s.name for s in self.stages if s.type != "export"), None)

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
        raise ConfigError(f"{where}.type: missing (one of {', '.join(KINDS)})")
    if kind_name not in KINDS:
        hint = did_you_mean(str(kind_name), KINDS)
        raise ConfigError(f"{where}.type: {kind_name!r} is not one of {list(KINDS)}{hint}")
    kind = KINDS[kind_name]
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
        if key in _STAGE_TYPES and value is not None:
            with problems.collect():
                stage_args[key] = from_dict(_STAGE_TYPES[key], value, path)
        elif key == "calib" and (isinstance(value, bool) or not isinstance(value, int)):
            problems.add(f"{path}: expected an integer, got {value!r}")
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
        teacher = stage.teacher
        if teacher is not None and teacher not in known and not (base_dir / teacher).exists():
            hint = did_you_mean(teacher, known)
            problems.add(f"stages.{i}.teacher: {teacher!r} is neither an earlier stage nor "
                         f"an existing file{hint}")  # fmt: skip
        if stage.model is not None and stage.model.checkpoint is not None:
            _check_path(stage.model.checkpoint, base_dir, f"stages.{i}.model.checkpoint", problems)
        if stage.type != "export":
            known.add(stage.name)
    if recipe.baseline is not None and recipe.baseline not in known - {INITIAL}:
        hint = did_you_mean(recipe.baseline, known)
        problems.add(f"baseline: no stage named {recipe.baseline!r}{hint}")
    _check_inputs(recipe, base_dir, problems)


def _check_inputs(recipe: Recipe, base_dir: Path, problems: Problems) -> None:
    """The recipe's starting checkpoint and data folder exist (stages aside)."""
    if recipe.model.checkpoint is not None:
        _check_path(recipe.model.checkpoint, base_dir, "model.checkpoint", problems)
    data = recipe.data.name
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
        >>> r = load_recipe("recipes/demo.yaml")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file")
    raw = parse_yaml(path.read_text(), str(path))
    try:
        return parse_recipe(apply_overrides(raw, overrides))
    except ConfigError as exc:
        raise with_source(exc, str(path)) from None
