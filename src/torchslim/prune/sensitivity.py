"""Sensitivity analysis (as in PaddleSlim): how much the metric drops when one group is pruned.

:func:`sensitivity` prunes every channel group alone, at several ratios, on a deep copy of the
model and evaluates each copy with a user function; :func:`ratios_for_target` turns the table
into per-group ratios that reach a MACs target with the least predicted loss.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from torchslim._tensors import Inputs
from torchslim.analysis import analyze
from torchslim.config import did_you_mean, from_dict
from torchslim.errors import ConfigError, PruningError
from torchslim.graph.trace import trace
from torchslim.prune.config import DEFAULT_RATIOS as DEFAULT_RATIOS
from torchslim.prune.config import SensitivityConfig
from torchslim.prune.pruner import Pruner, build_groups
from torchslim.selection import escape as escape_selector
from torchslim.tables import format_count, text_table

log = logging.getLogger("torchslim.prune")

EvalFn = Callable[[nn.Module], float]
_TIGHTEN_STEPS = 30  # real-pruning checks before giving up on a MACs target


@dataclass(frozen=True)
class RatioPoint:
    """One group pruned alone at ``ratio``: the metric, its loss and the MACs left.

    ``metric``, ``loss`` and ``macs`` are None (and ``error`` says why) where pruning failed.
    """

    ratio: float
    metric: float | None
    loss: float | None  # baseline metric - metric (positive: worse)
    macs: int | None
    error: str | None = None


@dataclass(frozen=True)
class GroupSensitivity:
    """The curve of one channel group: ``selector`` picks it in ``PruneConfig.ratios``."""

    name: str
    selector: str
    size: int
    points: tuple[RatioPoint, ...]

    @property
    def worst_loss(self) -> float:
        """The largest loss measured on this group (0 if every point failed)."""
        return max((p.loss for p in self.points if p.loss is not None), default=0.0)


@dataclass(frozen=True)
class SensitivityResult:
    """Baseline and per-group, per-ratio metric losses; ``str()`` prints them as a table.

    ``model`` and ``example_inputs`` reference (do not copy) what was analysed, so that
    :func:`ratios_for_target` can check its choice by pruning; they are not part of the data.
    """

    baseline_metric: float
    baseline_macs: int
    importance: str
    ratios: tuple[float, ...]
    groups: tuple[GroupSensitivity, ...]
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    example_inputs: Inputs | None = field(default=None, repr=False, compare=False)

    def group(self, name: str) -> GroupSensitivity:
        """The row of the group produced by module ``name``."""
        for g in self.groups:
            if g.name == name:
                return g
        names = [g.name for g in self.groups]
        raise KeyError(f"no group {name!r}{did_you_mean(name, names)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the model reference is left out).

        Example:
            >>> import json, torch
            >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> x, score = torch.randn(1, 4), lambda m: 1.0
            >>> r = sensitivity(m, x, score, {"ratios": [0.5]}, progress=False)
            >>> SensitivityResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
            True
        """
        return {
            "baseline_metric": self.baseline_metric,
            "baseline_macs": self.baseline_macs,
            "importance": self.importance,
            "ratios": list(self.ratios),
            "groups": [
                {
                    "name": g.name,
                    "selector": g.selector,
                    "size": g.size,
                    "points": [vars(p).copy() for p in g.points],
                }
                for g in self.groups
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityResult:
        """Rebuild a result saved with :meth:`to_dict` (without the model reference)."""
        try:
            groups = tuple(
                GroupSensitivity(
                    g["name"],
                    g["selector"],
                    int(g["size"]),
                    tuple(RatioPoint(**p) for p in g["points"]),
                )
                for g in data["groups"]
            )
            return cls(
                float(data["baseline_metric"]),
                int(data["baseline_macs"]),
                str(data["importance"]),
                tuple(float(r) for r in data["ratios"]),
                groups,
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a saved sensitivity result: {exc!r}") from None

    def __str__(self) -> str:
        header = ["group", "channels", *(f"{r:g}" for r in self.ratios)]
        rows = [
            [g.name or "(model)", str(g.size)]
            + ["failed" if p.loss is None else f"{p.loss:.4g}" for p in g.points]
            for g in self.groups
        ]
        title = (
            f"sensitivity ({self.importance}): baseline metric {self.baseline_metric + 0.0:.4g}, "
            f"{format_count(self.baseline_macs)}MACs; cells: metric loss (baseline - metric) "
            "with only that group pruned at the ratio"
        )
        return "\n".join([title, *text_table(header, rows, right=range(1, len(header)))])

    def plot(self, path: str | Path, *, max_legend: int = 10) -> Path:
        """Write a PNG: one metric-vs-ratio curve per group, the most sensitive ones labelled.

        Only the ``max_legend`` groups with the largest loss get a colour and a legend entry;
        the others are drawn in grey.

        Example:
            >>> import tempfile, torch
            >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> result = sensitivity(m, torch.randn(1, 4), lambda m: 1.0, {"ratios": [0.5]},
            ...                      progress=False)
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     result.plot(f"{tmp}/sensitivity.png").stat().st_size > 0
            True
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 5), dpi=100)
        FigureCanvasAgg(fig)  # render with Agg, without touching pyplot's global backend
        ax = fig.add_subplot()
        ranked = sorted(self.groups, key=lambda g: g.worst_loss, reverse=True)
        labelled = {id(g) for g in ranked[:max_legend]}
        for g in self.groups:
            done = [p for p in g.points if p.metric is not None]
            xs = [0.0, *(p.ratio for p in done)]
            ys = [self.baseline_metric, *(p.metric for p in done)]
            if id(g) in labelled:
                ax.plot(xs, ys, marker="o", markersize=3, label=f"{g.name or '(model)'} ({g.size})")
            else:
                ax.plot(xs, ys, color="0.75", linewidth=0.8, zorder=1)
        ax.axhline(self.baseline_metric, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel("ratio of the group's channels removed")
        ax.set_ylabel("metric")
        ax.set_title(f"sensitivity ({self.importance}), baseline {self.baseline_metric + 0.0:.4g}")
        ax.grid(alpha=0.3)
        if self.groups:
            more = len(self.groups) > max_legend
            title = f"{max_legend} most sensitive of {len(self.groups)}" if more else None
            ax.legend(fontsize="small", title=title, title_fontsize="small", loc="best")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, format="png")
        return path


def _evaluate(eval_fn: EvalFn, model: nn.Module, what: str) -> float:
    value = eval_fn(model)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"eval_fn must return a number (higher is better) but returned "
            f"{type(value).__name__} {value!r} for {what}"
        ) from None


def _units(model: nn.Module, inputs: tuple, wanted: tuple[str, ...] | None) -> dict[str, int]:
    """Group name -> channel count; groups sharing a producer name are one unit."""
    sizes: dict[str, int] = {}
    for g in build_groups(trace(model, inputs), allow_inner=False):
        sizes[g.name] = sizes.get(g.name, 0) + g.size
    if wanted is None:
        return sizes
    for name in wanted:
        if name not in sizes:
            sample = ", ".join(list(sizes)[:6])
            raise ConfigError(
                f"groups: {name!r} is not a prunable group{did_you_mean(name, sizes)} "
                f"(group names are producer modules, e.g. {sample})"
            )
    return {name: sizes[name] for name in dict.fromkeys(wanted)}


def _prune_config(ratios: Mapping[str, float], importance: str) -> dict[str, Any]:
    return {"ratio": 0.0, "ratios": dict(ratios), "importance": importance}


def _measure(
    model: nn.Module,
    inputs: tuple,
    eval_fn: EvalFn,
    selector: str,
    ratio: float,
    importance: str,
    baseline: float,
) -> RatioPoint:
    clone = copy.deepcopy(model)
    try:
        pruner = Pruner(clone, inputs, _prune_config({selector: ratio}, importance)).prune()
    except PruningError as exc:
        log.warning("sensitivity: pruning %s at %g failed: %s", selector, ratio, exc)
        return RatioPoint(ratio, None, None, None, str(exc))
    metric = _evaluate(eval_fn, clone, f"{selector} pruned at {ratio:g}")
    return RatioPoint(ratio, metric, baseline - metric, pruner.report.macs_after)


_KEYWORDS = ("ratios", "importance", "groups")  # sensitivity()'s keywords before its config


def _config_from_keywords(
    config: SensitivityConfig | Mapping[str, Any] | None, keywords: Mapping[str, Any]
) -> SensitivityConfig | Mapping[str, Any] | None:
    """The config, or one made from the deprecated keywords (with a ``DeprecationWarning``)."""
    if not keywords:
        return config
    unknown = sorted(set(keywords) - set(_KEYWORDS))
    if unknown:
        raise TypeError(f"sensitivity() got unexpected keyword arguments {unknown}")
    if config is not None:
        raise ConfigError(
            f"sensitivity: give the settings in config or as keywords {sorted(keywords)}, not both"
        )
    warnings.warn(
        "sensitivity(..., ratios=, importance=, groups=) is deprecated and will be removed in "
        "the next release; pass config=SensitivityConfig(...) or a dict of its fields",
        DeprecationWarning,
        stacklevel=3,
    )
    return {k: v if isinstance(v, str) or v is None else list(v) for k, v in keywords.items()}


def sensitivity(
    model: nn.Module,
    example_inputs: Inputs,
    eval_fn: EvalFn,
    config: SensitivityConfig | Mapping[str, Any] | None = None,
    *,
    progress: bool = True,
    **deprecated: Any,
) -> SensitivityResult:
    """Prune each channel group alone at each ratio and record ``eval_fn`` and the MACs.

    Every measurement prunes a deep copy, so ``model`` is left untouched. ``eval_fn(model)``
    returns a number where higher is better (accuracy, say); the loss of a point is
    ``baseline - metric``. ``config`` (a :class:`SensitivityConfig` or a dict of its fields)
    says which ratios to try with which importance criterion; its ``groups`` restricts the
    analysis to these group names (the producer modules, as in ``build_groups``). A pruning
    that fails is recorded with its error rather than stopping the analysis. The keywords
    ``ratios=``, ``importance=`` and ``groups=`` still work for one release, with a
    ``DeprecationWarning``.

    Example:
        >>> import torch
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(16, 4)
        >>> def fidelity(pruned: nn.Module) -> float:  # higher is better
        ...     with torch.no_grad():
        ...         return -float((pruned(x) - m(x)).abs().mean())
        >>> result = sensitivity(m, x, fidelity, {"ratios": [0.25, 0.5]}, progress=False)
        >>> [(g.name, g.size, len(g.points)) for g in result.groups]
        [('0', 8, 2)]
    """
    cfg = from_dict(SensitivityConfig, _config_from_keywords(config, deprecated))
    inputs = (
        (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    )
    units = _units(model, inputs, cfg.groups)
    baseline_macs = analyze(model, inputs, shapes_only=True).macs
    baseline = _evaluate(eval_fn, copy.deepcopy(model), "the unpruned model")
    rows = []
    total = len(units) * len(cfg.ratios)
    with tqdm(total=total, disable=not progress, desc="sensitivity", unit="prune") as bar:
        for name, size in units.items():
            selector = escape_selector(name)
            points = []
            for r in cfg.ratios:
                bar.set_postfix_str(f"{name or '(model)'} @ {r:g}", refresh=False)
                point = _measure(model, inputs, eval_fn, selector, r, cfg.importance, baseline)
                points.append(point)
                bar.update()
            rows.append(GroupSensitivity(name, selector, size, tuple(points)))
    return SensitivityResult(
        baseline, baseline_macs, cfg.importance, cfg.ratios, tuple(rows), model, example_inputs
    )


def _curve(g: GroupSensitivity, value: str, origin: float) -> list[tuple[float, float]]:
    """(ratio, loss or MACs) of the successful points, starting from ratio 0."""
    done = [(p.ratio, getattr(p, value)) for p in g.points if p.loss is not None]
    return [(0.0, origin), *done]


def _group_ratio(g: GroupSensitivity, threshold: float) -> float:
    """PaddleSlim's rule: the largest measured ratio with loss <= threshold, interpolated
    linearly towards the next ratio (whose loss is above it); 0 when no loss is that low."""
    pts = _curve(g, "loss", 0.0)
    for i in range(len(pts) - 1, -1, -1):
        r0, l0 = pts[i]
        if l0 <= threshold:
            if i == len(pts) - 1:
                return r0
            r1, l1 = pts[i + 1]
            return r0 + (threshold - l0) * (r1 - r0) / (l1 - l0)
    return 0.0


def _group_macs(g: GroupSensitivity, ratio: float, baseline: int) -> float:
    """MACs with this group alone pruned at ``ratio``, interpolated between measured points."""
    pts = _curve(g, "macs", baseline)
    for (r0, m0), (r1, m1) in itertools.pairwise(pts):
        if ratio <= r1:
            return m0 + (ratio - r0) * (m1 - m0) / (r1 - r0)
    return pts[-1][1]


def _choose(result: SensitivityResult, threshold: float) -> dict[str, float]:
    return {g.selector: round(_group_ratio(g, threshold), 3) for g in result.groups}


def _predicted_macs(result: SensitivityResult, threshold: float) -> float:
    """Baseline MACs minus the sum of each group's own saving at its ratio for ``threshold``."""
    base = result.baseline_macs
    return base - sum(
        base - _group_macs(g, _group_ratio(g, threshold), base) for g in result.groups
    )


def _threshold_for(result: SensitivityResult, goal: float) -> float | None:
    """The lowest loss threshold whose predicted MACs are <= ``goal`` (None: out of reach).

    Each group's ratio only grows with the threshold, so the predicted MACs only fall and
    bisection applies.
    """
    losses = [p.loss for g in result.groups for p in g.points if p.loss is not None]
    lo, hi = min(0.0, *losses) - 1.0, max(0.0, *losses)
    if _predicted_macs(result, hi) > goal:
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _predicted_macs(result, mid) <= goal else (mid, hi)
    return hi


def _real_macs(
    model: nn.Module, inputs: Inputs, chosen: Mapping[str, float], importance: str
) -> int:
    clone = copy.deepcopy(model)
    return Pruner(clone, inputs, _prune_config(chosen, importance)).prune().report.macs_after


def _target_model(
    result: SensitivityResult, model: nn.Module | None, example_inputs: Inputs | None
) -> tuple[nn.Module, Inputs]:
    model = model if model is not None else result.model
    inputs = example_inputs if example_inputs is not None else result.example_inputs
    if model is None or inputs is None:
        raise ConfigError(
            "ratios_for_target: this result carries no model (loaded with from_dict?); pass "
            "model= and example_inputs= so the chosen ratios can be checked by pruning"
        )
    macs = analyze(model, inputs, shapes_only=True).macs
    if macs != result.baseline_macs:
        raise ConfigError(
            f"ratios_for_target: the model has {macs:,} MACs but the analysis measured "
            f"{result.baseline_macs:,}; pass the unpruned model that sensitivity() analysed"
        )
    return model, inputs


def ratios_for_target(
    result: SensitivityResult,
    target_macs: float,
    *,
    model: nn.Module | None = None,
    example_inputs: Inputs | None = None,
) -> dict[str, float]:
    """Per-group ratios keeping ``target_macs`` of the MACs with the least predicted loss.

    PaddleSlim's method: one loss threshold for all groups; each group takes the largest
    ratio whose measured loss is at most the threshold (interpolated linearly between the
    measured ratios, as PaddleSlim does). Assuming the groups' losses and MAC savings add up,
    a higher threshold prunes more, so bisection finds the lowest threshold whose predicted
    MACs meet the target. Summed savings misjudge the real ones (a pruned group also shrinks
    the inputs of the next layer, which another group's saving counts again, and channel
    counts are rounded), so the choice is checked by pruning a deep copy; while the real
    MACs exceed the target, the threshold is raised step by step (each step asks the
    prediction for as much more as it was short by) until they meet it.

    The result maps selectors (escaped group names) to ratios, every analysed group included
    (0.0: left whole). Use it with ``ratio: 0.0`` so groups that were not analysed stay whole.
    ``model``/``example_inputs`` default to those the analysis ran on.

    Raises:
        ConfigError: the target cannot be reached even with every group at its largest ratio.

    Example:
        >>> import torch, torchslim as ts
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(16, 4)
        >>> def fidelity(pruned: nn.Module) -> float:  # higher is better
        ...     with torch.no_grad():
        ...         return -float((pruned(x) - model(x)).abs().mean())
        >>> result = sensitivity(model, x, fidelity, {"ratios": [0.25, 0.5, 0.75]}, progress=False)
        >>> ratios = ratios_for_target(result, 0.5)  # half the MACs: 4 of the 8 hidden units
        >>> ratios
        {'0': 0.5}
        >>> ts.prune(model, x, {"ratio": 0.0, "ratios": ratios})[0].out_features
        4
    """
    if not 0 < target_macs <= 1:
        raise ConfigError(f"target_macs: a fraction of the MACs in (0, 1], got {target_macs}")
    model, inputs = _target_model(result, model, example_inputs)
    base = result.baseline_macs
    goal = target_macs * base
    if not any(p.loss is not None for g in result.groups for p in g.points):
        raise ConfigError(
            "target_macs: the analysis has no measurement to choose from (no prunable "
            "groups, or every pruning failed)"
        )
    threshold = _threshold_for(result, goal)
    if threshold is None:
        best = _predicted_macs(result, math.inf)
        raise ConfigError(
            f"target_macs {target_macs}: even with every group at its largest ratio the "
            f"analysis predicts {best / base:.1%} of the MACs; use a larger target_macs, or "
            "analyse more groups or larger ratios"
        )
    aim, tried, real = goal, None, base
    for _ in range(_TIGHTEN_STEPS):
        chosen = _choose(result, threshold)
        if chosen != tried:
            tried, real = chosen, _real_macs(model, inputs, chosen, result.importance)
            log.info("ratios_for_target: threshold %.4g keeps %.1f%%", threshold, 100 * real / base)
            if real <= goal:
                return chosen
        aim -= real - goal  # the prediction was optimistic by this much
        higher = _threshold_for(result, aim)
        if higher is None or threshold == math.inf:
            threshold = math.inf  # last step: every group at its largest ratio
        else:
            threshold = max(higher, threshold + 1e-9 * (1 + abs(threshold)))
    raise ConfigError(
        f"target_macs {target_macs}: pruned together at the largest ratios the analysis allows, "
        f"the groups keep {real / base:.1%} of the MACs (the per-group prediction was too "
        "optimistic); use a larger target_macs, or analyse more groups or larger ratios"
    )
