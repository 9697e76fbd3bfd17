"""Sizes a forward reads from one tensor's shape and gives to a reshape of another.

``B, N, C = x.shape; ...; y.reshape(B, N, C)`` (timm's attention) ties ``y``'s last dim to
``x``'s channels: once ``x`` is pruned, ``C`` is its pruned width and ``y`` must have as many
channels. At the ATen level the sizes are plain integers and the tie is lost, so the tracer
watches the Python level too (a ``TorchFunctionMode``): a size read from a tensor dimension
comes back as a :class:`Dim` (an ``int`` that remembers the dimension's layout), and a
``reshape``/``view`` given such a ``Dim`` unifies its output dimension with that layout.
Arithmetic on a ``Dim`` (``C // heads``) gives a plain ``int``: only sizes passed on as read
are tied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from torchslim.graph.spaces import Layout, SpaceTable

_SHAPE = torch._C.TensorBase.shape
_SIZE = torch.Tensor.size
_RESHAPES = frozenset((torch.Tensor.reshape, torch.Tensor.view, torch.reshape))


class Dim(int):
    """A size read from a tensor dimension: an ``int`` that keeps that dimension's layout.

    Example:
        >>> d = Dim(8, [(0,)])
        >>> d + 1, d.layout, type(d // 2).__name__
        (9, [(0,)], 'int')
        >>> import copy; type(copy.deepcopy(d)).__name__
        'int'
    """

    layout: Layout

    def __new__(cls, value: int, layout: Layout) -> Dim:
        obj = super().__new__(cls, value)
        obj.layout = layout
        return obj

    def __reduce__(self) -> tuple[type, tuple[int]]:
        # A Dim a forward kept (``self.h = x.shape[2]``) copies and pickles as a plain int.
        return int, (int(self),)


def _sizes(args: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
    """The size arguments of a reshape/view call: ``x.view(a, b)``, ``x.view((a, b))`` or
    ``torch.reshape(x, shape)``."""
    rest = list(args[1:]) or [kwargs.get("shape", kwargs.get("size", ()))]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        return list(rest[0])
    return rest


class SizeTies(TorchFunctionMode):
    """Active during a trace: hands out :class:`Dim` sizes and ties the reshapes given them.

    ``layouts(tensor)`` is the tracer's layout of each of a tensor's dims; ``why()`` names
    the running module for the tie's record.
    """

    def __init__(
        self,
        layouts: Callable[[torch.Tensor], list[Layout]],
        spaces: SpaceTable,
        why: Callable[[], str],
    ) -> None:
        super().__init__()
        self.layouts, self.spaces, self.why = layouts, spaces, why
        self.ties = 0

    def _dims(self, tensor: torch.Tensor, sizes: Sequence[int]) -> list[int]:
        layouts = self.layouts(tensor)
        if len(layouts) != len(sizes):
            return list(sizes)
        # Every size is a Dim (whether its layout holds channels is asked at a tie, rarely):
        # shapes are read far more often than they reshape another tensor.
        return [Dim(s, lay) for s, lay in zip(sizes, layouts, strict=True)]

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if getattr(func, "__self__", None) is _SHAPE or func is _SIZE:
            tensor = args[0]
            if not isinstance(tensor, torch.Tensor):
                return out
            if isinstance(out, int):  # x.size(d)
                d = args[1] if len(args) > 1 else kwargs.get("dim")
                return self._dims(tensor, tuple(tensor.shape))[d] if isinstance(d, int) else out
            return torch.Size(self._dims(tensor, tuple(out)))
        if func in _RESHAPES and isinstance(out, torch.Tensor):
            sizes = _sizes(args, kwargs)
            if any(isinstance(s, Dim) for s in sizes):
                self._tie(out, sizes)
        return out

    def _tie(self, out: torch.Tensor, sizes: Sequence[Any]) -> None:
        layouts = self.layouts(out)
        if len(layouts) != len(sizes):
            return
        for j, s in enumerate(sizes):
            if not isinstance(s, Dim) or out.shape[j] != int(s) or not self.spaces.atoms(s.layout):
                continue
            # Channels of the same spaces (a shuffle's view back to the width it read) already
            # keep the count together; tying them would also pin their order.
            if set(self.spaces.atoms(layouts[j])) & set(self.spaces.atoms(s.layout)):
                continue
            why = f"a size read from a tensor's shape reshapes another ({self.why()})"
            try:
                self.spaces.unify(layouts[j], s.layout, why)
            except RuntimeError:  # layouts the tie cannot line up: keep their channels
                self.spaces.freeze_layout(layouts[j] + s.layout, why)
            self.ties += 1
