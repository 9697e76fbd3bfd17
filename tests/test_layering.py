"""The import layering of torchslim: no import cycles, and no module imports a layer above it.

Every module under ``src/torchslim`` is parsed with ``ast`` (nothing is imported) and each of
its imports of a torchslim module becomes an edge of the import graph. Importing
``torchslim.a.b`` also runs ``torchslim/a/__init__.py``, so that package is an edge too
(except for the importing module's own packages, which are already initialising).

What counts:

* Imports at module level, including those inside top-level ``if``/``try``/``with`` blocks
  and class bodies: they run when the module is imported. These must form no cycle and must
  respect ``LAYERS``.
* Imports inside functions run only when called, after every module has loaded, so they
  cannot make an import cycle. They are exempt from the cycle check but still respect
  ``LAYERS``, except the few listed in ``LAZY_UPWARD``, each with its reason.
* Imports under ``if TYPE_CHECKING:`` never run and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "torchslim"

# The layering of torchslim, lowest first (docs/design.md copies this list). A module may
# import modules of its own unit (a subpackage or a top-level module) and of units in lower
# layers; units in the same layer do not import each other. "__init__" is the top-level
# torchslim/__init__.py, the public API (``import torchslim as ts``).
LAYERS: list[list[str]] = [
    ["errors", "_tensors"],
    ["config", "inputs", "tables", "reports"],
    ["selection", "data", "models", "losses", "runtime"],
    ["train", "graph"],
    ["analysis", "latency"],
    ["quant", "prune", "distill"],
    ["export", "serialize"],
    ["auto", "pretrained"],
    ["__init__"],
    ["pipeline"],
    ["cli"],
]

# Function-level imports that reach a higher layer: (importing unit, imported unit) -> why.
LAZY_UPWARD: dict[tuple[str, str], str] = {
    ("graph", "analysis"): "ChannelGraph.stats_after hands back analysis.ModelStats, built by "
    "analysis.model_stats; analysis itself runs on graph.execution",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _imports(module: str, source: str) -> list[tuple[str, int, bool]]:
    """(imported torchslim module, line, inside a function) for every import in ``source``,
    the text of ``module``."""
    found: list[tuple[str, int, bool]] = []

    def visit(body: list[ast.stmt], lazy: bool) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, True)
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse, lazy)
                continue
            if isinstance(node, ast.Import):
                found.extend((alias.name, node.lineno, lazy) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, node)
                for alias in node.names:  # a submodule if there is one, else the module's name
                    sub = f"{source}.{alias.name}"
                    found.append((sub if sub in MODULES else source, node.lineno, lazy))
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.AST):
                    visit(inner, lazy)  # if/try/with/for blocks, class bodies, except handlers

    visit(ast.parse(source).body, False)
    return [(name, line, lazy) for name, line, lazy in found if name in MODULES]


def _edges(module: str, *, lazy: bool, source: str | None = None) -> dict[str, int]:
    """Modules that importing ``module`` (``lazy``: calling its functions) imports, by line.
    ``source``: the module's text (default: its file)."""
    if source is None:
        source = MODULES[module].read_text(encoding="utf-8")
    own_packages = {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
    edges: dict[str, int] = {}
    for name, line, inside in _imports(module, source):
        if inside != lazy:
            continue
        parts = name.split(".")
        parents = {".".join(parts[:i]) for i in range(1, len(parts))} - own_packages
        for target in (*sorted(parents & MODULES.keys()), name):
            if target != module:
                edges.setdefault(target, line)
    return edges


def _unit(module: str) -> str:
    """The LAYERS unit of a module: its subpackage or top-level module under torchslim."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def test_every_module_has_a_layer_and_every_layer_entry_exists() -> None:
    units = {_unit(m) for m in MODULES}
    missing = sorted(units - LAYER_OF.keys())
    assert not missing, f"add these torchslim modules/packages to LAYERS: {missing}"
    stale = sorted(LAYER_OF.keys() - units)
    assert not stale, f"LAYERS names what does not exist (remove it): {stale}"
    assert len(LAYER_OF) == sum(map(len, LAYERS)), "a unit is listed twice in LAYERS"


def test_no_import_cycles_at_module_level() -> None:
    graph = {m: _edges(m, lazy=False) for m in MODULES}
    # Tarjan's strongly connected components; any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for t in graph[m]:
            if t not in index:
                connect(t)
                low[m] = min(low[m], low[t])
            elif t in stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            component = []
            while True:
                t = stack.pop()
                component.append(t)
                if t == m:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            connect(m)
    assert not cycles, "import cycles at module level (modules of each cycle):\n" + "\n".join(
        ", ".join(c) for c in cycles
    )


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "in-functions"])
def test_no_module_imports_a_layer_above_it(lazy: bool) -> None:
    wrong = []
    for m in sorted(MODULES):
        here = _unit(m)
        for target, line in _edges(m, lazy=lazy).items():
            there = _unit(target)
            if there == here or LAYER_OF[there] < LAYER_OF[here]:
                continue
            if lazy and (here, there) in LAZY_UPWARD:
                continue
            side = "above" if LAYER_OF[there] > LAYER_OF[here] else "beside"
            wrong.append(f"{MODULES[m].relative_to(SRC)}:{line} imports {target} ({there} is "
                         f"{side} {here} in LAYERS)")  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_the_lazy_exceptions_are_still_needed() -> None:
    used = {
        (_unit(m), _unit(t))
        for m in MODULES
        for t in _edges(m, lazy=True)
        if LAYER_OF[_unit(t)] > LAYER_OF[_unit(m)]
    }
    assert set(LAZY_UPWARD) <= used, f"remove from LAZY_UPWARD: {set(LAZY_UPWARD) - used}"


def test_the_import_reader_on_a_known_module() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import torch\n"
        "from torchslim.graph.trace import trace\n"  # runs graph/__init__.py too
        "from torchslim.prune import report, PruneConfig\n"  # a submodule and a name
        "from . import tables\n"
        "if TYPE_CHECKING:\n"
        "    from torchslim.pipeline import runner\n"  # never runs
        "class A:\n"
        "    from torchslim import errors\n"  # runs at import
        "def f():\n"
        "    import torchslim.cli\n"  # runs when called
    )
    assert _edges("torchslim.analysis", lazy=False, source=source) == {
        "torchslim.graph": 3,
        "torchslim.graph.trace": 3,
        "torchslim.prune": 4,
        "torchslim.prune.report": 4,
        "torchslim.tables": 5,
        "torchslim.errors": 9,
    }
    assert _edges("torchslim.analysis", lazy=True, source=source) == {"torchslim.cli": 11}
    # Inside torchslim.graph, the package's own __init__ is not an implicit edge (it is
    # already initialising), but reading a name from it is ("from . import tables": no
    # torchslim.graph.tables module, so a name of graph/__init__.py).
    assert _edges("torchslim.graph.trace", lazy=False, source=source) == {
        "torchslim.prune": 4,
        "torchslim.prune.report": 4,
        "torchslim.graph": 5,
        "torchslim.errors": 9,
    }
