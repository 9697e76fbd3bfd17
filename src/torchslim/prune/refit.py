"""Least-squares reconstruction after pruning: each Linear that keeps its output width is refit
so that, on the pruned model's own inputs, it reproduces the unpruned model's output.

Pruning an attention block's heads removes input channels of its output projection; pruning an
FFN's channels removes input channels of its second Linear. Those layers still write the full
residual width, so their best weights for what the pruned model now feeds them are a linear
least-squares fit (Kwon et al., 2022, "A Fast Post-Training Pruning Framework for
Transformers", section 4.3): no gradient, a few calibration batches, layer by layer in forward
order so that each fit sees the inputs the earlier fits produce.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from torchslim._tensors import call_model, model_args, token_mask
from torchslim.errors import ConfigError


@dataclass
class ReconstructReport:
    """What :func:`reconstruct` refit: per layer, the relative squared error of its output
    against the unpruned model's on the calibration tokens, before and after the fit."""

    layers: list[str] = field(default_factory=list)
    error_before: dict[str, float] = field(default_factory=dict)
    error_after: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        before, after = self.error_before, self.error_after
        rows = [f"{n}: {before[n]:.4f} -> {after[n]:.4f}" for n in self.layers]
        return "relative output error, before -> after the fit\n" + "\n".join(rows)


def _rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` as ``[tokens, channels]``; with a ``[batch, seq]`` mask, only its real tokens."""
    if mask is not None and x.dim() == 3 and x.shape[:2] == mask.shape:
        x = x[mask]
    return x.reshape(-1, x.shape[-1]).double()


def _candidates(pruned: nn.Module, original: nn.Module, layers: Sequence[str] | None) -> list[str]:
    ref = dict(original.named_modules())
    names = []
    for name, m in pruned.named_modules():
        o = ref.get(name)
        if not (type(m) is nn.Linear and type(o) is nn.Linear):
            continue
        if m.out_features != o.out_features:
            continue  # its outputs were pruned: nothing to match them against
        if layers is None and m.in_features == o.in_features:
            continue  # by default only the layers that lost inputs
        if layers is not None and not any(fnmatchcase(name, p) for p in layers):
            continue
        names.append(name)
    if layers is not None:
        for p in layers:
            if not any(fnmatchcase(n, p) for n in names):
                raise ConfigError(
                    f"reconstruct: layers pattern {p!r} matches no nn.Linear that keeps its "
                    "output width in both models"
                )
    return names


@torch.no_grad()
def _forward_order(model: nn.Module, names: list[str], batch: Any) -> list[str]:
    seen: list[str] = []
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda *_, n=n: seen.append(n) if n not in seen else None
        )
        for n in names
    ]
    try:
        call_model(model, model_args(batch))
    finally:
        for h in handles:
            h.remove()
    return seen + [n for n in names if n not in seen]


@torch.no_grad()
def reconstruct(
    pruned: nn.Module,
    original: nn.Module,
    data: Iterable[Any],
    *,
    layers: Sequence[str] | None = None,
    batches: int = 16,
    damping: float = 1e-2,
    progress: bool = True,
) -> ReconstructReport:
    """Refit, in place, the ``nn.Linear`` layers of ``pruned`` that lost input channels but
    kept their output width (by default; ``layers``: glob patterns of the names to refit, any
    that keep their output width) so that each reproduces ``original``'s same-named layer:
    ``min ||X_pruned W'^T + b' - Y_original||^2`` over the tokens of ``batches`` items of
    ``data`` (tensors, tuples or dicts of keyword tensors; a dict's ``attention_mask`` leaves
    padding out), with ridge ``damping`` times the mean diagonal of ``X^T X``. Layers are fit
    in forward order, each on the inputs the earlier fits produce. Returns the error before
    and after, per layer.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> small = nn.Sequential(nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 4))
        >>> kept = [(small[0].weight, net[0].weight[:10]), (small[0].bias, net[0].bias[:10]),
        ...         (small[2].weight, net[2].weight[:, :10]), (small[2].bias, net[2].bias)]
        >>> with torch.no_grad():  # 6 hidden channels removed
        ...     for pruned_param, original_param in kept:
        ...         _ = pruned_param.copy_(original_param)
        >>> data = [torch.randn(64, 8) for _ in range(4)]
        >>> report = reconstruct(small, net, data, progress=False)
        >>> report.layers, report.error_after["2"] < report.error_before["2"]
        (['2'], True)
    """
    items = list(itertools.islice(iter(data), batches))
    if not items:
        raise ConfigError("reconstruct: data yielded no batches")
    names = _candidates(pruned, original, layers)
    if not names:
        raise ConfigError(
            "reconstruct: no nn.Linear of the pruned model lost input channels while keeping "
            "its output width (nothing to refit); pass layers=[...] to refit others"
        )
    names = _forward_order(pruned, names, items[0])
    report = ReconstructReport()
    was = pruned.training, original.training
    pruned.eval()
    original.eval()
    try:
        for name in tqdm(names, desc="reconstruct", disable=not progress):
            before, after = _refit(pruned, original, name, items, damping)
            report.layers.append(name)
            report.error_before[name], report.error_after[name] = before, after
    finally:
        pruned.train(was[0])
        original.train(was[1])
    return report


def _refit(pruned: nn.Module, original: nn.Module, name: str, items: list[Any],
           damping: float) -> tuple[float, float]:  # fmt: skip
    layer: nn.Linear = pruned.get_submodule(name)
    bias = layer.bias is not None
    n_in = layer.in_features + int(bias)
    xtx = torch.zeros(n_in, n_in, dtype=torch.float64)
    xty = torch.zeros(n_in, layer.out_features, dtype=torch.float64)
    yty = torch.zeros((), dtype=torch.float64)
    got: dict[str, torch.Tensor] = {}
    hooks = [
        layer.register_forward_hook(lambda _m, args, _o: got.__setitem__("x", args[0])),
        original.get_submodule(name).register_forward_hook(
            lambda _m, _a, out: got.__setitem__("y", out)
        ),
    ]
    try:
        for batch in items:
            args, mask = model_args(batch), token_mask(batch)  # padding left out of the fit
            call_model(pruned, args)
            call_model(original, args)
            x, y = _rows(got["x"], mask), _rows(got["y"], mask)
            if bias:
                x = torch.cat([x, x.new_ones(len(x), 1)], 1)
            xtx += x.T @ x
            xty += x.T @ y
            yty += (y * y).sum()
    finally:
        for h in hooks:
            h.remove()
    old = layer.weight.detach().double().T
    if bias:
        old = torch.cat([old, layer.bias.detach().double()[None]], 0)

    def error(w: torch.Tensor) -> float:
        return float(((w * (xtx @ w)).sum() - 2 * (w * xty).sum() + yty) / yty.clamp(min=1e-30))

    ridge = damping * xtx.diagonal().mean().clamp(min=1e-12)
    new = torch.linalg.solve(xtx + ridge * torch.eye(n_in, dtype=xtx.dtype), xty)
    before, after = error(old), error(new)
    if not after < before:  # keep the weights when the fit does not help
        return before, before
    layer.weight.copy_(new[: layer.in_features].T.to(layer.weight.dtype))
    if bias:
        layer.bias.copy_(new[-1].to(layer.bias.dtype))
    return before, after
