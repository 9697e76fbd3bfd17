"""Structured pruning: ``ts.prune(model, example_inputs, config)`` removes channels for real."""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchslim import reports
from torchslim._tensors import Inputs, call_model, input_tuple, model_args, module_mode
from torchslim.analysis import ModelStats, analyze
from torchslim.config import from_dict
from torchslim.errors import ConfigError, PruningError
from torchslim.graph.execution import ShapesOnly, measuring, shape_only_modules
from torchslim.graph.trace import ChannelGraph, trace
from torchslim.latency import VERIFY_TOLERANCE, LatencyCorrection, LatencyModel
from torchslim.models.specs import remember_spec
from torchslim.prune.apply import Keep, channel_positions, shrink_modules, slice_tensors
from torchslim.prune.config import PruneConfig as PruneConfig
from torchslim.prune.config import RatioMode as RatioMode
from torchslim.prune.hf import update_config
from torchslim.prune.importance import Group, Member, get_importance
from torchslim.prune.report import PruneReport, build_report
from torchslim.prune.target import search_keep
from torchslim.selection import check_patterns, matches

log = logging.getLogger("torchslim.prune")


def build_groups(graph: ChannelGraph, allow_inner: bool) -> list[Group]:
    """One :class:`Group` per prunable channel space, with every parameter along it."""
    by_atom: dict[int, list[tuple[str, int]]] = {}
    sp = graph.spaces
    prunable = set(graph.prunable(allow_inner=allow_inner))
    for name, dims in graph.param_dims.items():
        for d, layout in enumerate(dims):
            for atom in sp.atoms(layout):
                if atom in prunable:
                    by_atom.setdefault(atom, []).append((name, d))
    groups = []
    memo: dict[Any, Any] = {}
    for atom, pairs in by_atom.items():
        members = []
        for name, d in pairs:
            module = graph.module(name.rpartition(".")[0])
            pos = channel_positions(sp, graph.param_dims[name][d], atom, memo)
            members.append(Member(name, module, graph.tensors[name], d, pos))
        producer = next((m for m in members if m.is_producer), members[0])
        groups.append(Group(atom, sp.spaces[atom].size, producer.name.rpartition(".")[0], members))
    return groups


def _group_ratio(group: Group, config: PruneConfig, scale: float) -> float:
    ratio = config.ratio
    producers = [m for m in group.members if m.is_producer] or group.members
    for sel, r in config.ratios.items():
        if any(matches(m.name.rpartition(".")[0], m.module, sel) for m in producers):
            ratio = float(r)
            break
    return min(ratio * scale, config.max_ratio)


