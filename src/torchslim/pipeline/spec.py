"""The data of a recipe: its model, dataset, report settings and stages (plain dataclasses;
:mod:`torchslim.pipeline.recipe` reads and checks them, :mod:`torchslim.pipeline.stages` runs
them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torchslim.config import check_fields, to_dict
from torchslim.data.coco import is_coco_name
from torchslim.errors import ConfigError
from torchslim.prune.sensitivity import SensitivityConfig
from torchslim.train.config import Task, TrainConfig

INITIAL = "model"  # the stage name that refers to the recipe's starting model


@dataclass(frozen=True)
class ModelSpec:
    """The model a recipe (or a train/distill stage) starts from.

    ``name`` is a zoo or torchvision name built fresh with ``args``, or ``hf:PATH_OR_NAME``: a
    Hugging Face model (``AutoModel.from_pretrained`` of a folder or Hub name, ``args`` passed
    on) and its tokenizer; ``checkpoint`` loads a ``torchslim train`` run folder, its
    ``last.pt``, a ``ts.save`` file or a ``save_pretrained`` folder instead.
    """

    name: str | None = None
    args: dict[str, Any] = field(default_factory=dict)  # constructor arguments, e.g. width_mult
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if (self.name is None) == (self.checkpoint is None):
            raise ConfigError("give exactly one of name (a fresh model) or checkpoint (a file)")


@dataclass(frozen=True)
class DataSpec:
    """The dataset every stage trains, calibrates and evaluates on.

    ``name``: fashion-mnist (embedded), mnist, cifar10, or ``imagefolder:PATH`` for
    classification; ``fashion-coco`` (generated offline from Fashion-MNIST) or ``coco:PATH``
    (``train/`` and ``val/``, each ``images/`` + ``instances.json``) for detection and
    segmentation; ``subset``/``test_subset``: stratified training subset / first test images
    (0: all). ``text:python-docs`` (1,000 embedded sentences) or ``text:FILE`` (one sentence
    per line) is unlabelled text for an ``hf:`` sentence encoder (task ``unlabelled``, set
    for it): its first 80% train, its last 20% evaluate, or ``train_text: FILE`` trains and
    the whole corpus evaluates; ``subset``/``test_subset`` count sentences; ``seq`` tokens
    per sentence (see :mod:`torchslim.pipeline.text`).
    """

    name: str = "fashion-mnist"
    # classification, detection / segmentation on a COCO-format set, or unlabelled (text)
    task: Task = Task.CLASSIFICATION
    root: str | None = None  # where it lives (default: $TORCHSLIM_DATA, ~/.cache/torchslim)
    subset: int = 0
    test_subset: int = 0
    augment: tuple[str, ...] | None = None  # training augmentations (None: per dataset)
    seed: int = 0  # seed of the subsets, calibration images and fresh models' weights
    # text: tokens per sentence (longer ones are cut); evaluation, calibration, the export
    # and latency pad every sentence to it, training batches to their longest sentence
    seq: int = 128
    # text: a file of training sentences, one per line (default: the corpus's first 80%)
    train_text: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        text = self.name.startswith("text:")
        if text and self.task is Task.CLASSIFICATION:  # the default: text has no labels
            object.__setattr__(self, "task", Task.UNLABELLED)
        if text:
            fits = self.task is Task.UNLABELLED
        elif is_coco_name(self.name):
            fits = self.task in (Task.DETECTION, Task.SEGMENTATION)
        else:
            fits = self.task is Task.CLASSIFICATION
        if not fits:
            raise ConfigError(
                f"task: {self.task.value} does not go with data {self.name!r}: classification "
                "takes fashion-mnist, mnist, cifar10 or imagefolder:PATH; detection and "
                "segmentation take fashion-coco or coco:PATH; unlabelled takes text:NAME"
            )
        for key in ("subset", "test_subset"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: a number of {'sentences' if text else 'images'} "
                                  f"(0: all), got {getattr(self, key)}")  # fmt: skip
        if self.seq < 2:
            raise ConfigError(f"seq: tokens per sentence, at least 2, got {self.seq}")
        if not text and self.train_text is not None:
            raise ConfigError("train_text: goes with text data (name: text:NAME) only")
        if text and self.augment:
            raise ConfigError("augment: text data has no augmentations; leave it out")


@dataclass(frozen=True)
class ReportSpec:
    """What the report measures for every stage's model: ONNX Runtime latency at each batch
    size with ``threads`` intra-op threads, the median of ``repeats`` runs (more when they take
    under half a second in all), and whether to draw the HTML page."""

    latency: bool = True  # measure ONNX Runtime latency
    batch_sizes: tuple[int, ...] = (1, 32)  # the batch sizes latency is measured at
    threads: int = 2
    repeats: int = 20
    html: bool = True  # also write report.html with its plots

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch_sizes: positive sizes, got {list(self.batch_sizes)}")
        if self.threads < 1 or self.repeats < 1:
            raise ConfigError(f"threads, repeats: must be >= 1, got {self.threads}, "
                              f"{self.repeats}")  # fmt: skip


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: ``model -> model`` (export writes a file, evaluate only measures).

    ``input`` names the stage whose result this one starts from (default: the previous stage;
    ``model`` is the recipe's starting model). ``model`` (train, distill) starts from a fresh
    model instead; ``teacher`` (distill) is a stage name or a checkpoint path, or a list of them
    (several teachers, weighed by the config's ``teacher_weights``); ``train`` is the
    training of train/qat stages, ``finetune`` the optional fine-tune after prune/sparsify;
    ``calib`` the calibration images of quantize/qat; ``path`` the file of an export stage;
    ``sensitivity`` (prune, with ``target_macs``) derives per-layer ratios from a sensitivity
    analysis on held-out training data instead of one uniform ratio; ``reconstruct`` (prune)
    refits, after pruning, the Linears that lost input channels by least squares on that
    many training samples (images or sentences; ``torchslim.prune.reconstruct``; 0: none).
    ``config`` holds the method's config (its fields sit beside these keys in YAML).
    """

    type: str
    name: str
    input: str | None = None
    model: ModelSpec | None = None
    teacher: str | tuple[str, ...] | None = None
    train: TrainConfig | None = None
    finetune: TrainConfig | None = None
    calib: int = 512
    path: str | None = None
    sensitivity: SensitivityConfig | None = None
    reconstruct: int = 0
    config: Any = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.calib < 1:
            raise ConfigError(f"calib: a number of calibration images, got {self.calib}")
        if self.reconstruct < 0:
            raise ConfigError(f"reconstruct: a number of training samples (0: none), got "
                              f"{self.reconstruct}")  # fmt: skip

    @property
    def teachers(self) -> tuple[str, ...]:
        """The distill stage's teachers, one or several."""
        if self.teacher is None:
            return ()
        return (self.teacher,) if isinstance(self.teacher, str) else tuple(self.teacher)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: stage keys plus the method config's fields, defaults left out."""
        from torchslim.pipeline.stages import STAGE_TYPES  # the registry runs Stages: no cycle

        kind = STAGE_TYPES[self.type]
        out: dict[str, Any] = {"type": self.type, "name": self.name}
        for key in sorted(kind.keys):
            value = getattr(self, key)
            default = _STAGE_DEFAULTS[key]
            if isinstance(value, tuple):
                value = list(value)
            if value is not None and value != default:
                out[key] = to_dict(value) if dataclasses.is_dataclass(value) else value
        if self.input is not None:
            out["input"] = self.input
        if kind.config is not None and self.config is not None:
            defaults = to_dict(kind.config())
            out.update({k: v for k, v in to_dict(self.config).items() if defaults.get(k) != v})
        return out


_STAGE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Stage)}
