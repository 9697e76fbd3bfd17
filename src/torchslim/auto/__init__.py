"""Automatic compression search on Optuna: per-layer pruning ratios under budgets.

``ts.search(model, example_inputs, config, data=...)`` is the public call; this package holds
its config, the search spaces derived from the model (pruning ratios from its trace, weight
bits per quantizable layer), the samplers (PaddleSlim's
simulated annealing as an Optuna sampler; TPE, random, NSGA-II) and the cheap evaluator.
Optuna is the ``search`` extra: the config, space and evaluator import without it (recipes
name a search stage); the samplers and :func:`search` import it on first use.
"""

from typing import TYPE_CHECKING, Any

from torchslim.auto.bits import BitSpace
from torchslim.auto.config import AnnealingConfig, SearchConfig, SpaceKind, Strategy
from torchslim.auto.evaluate import holdout_split, recalibrate_batchnorm
from torchslim.auto.space import PruneSpace

if TYPE_CHECKING:  # for type checkers and the API docs; at run time __getattr__ imports them
    from torchslim.auto.samplers import AnnealingSampler, make_sampler, pareto
    from torchslim.auto.study import SearchResult, search

_NEED_OPTUNA = {
    "AnnealingSampler": "torchslim.auto.samplers",
    "make_sampler": "torchslim.auto.samplers",
    "pareto": "torchslim.auto.samplers",
    "SearchResult": "torchslim.auto.study",
    "search": "torchslim.auto.study",
}


def __getattr__(name: str) -> Any:
    if name in _NEED_OPTUNA:
        import importlib

        return getattr(importlib.import_module(_NEED_OPTUNA[name]), name)
    raise AttributeError(f"module 'torchslim.auto' has no attribute {name!r}")


__all__ = [
    "AnnealingConfig",
    "AnnealingSampler",
    "BitSpace",
    "PruneSpace",
    "SearchConfig",
    "SearchResult",
    "SpaceKind",
    "Strategy",
    "holdout_split",
    "make_sampler",
    "pareto",
    "recalibrate_batchnorm",
    "search",
]
