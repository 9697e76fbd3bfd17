"""Knowledge distillation: feature hooks, response/feature/relation losses (token losses for
transformers too), the distiller.

``ts.distill(student, teacher, train_data, config)`` is the public call (a plain function);
this package holds its configs and losses (``from torchslim.distill import DistillConfig``).
"""

from torchslim.distill.config import DistillConfig, LossSpec, MutualConfig
from torchslim.distill.distiller import (
    Distiller,
    DistillResult,
    IndexedDataset,
    distill,
    fit_distillation,
)
from torchslim.distill.hooks import OUTPUT, FeatureHooks
from torchslim.distill.losses import (
    LOSSES,
    AttentionTransferLoss,
    DetectionHeadLoss,
    DistillLoss,
    FitNetLoss,
    FSPLoss,
    KDLoss,
    LogitL2Loss,
    RKDLoss,
    SimilarityPreservingLoss,
    attention_map,
    build_loss,
    class_rows,
    fsp_matrix,
    register_loss,
    similarity_matrix,
)
from torchslim.distill.mutual import MutualLearning, MutualResult, mimicry_kl, mutual_learning
from torchslim.distill.token_losses import (  # registers hidden, attn_relation, cosine
    AttentionRelationLoss,
    CosineLoss,
    HiddenStateLoss,
    relation_log_probs,
)

__all__ = [
    "LOSSES",
    "OUTPUT",
    "AttentionRelationLoss",
    "AttentionTransferLoss",
    "CosineLoss",
    "DetectionHeadLoss",
    "DistillConfig",
    "DistillLoss",
    "DistillResult",
    "Distiller",
    "FSPLoss",
    "FeatureHooks",
    "FitNetLoss",
    "HiddenStateLoss",
    "IndexedDataset",
    "KDLoss",
    "LogitL2Loss",
    "LossSpec",
    "MutualConfig",
    "MutualLearning",
    "MutualResult",
    "RKDLoss",
    "SimilarityPreservingLoss",
    "attention_map",
    "build_loss",
    "class_rows",
    "distill",
    "fit_distillation",
    "fsp_matrix",
    "mimicry_kl",
    "mutual_learning",
    "register_loss",
    "relation_log_probs",
    "similarity_matrix",
]
