"""Unstructured and N:M sparsity: magnitude masks, gradual (cubic) schedules, size reports.

A mask is a :class:`WeightMask` parametrization (``torch.nn.utils.parametrize``) on a module's
``weight``: the module computes ``weight = original * mask`` whenever the weight is read, so the
zeros hold in every forward, gradients of pruned weights are zero, and the mask is a buffer that
travels with ``state_dict()`` and ``copy.deepcopy``. :func:`make_permanent` bakes the zeros in and
leaves plain modules again (do that before pickling the whole model or exporting it).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> model = sparsify(model, {"sparsity": 0.5})
    >>> round(sparsity_report(model).total.sparsity, 2)
    0.5
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchslim import reports
from torchslim.config import from_dict
from torchslim.errors import ConfigError, TorchslimError
from torchslim.prune.config import UNSTRUCTURED, SparsityConfig, SparsityScope
from torchslim.prune.config import SparsitySchedule as SparsitySchedule
from torchslim.prune.config import cubic_sparsity as cubic_sparsity
from torchslim.tables import format_count, text_table
from torchslim.train.trainer import Callback, Trainer

# What an empty ``targets`` selects. Transposed convolutions are left out: their weight is laid
# out (in, out, ...), so "along the input dimension" would mean something else.
DEFAULT_TARGET_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
VALUE_BYTES = 4  # size estimates assume fp32 values and int32 indices
INDEX_BYTES = 4
_COLUMNS = ("layer", "type", "shape", "params", "nonzero", "sparsity", "dense", "sparse", "format")


# -- selecting modules -------------------------------------------------------------------------
def _weight_of(module: nn.Module) -> torch.Tensor | None:
    """The module's own (possibly masked) weight if it has one of 2+ dims, else ``None``."""
    if parametrize.is_parametrized(module, "weight"):
        weight = module.weight
    else:
        weight = dict(module.named_parameters(recurse=False)).get("weight")
    return weight if isinstance(weight, torch.Tensor) and weight.ndim >= 2 else None


def _type_name(module: nn.Module) -> str:
    cls = type(module)
    return cls.__bases__[0].__name__ if parametrize.is_parametrized(module) else cls.__name__


def _select(model: nn.Module, config: SparsityConfig) -> dict[str, nn.Module]:
    """Modules to sparsify by name, in model order; a selector matching none is an error."""
    chosen = config.selection.select(
        model,
        candidates=lambda _, m: _weight_of(m) is not None,
        default=lambda _, m: isinstance(m, DEFAULT_TARGET_TYPES),
        what="module with a 2+ dim weight",
    )
    if not chosen:
        raise ConfigError(
            f"targets/ignore: nothing left to sparsify in {type(model).__name__} (default targets "
            "are Linear and Conv1d/2d/3d); name the modules to sparsify in 'targets'"
        )
    return chosen


# -- masks -------------------------------------------------------------------------------------
class WeightMask(nn.Module):
    """Parametrization ``weight -> weight * mask`` with the mask as a boolean buffer.

    Example:
        >>> layer = nn.Linear(4, 2)
        >>> _ = parametrize.register_parametrization(layer, "weight", WeightMask(layer.weight > 0))
        >>> bool((layer.weight[layer.weight != 0] > 0).all())
        True
    """

    def __init__(self, mask: torch.Tensor, pattern: str = UNSTRUCTURED) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool))
        self.pattern = pattern  # kept for the size report (N:M metadata format)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask

    def extra_repr(self) -> str:
        density = float(self.mask.float().mean()) if self.mask.numel() else 1.0
        return f"pattern={self.pattern}, sparsity={1 - density:.4f}"


def _mask_of(module: nn.Module) -> WeightMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, WeightMask)), None)


