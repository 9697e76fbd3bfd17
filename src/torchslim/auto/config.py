"""The typed config of a compression search."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from torchslim.config import check_fields
from torchslim.errors import ConfigError
from torchslim.prune.config import resolve_round_to
from torchslim.quant.config import QuantConfig


class SpaceKind(str, Enum):
    """What is searched: per-group pruning ratios (``prune``) or per-layer weight bit widths
    (``bits``, scored by post-training quantization)."""

    PRUNE = "prune"
    BITS = "bits"


class Strategy(str, Enum):
    """How candidates are proposed: PaddleSlim's simulated annealing, Optuna's TPE, random
    sampling, or NSGA-II (evolutionary)."""

    SA = "sa"
    TPE = "tpe"
    RANDOM = "random"
    NSGA2 = "nsga2"


@dataclass(frozen=True)
class AnnealingConfig:
    """Simulated annealing as PaddleSlim's ``SAController`` runs it: a candidate that scores
    better is always taken, a worse one with probability ``exp(-drop / T)``; the temperature
    starts at ``init_temperature`` (in points of the score, a percentage) and is multiplied by
    ``reduce_rate`` after every trial. A neighbour changes ``moves`` per-layer ratios by one
    grid step each.

    Example:
        >>> AnnealingConfig(init_temperature=5.0).reduce_rate
        0.9
    """

    init_temperature: float = 10.0
    reduce_rate: float = 0.9
    moves: int = 2

    def __post_init__(self) -> None:
        check_fields(self)
        if self.init_temperature <= 0 or not 0 < self.reduce_rate <= 1 or self.moves < 1:
            raise ConfigError(
                "sa: init_temperature must be > 0, reduce_rate in (0, 1], moves >= 1; got "
                f"{self.init_temperature}, {self.reduce_rate}, {self.moves}"
            )


@dataclass(frozen=True)
class SearchConfig:
    """Everything :func:`torchslim.search` does, as data.

    One variable per prunable channel group: its pruning ratio on a grid from ``min_ratio`` to
    ``max_ratio`` in ``ratio_step`` steps. Budgets are fractions of the unpruned model
    (``macs: 0.5``, ``params``, ``latency``), checked before a candidate is evaluated (MACs
    and parameters from the trace, latency from the look-up table), so an infeasible one
    costs no forward pass. A candidate is scored by its top-1 accuracy on ``eval_images``
    held-out *training* images after re-estimating BatchNorm statistics on ``bn_images``
    others. ``trials`` counts evaluated candidates. Trials live in Optuna ``storage`` (default:
    a SQLite file in the run folder; any RDB URL Optuna accepts lets workers on several
    machines share one study). Workers send a heartbeat every ``heartbeat_seconds``; a trial
    whose worker was killed is marked failed ``grace_seconds`` later, and its candidate is
    tried again. ``workers`` > 1 starts that many worker processes on this machine (spawned,
    each with the model and data) on the same storage.

    Example:
        >>> SearchConfig(macs=0.25, strategy="tpe").strategy
        <Strategy.TPE: 'tpe'>
    """

    space: SpaceKind = SpaceKind.PRUNE
    strategy: Strategy = Strategy.SA
    trials: int = 100  # candidates evaluated (budget-rejected ones do not count)
    # MACs budget, a fraction of the unpruned model's MACs (0.5 when no budget is given)
    macs: float | None = None
    params: float | None = None  # parameter budget, a fraction of the unpruned model's
    # latency budget: a fraction of the model's ONNX Runtime latency on this CPU, predicted
    # from the per-layer look-up table (torchslim.latency) calibrated on measured models
    latency: float | None = None
    latency_batch_size: int = 1  # the batch size the latency budget is measured at
    latency_threads: int | None = None  # ORT threads for the latency budget (None: PyTorch's)
    weight_bits: tuple[int, ...] = (4, 8)  # bits space: the weight bit widths a layer may take
    # bits space: the size budget, a fraction of the float model's bytes (uniform int4 weights
    # are about 0.125, int8 about 0.25)
    bytes: float | None = None
    calib_batches: int = 4  # bits space: calibration batches (of batch_size) per candidate
    min_ratio: float = 0.0  # the smallest per-group pruning ratio on the grid
    max_ratio: float = 0.8  # the largest per-group pruning ratio on the grid
    ratio_step: float = 0.05  # the grid step between ratios
    round_to: int | None = None  # kept channels: a multiple of this (None: CPU vector width)
    importance: str = "l1"  # which channels a ratio removes (a pruning importance criterion)
    bn_images: int = 512  # training images that re-estimate BatchNorm statistics
    eval_images: int = 1000  # held-out training images a candidate is scored on
    batch_size: int = 128  # batch size of the BatchNorm re-estimation and the scoring
    seed: int = 0  # seeds the sampler and the hold-out split
    storage: str | None = None  # Optuna RDB URL; default a SQLite file search.db in the run
    study_name: str = "torchslim-search"  # the Optuna study name inside the storage
    heartbeat_seconds: int = 10
    grace_seconds: int = 30
    workers: int = 1
    sa: AnnealingConfig = field(default_factory=AnnealingConfig)
    # bits space: the rest of post-training quantization (activation bits, calibration...)
    quant: QuantConfig = field(default_factory=QuantConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        resolve_round_to(self)
        if self.trials < 1:
            raise ConfigError(f"trials: must be >= 1, got {self.trials}")
        if not 0 <= self.min_ratio <= self.max_ratio < 1:
            raise ConfigError(
                f"min_ratio/max_ratio: need 0 <= min_ratio <= max_ratio < 1, got "
                f"{self.min_ratio}, {self.max_ratio}"
            )
        if self.ratio_step <= 0:
            raise ConfigError(f"ratio_step: must be > 0, got {self.ratio_step}")
        for name in ("macs", "params", "latency", "bytes"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ConfigError(f"{name}: a budget is a fraction in (0, 1], got {value}")
        prune_budgets = [n for n in ("macs", "params", "latency") if getattr(self, n) is not None]
        if self.space is SpaceKind.BITS:
            if self.bytes is None or prune_budgets:
                raise ConfigError(
                    "space: bits takes one budget, bytes (a fraction of the float model's "
                    f"bytes, e.g. 0.14); got bytes={self.bytes}, {prune_budgets or 'no other'}"
                )
            if not self.weight_bits or any(not 2 <= b <= 8 for b in self.weight_bits):
                raise ConfigError(f"weight_bits: choices in 2..8, got {list(self.weight_bits)}")
        elif self.bytes is not None:
            raise ConfigError("bytes: a budget of the bits space (space: bits)")
        elif not prune_budgets:
            object.__setattr__(self, "macs", 0.5)  # the default budget
        if self.latency_batch_size < 1:
            raise ConfigError(f"latency_batch_size: must be >= 1, got {self.latency_batch_size}")
        if self.workers < 1:
            raise ConfigError(f"workers: must be >= 1, got {self.workers}")
        if self.calib_batches < 1:
            raise ConfigError(f"calib_batches: must be >= 1, got {self.calib_batches}")
        if self.bn_images < 1 or self.eval_images < 1:
            raise ConfigError("bn_images and eval_images must be >= 1")

    @property
    def choices(self) -> list[Any]:
        """What one variable may take: the ratio grid, or the bit widths.

        Example:
            >>> SearchConfig(space="bits", bytes=0.15, weight_bits=(8, 4)).choices
            [4, 8]
        """
        return sorted(self.weight_bits) if self.space is SpaceKind.BITS else self.grid

    @property
    def grid(self) -> list[float]:
        """The ratios a layer may take.

        Example:
            >>> SearchConfig(max_ratio=0.2, ratio_step=0.1).grid
            [0.0, 0.1, 0.2]
        """
        n = round((self.max_ratio - self.min_ratio) / self.ratio_step + 1e-9)
        return [round(self.min_ratio + k * self.ratio_step, 6) for k in range(n + 1)]
