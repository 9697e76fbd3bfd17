"""Griffe extension (mkdocs.yml: mkdocstrings -> extensions): render torchslim's docstrings as
written, without changing them in the source.

- ``Example:`` heads a doctest section (Google style knows it as ``Examples:``); without this the
  doctest lines would be read as Markdown (``x[0]`` as a link).
- Sphinx roles (``:class:`~torchslim.errors.ConfigError```, ``:func:`prune```) become code spans
  (``ConfigError``, ``prune``), since Markdown has no roles.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`~?([^`]+)`")
EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


def _rewrite(text: str) -> str:
    text = EXAMPLE.sub(r"\1Examples:", text)

    def role(match: re.Match) -> str:
        target = match[1]
        shown = target.rsplit(".", 1)[-1] if match[0].count("~") else target
        return f"`{shown}`"

    return ROLE.sub(role, text)


class TorchslimDocstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
