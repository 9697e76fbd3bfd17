"""torchslim: make PyTorch models smaller and faster, and measure it.

Example:
    >>> import torch, torchslim as ts
    >>> model = ts.models.create("resnet20", num_classes=10, in_channels=1)
    >>> ts.analyze(model, torch.randn(1, 1, 28, 28)).params > 0
    True
"""

from typing import TYPE_CHECKING, Any

from torchslim import data, graph, losses, models, quant, train
from torchslim.analysis import LayerStats, ModelStats, analyze
from torchslim.errors import (
    CheckpointError,
    ConfigError,
    ConfigProblems,
    DataNotFoundError,
    InputError,
    ModelNotFoundError,
    NonFiniteError,
    PruningError,
    RunFolderError,
    TorchslimError,
    TrainingDivergedError,
    UnsupportedOpError,
)
from torchslim.export import ExportReport, export_onnx
from torchslim.prune import PruneConfig, SparsityConfig, prune_report, sparsify
from torchslim.quant import QATConfig, QuantConfig, convert, prepare_qat, quantize
from torchslim.reports import report
from torchslim.runtime import measure_latency
from torchslim.serialize import load, load_metadata, save

# isort: split
# The entry calls are plain functions, bound after every import: they take the names ``prune``
# and ``distill`` over from the subpackages, which stay importable (``from torchslim.prune
# import PruneConfig``); nothing imported later may first-import those subpackages again.
from torchslim.distill.distiller import distill
from torchslim.prune.pruner import prune

if TYPE_CHECKING:
    import torch

    from torchslim.auto import SearchResult

__version__ = "0.1.0"


def search(
    model: "torch.nn.Module",
    example_inputs: Any,
    config: Any = None,
    *,
    data: Any,
    **kwargs: Any,
) -> "SearchResult":
    """Search per-layer pruning ratios under MACs / parameter budgets (Optuna); returns a
    :class:`torchslim.auto.SearchResult` (best ratios, the pruned copy, the study). See
    :func:`torchslim.auto.search` for the arguments. Needs the ``search`` extra (Optuna).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(8, 4, 3), torch.nn.Flatten())
        >>> data = TensorDataset(torch.randn(20, 1, 5, 5), torch.randint(0, 4, (20,)))
        >>> res = search(net, torch.randn(1, 1, 5, 5), {"macs": 0.7, "trials": 2,
        ...              "eval_images": 8, "bn_images": 8}, data=data, progress=False)
        >>> res.macs_ratio <= 0.7
        True
    """
    try:
        from torchslim.auto.study import search as run
    except ModuleNotFoundError as exc:  # Optuna is an extra
        if exc.name != "optuna":
            raise
        raise ModuleNotFoundError(
            "ts.search needs Optuna: pip install 'torchslim[search]'", name="optuna"
        ) from exc
    return run(model, example_inputs, config, data=data, **kwargs)


__all__ = [
    "CheckpointError",
    "ConfigError",
    "ConfigProblems",
    "DataNotFoundError",
    "ExportReport",
    "InputError",
    "LayerStats",
    "ModelNotFoundError",
    "ModelStats",
    "NonFiniteError",
    "PruneConfig",
    "PruningError",
    "QATConfig",
    "QuantConfig",
    "RunFolderError",
    "SparsityConfig",
    "TorchslimError",
    "TrainingDivergedError",
    "UnsupportedOpError",
    "__version__",
    "analyze",
    "convert",
    "data",
    "distill",
    "export_onnx",
    "graph",
    "load",
    "load_metadata",
    "losses",
    "measure_latency",
    "models",
    "prepare_qat",
    "prune",
    "prune_report",
    "quant",
    "quantize",
    "report",
    "save",
    "search",
    "sparsify",
    "train",
]
