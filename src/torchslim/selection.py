"""Selecting modules with strings: one rule for every method.

Pruning, sparsity, quantization, QAT, product quantization and binarization all choose the
modules they act on with a :class:`Selection`: ``targets`` (empty: the method's natural
default, e.g. every quantizable layer) minus ``ignore``. Their configs keep the field names
users know (``PruneConfig.ignore``, ``SparsityConfig.targets``/``ignore``,
``QuantConfig.skip``, ``PQConfig.layers``/``skip``, ``BinaryConfig.targets``/``ignore``), and
every one of them goes through here.

**The matching rule.** A pattern is a string, and a module matches it when either holds:

* it is a glob (:func:`fnmatch.fnmatchcase`, case-sensitive) matching the module's qualified
  name in ``model.named_modules()``: ``"fc"``, ``"layer1.*"``, ``"features.?.conv"``; the
  model itself is named ``""``;
* it names the module's class **or any of its base classes**: ``"Conv2d"`` picks
  ``nn.Conv2d`` and also a ``QuantConv2d(nn.Conv2d)`` or a masked (parametrized) convolution,
  since a user writing ``Conv2d`` means those too. A dotted type name matches the class it
  spells, either by its defining path (``"torch.nn.modules.conv.Conv2d"``) or as an attribute
  path through modules already imported (``"torch.nn.Conv2d"``); nothing is imported.

A pattern selects the modules it matches **and every module inside them**: ``ignore:
["layer4"]`` leaves all of ``layer4`` alone. ``ignore`` beats ``targets``. A method then keeps
the selected modules it can act on (its *candidates*: the layers with a 2+ dim weight for
sparsity, the quantizable Conv/Linear layers for quantization...). A pattern that selects
none of them is a :class:`~torchslim.errors.ConfigError` with a did-you-mean, never silence.

Where order matters (distillation reads student and teacher layers in pairs), modules are
named exactly; :func:`check_module_names` checks such names with the same kind of error.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(36, 2))
    >>> sorted(Selection(targets=("Conv2d", "Linear"), ignore=("3",)).select(net))
    ['0']
    >>> Selection(ignore=("Conv3d",)).select(net)
    Traceback (most recent call last):
    ...
    torchslim.errors.ConfigError: ignore: selector 'Conv3d' matches no module in Sequential \
(did you mean 'Conv2d'?); those are '0', '1', '2', '3'. Use a qualified-name glob like \
'layer1.*' or a type name like 'Conv2d'
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from torchslim.config import did_you_mean
from torchslim.errors import ConfigError

ModuleFilter = Callable[[str, nn.Module], bool]
_GLOB_CHARS = re.compile(r"[*?\[]")


def _named_class(pattern: str) -> object | None:
    """What a dotted pattern names through already imported modules (``torch.nn.Conv2d``)."""
    if "." not in pattern or _GLOB_CHARS.search(pattern):
        return None
    parts = pattern.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        owner: Any = sys.modules.get(".".join(parts[:cut]))
        if owner is None:
            continue
        for attr in parts[cut:]:
            owner = getattr(owner, attr, None)
        return owner
    return None


def _classes(module: nn.Module) -> tuple[type, ...]:
    return tuple(c for c in type(module).__mro__ if c is not object)


def matches(name: str, module: nn.Module, pattern: str) -> bool:
    """Whether ``module``, named ``name`` in its model, matches ``pattern`` (see the rule above).

    Example:
        >>> class QuantConv2d(nn.Conv2d):
        ...     pass
        >>> conv = QuantConv2d(1, 1, 1)
        >>> [matches("stem.0", conv, p) for p in ("stem.*", "Conv2d", "torch.nn.Conv2d", "Linear")]
        [True, True, True, False]
    """
    if fnmatchcase(name, pattern):
        return True
    classes = _classes(module)
    if "." not in pattern:
        return any(c.__name__ == pattern for c in classes)
    named = _named_class(pattern)
    return any(c is named or f"{c.__module__}.{c.__qualname__}" == pattern for c in classes)


def escape(name: str) -> str:
    """A pattern matching exactly the module ``name``: glob specials wrapped in brackets.

    Example:
        >>> escape("blocks[0].conv*")
        'blocks[[]0].conv[*]'
    """
    return _GLOB_CHARS.sub(lambda m: f"[{m.group(0)}]", name)


def _inside(name: str, parents: Iterable[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in parents)


def _patterns(value: Any, field: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{field}: selectors are non-empty strings, got {item!r}")
    return items


def _no_match(model: nn.Module, field: str, pattern: str, what: str, names: list[str]) -> str:
    modules = dict(model.named_modules())
    words = {n for n in modules if n} | {c.__name__ for m in modules.values() for c in _classes(m)}
    shown = ", ".join(repr(n) for n in names[:8])
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return (
        f"{field}: selector {pattern!r} matches no {what} in {type(model).__name__}"
        f"{did_you_mean(pattern, sorted(words))}; those are {shown or 'none'}{more}. Use a "
        "qualified-name glob like 'layer1.*' or a type name like 'Conv2d'"
    )


def check_patterns(model: nn.Module, patterns: Iterable[str], field: str) -> None:
    """Raise a :class:`ConfigError` for the first pattern that matches no module of ``model``."""
    modules = dict(model.named_modules())
    for pattern in _patterns(patterns, field):
        if not any(matches(n, m, pattern) for n, m in modules.items()):
            raise ConfigError(_no_match(model, field, pattern, "module", [n for n in modules if n]))


@dataclass(frozen=True)
class Selection:
    """Which modules a method acts on: ``targets`` (empty: the method's default) minus
    ``ignore``, each a tuple of patterns (a single string is taken as one pattern).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> sorted(Selection(ignore=("1", "2")).select(net))
        ['0']
    """

    targets: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", _patterns(self.targets, "targets"))
        object.__setattr__(self, "ignore", _patterns(self.ignore, "ignore"))

    def _selected(
        self, model: nn.Module, patterns: tuple[str, ...], field: str,
        candidates: Mapping[str, nn.Module], what: str,
    ) -> set[str]:  # fmt: skip
        modules = dict(model.named_modules())
        chosen: set[str] = set()
        for pattern in patterns:
            hit = [n for n, m in modules.items() if matches(n, m, pattern)]
            inside = {n for n in candidates if _inside(n, hit)}
            if not inside:
                raise ConfigError(_no_match(model, field, pattern, what, list(candidates)))
            chosen |= inside
        return chosen

    def ignored(
        self, model: nn.Module, *, candidates: ModuleFilter | None = None,
        what: str = "module", field: str = "ignore",
    ) -> set[str]:  # fmt: skip
        """Names of the candidates ``ignore`` selects (``field`` names it in errors)."""
        pool = _candidates(model, candidates)
        return self._selected(model, self.ignore, field, pool, what)

    def select(
        self, model: nn.Module, *, candidates: ModuleFilter | None = None,
        default: ModuleFilter | None = None, what: str = "module",
        fields: tuple[str, str] = ("targets", "ignore"),
    ) -> dict[str, nn.Module]:  # fmt: skip
        """The selected modules by name, in model order.

        ``candidates(name, module)`` says which modules the method can act on (default: all
        but the model itself); ``default(name, module)`` which of them empty ``targets``
        selects (default: all); ``what`` describes the candidates and ``fields`` names
        ``targets`` and ``ignore`` in errors (``("layers", "skip")`` for PQ).
        """
        pool = _candidates(model, candidates)
        if self.targets:
            chosen = self._selected(model, self.targets, fields[0], pool, what)
        else:
            chosen = {n for n, m in pool.items() if default is None or default(n, m)}
        dropped = self._selected(model, self.ignore, fields[1], pool, what)
        return {n: m for n, m in pool.items() if n in chosen and n not in dropped}


def _candidates(model: nn.Module, keep: ModuleFilter | None) -> dict[str, nn.Module]:
    modules = model.named_modules()
    if keep is None:
        return {n: m for n, m in modules if n}
    return {n: m for n, m in modules if keep(n, m)}


def check_module_names(
    model: nn.Module, names: Iterable[str], field: str, extra: Mapping[str, str] | None = None
) -> None:
    """Raise a :class:`ConfigError` naming the closest match of each of ``names`` that is not
    a submodule of ``model``. ``extra`` maps further accepted names to what they stand for
    (``{"output": "the model's output"}``).

    Example:
        >>> from collections import OrderedDict
        >>> net = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2)))
        >>> check_module_names(net, ["fc1"], "layers")
        Traceback (most recent call last):
        ...
        torchslim.errors.ConfigError: layers: Sequential has no module 'fc1' (did you mean 'fc'?); \
use a qualified name from model.named_modules()
    """
    extra = extra or {}
    known = [n for n, _ in model.named_modules() if n]
    accepted = set(known) | set(extra)
    for name in names:
        if name not in accepted:
            also = "".join(f" or {e!r} for {what}" for e, what in extra.items())
            raise ConfigError(
                f"{field}: {type(model).__name__} has no module {name!r}"
                f"{did_you_mean(name, [*known, *extra])}; use a qualified name from "
                f"model.named_modules(){also}"
            )
