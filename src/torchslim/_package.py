"""Packages that are also the function they are named after (``ts.prune(...)``)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__dict__["__call_target__"](*args, **kwargs)


def make_callable(package: str, fn: Callable[..., Any]) -> None:
    """Let calling the package ``package`` call ``fn``: the public call and the namespace of its
    configs share one name.

    Example:
        >>> import torchslim as ts
        >>> callable(ts.prune), ts.prune.PruneConfig.__name__
        (True, 'PruneConfig')
    """
    module = sys.modules[package]
    module.__call_target__ = fn
    module.__class__ = _CallablePackage