def _keep_largest(scores: torch.Tensor, n_pruned: int) -> torch.Tensor:
    """Boolean keep-mask over flat ``scores`` pruning exactly the ``n_pruned`` smallest."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_pruned > 0:
        keep[torch.argsort(scores.float(), stable=True)[:n_pruned]] = False
    return keep


def _nm_mask(weight: torch.Tensor, n: int, m: int, name: str) -> torch.Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive weights along the flattened input dim."""
    rows = weight.shape[0]
    cols = weight.numel() // max(rows, 1)
    if cols % m:
        raise ConfigError(
            f"pattern {n}:{m}: module {name!r} has {cols} weights per output row "
            f"(inputs x kernel size), not a multiple of {m}; add {name!r} to 'ignore' or "
            f"choose an M that divides {cols}"
        )
    groups = weight.detach().abs().float().reshape(rows, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
    return keep.reshape(weight.shape)


def _compute_masks(
    modules: Mapping[str, nn.Module], config: SparsityConfig, level: float
) -> dict[str, torch.Tensor]:
    # Scores are magnitudes of the masked weights, so a pruned weight never comes back.
    weights = {name: _weight_of(m).detach() for name, m in modules.items()}
    if config.nm is not None:
        return {name: _nm_mask(w, *config.nm, name) for name, w in weights.items()}
    if config.scope is SparsityScope.LAYER:
        return {
            name: _keep_largest(w.abs().flatten(), round(level * w.numel())).view_as(w)
            for name, w in weights.items()
        }
    device = next(iter(weights.values())).device
    flat = torch.cat([w.abs().flatten().float().to(device) for w in weights.values()])
    keep = _keep_largest(flat, round(level * flat.numel()))
    masks, offset = {}, 0
    for name, w in weights.items():
        masks[name] = keep[offset : offset + w.numel()].view_as(w).to(w.device)
        offset += w.numel()
    return masks


def _apply(model: nn.Module, config: SparsityConfig, level: float) -> None:
    modules = _select(model, config)
    masks = _compute_masks(modules, config, level)  # may raise: nothing is changed yet
    for name, module in modules.items():
        existing = _mask_of(module)
        if existing is None:
            mask = WeightMask(masks[name], config.pattern)
            parametrize.register_parametrization(module, "weight", mask)
        else:
            existing.mask.logical_and_(masks[name].to(existing.mask.device))
            existing.pattern = config.pattern


def sparsify(model: nn.Module, config: SparsityConfig | Mapping[str, Any]) -> nn.Module:
    """Mask the smallest-magnitude weights of the selected modules; returns the same model.

    Layer scope prunes ``round(sparsity * n)`` weights of each layer, global scope the same
    fraction of all selected weights at once (one threshold). N:M keeps the N largest of
    every M consecutive weights along the input dimension. With ``schedule: cubic`` the masks
    start at the step-0 level; train with :class:`GradualSparsity` to raise them. Calling it again
    prunes further but never revives a pruned weight. ``ts.report(model)`` measures it.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
        >>> model = sparsify(model, {"pattern": "2:4"})
        >>> int((model[0].weight != 0).sum())
        32
    """
    cfg = from_dict(SparsityConfig, config)
    _apply(model, cfg, cfg.sparsity_at(0))
    ref = weakref.ref(model)  # ts.report(model) measures the masks then, as training moves them
    reports.record(model, "sparsify", lambda: sparsity_report(ref()))
    return model


class GradualSparsity(Callback):
    """Trainer callback raising the sparsity along the config's schedule (Zhu & Gupta 2017).

    Masks are recomputed whenever :meth:`SparsityConfig.sparsity_at` changes, i.e. every
    ``frequency`` steps between ``start_step`` and ``end_step``. On fit start the masks are
    set for the trainer's current step, so a fresh model needs no separate :func:`sparsify`;
    to resume from a checkpoint, call :func:`sparsify` before building the trainer so the mask
    buffers exist when the checkpoint is loaded.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from torchslim.train import Trainer
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
        >>> data = TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 2, (64,)))
        >>> cfg = {"sparsity": 0.9, "schedule": "cubic", "end_step": 6, "frequency": 2}
        >>> pruner = GradualSparsity(cfg)
        >>> train_cfg = {"epochs": 2, "batch_size": 16, "progress": False}  # 8 steps
        >>> _ = Trainer(model, train_cfg, data, callbacks=[pruner]).fit()
        >>> round(sparsity_report(model).total.sparsity, 2)
        0.9
    """

    def __init__(self, config: SparsityConfig | Mapping[str, Any]) -> None:
        self.config = from_dict(SparsityConfig, config)

    def on_fit_start(self, trainer: Trainer) -> None:
        _apply(trainer.model, self.config, self.config.sparsity_at(trainer.global_step))

    def on_step_end(self, trainer: Trainer, step: int, logs: Mapping[str, float]) -> None:
        level = self.config.sparsity_at(step)
        if level != self.config.sparsity_at(step - 1):
            _apply(trainer.model, self.config, level)


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake masks into the weights and remove them; returns the same model with plain modules.

    The weight stays the same ``nn.Parameter`` object, so an optimizer built before still works.

    Example:
        >>> model = make_permanent(sparsify(nn.Sequential(nn.Linear(4, 4)), {"sparsity": 0.5}))
        >>> type(model[0]).__name__, int((model[0].weight == 0).sum())
        ('Linear', 8)
    """
    for name, module in list(model.named_modules()):
        mask = _mask_of(module)
        if mask is None:
            continue
        chain = module.parametrizations.weight
        if len(chain) == 1:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        elif chain[0] is mask:  # weight = later(mask(original)): mask `original` itself
            with torch.no_grad():
                chain.original.mul_(mask.mask)
            del chain[0]
        else:
            others = ", ".join(type(p).__name__ for p in chain)
            raise TorchslimError(
                f"make_permanent: {name!r} has parametrizations [{others}] on its weight applied "
                "before the sparsity mask; remove those first"
            )
    return model


def masks_of(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The sparsity masks of a model as plain data: ``{module: {"mask": bool tensor, "pattern"}}``.

    Example:
        >>> m = sparsify(nn.Sequential(nn.Linear(4, 4)), {"sparsity": 0.5})
        >>> list(masks_of(m))
        ['0']
    """
    found = {}
    for name, module in model.named_modules():
        mask = _mask_of(module)
        if mask is not None:
            found[name] = {"mask": mask.mask.clone(), "pattern": mask.pattern}
    return found


def apply_masks(model: nn.Module, masks: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Put masks recorded by :func:`masks_of` back on a model with the same module names."""
    for name, entry in masks.items():
        module = model.get_submodule(name)
        mask = entry["mask"].to(module.weight.device)
        if tuple(mask.shape) != tuple(module.weight.shape):
            raise ConfigError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, the weight "
                f"{tuple(module.weight.shape)}"
            )
        parametrize.register_parametrization(
            module, "weight", WeightMask(mask, entry.get("pattern", UNSTRUCTURED))
        )
    return model


# -- report ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerSparsity:
    """One row of :class:`SparsityReport`: a weight's zeros and its size dense vs. compressed.

    ``format`` names the smallest encoding: ``dense``, ``csr`` (fp32 values, int32 column
    indices, int32 row pointers), ``bitmask`` (fp32 values + 1 bit per position) or ``N:M``
    (N fp32 values per group of M + ceil(log2 M) index bits per value, NVIDIA's 2:4 layout).
    """

    name: str
    type: str
    shape: tuple[int, ...]
    params: int
    nonzeros: int
    dense_bytes: int
    sparse_bytes: int
    format: str

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sparsity": self.sparsity}

    def cells(self) -> tuple[str, ...]:
        return (
            self.name or "(model)",
            self.type,
            "x".join(map(str, self.shape)),
            format_count(self.params),
            format_count(self.nonzeros),
            f"{100 * self.sparsity:.2f}%",
            format_count(self.dense_bytes, "B"),
            format_count(self.sparse_bytes, "B"),
            self.format,
        )


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer zeros and size estimates of every module weight with 2+ dims; ``total`` sums them.

    Example:
        >>> report = sparsity_report(sparsify(nn.Sequential(nn.Linear(8, 8)), {"sparsity": 0.75}))
        >>> report.total.nonzeros, report.to_dict()["total"]["sparsity"]
        (16, 0.75)
    """

    layers: tuple[LayerSparsity, ...]
    total: LayerSparsity

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON reports."""
        return {"layers": [r.to_dict() for r in self.layers], "total": self.total.to_dict()}

    def __str__(self) -> str:
        rows = [r.cells() for r in self.layers]
        return "\n".join(text_table(_COLUMNS, rows, right=range(3, 8), footer=[self.total.cells()]))


def _fits_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    rows = weight.shape[0]
    cols = weight.numel() // max(rows, 1)
    if cols % m:
        return False
    return bool(((weight.reshape(rows, cols // m, m) != 0).sum(dim=-1) <= n).all())


def _encodings(weight: torch.Tensor, nm: tuple[int, int]) -> dict[str, int]:
    """Bytes of ``weight`` in each format it fits; on ties the earlier (simpler) format wins."""
    numel, nonzeros, rows = weight.numel(), int(torch.count_nonzero(weight)), weight.shape[0]
    sizes = {"dense": VALUE_BYTES * numel}
    n, m = nm
    if _fits_nm(weight, n, m):
        kept = numel // m * n  # the format stores N slots per group even if some are zero
        sizes[f"{n}:{m}"] = VALUE_BYTES * kept + math.ceil(kept * math.ceil(math.log2(m)) / 8)
    sizes["bitmask"] = VALUE_BYTES * nonzeros + math.ceil(numel / 8)
    sizes["csr"] = (VALUE_BYTES + INDEX_BYTES) * nonzeros + INDEX_BYTES * (rows + 1)
    return sizes


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Zeros and compressed-size estimates for every module weight with 2 or more dims.

    A weight masked with an N:M pattern is also priced in that N:M format; any other weight is
    checked against 2:4. Only weights are counted (biases and norms are small and stay dense).

    Example:
        >>> model = sparsify(nn.Sequential(nn.Linear(8, 8)), {"pattern": "2:4"})
        >>> row = sparsity_report(model).layers[0]
        >>> row.format, row.dense_bytes, row.sparse_bytes  # 32 values + 2 bits each
        ('2:4', 256, 136)
    """
    layers = []
    for name, module in model.named_modules():
        weight = _weight_of(module)
        if weight is None:
            continue
        mask = _mask_of(module)
        pattern = mask.pattern if mask is not None else UNSTRUCTURED
        n, m = (2, 4) if pattern == UNSTRUCTURED else map(int, pattern.split(":"))
        sizes = _encodings(weight.detach(), (n, m))
        best = min(sizes, key=sizes.__getitem__)
        nonzeros, dense = int(torch.count_nonzero(weight)), sizes["dense"]
        info = (name, _type_name(module), tuple(weight.shape), weight.numel(), nonzeros, dense)
        layers.append(LayerSparsity(*info, sizes[best], best))
    sums = [sum(getattr(r, k) for r in layers) for k in ("params", "nonzeros", "dense_bytes")]
    sparse = sum(r.sparse_bytes for r in layers)
    ratio = f"{sums[2] / sparse:.2f}x smaller" if sparse else ""
    total = LayerSparsity("total", "", (), sums[0], sums[1], sums[2], sparse, ratio)
    return SparsityReport(tuple(layers), total)
