"""The typed config of a compression search."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from torchslim.config import check_fields
from torchslim.errors import ConfigError
from torchslim.prune.config import resolve_round_to
from torchslim.quant.config import QuantConfig


class SpaceKind(str, Enum):
    """What is searched: per-group pruning ratios (``prune``), per-layer weight bit widths
    (``bits``, scored by post-training quantization), or both at once (``joint``: the pruned
    candidate is quantized with its bits, then scored)."""

    PRUNE = "prune"
    BITS = "bits"
    JOINT = "joint"


FLOAT_BITS = 32  # a bits choice that keeps the layer in float (quantization skips it)

_COUNT = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_UNITS: dict[str, dict[str, float]] = {  # absolute budgets: unit -> the base unit's multiple
    "macs": _COUNT,
    "params": _COUNT,
    "bytes": {"": 1.0, "b": 1.0, "kb": 1e3, "kib": 2.0**10, "mb": 1e6, "mib": 2.0**20},
    "latency": {"ms": 1.0, "us": 1e-3, "s": 1e3},  # milliseconds
}
_ABSOLUTE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*")


def parse_budget(name: str, value: float | str) -> tuple[float, bool]:
    """``(number, absolute)`` of a budget: a number in (0, 1] is a fraction of the unpruned /
    float model; a larger number, or a string with a unit, is absolute (MACs and parameters
    as counts, ``"40M"``; bytes, ``"150kB"``, ``"1.5MiB"``; latency in time, ``"2.5ms"``,
    returned in milliseconds).

    Example:
        >>> parse_budget("macs", 0.5), parse_budget("macs", "40M"), parse_budget("latency", "2ms")
        ((0.5, False), (40000000.0, True), (2.0, True))
    """
    units = _UNITS[name]
    if isinstance(value, str):
        found = _ABSOLUTE.fullmatch(value)
        if found is None or found[2].lower() not in units or (not found[2] and name == "latency"):
            raise ConfigError(
                f"{name}: a fraction in (0, 1] or an absolute value with a unit, one of "
                f"{_SHOWN[name]} (e.g. {_EXAMPLES[name]!r}); got {value!r}"
            )
        if found[2]:
            return float(found[1]) * units[found[2].lower()], True
        value = float(found[1])
    if not value > 0:
        raise ConfigError(f"{name}: a budget must be > 0, got {value}")
    if value <= 1:
        return float(value), False
    if name == "latency":
        raise ConfigError(
            f"latency: a fraction in (0, 1], or an absolute time with its unit such as "
            f"'{value}ms'; got {value}"
        )
    return float(value), True


def quantizable_bits(choices: Sequence[int]) -> list[int]:
    """``choices`` sorted, checked: weight bits 2..8, or 32 for a layer kept in float.

    Example:
        >>> quantizable_bits((8, 32, 4))
        [4, 8, 32]
    """
    bits = sorted(int(b) for b in choices)
    if not bits or any(not 2 <= b <= 8 and b != FLOAT_BITS for b in bits):
        raise ConfigError(f"weight_bits: choices in 2..8, or {FLOAT_BITS} for float; got "
                          f"{list(choices)}")  # fmt: skip
    return bits


def activation_bits(choices: Sequence[int]) -> list[int]:
    """``choices`` of activation bits sorted, checked (2..8; empty: none searched).

    Example:
        >>> activation_bits((8, 4))
        [4, 8]
    """
    bits = sorted(int(b) for b in choices)
    if any(not 2 <= b <= 8 for b in bits):
        raise ConfigError(f"act_bits: choices in 2..8, got {list(choices)}")
    return bits


_EXAMPLES = {"macs": "40M", "params": "250k", "bytes": "150kB", "latency": "2.5ms"}
_SHOWN = {"macs": "k, M, G", "params": "k, M, G", "bytes": "B, kB, KiB, MB, MiB",
          "latency": "ms, us, s"}  # fmt: skip


class Score(str, Enum):
    """What a candidate is scored by, on held-out training images: top-1 accuracy (%); the
    likelihood, ``100 * exp(-mean cross-entropy)`` (the geometric mean of the probability
    given to the true label, in %: it ranks as the loss does, and differs between candidates
    of equal top-1); or, for the bits space, the SQNR (dB) of its outputs against the float
    model's on the same images (no labels needed)."""

    ACCURACY = "accuracy"
    LIKELIHOOD = "likelihood"
    SQNR = "sqnr"


