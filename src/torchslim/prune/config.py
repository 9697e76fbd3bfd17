"""The configs of pruning: structured pruning, sparsity, sensitivity analysis.

Frozen dataclasses, checked on construction (:func:`torchslim.config.check_fields` first, then
what the field types cannot say), with their str-valued enums. They are re-exported where they
are used: ``torchslim.prune``, ``prune.pruner``, ``prune.sparsity`` and ``prune.sensitivity``.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any, cast

from torchslim.config import check_fields, did_you_mean
from torchslim.errors import ConfigError
from torchslim.prune.importance import IMPORTANCE, get_importance
from torchslim.runtime import vector_floats
from torchslim.selection import Selection
from torchslim.train.config import TrainConfig

UNSTRUCTURED = "unstructured"
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# -- structured pruning ------------------------------------------------------------------------
def resolve_round_to(config: Any) -> None:
    """Set a frozen config's ``round_to`` of ``None`` to this machine's vector width
    (:func:`torchslim.runtime.vector_floats`); check a given one.

    Example:
        >>> PruneConfig().round_to == vector_floats(), PruneConfig(round_to=1).round_to
        (True, 1)
    """
    value = config.round_to
    if value is None:
        object.__setattr__(config, "round_to", vector_floats())
    elif value < 1:
        raise ConfigError(f"round_to: must be >= 1, got {value}")


class RatioMode(str, enum.Enum):
    """How the ratio is spread over the groups.

    ``uniform``: every group loses ``ratio`` of its channels. ``global``: each group's scores
    are divided by that group's mean score, and one threshold over these normalised scores of
    all groups removes ``ratio`` of all channels (an attention head counts as its ``head_dim``
    channels), so groups lose different fractions (each at most ``max_ratio``). With
    per-layer ``ratios`` given, ``global`` spreads them as ``uniform``.
    """

    UNIFORM = "uniform"
    GLOBAL = "global"


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how much.

    Example:
        >>> PruneConfig(ratio=0.5, importance="fpgm").ratio
        0.5
    """

    ratio: float = 0.5  # fraction of the channels of every prunable group to remove
    importance: str = "l1"  # l1, l2, fpgm, bn_gamma, taylor, random (or a registered name)
    mode: RatioMode = RatioMode.UNIFORM
    ratios: dict[str, float] = field(default_factory=dict)  # group's producer pattern -> ratio
    target_macs: float | None = None  # keep this fraction of the MACs (searches the ratio)
    # keep this fraction of the model's ONNX Runtime latency on this CPU (searches the ratio;
    # predicted from a per-layer table timed here once and cached: torchslim.latency)
    target_latency: float | None = None
    latency_batch_size: int = 1  # the batch size target_latency is measured at
    latency_threads: int | None = None  # ORT threads for target_latency (None: PyTorch's)
    # measure the pruned model whole and correct the table's prediction by what was measured,
    # pruning again, up to this many times (0: trust the table)
    verify_latency: int = 3
    # keep channel counts at multiples of this; None: the CPU's vector width in floats (16
    # with AVX-512, 8 with AVX2 or NEON; torchslim.runtime.vector_floats), where it runs fastest
    round_to: int | None = None
    ignore: tuple[str, ...] = ()  # modules to leave whole (torchslim.selection patterns)
    max_ratio: float = 0.9  # never remove more than this fraction of a group
    prune_head_dims: bool = False  # also shrink sub-channel factors (head_dim, group width)
    taylor_batches: int = 4  # batches of data= used to accumulate gradients for taylor
    seed: int = 0
    # False: an op of unknown channel behaviour freezes what it touches, and groups whose
    # pruning breaks the forward are found and kept whole; True: both raise instead.
    strict: bool = False

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0 <= self.ratio < 1:
            raise ConfigError(f"ratio: must be in [0, 1), got {self.ratio}")
        if not 0 < self.max_ratio < 1:
            raise ConfigError(f"max_ratio: must be in (0, 1), got {self.max_ratio}")
        for sel, r in self.ratios.items():
            if not 0 <= r < 1:
                raise ConfigError(f"ratios.{sel}: must be in [0, 1), got {r}")
        if self.target_macs is not None and not 0 < self.target_macs < 1:
            raise ConfigError(
                f"target_macs: a fraction of the MACs in (0, 1), got {self.target_macs}"
            )
        if self.target_latency is not None:
            if not 0 < self.target_latency < 1:
                raise ConfigError(
                    f"target_latency: a fraction of the latency in (0, 1), got "
                    f"{self.target_latency}"
                )
            if self.target_macs is not None:
                raise ConfigError("give target_macs or target_latency, not both")
        if self.verify_latency < 0:
            raise ConfigError(f"verify_latency: must be >= 0, got {self.verify_latency}")
        if self.latency_batch_size < 1:
            raise ConfigError(f"latency_batch_size: must be >= 1, got {self.latency_batch_size}")
        resolve_round_to(self)
        if self.importance not in IMPORTANCE:
            get_importance(self.importance)  # raises with a did-you-mean
        self.selection  # noqa: B018  (checks the patterns)

    @property
    def selection(self) -> Selection:
        """The modules pruning leaves whole (with everything inside them): ``ignore``."""
        return Selection(ignore=self.ignore)


