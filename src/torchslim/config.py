"""Shared machinery for typed configs: frozen dataclasses built from dicts with checked keys.

Every public ``config`` argument accepts the dataclass itself or a plain dict of its fields.
Unknown keys are rejected with a did-you-mean, and values are checked against the field types,
so a YAML file and Python code read the same. Every problem of a config is reported at once, one
line each, key path first: fixing a file should not take one run per typo.

The house style of a config: one ``config.py`` per subpackage holding its frozen dataclasses;
choices are ``str``-valued enums (YAML and Python both write ``"global"``); ``__post_init__``
first calls :func:`check_fields`, which coerces and checks every field exactly as
:func:`from_dict` does (so ``PruneConfig(mode="globl")`` fails like the dict would), then checks
what types cannot say (ranges, combinations).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import functools
import math
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import yaml

from torchslim.errors import ConfigError, ConfigProblems

C = TypeVar("C")


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``.

    Example:
        >>> did_you_mean("ratoi", ["ratio", "round_to"])
        " (did you mean 'ratio'?)"
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Problems:
    """Collects the problems of a config so that one error reports them all.

    Example:
        >>> problems = Problems()
        >>> problems.add("a: missing")
        >>> with problems.collect():
        ...     raise ConfigError("b: expected a number, got 'x'")
        >>> problems.raise_if_any("cfg.yaml")
        Traceback (most recent call last):
        ...
        torchslim.errors.ConfigProblems: 2 problems in cfg.yaml:
          a: missing
          b: expected a number, got 'x'
    """

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, problem: str) -> None:
        self.lines.append(problem)

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        """Record a :class:`ConfigError` raised inside the block (all its problems) and go on."""
        try:
            yield
        except ConfigError as exc:
            self.lines.extend(problems_of(exc))

    def raise_if_any(self, source: str) -> None:
        """Raise one error: the problem itself if there is one, else :class:`ConfigProblems`."""
        if len(self.lines) == 1:
            raise ConfigError(self.lines[0])
        if self.lines:
            raise ConfigProblems(self.lines, source)


def problems_of(exc: ConfigError) -> tuple[str, ...]:
    """The problem lines of a config error (one for a plain :class:`ConfigError`)."""
    return exc.problems if isinstance(exc, ConfigProblems) else (str(exc),)


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` with a one-line :class:`ConfigError` naming ``where`` (a file,
    ``--set stages.0.ratio``...) and the line of the problem when the YAML is malformed.

    Example:
        >>> parse_yaml("[1, 2]", "--set ratios")
        [1, 2]
        >>> parse_yaml("[1, 2", "--set ratios")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        torchslim.errors.ConfigError: --set ratios: not valid YAML (expected ',' or ']', ...)
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None and "\n" in text.strip() else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}:{line} not valid YAML ({problem})") from None


def with_source(exc: ConfigError, source: str) -> ConfigError:
    """The same problems, said to be in ``source`` (a file): ``source: problem`` for one."""
    problems = problems_of(exc)
    if len(problems) == 1:
        return ConfigError(f"{source}: {problems[0]}")
    return ConfigProblems(problems, source)


def _as_float(value: Any, where: str) -> float:
    # PyYAML (YAML 1.1) reads 1e-3 without a dot as a string: take numeric strings as numbers
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigError(
                f"{where}: expected a number, got {value!r} (write a plain number such as 0.5 "
                "or 1e-3)"
            ) from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return number


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    hint = ""
    if isinstance(value, (str, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if number.is_integer():  # 1e3 or 1000.0 where a count is meant
            hint = f" (write {int(number)})"
    raise ConfigError(f"{where}: expected an integer, got {value!r}{hint}")


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against the type ``annotation`` and converted where the type says how
    (an enum from its value, a float from an int or a numeric string, a tuple from a list, a
    config dataclass from a dict); a :class:`ConfigError` naming ``where`` otherwise.

    Example:
        >>> coerce("1e-3", float, "lr")
        0.001
        >>> coerce([1, 2], tuple[int, ...], "milestones")
        (1, 2)
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            hint = did_you_mean(str(value), map(str, args))
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}{hint}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item_type = args[0] if args else Any
        problems = Problems()
        items = []
        for i, v in enumerate(value):
            with problems.collect():
                items.append(coerce(v, item_type, f"{where}[{i}]"))
        problems.raise_if_any(where)
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        value_type = args[1] if len(args) == 2 else Any
        problems = Problems()
        out = {}
        for k, v in value.items():
            with problems.collect():
                out[k] = coerce(v, value_type, f"{where}.{k}")
        problems.raise_if_any(where)
        return out
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            names = [m.value for m in annotation]
            raise ConfigError(
                f"{where}: {value!r} is not one of {names}{did_you_mean(str(value), names)}"
            ) from None
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        return _as_int(value, where)
    if annotation is float:
        return _as_float(value, where)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    return value


def from_dict(cls: type[C], data: Mapping[str, Any] | C | None, where: str = "") -> C:
    """Build config dataclass ``cls`` from a mapping, checking every key and value type.

    An instance of ``cls`` is returned unchanged; ``None`` gives the defaults. Every unknown key,
    missing required field and bad value (nested configs included, with their key paths) is
    reported in one :class:`ConfigError`; ``__post_init__`` checks run once those pass.

    Example:
        >>> from torchslim.train import TrainConfig
        >>> from_dict(TrainConfig, {"epochs": 3}).epochs
        3
    """
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise ConfigError(
            f"{where or cls.__name__}: expected a {cls.__name__} or a dict, got {got}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems = Problems()
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            problems.add(f"{path}: unknown key{did_you_mean(str(key), fields)}")
            continue
        with problems.collect():
            kwargs[key] = coerce(value, hints[key], path)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in data:
            path = f"{where}.{name}" if where else name
            hint = f" ({f.metadata['missing']})" if "missing" in f.metadata else ""
            problems.add(f"{path}: missing{hint}")
    problems.raise_if_any(where or cls.__name__)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(config: Any) -> None:
    """Coerce every init field of the frozen config dataclass ``config`` in place with the rules
    of :func:`from_dict`; every problem is reported at once. Call it first in ``__post_init__``,
    so that constructing a config directly validates as a dict does.

    Example:
        >>> from torchslim.prune import PruneConfig
        >>> PruneConfig(mode="global").mode
        <RatioMode.GLOBAL: 'global'>
        >>> PruneConfig(mode="globl")
        Traceback (most recent call last):
        ...
        torchslim.errors.ConfigError: mode: 'globl' is not one of ['uniform', 'global'] (did you \
mean 'global'?)
    """
    types_ = _field_types(type(config))
    problems = Problems()
    for f in dataclasses.fields(config):
        if f.init:
            with problems.collect():
                value = coerce(getattr(config, f.name), types_[f.name], f.name)
                object.__setattr__(config, f.name, value)
    problems.raise_if_any(type(config).__name__)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-data form of a config dataclass (enums as their string values), e.g. for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return v.value
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(config)