def kept_count(size: int, ratio: float, round_to: int) -> int:
    """Channels a group of ``size`` keeps at ``ratio``: at least one, rounded up to a multiple
    of ``round_to`` (where the group has that many).

    Example:
        >>> kept_count(64, 0.5, 1), kept_count(64, 0.55, 8), kept_count(6, 0.9, 8)
        (32, 32, 1)
    """
    keep = max(1, size - int(size * ratio))
    if round_to > 1 and size >= round_to:
        keep = min(size, max(round_to, -(-keep // round_to) * round_to))
    return keep


def select_channels(
    groups: list[Group], scores: Mapping[int, torch.Tensor], config: PruneConfig, scale: float
) -> Keep:
    """Kept channel indices per group for the configured ratio mode, times ``scale``."""
    keep: Keep = {}
    if config.mode == RatioMode.GLOBAL and not config.ratios:
        normed = {g.id: scores[g.id] / (scores[g.id].mean() + 1e-12) for g in groups}
        everything = torch.cat(list(normed.values()))
        # a unit counts as the channels it spans (an attention head: its head_dim), so that
        # ``ratio`` of all channels go, not ``ratio`` of all units
        widths = torch.cat([torch.full((g.size,), float(unit_width(g))) for g in groups])
        order = everything.argsort()
        target = float(widths.sum()) * min(config.ratio * scale, config.max_ratio)
        n_remove = int((widths[order].cumsum(0) <= target + 1e-6).sum())
        threshold = everything[order[n_remove - 1]] if n_remove > 0 else -float("inf")
        for g in groups:
            removable = int((normed[g.id] <= threshold).sum())
            ratio = min(removable / g.size, config.max_ratio)
            keep[g.id] = top_channels(normed[g.id], kept_count(g.size, ratio, config.round_to))
        return keep
    for g in groups:
        keep[g.id] = top_channels(
            scores[g.id], kept_count(g.size, _group_ratio(g, config, scale), config.round_to)
        )
    return keep


def unit_width(group: Group) -> int:
    """How many channels one of the group's units spans: 1 for a channel, ``head_dim`` for an
    attention head (the fewest of any weight running along it: a packed Q/K/V projection has
    three ``head_dim`` rows per head, the output projection ``head_dim`` columns).

    Example:
        >>> import torch
        >>> from torchslim.prune.importance import Member
        >>> qkv, out = nn.Linear(4, 12), nn.Linear(4, 4)
        >>> heads = [Member("weight", qkv, qkv.weight, 0, torch.arange(12).reshape(2, 6)),
        ...          Member("weight", out, out.weight, 1, torch.arange(4).reshape(2, 2))]
        >>> unit_width(Group(0, 2, "attn", heads))
        2
    """
    weights = [m for m in group.members if m.param.ndim >= 2]
    return min((int(m.positions.shape[1]) for m in weights), default=1)


def top_channels(score: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the ``k`` highest scores, in increasing order.

    Example:
        >>> top_channels(torch.tensor([0.1, 3.0, 2.0, 0.5]), 2)
        tensor([1, 2])
    """
    return torch.topk(score, k, largest=True, sorted=False).indices.sort().values


def _accumulate_grads(
    model: nn.Module, data: Iterable[Any], loss_fn: Callable[..., torch.Tensor], batches: int
) -> None:
    model.zero_grad(set_to_none=True)
    with module_mode(model, training=True):
        for i, batch in enumerate(data):
            if i >= batches:
                break
            inputs, targets = (
                (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
            )
            out = call_model(model, model_args(inputs))  # a dict batch: keyword tensors
            loss = loss_fn(out, targets) if targets is not None else loss_fn(out)
            loss.backward()


class _Snapshot:
    """Tensors and attributes of every module, to undo a pruning that broke the forward."""

    def __init__(self, model: nn.Module) -> None:
        self.state = [
            (m, dict(m._parameters), dict(m._buffers), dict(vars(m))) for m in model.modules()
        ]

    def restore(self) -> None:
        for m, params, buffers, attrs in self.state:
            m._parameters.clear()
            m._parameters.update(params)
            m._buffers.clear()
            m._buffers.update(buffers)
            vars(m).update({k: v for k, v in attrs.items() if not k.startswith("_")})


def _outputs_shape(out: Any, counts_vary: bool = False) -> Any:
    """The structure of a model's output: containers, dict keys and tensor shapes. With
    ``counts_vary`` (a forward that reads tensor values, e.g. a detector whose number of boxes
    depends on its scores) the first dimension of each tensor is left out."""
    if isinstance(out, torch.Tensor):
        shape = tuple(out.shape)
        return (len(shape), shape[1:]) if counts_vary else shape
    if isinstance(out, (list, tuple)):
        return type(out)(_outputs_shape(o, counts_vary) for o in out)
    if isinstance(out, dict):
        return {k: _outputs_shape(v, counts_vary) for k, v in out.items()}
    return None


def _cause(exc: BaseException) -> str:
    """The error a pruned forward raised, on one line (what a PruningError wraps)."""
    cause = exc.__cause__ or exc
    text = " ".join(str(cause).split())
    return f"{type(cause).__name__}: {text[:200]}"


def _failing_module(exc: BaseException, modules: Mapping[str, nn.Module]) -> str | None:
    """The innermost module of ``modules`` whose forward was running where the pruned
    forward raised (read from the traceback of the error a PruningError wraps)."""
    names = {id(m): n for n, m in modules.items()}
    found, tb = None, (exc.__cause__ or exc).__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            found = names[id(owner)]
        tb = tb.tb_next
    return found


def _where(exc: BaseException, modules: Mapping[str, nn.Module]) -> str:
    """``_cause`` with the module where it happened."""
    where = _failing_module(exc, modules)
    return _cause(exc) if not where else f"in module {where!r}: {_cause(exc)}"


def _analogues(group: Group, groups: list[Group]) -> list[Group]:
    """The groups named like ``group`` up to the indices of repeated blocks
    (``blocks.3.attn.qkv`` for ``blocks.0.attn.qkv``)."""
    pattern = re.sub(r"(^|\.)\d+(?=\.|$)", r"\1#", group.name)
    return [g for g in groups if g.id != group.id
            and re.sub(r"(^|\.)\d+(?=\.|$)", r"\1#", g.name) == pattern]  # fmt: skip


def _suspects(groups: list[Group], module: str | None) -> list[Group]:
    """The groups with parameters in ``module`` or its submodules; where there are none, those
    of the closest enclosing module that has some (not the whole model)."""
    while module:
        prefix = module + "."
        found = [g for g in groups if any(m.name.startswith(prefix) for m in g.members)]
        if found:
            return found
        module = module.rpartition(".")[0]
    return []


def _run(model: nn.Module, inputs: tuple) -> Any:
    with module_mode(model, training=False), torch.no_grad():
        return call_model(model, inputs)


def check_forward(model: nn.Module, inputs: tuple) -> Any:
    """One eval-mode, shapes-only forward pass (:class:`torchslim.graph.execution.ShapesOnly`,
    with :func:`torchslim.graph.execution.shape_only_modules`) that raises where the model no
    longer fits together. Cheaper than a real pass even on small models: a real one would first
    build a oneDNN kernel for every new convolution shape."""
    with measuring(model), ShapesOnly(), shape_only_modules(model):
        return call_model(model, inputs)


def apply_keep(model: nn.Module, graph: ChannelGraph, keep: Keep, inputs: tuple) -> ModelStats:
    """Slice tensors, fix attributes, check the forward and measure the result.

    Everything is undone if the pruned model fails to run or changes its output shape. The
    statistics after pruning are predicted from the trace (``ChannelGraph.stats_after``). The
    check is a shapes-only forward pass in eval mode (:func:`check_forward`): convolutions,
    matrix products, activations and BatchNorm are shape-checked without their arithmetic,
    everything else runs; a mismatch raises. A model whose control flow reads tensor values
    (``graph.data_dependent``) is checked with a real forward pass on ``inputs`` instead: a
    shapes-only one could take a branch the real input does not.
    """
    vary = bool(graph.data_dependent)
    expected = _outputs_shape(
        graph.output if graph.output is not None else _run(model, inputs), vary
    )
    snapshot = _Snapshot(model)
    try:
        slice_tensors(graph, keep)
        shrink_modules(model, graph, keep)
        check = _run if graph.data_dependent else check_forward
        got = _outputs_shape(check(model, inputs), vary)
    except Exception as exc:
        snapshot.restore()
        raise PruningError(
            f"the pruned model no longer runs ({type(exc).__name__}: {exc}); the model was "
            "restored. A module probably hard-codes a channel count: exclude it with ignore=[...]"
        ) from exc
    if got != expected:
        snapshot.restore()
        raise PruningError(
            f"pruning changed the output shape from {expected} to {got}; the model was restored"
        )
    update_config(model)  # a Hugging Face model's config follows its layers
    return graph.stats_after(keep)  # only for a pruning that stands (repair tries many)


def pruned_copy(model: nn.Module, graph: ChannelGraph, keep: Keep, inputs: tuple) -> nn.Module:
    """A copy of the traced ``model`` with ``keep`` applied; the model itself is unchanged.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = (torch.randn(1, 4),)
        >>> g = trace(m, x)
        >>> small = pruned_copy(m, g, {g.prunable()[0]: torch.arange(3)}, x)
        >>> small[0].out_features, m[0].out_features
        (3, 8)
    """
    clone = copy.deepcopy(model)
    named = dict(clone.named_parameters(remove_duplicate=False))
    named.update(dict(clone.named_buffers(remove_duplicate=False)))
    copied = dataclasses.replace(graph, model=clone, modules=dict(clone.named_modules()),
                                 tensors={n: named[n] for n in graph.tensors})  # fmt: skip
    apply_keep(clone, copied, keep, inputs)
    return clone


@dataclass
class Pruner:
    """One traced model, its groups and their scores; ``prune`` can be called repeatedly.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> Pruner(m, torch.randn(1, 4), {"ratio": 0.5}).prune().weight_shapes()["0.weight"]
        (4, 4)
    """

    model: nn.Module
    example_inputs: Inputs
    config: PruneConfig | Mapping[str, Any] | None = None
    data: Iterable[Any] | None = None
    loss_fn: Callable[..., torch.Tensor] | None = None
    report: PruneReport | None = None
    _latency: LatencyModel | None = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.config = from_dict(PruneConfig, self.config)
        self.inputs = input_tuple(self.example_inputs)
        self.config.selection.ignored(self.model)  # fail early on bad selectors
        check_patterns(self.model, self.config.ratios, "ratios")

    def graph_and_scores(self) -> tuple[ChannelGraph, list[Group], dict[int, torch.Tensor]]:
        cfg = self.config
        ignored = cfg.selection.ignored(self.model)
        graph = trace(self.model, self.inputs, ignore=ignored.__contains__, count=True,
                      strict=cfg.strict)  # fmt: skip
        groups = build_groups(graph, cfg.prune_head_dims)
        if cfg.importance == "taylor":
            if self.data is None or self.loss_fn is None:
                raise ConfigError("importance 'taylor' needs ts.prune(..., data=..., loss_fn=...)")
            _accumulate_grads(self.model, self.data, self.loss_fn, cfg.taylor_batches)
        torch.manual_seed(cfg.seed)
        fn = get_importance(cfg.importance)
        scores = {g.id: fn(g) for g in groups}
        if cfg.importance == "taylor":  # gradients of the unpruned shapes: not the model's
            self.model.zero_grad(set_to_none=True)
        return graph, groups, scores

    def prune(self) -> Pruner:
        """Trace, score and remove channels; the model object is shrunk in place.

        A pruning the model does not run with (or whose output structure changes) is
        repaired: the groups responsible are found by bisection, kept whole, and the rest is
        pruned (selected again, so a ``target_macs`` is still aimed at); the report lists them
        (``repaired``). With ``strict=True`` the first failure raises instead."""
        start = time.perf_counter()
        remember_spec(self.model)  # a torchvision model is recognised by its unpruned shapes
        graph, groups, scores = self.graph_and_scores()
        self._latency = None  # a latency predictor is calibrated on the model as it is now
        repaired: dict[int, tuple[str, str]] = {}  # group id -> (its name, what broke)
        while True:
            active = [g for g in groups if g.id not in repaired]
            keep = self._select(graph, active, scores)
            try:
                return self.apply(graph, active, keep, start, repaired=repaired)
            except PruningError as exc:
                if self.config.strict or not active:
                    raise
                culprit, error = self._culprit(graph, active, keep, exc)
                repaired[culprit.id] = (culprit.name, error)
                # The same group in the other repeats of a block (blocks.3.attn.qkv for
                # blocks.0.attn.qkv) most likely breaks too: one forward each to confirm.
                for other in _analogues(culprit, active):
                    broke = self._try(graph, [other], keep)
                    if broke is not None:
                        repaired[other.id] = (other.name, broke)
                log.info("group %s kept whole: pruning it breaks the model (%s)",
                         culprit.name, error)  # fmt: skip

    def _select(self, graph: ChannelGraph, groups: list[Group],
                scores: dict[int, torch.Tensor]) -> Keep:  # fmt: skip
        cfg = self.config

        def select(scale: float) -> Keep:
            return select_channels(groups, scores, cfg, scale)

        top = cfg.max_ratio / (cfg.ratio if cfg.ratio > 0 else 0.5)
        if cfg.target_latency is not None and groups:
            return self._latency_keep(graph, groups, scores, select, top)
        if cfg.target_macs is None or not groups:
            return select(1.0)
        stats = graph.stats or analyze(self.model, self.inputs, shapes_only=True)
        return search_keep(graph, groups, scores, select, stats.macs, cfg.target_macs, top,
                           cfg.round_to)  # fmt: skip

    def _latency_keep(self, graph: ChannelGraph, groups: list[Group],
                      scores: dict[int, torch.Tensor], select: Callable[[float], Keep],
                      top: float) -> Keep:  # fmt: skip
        """Kept channels whose predicted latency meets ``target_latency``; then the pruned
        model is measured whole with the dense one, and where the prediction is off by more
        than ``VERIFY_TOLERANCE`` (2.5%) the predictions are corrected by the measurement
        (``LatencyCorrection``) and the channels chosen again (up to ``verify_latency``
        measurements)."""
        cfg = self.config
        latency = self._latency_model(graph, select, top)
        dense, fix = latency.predict_ms(), LatencyCorrection()

        def cost(keep: Keep) -> float:  # predicted ms, corrected by the last measurement
            return dense * fix(latency.predict_ms(keep) / dense)

        def choose() -> Keep:
            return search_keep(graph, groups, scores, select, dense, cfg.target_latency, top,
                               cfg.round_to, cost=cost, name="target_latency")  # fmt: skip

        keep = choose()
        for _ in range(cfg.verify_latency):
            raw = latency.predict_ms(keep) / dense
            predicted = fix(raw)
            try:
                pruned = pruned_copy(self.model, graph, keep, self.inputs)
            except Exception as exc:  # the repair loop deals with it; the table's guess stands
                log.info("target_latency: not verified (the pruned copy fails: %s)", exc)
                break
            whole, part = latency.measure_many([self.model, pruned])
            log.info("target_latency: predicted %.3f of the model's latency, measured %.3f "
                     "(ONNX Runtime, batch %d)", predicted, part / whole,
                     cfg.latency_batch_size)  # fmt: skip
            if abs(part / whole / predicted - 1) <= VERIFY_TOLERANCE:
                break
            fix = LatencyCorrection.measured(raw, part / whole)
            keep = choose()
        return keep

    def _latency_model(self, graph: ChannelGraph, select: Callable[[float], Keep],
                       top: float) -> LatencyModel:  # fmt: skip
        """The model's latency predictor, calibrated once (on the dense model and two uniform
        cuts) and kept for the repairs' selections."""
        cfg = self.config
        if self._latency is not None:
            return self._latency
        latency = LatencyModel(self.model, self.inputs, graph,
                               batch_size=cfg.latency_batch_size, threads=cfg.latency_threads,
                               progress=True)  # fmt: skip
        base = cfg.ratio if cfg.ratio > 0 else 0.5
        cuts = [select(min(r / base, top)) for r in (0.3, 0.6)]

        def build(keep: Keep | None) -> nn.Module:
            return self.model if keep is None else pruned_copy(self.model, graph, keep,
                                                               self.inputs)  # fmt: skip

        latency.calibrate(build, [None, *cuts])
        self._latency = latency
        return latency

    def _culprit(self, graph: ChannelGraph, groups: list[Group], keep: Keep,
                 failure: PruningError) -> tuple[Group, str]:  # fmt: skip
        """A group whose pruning breaks the model. The suspects come first: the groups with
        parameters in the module where the pruned forward failed (or, where it has none, in
        its closest enclosing module that has some); the first of them whose pruning, with the
        suspects before it, breaks the model. Failing that, the same search over every group
        (the shortest failing prefix, by bisection; each try is undone)."""
        where = _failing_module(failure, graph.modules)
        suspects = _suspects(groups, where)
        if suspects and len(suspects) < len(groups):
            found = self._first_breaking(graph, suspects, keep, None)
            if found is not None:
                return found
        found = self._first_breaking(graph, groups, keep, failure)
        assert found is not None  # the whole list is known to fail
        return found

    def _first_breaking(self, graph: ChannelGraph, groups: list[Group], keep: Keep,
                        failure: PruningError | None) -> tuple[Group, str] | None:  # fmt: skip
        """The first group of ``groups`` whose pruning, with the groups before it, breaks the
        model (``failure``: how all of them together failed, if known), or None."""
        good, bad = 0, len(groups)
        error = None if failure is None else _where(failure, graph.modules)
        if error is None:  # is the whole list broken?
            error = self._try(graph, groups, keep)
            if error is None:
                return None
        while bad - good > 1:
            mid = (good + bad) // 2
            broke = self._try(graph, groups[:mid], keep)
            if broke is None:
                good = mid
            else:
                bad, error = mid, broke
        return groups[bad - 1], error

    def _try(self, graph: ChannelGraph, groups: list[Group], keep: Keep) -> str | None:
        """How pruning ``groups`` alone breaks the model (None: it runs); always undone."""
        trial = {g.id: keep[g.id] for g in groups if g.id in keep}
        snapshot = _Snapshot(self.model)
        try:
            apply_keep(self.model, graph, trial, self.inputs)
        except PruningError as exc:
            return _where(exc, graph.modules)
        snapshot.restore()
        return None

    def apply(
        self,
        graph: ChannelGraph,
        groups: list[Group],
        keep: Keep,
        start: float | None = None,
        *,
        repaired: Mapping[int, tuple[str, str]] | None = None,
    ) -> Pruner:
        """Remove everything but ``keep`` (from this model's graph) and write the report;
        ``repaired``: groups kept whole because pruning them broke the model (id -> (name,
        what broke))."""
        start = time.perf_counter() if start is None else start
        before = graph.stats or analyze(self.model, self.inputs, shapes_only=True)
        after = apply_keep(self.model, graph, keep, self.inputs) if groups else before
        self.report = build_report(before, after, graph, groups, keep, time.perf_counter() - start,
                                   repaired=tuple((repaired or {}).values()))  # fmt: skip
        reports.record(self.model, "prune", self.report)
        if self.report.channels_after == self.report.channels_before:
            warnings.warn(f"ts.prune removed nothing: {self.report.why_nothing()}", UserWarning,
                          stacklevel=4)  # fmt: skip
        return self

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(p.shape) for n, p in self.model.named_parameters()}


def prune(
    model: nn.Module,
    example_inputs: Inputs,
    config: PruneConfig | Mapping[str, Any] | None = None,
    *,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
) -> nn.Module:
    """Remove channels for real; returns the same model object, shrunk.

    Coupled channels (residual adds, concatenations, depthwise convs, attention heads...) are
    found by tracing one forward pass and removed together; channels reaching an output are
    kept. The per-layer report is ``ts.report(model)`` (:func:`torchslim.reports.report`).

    A forward whose control flow reads tensor values (``if x.sum() > 0``, ``.item()``) is
    traced and checked on the example input's real values, and pruned for the branches that
    input takes; a warning says so and names the modules it never reached, which may no
    longer fit if another input takes their branch (see :func:`torchslim.graph.trace`).
    Example inputs the model does not run on raise :class:`~torchslim.errors.InputError`.

    Example:
        >>> import torchvision, torch
        >>> m = torchvision.models.resnet18()
        >>> m = prune(m, torch.randn(1, 3, 224, 224), {"ratio": 0.5})
        >>> m(torch.randn(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    Pruner(model, example_inputs, config, data, loss_fn).prune()
    return model


def prune_report(model: nn.Module) -> PruneReport:
    """Deprecated: ``ts.report(model, "prune")``. The report of the last :func:`prune` call."""
    warnings.warn("prune_report(model) is deprecated; use ts.report(model) (or "
                  "ts.report(model, 'prune'))", DeprecationWarning, stacklevel=2)  # fmt: skip
    return reports.report(model, "prune")