@dataclass(frozen=True)
class SlimmingConfig:
    """Network slimming (Liu et al. 2017): sparse training with ``sparsity`` times the L1 norm
    of every BatchNorm γ (``sparse_train``), then removing ``ratio`` of the channels by global
    normalised |γ| (with the pruning's ``ignore``, ``max_ratio`` and ``round_to``), then the
    ``finetune``.

    Example:
        >>> cfg = SlimmingConfig(ratio=0.4, sparsity=1e-3, finetune={"epochs": 2})
        >>> cfg.prune_config.importance, cfg.prune_config.mode.value, cfg.finetune.epochs
        ('bn_gamma', 'global', 2)
    """

    ratio: float = 0.5
    sparsity: float = 1e-4  # weight of the L1 penalty on the BatchNorm scales
    ignore: tuple[str, ...] = ()
    max_ratio: float = 0.9
    round_to: int | None = None  # as in prune: None is the CPU's vector width
    sparse_train: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.sparsity < 0:
            raise ConfigError(f"sparsity: must be >= 0, got {self.sparsity}")
        self.prune_config  # noqa: B018  (checks ratio, ignore, max_ratio, round_to)

    @property
    def prune_config(self) -> PruneConfig:
        """The pruning step: ``bn_gamma`` importance in ``global`` mode."""
        return PruneConfig(ratio=self.ratio, importance="bn_gamma", mode=RatioMode.GLOBAL,
                           ignore=self.ignore, max_ratio=self.max_ratio,
                           round_to=self.round_to)  # fmt: skip


# -- sparsity ----------------------------------------------------------------------------------
class SparsityScope(str, enum.Enum):
    """Where the magnitude threshold is taken: per layer, or one threshold over all layers."""

    LAYER = "layer"
    GLOBAL = "global"


class SparsitySchedule(str, enum.Enum):
    """``oneshot``: the target at once; ``cubic``: Zhu & Gupta's gradual schedule."""

    ONESHOT = "oneshot"
    CUBIC = "cubic"


def _parse_pattern(value: str) -> str:
    text = str(value).strip().lower()
    if text == UNSTRUCTURED:
        return text
    found = re.fullmatch(r"(\d+)\s*:\s*(\d+)", text)
    if found is None or not 0 < int(found[1]) < int(found[2]):
        raise ConfigError(
            f"pattern: {value!r} is neither 'unstructured' nor 'N:M' with 0 < N < M "
            f"(e.g. '2:4'){did_you_mean(text, [UNSTRUCTURED])}"
        )
    return f"{int(found[1])}:{int(found[2])}"


