"""Structured pruning (channels removed for real), importance criteria, sparsity."""

from torchslim.prune.config import SensitivityConfig, SlimmingConfig
from torchslim.prune.importance import (
    IMPORTANCE,
    Group,
    Member,
    get_importance,
    register_importance,
)
from torchslim.prune.pruner import PruneConfig, Pruner, RatioMode, prune, prune_report
from torchslim.prune.refit import ReconstructReport, reconstruct
from torchslim.prune.report import LayerChange, PruneReport
from torchslim.prune.schedules import (
    BNSparsity,
    SoftFilterPruning,
    iterative_prune,
    network_slimming,
    prune_and_finetune,
)
from torchslim.prune.sensitivity import SensitivityResult, ratios_for_target, sensitivity
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
    "BNSparsity",
    "GradualSparsity",
    "Group",
    "LayerChange",
    "LayerSparsity",
    "Member",
    "PruneConfig",
    "PruneReport",
    "Pruner",
    "RatioMode",
    "ReconstructReport",
    "SensitivityConfig",
    "SensitivityResult",
    "SlimmingConfig",
    "SoftFilterPruning",
    "SparsityConfig",
    "SparsityReport",
    "SparsitySchedule",
    "SparsityScope",
    "WeightMask",
    "cubic_sparsity",
    "get_importance",
    "iterative_prune",
    "make_permanent",
    "network_slimming",
    "prune",
    "prune_and_finetune",
    "prune_report",
    "ratios_for_target",
    "reconstruct",
    "register_importance",
    "sensitivity",
    "sparsify",
    "sparsity_report",
]
