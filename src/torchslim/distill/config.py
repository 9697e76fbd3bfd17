"""Typed configs of distillation: which losses on which layers, teachers, training phases."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from torchslim.config import check_fields, from_dict
from torchslim.distill.losses import LOSSES, loss_options
from torchslim.errors import ConfigError
from torchslim.train.config import TrainConfig

# Short option names accepted on the command line (``kd:T=4``).
_ALIASES = {"T": "temperature"}


@dataclass(frozen=True)
class LossSpec:
    """One distillation term.

    ``type`` names a registered loss (kd, l2_logit, fitnet, at, fsp, rkd, sp); ``student`` and
    ``teacher`` are module names (``"output"`` = logits; the teacher's default to the
    student's); ``teacher_index`` picks the teacher a feature or relation loss reads (response
    losses read every teacher); ``options`` go to the loss class (``temperature``, ``alpha``...)
    and are checked against its parameters and converted to their types.

    Example:
        >>> LossSpec("fitnet", student=("layer2",), weight=0.5).teacher_layers
        ('layer2',)
    """

    type: str = "kd"
    weight: float = 1.0  # the loss's weight in the sum
    student: tuple[str, ...] = ()
    teacher: tuple[str, ...] = ()
    teacher_index: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("student", "teacher"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else value)
        check_fields(self)
        if self.type in LOSSES:  # an unknown type is reported when the loss is built
            object.__setattr__(self, "options", loss_options(self.type, self.options))
        if self.weight < 0:
            raise ConfigError(f"{self.type}: weight must be >= 0, got {self.weight}")
        if self.teacher and len(self.teacher) != len(self.student):
            raise ConfigError(
                f"{self.type}: {len(self.student)} student layers but {len(self.teacher)} "
                "teacher layers; list them in matching pairs"
            )

    @property
    def teacher_layers(self) -> tuple[str, ...]:
        return self.teacher or self.student

    @classmethod
    def parse(cls, text: str) -> LossSpec:
        """Parse the command-line form ``TYPE[:key=value,...]``; ``student``/``teacher`` take
        ``+``-separated names, ``T`` is short for temperature, other keys are loss options.

        Example:
            >>> LossSpec.parse("kd:T=4,alpha=0.9").options
            {'temperature': 4.0, 'alpha': 0.9}
            >>> LossSpec.parse("fsp:student=stem+layer1,weight=0.1").student
            ('stem', 'layer1')
        """
        name, _, rest = text.partition(":")
        spec: dict[str, Any] = {"type": name.strip()}
        options: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, raw = item.partition("=")
            if not eq:
                raise ConfigError(f"--loss {text!r}: expected key=value, got {item!r}")
            key = _ALIASES.get(key.strip(), key.strip())
            if key in ("student", "teacher"):
                spec[key] = tuple(raw.split("+"))
            elif key in ("weight", "teacher_index"):
                spec[key] = _literal(raw)
            else:
                options[key] = _literal(raw)
        return from_dict(cls, {**spec, "options": options}, "loss")


def _literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        return raw.strip()


@dataclass(frozen=True)
class DistillConfig:
    """Everything :func:`torchslim.distill` does, as data.

    ``hard_label_weight`` multiplies the student's cross-entropy on the labels (default:
    ``1 - alpha`` of a ``kd`` loss, else 1). ``teacher_weights`` weight several teachers'
    soft targets (default: equal). ``cache_teacher`` runs the teachers once over the training
    data and reuses their outputs every epoch (exact for deterministic data; with random
    augmentation the cached view is the first one drawn). ``finetune`` adds the two-phase
    recipe's second phase: training on hard labels only.

    Example:
        >>> cfg = from_dict(DistillConfig, {"losses": [{"type": "kd"}], "train": {"epochs": 2}})
        >>> cfg.losses[0].type, cfg.train.epochs
        ('kd', 2)
    """

    losses: tuple[LossSpec, ...] = (LossSpec(),)
    hard_label_weight: float | None = None
    teacher_weights: tuple[float, ...] = ()
    cache_teacher: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.losses:
            raise ConfigError("losses: give at least one distillation loss, e.g. [{type: kd}]")
        if self.hard_label_weight is not None and self.hard_label_weight < 0:
            raise ConfigError(f"hard_label_weight: must be >= 0, got {self.hard_label_weight}")
        if any(w < 0 for w in self.teacher_weights) or (
            self.teacher_weights and sum(self.teacher_weights) <= 0
        ):
            raise ConfigError(
                f"teacher_weights: must be >= 0 and not all 0, got {list(self.teacher_weights)}"
            )
        if self.cache_teacher and (self.train.mixup_alpha or self.train.cutmix_alpha):
            raise ConfigError(
                "cache_teacher: cached teacher outputs belong to unmixed images; turn off "
                "mixup/cutmix or the cache"
            )


@dataclass(frozen=True)
class MutualConfig:
    """Deep mutual learning (Zhang et al. 2018): every network learns from the labels and from
    the others' softened predictions; ``kl_weight`` scales the mimicry terms.

    Example:
        >>> MutualConfig(temperature=1.0).kl_weight
        1.0
    """

    temperature: float = 1.0
    kl_weight: float = 1.0
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.temperature <= 0:
            raise ConfigError(f"temperature: must be > 0, got {self.temperature}")
        if self.kl_weight < 0:
            raise ConfigError(f"kl_weight: must be >= 0, got {self.kl_weight}")
