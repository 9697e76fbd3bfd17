"""Automatic compression search on Optuna: per-layer pruning ratios under budgets.

``ts.search(model, example_inputs, config, data=...)`` is the public call; this package holds
its config, the search space derived from the model's trace, the samplers (PaddleSlim's
simulated annealing as an Optuna sampler; TPE, random, NSGA-II) and the cheap evaluator.
Optuna is the ``search`` extra: importing this package needs it.
"""

from torchslim.auto.config import AnnealingConfig, SearchConfig, Strategy
from torchslim.auto.evaluate import holdout_split, recalibrate_batchnorm
from torchslim.auto.samplers import AnnealingSampler, make_sampler, pareto
from torchslim.auto.search import SearchResult, search
from torchslim.auto.space import PruneSpace

__all__ = [
    "AnnealingConfig",
    "AnnealingSampler",
    "PruneSpace",
    "SearchConfig",
    "SearchResult",
    "Strategy",
    "holdout_split",
    "make_sampler",
    "pareto",
    "recalibrate_batchnorm",
    "search",
]
