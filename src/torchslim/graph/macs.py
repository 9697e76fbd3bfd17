"""MACs of one ATen op from its arguments' shapes: PyTorch's FLOP formulas, and ours.

Shared by the shapes-only execution (which ops are shaped by their meta kernels), the tracer
(MACs predicted for a pruned model) and :func:`torchslim.analysis.analyze` (MACs counted on a
real pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import flop_registry, sdpa_flop_count, shape_wrapper

from torchslim._tensors import map_tensors


@shape_wrapper
def _cpu_sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# The CPU flash kernel of SDPA, which PyTorch's counter has no formula for.
_EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
}


def flop_formula(packet: Any) -> Callable[..., int] | None:
    """PyTorch's FLOP formula for an op (convolutions, matrix products, attention), or ours;
    read at call time, so formulas registered after import count too. None: no MACs.

    Example:
        >>> flop_formula(torch.ops.aten.mm) is not None, flop_formula(torch.ops.aten.relu)
        (True, None)
    """
    return _EXTRA_FLOP_FORMULAS.get(packet) or flop_registry.get(packet)


def op_macs(
    packet: Any,
    args: Any,
    kwargs: Any,
    out: Any,
    shape: Callable[[Any], Sequence[int]] = lambda t: t.shape,
    kind: type = torch.Tensor,
) -> int:
    """MACs of one ATen op (0 if it has no FLOP formula), from its arguments' shapes alone.

    ``shape`` gives the shape of each leaf of type ``kind``, so the same formula serves real
    tensors and shapes predicted for a pruned model (see ``ChannelGraph.stats_after``).

    Example:
        >>> a, b = torch.zeros(2, 3), torch.zeros(3, 4)
        >>> op_macs(torch.ops.aten.mm, (a, b), {}, a @ b)
        24
    """
    formula = flop_formula(packet)
    if formula is None:
        return 0
    raw = getattr(formula, "__wrapped__", None)  # PyTorch's formula on shapes, unwrapped
    if raw is not None:  # (its wrapper maps arguments to shapes with the slow pytree)
        size = lambda t: torch.Size(shape(t))  # noqa: E731
        flops = raw(*map_tensors(size, args, kind), out_shape=map_tensors(size, out, kind),
                    **map_tensors(size, kwargs, kind))  # fmt: skip
    else:  # a formula that wants tensors: give it meta tensors of those shapes
        meta = lambda t: torch.empty(tuple(shape(t)), device="meta")  # noqa: E731
        flops = formula(*map_tensors(meta, args, kind), out_val=map_tensors(meta, out, kind),
                        **map_tensors(meta, kwargs, kind))  # fmt: skip
    return int(flops) // 2
