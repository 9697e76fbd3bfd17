"""Channel importance: a callable on a group returning one score per channel (higher = keep).

New criteria are a few lines: subclass nothing, just write ``fn(group) -> Tensor[n]`` and
register it with :func:`register_importance`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from torchslim._tensors import is_hf_conv1d
from torchslim.config import did_you_mean
from torchslim.errors import ConfigError


@dataclass
class Member:
    """One parameter running along a group: ``positions[j]`` are channel j's indices on ``dim``."""

    name: str
    module: nn.Module
    param: torch.Tensor
    dim: int
    positions: torch.Tensor  # LongTensor [channels, k]

    def slices(self, tensor: torch.Tensor | None = None) -> torch.Tensor:
        """The parameter (or e.g. its gradient) gathered per channel: ``[channels, -1]``."""
        t = self.param if tensor is None else tensor
        moved = t.detach().movedim(self.dim, 0)
        picked = moved[self.positions.reshape(-1)]
        return picked.reshape(self.positions.shape[0], -1).float()

    @property
    def is_producer(self) -> bool:
        """The output-channel dim of a conv/linear weight (filters of the group)."""
        if not self.name.endswith("weight") or self.param.ndim < 2:
            return False
        # a transposed conv, or Hugging Face's Conv1D (GPT-2: a Linear stored (in, out))
        transposed = getattr(self.module, "transposed", False) or is_hf_conv1d(self.module)
        return self.dim == (1 if transposed else 0)

    @property
    def is_norm_scale(self) -> bool:
        norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
        return isinstance(self.module, norms) and self.name.endswith("weight")


@dataclass
class Group:
    """A set of channels that are pruned together, with every parameter running along them."""

    id: int
    size: int
    name: str  # the module that produces the channels (for reports and per-layer ratios)
    members: list[Member]

    def parameters(self) -> list[Member]:
        return [m for m in self.members if isinstance(m.param, nn.Parameter)]


Importance = Callable[[Group], torch.Tensor]
IMPORTANCE: dict[str, Importance] = {}


def register_importance(name: str) -> Callable[[Importance], Importance]:
    """Register an importance criterion under ``name`` (usable as ``{"importance": name}``)."""

    def deco(fn: Importance) -> Importance:
        IMPORTANCE[name] = fn
        return fn

    return deco


def get_importance(name: str) -> Importance:
    if name not in IMPORTANCE:
        raise ConfigError(
            f"importance: unknown criterion {name!r}{did_you_mean(name, IMPORTANCE)}; "
            f"choose from {sorted(IMPORTANCE)}"
        )
    return IMPORTANCE[name]


# Above this many elements a weight is reduced in two steps, the leading dim first (a
# contiguous sum) or, for p=2 along dim 0, by the fused 2-norm kernel; below it one ``sum``
# call is cheapest, since the per-call overhead is most of the cost.
_BIG = 1 << 16


def _per_index(t: torch.Tensor, dim: int, p: int) -> torch.Tensor:
    """sum |t|^p over every dim but ``dim`` (``p`` 1 or 2)."""
    if t.ndim == 1:
        return t.abs() if p == 1 else t * t
    if t.numel() > _BIG and dim == 0 and p == 2:
        rest = list(range(1, t.ndim))
        return torch.linalg.vector_norm(t, ord=2, dim=rest).square()
    powered = t.abs() if p == 1 else t * t
    if t.numel() > _BIG and dim > 0:
        powered = powered.sum(0)
        dim -= 1
    dims = [d for d in range(powered.ndim) if d != dim]
    return powered.sum(dims) if dims else powered


def _norm_importance(group: Group, p: int) -> torch.Tensor:
    """Sum over the group's parameters of |w|^p per channel (``p`` 1 or 2).

    Each index of the channel dim is reduced first, then gathered: no copy of the whole weight
    through a non-contiguous gather. Vectors along the whole channel dim (biases, norm scales)
    are reduced in one stacked op: on small models the per-op overhead, not the arithmetic, is
    most of the cost.
    """
    parts: list[torch.Tensor] = []
    vectors: list[torch.Tensor] = []
    for m in group.parameters():
        t = m.param.detach().float()
        whole = m.positions.shape[1] == 1 and t.shape[m.dim] == group.size  # 0..size-1
        if t.ndim == 1 and whole:
            vectors.append(t)
            continue
        per_index = _per_index(t, m.dim, p)
        parts.append(per_index if whole else per_index[m.positions].sum(1))
    if vectors:
        parts.append(_per_index(torch.stack(vectors), 1, p))
    if not parts:
        return torch.zeros(group.size)
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)


@register_importance("l1")
def l1_importance(group: Group) -> torch.Tensor:
    """Sum of absolute weights of every parameter slice along the channel.

    Example:
        >>> g = Group(0, 2, "fc", [Member("w", nn.Linear(1, 1), nn.Parameter(torch.tensor(
        ...     [[1.0, -3.0], [0.5, 0.5]])), 0, torch.tensor([[0], [1]]))])
        >>> l1_importance(g).tolist()
        [4.0, 1.0]
    """
    return _norm_importance(group, 1)


@register_importance("l2")
def l2_importance(group: Group) -> torch.Tensor:
    """Sum of squared weights of every parameter slice along the channel."""
    return _norm_importance(group, 2)


@register_importance("fpgm")
def fpgm_importance(group: Group) -> torch.Tensor:
    """Filter pruning via geometric median (He et al. 2019): filters far from the others matter.

    A filter near the geometric median is well represented by the rest, so it scores low.
    """
    producers = [m for m in group.parameters() if m.is_producer] or group.parameters()
    score = torch.zeros(group.size)
    for m in producers:
        flat = m.slices()
        score += torch.cdist(flat, flat).sum(dim=1)
    return score


@register_importance("bn_gamma")
def bn_gamma_importance(group: Group) -> torch.Tensor:
    """|γ| of the normalisation layers on the channels (network slimming); L1 where none."""
    scales = [m for m in group.parameters() if m.is_norm_scale]
    if not scales:
        return l1_importance(group)
    return sum(m.slices().abs().sum(dim=1) for m in scales)


@register_importance("taylor")
def taylor_importance(group: Group) -> torch.Tensor:
    """First-order Taylor estimate |Σ w·∂L/∂w| per channel (Molchanov et al. 2019).

    Needs accumulated gradients: ``ts.prune(..., data=loader, loss_fn=...)`` computes them.
    """
    score = torch.zeros(group.size)
    found = False
    for m in group.parameters():
        if m.param.grad is None:
            continue
        found = True
        score += (m.slices() * m.slices(m.param.grad)).sum(dim=1).abs()
    if not found:
        raise ConfigError(
            f"importance 'taylor': no gradients on the parameters of {group.name}; pass "
            "data= and loss_fn= to ts.prune so it can run a few backward passes"
        )
    return score


@register_importance("random")
def random_importance(group: Group) -> torch.Tensor:
    """Random scores (a baseline); seeded by the pruner."""
    return torch.rand(group.size)
