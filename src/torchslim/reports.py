"""``ts.report(model)``: what the compression calls did to a model, asked for in one way.

Every entry call (``ts.prune``, ``ts.sparsify``, ``ts.quantize``, ``ts.prepare_qat``) returns
the model and records its report for that model object here; :func:`report` hands it back
(the latest by default, or one method's). Reports are data with a readable ``__str__``. The
table holds models weakly: it never keeps a model alive.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from torch import nn

from torchslim.errors import ConfigError

# model -> {method: report, or a zero-argument function computing it (reports that follow
# the model as it trains, like sparsity)}; insertion order is call order.
_TABLE: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()

METHODS = ("prune", "sparsify", "quantize", "qat")


def record(model: nn.Module, method: str, value: Any | Callable[[], Any]) -> None:
    """Remember ``value`` as ``model``'s report of ``method`` (the latest call comes last).

    Example:
        >>> net = nn.Linear(2, 2)
        >>> record(net, "prune", "3 channels removed")
        >>> report(net)
        '3 channels removed'
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    entries = _TABLE.setdefault(model, {})
    entries.pop(method, None)
    entries[method] = value


def report(model: nn.Module, method: str | None = None) -> Any:
    """The report of the last compression call on ``model`` (or of ``method``: ``"prune"``,
    ``"sparsify"``, ``"quantize"``, ``"qat"``): a ``PruneReport``, ``SparsityReport``
    (computed now, so it follows training) or ``QuantReport`` (None after dynamic
    quantization, which has nothing to calibrate).

    Example:
        >>> import torch, torchslim as ts
        >>> net = ts.models.create("resnet8", num_classes=10, in_channels=1)
        >>> net = ts.prune(net, torch.randn(1, 1, 28, 28), {"ratio": 0.5})
        >>> type(ts.report(net)).__name__
        'PruneReport'
    """
    entries = _TABLE.get(model, {})
    if method is not None and method not in METHODS:
        raise ConfigError(f"report: method {method!r} is not one of {list(METHODS)}")
    if not entries or (method is not None and method not in entries):
        what = f"{method} report" if method else "report"
        done = f" (it has: {', '.join(entries)})" if entries else ""
        raise ConfigError(
            f"report: this {type(model).__name__} has no {what}{done}; reports belong to the "
            "model object that ts.prune / ts.sparsify / ts.quantize / ts.prepare_qat returned"
        )
    value = entries[method] if method is not None else entries[next(reversed(entries))]
    return value() if callable(value) else value


__all__ = ["METHODS", "record", "report"]
