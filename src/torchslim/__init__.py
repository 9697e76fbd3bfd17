"""torchslim: make PyTorch models smaller and faster, and measure it.

Example:
    >>> import torch, torchslim as ts
    >>> model = ts.models.create("resnet20", num_classes=10, in_channels=1)
    >>> ts.analyze(model, torch.randn(1, 1, 28, 28)).params > 0
    True
"""

from torchslim import data, losses, models, train
from torchslim.analysis import LayerStats, ModelStats, analyze, measure_latency
from torchslim.errors import (
    CheckpointError,
    ConfigError,
    DataNotFoundError,
    ModelNotFoundError,
    TorchslimError,
    TrainingDivergedError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataNotFoundError",
    "LayerStats",
    "ModelNotFoundError",
    "ModelStats",
    "TorchslimError",
    "TrainingDivergedError",
    "__version__",
    "analyze",
    "data",
    "losses",
    "measure_latency",
    "models",
    "train",
]
