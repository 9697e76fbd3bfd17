"""The pruning search space of a model: one ratio per prunable channel group, from its trace.

The model is traced and its channels scored once; a candidate (a ratio per group) becomes
kept channel indices, whose MACs and parameter count are predicted from the trace without a
forward pass, and a pruned copy is built only for a candidate worth evaluating.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from torchslim._tensors import Inputs, input_tuple
from torchslim.analysis import analyze
from torchslim.auto.evaluate import score
from torchslim.errors import ConfigError
from torchslim.latency import LatencyCorrection, LatencyModel
from torchslim.prune.apply import Keep
from torchslim.prune.pruner import Pruner, kept_count, pruned_copy, top_channels

SENSITIVITY_POINTS = 8  # start: sensitivity measures each variable at this many ratios at most

if TYPE_CHECKING:
    from torchslim.auto.config import SearchConfig


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}#{k}")
    return out


def _tied(names: list[str], tie: Sequence[str]) -> dict[str, str]:
    """Each group's variable: the first ``tie`` glob its name matches, else its own name (a
    glob that matches no group is a :class:`ConfigError`)."""
    variable_of = {}
    for n in names:
        variable_of[n] = next((glob for glob in tie if fnmatchcase(n, glob)), n)
    unused = [glob for glob in tie if glob not in variable_of.values()]
    if unused:
        sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ConfigError(f"tie: {unused[0]!r} matches no prunable group (they are: {sample})")
    return variable_of


def _spread(options: Sequence[float], most: int) -> list[float]:
    """Up to ``most`` of the non-zero ``options``, evenly spread, the largest included."""
    options = [o for o in options if o > 0]
    if len(options) <= most:
        return list(options)
    step = (len(options) - 1) / (most - 1)
    return [options[round(k * step)] for k in range(most)]


class PruneSpace:
    """A model's prunable groups (named by their producing layer), their channel scores,
    and the MACs / parameters of any choice of per-group ratios, predicted from the trace.
    A candidate is scored (``score``: ``"accuracy"`` or ``"likelihood"``, see
    :func:`~torchslim.auto.evaluate.held_out_score`) after ``tune_steps`` SGD steps
    (``tune_lr``; 0: none) and BatchNorm re-estimation. ``tie`` (globs over group names)
    gives the groups one glob matches one shared ratio variable, named by the glob: a
    lower-dimensional search. ``ignore`` (module patterns, as :func:`torchslim.prune`'s)
    leaves those modules whole: the groups they touch are not variables.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> space = PruneSpace(net, torch.randn(1, 3, 8, 8))
        >>> space.names, space.sizes
        (['0'], [8])
        >>> round(space.macs_ratio({"0": 0.5}), 3)
        0.5
    """

    def __init__(
        self, model: nn.Module, example_inputs: Inputs, *, importance: str = "l1",
        round_to: int = 1, tune_steps: int = 0, tune_lr: float = 0.01,
        tie: Sequence[str] = (), score: str = "accuracy", ignore: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.model = model.eval()
        self.inputs = input_tuple(example_inputs)
        self.round_to = round_to
        pruner = Pruner(model, self.inputs, {"ratio": 0.5, "importance": importance,
                                             "ignore": tuple(ignore)})  # fmt: skip
        self.graph, self.groups, self.scores = pruner.graph_and_scores()
        if not self.groups:
            raise ConfigError(
                f"{type(model).__name__} has no prunable channel group: nothing to search"
            )
        self.names = _unique_names([g.name for g in self.groups])
        self.sizes = [g.size for g in self.groups]
        self.variable_of = _tied(self.names, tie)  # group -> the variable that sets its ratio
        self.variable_names = list(dict.fromkeys(self.variable_of.values()))
        stats = self.graph.stats or analyze(model, self.inputs, shapes_only=True)
        self.base_macs = stats.macs
        self.base_params = sum(math.prod(t.shape) for t in self.graph.tensors.values())
        self.latency: LatencyModel | None = None
        self._predicted: dict[tuple[int, ...], float] = {}  # kept counts -> latency ratio
        self.base_ms = 0.0
        self.tune_steps, self.tune_lr = tune_steps, tune_lr  # a candidate's fine-tune (0: none)
        self.score = score
        # per variable, (ratio, score loss) of the variable pruned alone, ratio ascending
        # (measure_sensitivity; empty: the search starts uniform)
        self.losses: dict[str, list[tuple[float, float]]] = {}

    def add_latency(self, batch_size: int = 1, threads: int | None = None, *,
                    grid: Sequence[float] = (), random_variants: int = 3,
                    seed: int = 0) -> None:  # fmt: skip
        """Predict candidates' ONNX Runtime latency from the look-up table
        (:mod:`torchslim.latency`), calibrated here on the model, two uniform cuts (30%, 60%)
        and ``random_variants`` candidates drawn from ``grid`` (a ratio per group, seeded),
        measured whole with their rounds interleaved: a search's candidates are not uniform,
        and the fit should have seen some."""
        latency = LatencyModel(self.model, self.inputs, self.graph, batch_size=batch_size,
                               threads=threads, progress=True)  # fmt: skip
        keeps: list[Keep | None] = [None]
        keeps += [self.keep(dict.fromkeys(self.names, r)) for r in (0.3, 0.6)]
        rng = random.Random(seed)
        for _ in range(random_variants if grid else 0):
            keeps.append(self.keep({n: rng.choice(list(grid)) for n in self.names}))
        latency.calibrate(
            lambda keep: self.model if keep is None else pruned_copy(self.model, self.graph,
                                                                     keep, self.inputs),
            keeps,
        )  # fmt: skip
        self.latency, self.base_ms = latency, latency.predict_ms()
        self._predicted.clear()
        # predictions corrected by a verified candidate's measurement (none yet)
        self.latency_fix = LatencyCorrection()

    def measured_latency_ratio(self, ratios: Mapping[str, float]) -> float:
        """The pruned model's measured latency over the model's, measured together (rounds
        interleaved); needs :meth:`add_latency` first."""
        if self.latency is None:
            raise ConfigError("measuring a latency ratio needs PruneSpace.add_latency() first")
        dense, pruned = self.latency.measure_many([self.model, self.pruned(ratios)])
        return pruned / dense

    def latency_ratio(self, ratios: Mapping[str, float]) -> float | None:
        """The pruned model's predicted latency over the model's (``None`` before
        :meth:`add_latency`), corrected by ``latency_fix`` (none until a search verified its
        choice by measurement: :meth:`correct_latency`)."""
        raw = self._table_ratio(ratios)
        return None if raw is None else self.latency_fix(raw)

    def _table_ratio(self, ratios: Mapping[str, float]) -> float | None:
        """:meth:`latency_ratio` before any correction."""
        if self.latency is None:
            return None
        # the prediction depends on the kept counts alone; a search asks for the same ones
        # often (annealing's neighbours, filling's bisection)
        counts = self.counts(ratios)
        if counts not in self._predicted:
            ms = self.latency.predict_ms(self.keep(ratios))
            self._predicted[counts] = ms / max(self.base_ms, 1e-9)
        return self._predicted[counts]

    def correct_latency(self, ratios: Mapping[str, float], measured: float) -> None:
        """Correct every candidate's predicted latency by a measurement of one (``measured``:
        its latency over the model's; see :class:`~torchslim.latency.LatencyCorrection`)."""
        raw = self._table_ratio(ratios)
        if raw is not None:
            self.latency_fix = LatencyCorrection.measured(raw, measured)

    def counts(self, ratios: Mapping[str, float]) -> tuple[int, ...]:
        """Channels each group keeps at ``ratios``, in :attr:`names` order."""
        return tuple(kept_count(size, float(ratios.get(name, 0.0)), self.round_to)
                     for name, size in zip(self.names, self.sizes, strict=True))  # fmt: skip

    def keep(self, ratios: Mapping[str, float]) -> Keep:
        """Kept channel indices per group: the highest-scored ``1 - ratio`` of each (a group
        not named keeps everything); counts rounded up to ``round_to``."""
        keep: Keep = {}
        for name, group in zip(self.names, self.groups, strict=True):
            ratio = float(ratios.get(name, 0.0))
            keep[group.id] = top_channels(
                self.scores[group.id], kept_count(group.size, ratio, self.round_to)
            )
        return keep

    def macs_ratio(self, ratios: Mapping[str, float]) -> float:
        """The pruned model's MACs over the unpruned model's, predicted from the trace."""
        return sum(self.graph.macs_after(self.keep(ratios)).values()) / max(self.base_macs, 1)

    def tensor_sizes(self, ratios: Mapping[str, float]) -> dict[str, int]:
        """Elements of every traced parameter (by qualified name) once pruned to ``ratios``."""
        kept = {a: len(idx) for a, idx in self.keep(ratios).items()}
        sp, dims = self.graph.spaces, self.graph.param_dims
        return {name: math.prod(sp.kept_size(layout, kept) for layout in dims[name])
                for name in self.graph.tensors}  # fmt: skip

    def params_ratio(self, ratios: Mapping[str, float]) -> float:
        """The pruned model's parameter count (traced tensors) over the unpruned one's."""
        return sum(self.tensor_sizes(ratios).values()) / max(self.base_params, 1)

    def pruned(self, ratios: Mapping[str, float]) -> nn.Module:
        """A pruned copy of the model (the model itself is left as it is)."""
        return pruned_copy(self.model, self.graph, self.keep(ratios), self.inputs)

    def uniform(self, grid: list[float], macs: float | None, params: float | None,
                latency: float | None = None) -> float:  # fmt: skip
        """The smallest grid ratio that, applied to every group, meets the budgets (the
        search's first candidate); the grid's largest if none does."""
        for r in grid:
            ratios = dict.fromkeys(self.names, r)
            if self.feasible(ratios, macs, params, latency):
                return r
        return grid[-1]

    def feasible(self, ratios: Mapping[str, float], macs: float | None,
                 params: float | None, latency: float | None = None) -> bool:  # fmt: skip
        """Whether ``ratios`` meet the budgets (fractions; ``None``: no budget). A latency
        budget needs :meth:`add_latency` first."""
        if macs is not None and self.macs_ratio(ratios) > macs + 1e-9:
            return False
        if params is not None and self.params_ratio(ratios) > params + 1e-9:
            return False
        if latency is None:
            return True
        found = self.latency_ratio(ratios)
        if found is None:
            raise ConfigError("a latency budget needs PruneSpace.add_latency() first")
        return found <= latency + 1e-9

    # -- what ts.search asks of a space (BitSpace and JointSpace answer the same) -----------
    def budgets(self, cfg: SearchConfig) -> tuple[float | None, float | None, float | None]:
        """The config's MACs, parameter and latency budgets as fractions of this model's."""
        return (cfg.fraction("macs", self.base_macs), cfg.fraction("params", self.base_params),
                cfg.fraction("latency", self.base_ms))  # fmt: skip

    def expand(self, params: Mapping[str, float]) -> dict[str, float]:
        """A candidate's ratio per group from its variables (a tied group: its glob's)."""
        return {n: float(params[self.variable_of[n]]) for n in self.names}

    def choices(self, grid: Sequence[float]) -> dict[str, list[float]]:
        """What each variable (a group, or a tied glob's groups) may take: the ratios of
        ``grid`` that keep distinct channel counts, the smallest ratio of each. Ratios that
        round to the same channels (a 16-channel group at ``round_to`` 8 keeps 16 or 8) are
        one candidate, so a search never spends a trial on a model it has scored.

        Example:
            >>> import torch
            >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 4, 3))
            >>> PruneSpace(net, torch.randn(1, 3, 8, 8), round_to=8).choices([0, 0.25, 0.5, 0.75])
            {'0': [0, 0.5]}
        """
        out: dict[str, list[float]] = {}
        for var in self.variable_names:
            sizes = [s for n, s in zip(self.names, self.sizes, strict=True)
                     if self.variable_of[n] == var]  # fmt: skip
            seen: set[tuple[int, ...]] = set()
            out[var] = []
            for r in grid:
                counts = tuple(kept_count(s, float(r), self.round_to) for s in sizes)
                if counts not in seen:
                    seen.add(counts)
                    out[var].append(r)
        return out

    def variables(self, cfg: SearchConfig) -> dict[str, list[float]]:
        """What each variable may take: :meth:`choices` of the config's grid."""
        return self.choices(cfg.grid)

    def by_size(self, cfg: SearchConfig) -> dict[str, list[float]]:
        """Each variable's choices from the largest model to the smallest (ratios ascending;
        what :func:`~torchslim.auto.samplers.fill_to_budget` moves along)."""
        return self.variables(cfg)

    def start(self, cfg: SearchConfig) -> dict[str, float]:
        """The first candidate: after :meth:`measure_sensitivity`, its allocation if one meets
        the budget; else the smallest uniform ratio in budget, for every variable (as the
        choice that keeps the same channels)."""
        if self.losses:
            found = self.sensitivity_choice(cfg)
            if found is not None:
                return found
        r = self.uniform(cfg.grid, *self.budgets(cfg))
        return {var: max(c for c in options if c <= r)
                for var, options in self.variables(cfg).items()}  # fmt: skip

    def measure_sensitivity(self, cfg: SearchConfig, held_out: Dataset, bn_data: Dataset, *,
                            progress: bool = True) -> None:  # fmt: skip
        """PaddleSlim's sensitivity analysis on the search's own terms: each variable pruned
        alone (the others whole) at up to ``SENSITIVITY_POINTS`` of its choices, evenly
        spread, and scored as a candidate is (BatchNorm re-estimated, no ``tune_steps``); its
        loss is the unpruned model's score minus that, made non-decreasing in the ratio.
        :meth:`start` then begins the search from :meth:`sensitivity_choice`."""
        variables = self.variables(cfg)
        whole = dict.fromkeys(self.variable_names, 0.0)

        def measure(params: Mapping[str, float]) -> float:
            return self.evaluate(params, held_out, bn_data, cfg.batch_size, tune=False)

        todo = {var: _spread(options, SENSITIVITY_POINTS) for var, options in variables.items()}
        total = 1 + sum(len(v) for v in todo.values())
        with tqdm(total=total, desc="sensitivity", unit="candidate",
                  disable=None if progress else True) as bar:  # fmt: skip
            base = measure(whole)
            bar.update()
            for var, ratios in todo.items():
                points, worst = [(0.0, 0.0)], 0.0
                for r in ratios:
                    worst = max(worst, base - measure({**whole, var: r}))
                    points.append((r, worst))
                    bar.update()
                self.losses[var] = points

    def loss(self, var: str, ratio: float) -> float:
        """The measured score loss of ``var`` pruned alone at ``ratio``, linear between the
        measured ratios (after :meth:`measure_sensitivity`)."""
        points = self.losses[var]
        for (r0, l0), (r1, l1) in itertools.pairwise(points):
            if ratio <= r1:
                return l0 + (l1 - l0) * (ratio - r0) / max(r1 - r0, 1e-12)
        return points[-1][1]

    def sensitivity_choice(self, cfg: SearchConfig) -> dict[str, float] | None:
        """Each variable's largest choice whose :meth:`loss` is at most one threshold, at the
        lowest threshold that meets the config's budgets (``None``: not even the largest
        does). Needs :meth:`measure_sensitivity` first."""
        variables = self.variables(cfg)

        def at(threshold: float) -> dict[str, float]:
            return {var: max((c for c in options if self.loss(var, c) <= threshold + 1e-12),
                             default=options[0])
                    for var, options in variables.items()}  # fmt: skip

        levels = sorted({self.loss(v, c) for v, options in variables.items() for c in options})
        lo, hi = 0, len(levels) - 1
        if not self.meets(at(levels[hi]), cfg):
            return None
        while lo < hi:  # ratios only grow with the threshold: bisect for the lowest that fits
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.meets(at(levels[mid]), cfg) else (mid + 1, hi)
        return at(levels[lo])

    def meets(self, params: Mapping[str, float], cfg: SearchConfig) -> bool:
        """Whether a candidate meets the config's budgets."""
        return self.feasible(self.expand(params), *self.budgets(cfg))

    def measures(self, params: Mapping[str, float]) -> dict[str, float]:
        """What a candidate costs, predicted (a trial's user attributes)."""
        ratios = self.expand(params)
        found = {"macs_ratio": self.macs_ratio(ratios), "params_ratio": self.params_ratio(ratios)}
        latency = self.latency_ratio(ratios)
        if latency is not None:
            found["latency_ratio"] = latency
        return found

    def evaluate(self, params: Mapping[str, float], held_out: Dataset, bn_data: Dataset,
                 batch_size: int, *, tune: bool = True) -> float:  # fmt: skip
        """A candidate's score: top-1 or likelihood (%) of its pruned copy after BatchNorm
        re-estimation (and ``tune_steps`` SGD steps first, if set and ``tune``)."""
        return score(self.pruned(self.expand(params)), held_out, bn_data, batch_size,
                     self.tune_steps if tune else 0, self.tune_lr, self.score)  # fmt: skip

    def final_score(self, params: Mapping[str, float], held_out: Dataset, bn_data: Dataset,
                    tune_data: Dataset, cfg: SearchConfig) -> float:  # fmt: skip
        """A finalist's score: as :meth:`evaluate`'s, after ``cfg.final_steps`` SGD steps
        (``cfg.final_lr``) on ``tune_data`` instead of the candidate's own ``tune_steps``."""
        return score(self.pruned(self.expand(params)), held_out, bn_data, cfg.batch_size,
                     cfg.final_steps, cfg.final_lr, self.score, tune_data, "final_lr")  # fmt: skip

    def fields(self, params: Mapping[str, float]) -> dict[str, Any]:
        """A candidate's search-result fields: ratios per group, channels, predicted cost
        ratios."""
        found = self.measures(params)
        ratios = self.expand(params)
        return {"ratios": ratios,
                "channels": self.channels(ratios), "macs_ratio": found["macs_ratio"],
                "params_ratio": found["params_ratio"],
                "latency_ratio": found.get("latency_ratio")}  # fmt: skip

    def outcome(self, params: Mapping[str, float]) -> tuple[nn.Module, dict[str, Any]]:
        """The chosen candidate's model (pruned, not fine-tuned) and its search-result fields."""
        return self.pruned(self.expand(params)), self.fields(params)

    def channels(self, ratios: Mapping[str, float]) -> dict[str, list[int]]:
        """Per group: ``[channels before, channels kept]`` at ``ratios``.

        Example:
            >>> import torch
            >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
            >>> PruneSpace(net, torch.randn(1, 3, 8, 8)).channels({"0": 0.25})
            {'0': [8, 6]}
        """
        kept = self.counts(ratios)
        return {n: [size, k] for n, size, k in zip(self.names, self.sizes, kept, strict=True)}
