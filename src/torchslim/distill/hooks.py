"""Capture intermediate outputs of modules by qualified name with forward hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType

import torch
from torch import nn

from torchslim._tensors import first_tensor
from torchslim.errors import ConfigError
from torchslim.selection import check_module_names

# The model's own output, selectable like a module name.
OUTPUT = "output"


def check_names(model: nn.Module, names: Iterable[str], role: str) -> None:
    """Raise a ConfigError naming each of ``names`` that is not a submodule of ``model`` (with
    the closest name; :func:`torchslim.selection.check_module_names`). Feature layers are named
    exactly, not by pattern: student and teacher layers are read in pairs, in order."""
    check_module_names(model, names, role, extra={OUTPUT: "the model's output"})


class FeatureHooks:
    """Record the outputs of named modules during forward passes; remove the hooks after use.

    ``"output"`` stands for the model's own output. Use as a context manager (hooks are removed
    on exit, also after an error) or call :meth:`remove`.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> with FeatureHooks(net, ["1", "output"]) as hooks:
        ...     _ = net(torch.randn(3, 4))
        ...     [tuple(t.shape) for t in hooks.features()]
        [(3, 8), (3, 2)]
        >>> len(net[1]._forward_hooks)
        0
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        check_names(model, names, "layers")
        self.names = list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        modules = dict(model.named_modules())
        for name in dict.fromkeys(self.names):
            target = model if name == OUTPUT else modules[name]
            self._handles.append(target.register_forward_hook(self._recorder(name)))

    def _recorder(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            self.outputs[name] = first_tensor(output)

        return hook

    def features(self) -> list[torch.Tensor]:
        """The recorded tensors in the order of ``names`` (error: a module that did not run)."""
        missing = [n for n in self.names if n not in self.outputs]
        if missing:
            raise ConfigError(
                f"layers: module(s) {missing} did not run in the forward pass; "
                "pick modules that the model's forward calls"
            )
        return [self.outputs[n] for n in self.names]

    def clear(self) -> None:
        """Forget the recorded tensors (keeps the hooks)."""
        self.outputs.clear()

    def remove(self) -> None:
        """Remove every hook this object registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()

    def __enter__(self) -> FeatureHooks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
