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


class AnnealingSampler(optuna.samplers.BaseSampler):
    """PaddleSlim's simulated annealing on categorical grids, as an Optuna sampler.

    The walk's state is read back from the study's finished trials in order: a trial that
    scored better than the current state replaces it, a worse one with probability
    ``exp((score - current) / T)`` (the draw seeded by the trial number), and ``T`` shrinks by
    ``reduce_rate`` per trial. Each new candidate is a neighbour of the current state:
    ``moves`` variables moved one grid step up or down (further once the nearest neighbours
    have all been tried), redrawn (up to ``tries`` times) until
    ``constraint`` accepts it and no trial of the study (any worker's, finished or running)
    has it, so infeasible or repeated candidates are never evaluated. Because the state
    lives in the storage, a resumed search, or several workers on one storage, continue the
    same walk.

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
        tries: int = 200,
    ) -> None:
        self.config = config or AnnealingConfig()
        self.seed = seed
        self.constraint = constraint
        self.tries = tries
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return dict(done[0].distributions) if done else {}

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
        if state is None or not search_space:
            return {}
        rng = random.Random(f"{self.seed}:move:{trial.number}")
        names = sorted(search_space)
        # Candidates any worker has tried or is trying are not proposed again.
        tried = {_key(t.params) for t in study.get_trials(deepcopy=False) if t.params}
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
            if self.constraint is None or self.constraint(params):
                if _key(params) not in tried:
                    return params
                fallback = fallback or params
        return fallback or dict(state.params)  # no new feasible neighbour: a repeat

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)


def make_sampler(
    config: SearchConfig, constraint: Callable[[Params], bool] | None = None
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``config.strategy``, seeded with ``config.seed``.

    Example:
        >>> type(make_sampler(SearchConfig(strategy="tpe"))).__name__
        'TPESampler'
    """
    if config.strategy is Strategy.SA:
        return AnnealingSampler(config.sa, seed=config.seed, constraint=constraint)
    if config.strategy is Strategy.TPE:
        return optuna.samplers.TPESampler(seed=config.seed)
    if config.strategy is Strategy.NSGA2:
        return optuna.samplers.NSGAIISampler(seed=config.seed)
    return optuna.samplers.RandomSampler(seed=config.seed)


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
