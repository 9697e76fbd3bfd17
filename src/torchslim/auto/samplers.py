"""Search strategies as Optuna samplers: simulated annealing as PaddleSlim defines it (an
Optuna user-defined sampler), and Optuna's own TPE, random and NSGA-II."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from torchslim.auto.config import AnnealingConfig, SearchConfig, Strategy

Params = dict[str, Any]


def _key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def _memo(meets: Callable[[Params], bool]) -> Callable[[Params], bool]:
    """``meets``, each candidate's answer kept (for one proposal: the budget may change
    between trials, a corrected latency prediction)."""
    known: dict[tuple[tuple[str, Any], ...], bool] = {}

    def cached(params: Params) -> bool:
        key = _key(params)
        if key not in known:
            known[key] = meets(params)
        return known[key]

    return cached


class _RelativeSampler(optuna.samplers.BaseSampler):
    """A sampler that proposes every variable at once (``sample_relative``), the variables
    read from the study's first finished trial; ``self.inner`` samples a variable on its own
    (before any trial finished, or one the relative proposal left out)."""

    inner: optuna.samplers.BaseSampler

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return dict(done[0].distributions) if done else {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)


class AnnealingSampler(_RelativeSampler):
    """PaddleSlim's simulated annealing on categorical grids, as an Optuna sampler.

    The walk's state is read back from the study's finished trials in order: a trial that
    scored better than the current state replaces it, a worse one with probability
    ``exp((score - current) / T)`` (the draw seeded by the trial number), and ``T`` shrinks by
    ``reduce_rate`` per trial. Each new candidate is a neighbour of the current state:
    ``moves`` variables moved one grid step up or down (further once the nearest neighbours
    have all been tried), redrawn (up to ``tries`` times) until
    ``constraint`` accepts it and no trial of the study (any worker's, finished or running)
    has it, so infeasible or repeated candidates are never evaluated. With ``order`` (each
    variable's choices from the largest model to the smallest; needs ``constraint``), every
    neighbour is moved onto the edge of the budget (:func:`fill_to_budget`) before those
    checks: a step walk under a budget otherwise drifts below it, each accepted shrink leaving
    slack no later move spends. Because the state lives in the storage, a resumed search, or
    several workers on one storage, continue the same walk.

    Example:
        >>> import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> grid = [0.0, 0.1, 0.2, 0.3]
        >>> sampler = AnnealingSampler(AnnealingConfig(init_temperature=0.01, moves=1), seed=0)
        >>> study = optuna.create_study(direction="maximize", sampler=sampler)
        >>> study.enqueue_trial({"a": 0.0, "b": 0.0})
        >>> study.optimize(lambda t: t.suggest_categorical("a", grid)
        ...                + t.suggest_categorical("b", grid), n_trials=30)
        >>> study.best_value
        0.6
    """

    def __init__(
        self,
        config: AnnealingConfig | None = None,
        *,
        seed: int = 0,
        constraint: Callable[[Params], bool] | None = None,
        order: Mapping[str, Sequence[Any]] | None = None,
        tries: int = 200,
    ) -> None:
        if order is not None and constraint is None:
            raise ValueError("AnnealingSampler: order (filling to the budget) needs a constraint")
        self.config = config or AnnealingConfig()
        self.seed = seed
        self.constraint = constraint
        self.order = order
        self.tries = tries
        self.inner = optuna.samplers.RandomSampler(seed=seed)

    def current(self, study: optuna.Study) -> FrozenTrial | None:
        """The walk's state: replayed over the finished trials in trial-number order. If the
        constraint has changed since and the state no longer meets it (a corrected latency
        budget), the best finished trial that does; none: ``None``."""
        done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: t.number)  # fmt: skip
        if not done:
            return None
        state, temperature = done[0], self.config.init_temperature
        for trial in done[1:]:
            assert trial.value is not None and state.value is not None
            gain = trial.value - state.value
            draw = random.Random(f"{self.seed}:{trial.number}").random()
            if gain > 0 or draw < math.exp(gain / max(temperature, 1e-12)):
                state = trial
            temperature *= self.config.reduce_rate
        if self.constraint is not None and not self.constraint(state.params):
            fits = [t for t in done if self.constraint(t.params)]
            return max(fits, key=lambda t: t.value) if fits else None
        return state

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> Params:
        state = self.current(study)
        if state is None and self.order is not None:
            # no finished trial meets the (corrected) budget: walk on from the best one, whose
            # neighbours filling shrinks into the budget
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            state = max(done, key=lambda t: t.value) if done else None
        if state is None or not search_space:
            return {}
        rng = random.Random(f"{self.seed}:move:{trial.number}")
        names = sorted(search_space)
        # Candidates any worker has tried or is trying are not proposed again.
        tried = {_key(t.params) for t in study.get_trials(deepcopy=False) if t.params}
        # one proposal's tries and fills ask about the same candidates again and again
        meets = _memo(self.constraint) if self.constraint is not None else None
        filled: dict[tuple[tuple[str, Any], ...], Params] = {}  # a small space repeats moves
        fallback = None
        for attempt in range(self.tries):
            params = dict(state.params)
            step = 1 + attempt // 20  # a neighbourhood tried out: look one step further
            for name in rng.sample(names, min(self.config.moves, len(names))):
                dist = search_space[name]
                assert isinstance(dist, CategoricalDistribution)
                choices = list(dist.choices)
                i = choices.index(params[name]) + rng.randint(-step, step)
                params[name] = choices[min(max(i, 0), len(choices) - 1)]
            if self.order is not None:
                assert meets is not None
                moved = _key(params)
                if moved not in filled:
                    filled[moved] = fill_to_budget(params, self.order, meets)
                params = dict(filled[moved])
            # a set look-up first: the constraint may predict a latency
            new = _key(params) not in tried
            if (new or fallback is None) and (meets is None or meets(params)):
                if new:
                    return params
                fallback = params
        return fallback or dict(state.params)  # no new feasible neighbour: a repeat


def fill_to_budget(
    params: Mapping[str, Any],
    order: Mapping[str, Sequence[Any]],
    meets: Callable[[Params], bool],
    steps: int = 12,
) -> Params:
    """``params`` moved onto the edge of the budget: every variable named in ``order`` (its
    choices from the largest model to the smallest) moves from its choice by one common
    fraction ``t`` of the way to its first choice (a candidate that meets the budget: the
    largest ``t`` that still does, found by bisection in ``steps`` halvings) or to its last (one
    that does not: the smallest ``t`` that does); then the variables in turn take a step
    more toward the larger model while the budget still allows one. The candidate keeps its shape
    (which layers it prunes more) and spends what the budget allows; one that no ``t`` brings
    into the budget comes back unchanged.

    Example:
        >>> order = {"a": [0, 1, 2, 3, 4], "b": [0, 1, 2, 3, 4]}
        >>> def meets(p):  # a budget: at least 5 steps of compression in all
        ...     return p["a"] + p["b"] >= 5
        >>> fill_to_budget({"a": 4, "b": 4}, order, meets)  # under budget: grows
        {'a': 2, 'b': 3}
        >>> fill_to_budget({"a": 0, "b": 2}, order, meets)  # over budget: shrinks
        {'a': 2, 'b': 3}
    """
    index = {n: list(choices).index(params[n]) for n, choices in order.items() if n in params}
    fits = meets(dict(params))

    def at(t: float) -> Params:
        out = dict(params)
        for n, i in index.items():
            end = 0 if fits else len(order[n]) - 1
            out[n] = order[n][math.floor(i + t * (end - i) + 0.5)]
        return out

    if meets(at(1.0)) == fits:  # all the way still fits, or even the smallest model does not
        return at(1.0) if fits else dict(params)
    lo, hi = 0.0, 1.0  # fits: at(lo) meets, at(hi) does not; else the other way round
    best = dict(params) if fits else at(1.0)
    for _ in range(steps):
        mid = (lo + hi) / 2
        candidate = at(mid)
        if meets(candidate) == fits:
            lo = mid
            if fits:
                best = candidate
        else:
            hi = mid
            if not fits:
                best = candidate
    grown = True
    while grown:  # what one common fraction leaves: a step more for each, while one fits
        grown = False
        for n in index:
            i = list(order[n]).index(best[n])
            if i > 0 and meets(larger := {**best, n: order[n][i - 1]}):
                best, grown = larger, True
    return best


class FillingSampler(_RelativeSampler):
    """Another sampler's candidates, each moved onto the edge of the budget
    (:func:`fill_to_budget`) before it is evaluated.

    TPE, random sampling and NSGA-II draw every variable from its whole range, so under a
    tight budget most of their candidates are over it (rejected, at no cost) and those that
    fit are often far under it: a smaller model than the budget pays for, scored against
    larger ones. Filled, every candidate spends the budget, in the proportions the sampler
    chose; the sampler learns from the filled candidates (the trials hold them).
    ``order``: each variable's choices from the largest model to the smallest; ``meets``:
    whether a candidate meets the budget. The variables come from the study's first finished
    trial (before it, candidates are the inner sampler's, unfilled).

    Example:
        >>> import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> grid = [0, 1, 2, 3, 4]  # steps of compression: 0 is the largest model
        >>> sampler = FillingSampler(optuna.samplers.RandomSampler(seed=0),
        ...                          {"a": grid, "b": grid}, lambda p: p["a"] + p["b"] >= 4)
        >>> study = optuna.create_study(direction="maximize", sampler=sampler)
        >>> study.enqueue_trial({"a": 2, "b": 2})
        >>> study.optimize(lambda t: t.suggest_categorical("a", grid)
        ...                - t.suggest_categorical("b", grid), n_trials=10)
        >>> sorted({t.params["a"] + t.params["b"] for t in study.trials[1:]})
        [4]
    """

    def __init__(
        self,
        inner: optuna.samplers.BaseSampler,
        order: Mapping[str, Sequence[Any]],
        meets: Callable[[Params], bool],
    ) -> None:
        self.inner, self.order, self.meets = inner, order, meets

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> Params:
        if not search_space:
            return {}
        inner_space = self.inner.infer_relative_search_space(study, trial)
        params = dict(self.inner.sample_relative(study, trial, inner_space)) if inner_space else {}
        for name, dist in search_space.items():
            if name not in params:
                params[name] = self.inner.sample_independent(study, trial, name, dist)
        return fill_to_budget(params, self.order, _memo(self.meets))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)


def make_sampler(
    config: SearchConfig,
    constraint: Callable[[Params], bool] | None = None,
    order: Mapping[str, Sequence[Any]] | None = None,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``config.strategy``, seeded with ``config.seed``; with
    ``config.fills`` (by default for TPE, random and NSGA-II, and for annealing under a
    latency budget), ``constraint`` (the budget)
    and ``order`` (each variable's choices from the largest model to the smallest) given, a
    :class:`FillingSampler` around it (simulated annealing fills its own neighbours).

    Example:
        >>> type(make_sampler(SearchConfig(strategy="tpe"))).__name__
        'TPESampler'
        >>> type(make_sampler(SearchConfig(strategy="tpe"), lambda p: True, {"a": [0, 1]})).__name__
        'FillingSampler'
    """
    fill = config.fills and constraint is not None and order is not None
    if config.strategy is Strategy.SA:
        return AnnealingSampler(config.sa, seed=config.seed, constraint=constraint,
                                order=order if fill else None)  # fmt: skip
    if config.strategy is Strategy.TPE:
        inner: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=config.seed)
    elif config.strategy is Strategy.NSGA2:
        inner = optuna.samplers.NSGAIISampler(seed=config.seed)
    else:
        inner = optuna.samplers.RandomSampler(seed=config.seed)
    if fill:
        assert constraint is not None and order is not None
        return FillingSampler(inner, order, constraint)
    return inner


def pareto(trials: Sequence[FrozenTrial], keys: Mapping[str, bool]) -> list[FrozenTrial]:
    """The trials no other trial beats on every key (``keys``: user attribute -> higher is
    better), best score first.

    Example:
        >>> from optuna.trial import create_trial
        >>> ts = [create_trial(value=v, user_attrs={"macs": m}) for v, m in
        ...       [(90, 0.5), (85, 0.3), (80, 0.4)]]
        >>> [t.value for t in pareto(ts, {"value": True, "macs": False})]
        [90, 85]
    """

    def get(t: FrozenTrial, key: str) -> float:
        v = t.value if key == "value" else t.user_attrs[key]
        return float(v) if keys[key] else -float(v)

    front = [t for t in trials
             if not any(all(get(o, k) >= get(t, k) for k in keys)
                        and any(get(o, k) > get(t, k) for k in keys) for o in trials)]  # fmt: skip
    return sorted(front, key=lambda t: -get(t, "value"))