class Start(str, Enum):
    """A pruning search's first candidate: the smallest uniform ratio that meets the budget,
    or PaddleSlim's sensitivity allocation (every variable pruned alone at up to
    ``SENSITIVITY_POINTS`` of its choices and scored on the held-out images; each takes the
    largest ratio whose loss is under one threshold, the lowest threshold that meets the
    budget). The search then moves from there."""

    UNIFORM = "uniform"
    SENSITIVITY = "sensitivity"


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
    whose worker was killed is marked failed ``grace_seconds`` later and does not count
    toward ``trials``. ``workers`` > 1 starts that many worker processes on this machine (spawned,
    each with the model and data) on the same storage.

    Example:
        >>> SearchConfig(macs=0.25, strategy="tpe").strategy
        <Strategy.TPE: 'tpe'>
    """

    space: SpaceKind = SpaceKind.PRUNE
    strategy: Strategy = Strategy.SA
    trials: int = 100  # candidates evaluated (budget-rejected ones do not count)
    # MACs budget: a fraction of the unpruned model's MACs, or a count ("40M"); 0.5 when no
    # budget is given
    macs: float | str | None = None
    # parameter budget: a fraction of the unpruned model's parameters, or a count ("250k")
    params: float | str | None = None
    # latency budget: a fraction of the model's ONNX Runtime latency on this CPU, or a time
    # ("2.5ms"), predicted from the per-layer look-up table (torchslim.latency) calibrated on
    # measured models
    latency: float | str | None = None
    latency_batch_size: int = 1  # the batch size the latency budget is measured at
    latency_threads: int | None = None  # ORT threads for the latency budget (None: PyTorch's)
    # measure the chosen candidate whole and correct the table's latency prediction by what
    # was measured, choosing again, up to this many times (0: trust the table)
    verify_latency: int = 3
    # bits / joint space: the weight bit widths a layer may take (2-8; 32 keeps it in float)
    weight_bits: tuple[int, ...] = (4, 8)
    # bits / joint space: the input activation bit widths a layer may take, each searched
    # (empty: quant.act_bits for every layer)
    act_bits: tuple[int, ...] = ()
    # bits / joint space: the size budget, a fraction of the float model's bytes (uniform int4
    # weights are about 0.125, int8 about 0.25), or bytes ("150kB", "1.5MiB")
    bytes: float | str | None = None
    calib_batches: int = 4  # bits space: calibration batches (of batch_size) per candidate
    min_ratio: float = 0.0  # the smallest per-group pruning ratio on the grid
    max_ratio: float = 0.8  # the largest per-group pruning ratio on the grid
    ratio_step: float = 0.05  # the grid step between ratios
    round_to: int | None = None  # kept channels: a multiple of this (None: CPU vector width)
    # prune / joint space: globs over group names; the groups one glob matches share one ratio
    # variable (e.g. [layer1.*, layer2.*, layer3.*]: a ratio per stage), a lower dimension
    tie: tuple[str, ...] = ()
    # prune space: the first candidate, uniform or sensitivity (each variable pruned alone
    # at a few ratios and scored first: about 8 evaluations per variable more)
    start: Start = Start.UNIFORM
    importance: str = "l1"  # which channels a ratio removes (a pruning importance criterion)
    # prune / joint space: modules left whole (torchslim.selection patterns, as ts.prune's
    # ignore): the channel groups they touch are not variables
    ignore: tuple[str, ...] = ()
    # accuracy (%), likelihood (100 exp(-cross-entropy), %), or sqnr (dB, bits space only)
    score: Score = Score.ACCURACY
    # prune space: SGD steps (batches of batch_size from the BatchNorm images) each
    # candidate is fine-tuned for before it is scored (0: BatchNorm re-estimation only)
    tune_steps: int = 0
    tune_lr: float = 0.01  # the learning rate of those steps (SGD, momentum 0.9)
    # the `finalists` best candidates by score, and the search's first (its start: uniform or
    # the sensitivity allocation), each fine-tuned `final_steps` SGD steps (`final_lr`,
    # momentum 0.9) on the training images outside the held-out split, BatchNorm re-estimated
    # and scored again; the best of them is the result (0: the best score wins as it is).
    # Where scores right after pruning rank candidates poorly (aggressive budgets), this ranks
    # the last few by what a fine-tune makes of them.
    finalists: int = 0
    final_steps: int = 200  # the SGD steps each finalist is fine-tuned for (batch_size images)
    final_lr: float = 0.01  # their learning rate (SGD, momentum 0.9, constant)
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
    # move each proposed candidate onto the edge of the budget, keeping its proportions
    # (torchslim.auto.samplers.fill_to_budget); None: on for tpe, random and nsga2, which draw
    # from the whole space; for sa, whose walk moves a step at a time, on under a latency
    # budget (a budget the user means to spend: the walk otherwise drifts below it)
    fill: bool | None = None
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
        for name in _UNITS:
            if getattr(self, name) is not None:
                parse_budget(name, getattr(self, name))
        prune_budgets = [n for n in ("macs", "params", "latency") if getattr(self, n) is not None]
        if self.space is SpaceKind.BITS and (self.bytes is None or prune_budgets):
            raise ConfigError(
                "space: bits takes one budget, bytes (a fraction of the float model's bytes, "
                f"e.g. 0.14, or '150kB'); got bytes={self.bytes}, {prune_budgets or 'no other'}"
            )
        if self.space is SpaceKind.PRUNE and self.bytes is not None:
            raise ConfigError("bytes: a budget of the bits and joint spaces (space: bits)")
        if self.space is SpaceKind.JOINT and self.bytes is None and not prune_budgets:
            raise ConfigError("space: joint needs a budget: bytes, macs, params or latency")
        if self.space is not SpaceKind.BITS and self.bytes is None and not prune_budgets:
            object.__setattr__(self, "macs", 0.5)  # the default budget
        quantizable_bits(self.weight_bits)
        activation_bits(self.act_bits)
        if self.latency_batch_size < 1:
            raise ConfigError(f"latency_batch_size: must be >= 1, got {self.latency_batch_size}")
        if self.verify_latency < 0:
            raise ConfigError(f"verify_latency: must be >= 0, got {self.verify_latency}")
        if self.workers < 1:
            raise ConfigError(f"workers: must be >= 1, got {self.workers}")
        if self.score is Score.SQNR and self.space is not SpaceKind.BITS:
            raise ConfigError("score: sqnr scores a bits search (space: bits); use accuracy")
        if self.start is Start.SENSITIVITY and self.space is not SpaceKind.PRUNE:
            raise ConfigError("start: sensitivity starts a pruning search (space: prune)")
        if self.tune_steps and self.space is not SpaceKind.PRUNE:
            raise ConfigError("tune_steps: fine-tunes pruning candidates (space: prune)")
        if self.tune_steps < 0 or self.tune_lr <= 0:
            raise ConfigError(f"tune_steps must be >= 0 and tune_lr > 0, got {self.tune_steps}, "
                              f"{self.tune_lr}")  # fmt: skip
        if self.finalists < 0 or self.final_steps < 1 or self.final_lr <= 0:
            raise ConfigError(f"finalists must be >= 0, final_steps >= 1 and final_lr > 0, got "
                              f"{self.finalists}, {self.final_steps}, {self.final_lr}")  # fmt: skip
        if self.finalists and self.space is not SpaceKind.PRUNE:
            raise ConfigError("finalists: fine-tunes pruning candidates (space: prune)")
        if self.calib_batches < 1:
            raise ConfigError(f"calib_batches: must be >= 1, got {self.calib_batches}")
        if self.bn_images < 1 or self.eval_images < 1:
            raise ConfigError("bn_images and eval_images must be >= 1")

    @property
    def fills(self) -> bool:
        """Whether proposed candidates are moved onto the budget's edge (``fill``, resolved).

        Example:
            >>> SearchConfig(strategy="tpe").fills, SearchConfig(strategy="sa").fills
            (True, False)
            >>> SearchConfig(strategy="sa", latency=0.7).fills
            True
        """
        if self.fill is not None:
            return self.fill
        return self.strategy is not Strategy.SA or self.latency is not None

    def fraction(self, name: str, total: float) -> float | None:
        """Budget ``name`` as a fraction of ``total`` (the unpruned / float model's MACs,
        parameters, milliseconds or bytes); ``None`` when not set.

        Example:
            >>> cfg = SearchConfig(macs="20M")
            >>> cfg.fraction("macs", 40e6), cfg.fraction("params", 1e6)
            (0.5, None)
        """
        value = getattr(self, name)
        if value is None:
            return None
        number, absolute = parse_budget(name, value)
        return number / max(total, 1e-12) if absolute else number

    @property
    def grid(self) -> list[float]:
        """The ratios a layer may take.

        Example:
            >>> SearchConfig(max_ratio=0.2, ratio_step=0.1).grid
            [0.0, 0.1, 0.2]
        """
        n = round((self.max_ratio - self.min_ratio) / self.ratio_step + 1e-9)
        return [round(self.min_ratio + k * self.ratio_step, 6) for k in range(n + 1)]
