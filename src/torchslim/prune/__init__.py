"""Structured pruning (channels removed for real), importance criteria, sparsity."""

import sys
import types
from typing import Any

from torchslim.prune.importance import (
    IMPORTANCE,
    Group,
    Member,
    get_importance,
    register_importance,
)
from torchslim.prune.pruner import PruneConfig, Pruner, RatioMode, prune, prune_report
from torchslim.prune.report import LayerChange, PruneReport
from torchslim.prune.sparsity import (
    GradualSparsity,
    LayerSparsity,
    SparsityConfig,
    SparsityReport,
    SparsitySchedule,
    SparsityScope,
    WeightMask,
    cubic_sparsity,
    make_permanent,
    sparsify,
    sparsity_report,
)

__all__ = [
    "IMPORTANCE",
    "GradualSparsity",
    "Group",
    "LayerChange",
    "LayerSparsity",
    "Member",
    "PruneConfig",
    "PruneReport",
    "Pruner",
    "RatioMode",
    "SparsityConfig",
    "SparsityReport",
    "SparsitySchedule",
    "SparsityScope",
    "WeightMask",
    "cubic_sparsity",
    "get_importance",
    "make_permanent",
    "prune",
    "prune_report",
    "register_importance",
    "sparsify",
    "sparsity_report",
]


class _CallableModule(types.ModuleType):
    # ``ts.prune(model, x, config)`` is the public call and ``ts.prune.PruneConfig`` the
    # namespace: the package itself forwards calls to :func:`prune`.
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return prune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