@dataclass(frozen=True)
class SparsityConfig:
    """What :func:`~torchslim.prune.sparsity.sparsify` does, as data. Accepts the dataclass or
    a dict of its fields.

    ``sparsity`` is the fraction of zeros (``None``: 0.5 for unstructured, ``1 - N/M`` for N:M).
    ``pattern`` is ``"unstructured"`` or ``"N:M"`` (keep N of every M consecutive weights along
    the input dimension). ``targets`` and ``ignore`` select modules as
    :mod:`torchslim.selection` describes (qualified-name globs like ``"layer1.*"``, type names
    like ``"Conv2d"``); empty ``targets`` means every Linear and Conv1d/2d/3d. The schedule
    fields drive :class:`~torchslim.prune.sparsity.GradualSparsity` (steps are optimizer steps).

    Example:
        >>> cfg = SparsityConfig(sparsity=0.8, scope="global", ignore=("fc",))
        >>> cfg.scope.value, cfg.target
        ('global', 0.8)
        >>> SparsityConfig(pattern="2:4").nm
        (2, 4)
    """

    sparsity: float | None = None
    pattern: str = UNSTRUCTURED
    scope: SparsityScope = SparsityScope.LAYER
    targets: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    schedule: SparsitySchedule = SparsitySchedule.ONESHOT
    start_step: int = 0  # gradual: the optimizer step the masks start growing
    end_step: int | None = None  # gradual: the step they reach sparsity (None: end of training)
    frequency: int = 100  # gradual: recompute the masks every this many steps
    initial_sparsity: float = 0.0  # gradual: the sparsity at start_step

    def __post_init__(self) -> None:
        for name in ("targets", "ignore"):  # one pattern may be given as a plain string
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else value)
        check_fields(self)
        object.__setattr__(self, "pattern", _parse_pattern(self.pattern))
        self.selection  # noqa: B018  (checks the patterns)
        self._check()

    def _check(self) -> None:
        s, nm, start, end = self.sparsity, self.nm, self.start_step, self.end_step
        n, m = nm or (0, 1)
        cubic = self.schedule is SparsitySchedule.CUBIC
        problems = [
            (s is not None and not 0.0 <= s < 1.0, f"sparsity: must be in [0, 1), got {s}"),
            (
                nm is not None and s is not None and not math.isclose(s, 1 - n / m),
                f"sparsity: pattern '{n}:{m}' fixes it at {1 - n / m:g}, got {s}; drop one",
            ),
            (
                nm is not None and self.scope is SparsityScope.GLOBAL,
                "scope: 'global' is for unstructured sparsity; use 'layer' with N:M",
            ),
            (nm is not None and cubic, "schedule: 'cubic' needs unstructured; use 'oneshot'"),
            (self.frequency < 1, f"frequency: must be >= 1, got {self.frequency}"),
            (start < 0, f"start_step: must be >= 0, got {start}"),
            (
                not 0.0 <= self.initial_sparsity <= self.target,
                f"initial_sparsity: must be in [0, {self.target:g}], got {self.initial_sparsity}",
            ),
            (
                cubic and (end is None or end <= start),
                f"end_step: the cubic schedule needs end_step > start_step={start}, got {end}",
            ),
        ]
        for bad, message in problems:
            if bad:
                raise ConfigError(message)

    @property
    def selection(self) -> Selection:
        """The modules to sparsify: ``targets`` (empty: Linear, Conv1d/2d/3d) minus ``ignore``."""
        return Selection(self.targets, self.ignore)

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` for an N:M pattern, ``None`` for unstructured."""
        if self.pattern == UNSTRUCTURED:
            return None
        n, m = self.pattern.split(":")
        return int(n), int(m)

    @property
    def target(self) -> float:
        """The final fraction of zeros this config asks for."""
        if self.nm is not None:
            return 1 - self.nm[0] / self.nm[1]
        return 0.5 if self.sparsity is None else self.sparsity

    def sparsity_at(self, step: int) -> float:
        """The fraction of zeros the schedule asks for after ``step`` optimizer steps."""
        if self.schedule is SparsitySchedule.ONESHOT:
            return self.target
        return cubic_sparsity(
            step,
            final=self.target,
            initial=self.initial_sparsity,
            start=self.start_step,
            end=cast(int, self.end_step),  # checked in __post_init__
            frequency=self.frequency,
        )


def cubic_sparsity(
    step: int, *, final: float, initial: float = 0.0, start: int = 0, end: int, frequency: int = 1
) -> float:
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3``.

    ``t`` is ``step`` rounded down to the last update (``start + k * frequency``); before
    ``start`` nothing is pruned (0.0), from ``end`` on it is ``final``.

    Example:
        >>> round(cubic_sparsity(55, final=0.8, start=0, end=100, frequency=10), 6)  # t = 50
        0.7
    """
    if end <= start or frequency < 1:
        raise ConfigError(
            f"cubic_sparsity: need end > start and frequency >= 1, got "
            f"start={start}, end={end}, frequency={frequency}"
        )
    if step < start:
        return 0.0
    if step >= end:
        return final
    updated = start + (step - start) // frequency * frequency
    remaining = 1.0 - (updated - start) / (end - start)
    return final + (initial - final) * remaining**3


# -- sensitivity analysis ----------------------------------------------------------------------
_MAX_RATIO = PruneConfig().max_ratio


@dataclass(frozen=True)
class SensitivityConfig:
    """Which ratios to try, with which importance criterion, on which groups (None: all).

    Example:
        >>> SensitivityConfig(ratios=(0.5, 0.25)).ratios
        (0.25, 0.5)
    """

    ratios: tuple[float, ...] = DEFAULT_RATIOS  # the ratios each group is pruned at, alone
    importance: str = "l1"  # channel importance: l1, l2, fpgm, bn_gamma, random
    groups: tuple[str, ...] | None = None  # group names (producer modules) to analyse

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.ratios:
            raise ConfigError("ratios: give at least one ratio, e.g. [0.1, 0.2, ..., 0.9]")
        for r in self.ratios:
            if not 0 < r <= _MAX_RATIO:
                raise ConfigError(
                    f"ratios: {r} is outside (0, {_MAX_RATIO}]; the pruner never removes more "
                    f"than max_ratio={_MAX_RATIO} of a group, so larger ratios would not be tried"
                )
        object.__setattr__(self, "ratios", tuple(sorted(set(self.ratios))))
        get_importance(self.importance)  # raises with a did-you-mean
        if self.importance == "taylor":
            raise ConfigError(
                "importance: 'taylor' needs gradients from training data, which sensitivity() "
                "does not take; use l1, l2, fpgm or bn_gamma"
            )
        if self.groups is not None and not self.groups:
            raise ConfigError("groups: an empty list analyses nothing; use None for all groups")
