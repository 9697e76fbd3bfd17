"""Quantizing a model that ``torch.fx`` cannot trace as a whole, by its traceable parts.

A detector's forward holds Python control flow over its inputs (a list of images of any
size, anchors, box decoding, NMS) that no symbolic trace follows; its backbone, neck and heads
are plain layers. :func:`traceable_parts` finds the largest submodules that trace, checks each
trace against the module itself on the real inputs it sees, and :func:`torchslim.quantize`
quantizes those parts and leaves the glue (the post-processing) in float.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_flatten, tree_map_only

from torchslim.errors import UnsupportedOpError
from torchslim.inputs import run_forward
from torchslim.quant.qmodules import is_quantizable

log = logging.getLogger("torchslim.quant")


@dataclass
class _Call:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any


def _clone(value: Any) -> Any:
    return tree_map_only(torch.Tensor, lambda t: t.detach().clone(), value)


def _tensors(value: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]


def _same(a: Any, b: Any) -> bool:
    xs, ys = _tensors(a), _tensors(b)
    return len(xs) == len(ys) and all(
        x.shape == y.shape and torch.allclose(x, y, rtol=1e-4, atol=1e-5)
        for x, y in zip(xs, ys, strict=True)
    )


def _has_layers(module: nn.Module) -> bool:
    return any(is_quantizable(m) for m in module.modules())


def _record_calls(model: nn.Module, inputs: Sequence[Any]) -> dict[str, _Call]:
    """The first call of every submodule that holds a quantizable layer: inputs and output."""
    calls: dict[str, _Call] = {}
    handles = []
    for name, module in model.named_modules():
        if not name or not _has_layers(module):
            continue

        def hook(_m: nn.Module, args: tuple, kwargs: dict, out: Any, name: str = name) -> None:
            if name not in calls:
                calls[name] = _Call(_clone(args), _clone(kwargs), _clone(out))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            run_forward(model, tuple(inputs), "the first calibration batch")
    finally:
        for h in handles:
            h.remove()
    return calls


def trace_part(module: nn.Module) -> fx.GraphModule:
    """``torch.fx`` trace of a part; a lone Conv/Linear is wrapped (its layer is then the
    part's submodule ``"0"``), as a trace of the layer itself would hold no layer call.

    Example:
        >>> [(n.op, n.target) for n in trace_part(nn.Linear(2, 3)).graph.nodes][1]
        ('call_module', '0')
    """
    return fx.symbolic_trace(nn.Sequential(module) if is_quantizable(module) else module)


def _trace(module: nn.Module) -> fx.GraphModule | None:
    try:
        return trace_part(module)
    except Exception:  # fx raises many types for untraceable Python
        return None


def traceable_parts(model: nn.Module, inputs: Sequence[Any]) -> dict[str, fx.GraphModule]:
    """The largest submodules of ``model`` that ``torch.fx`` traces (by qualified name), each
    checked on ``inputs``: the traced graph must compute what the module computes on the
    inputs it receives in ``model(*inputs)`` (a trace that took a wrong branch is refused and
    its children are tried). Submodules that never run, or hold no Conv/Linear, are left out.

    Example:
        >>> class Glue(nn.Module):  # a Python loop over a list: not traceable as a whole
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        ...         self.head = nn.Conv2d(4, 2, 1)
        ...     def forward(self, images):
        ...         return [self.head(self.body(x[None])) for x in images]
        >>> sorted(traceable_parts(Glue(), ([torch.rand(3, 8, 8)],)))
        ['body', 'head']
    """
    calls = _record_calls(model, inputs)
    parts: dict[str, fx.GraphModule] = {}

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if full not in calls:  # never called (a ModuleList), or no quantizable layer
                if _has_layers(child):
                    visit(f"{full}.", child)
                continue
            gm = _trace(child)
            if gm is not None:
                call = calls[full]
                try:
                    with torch.no_grad():
                        ok = _same(gm(*call.args, **call.kwargs), call.output)
                except Exception:
                    ok = False
                if ok:
                    parts[full] = gm
                    continue
                log.info("quantize: the trace of %r differs from the module; its parts are "
                         "quantized instead", full)  # fmt: skip
            visit(f"{full}.", child)

    visit("", model)
    if not parts:
        raise UnsupportedOpError(
            f"ts.quantize: torch.fx traces neither {type(model).__name__} nor any of its "
            "submodules that hold a Conv/Linear layer; make the data-dependent branches leaf "
            "modules, or use dynamic=True, which needs no graph"
        )
    return parts
