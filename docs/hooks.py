"""mkdocs hooks: the repository's own Markdown (README.md, BENCHMARKS.md) is included into pages
at the docs root, so its relative links are relative to the repository root. Map them:

- ``README.md`` -> the getting-started page, ``BENCHMARKS.md`` -> the benchmarks page,
  ``docs/X`` -> ``X``;
- any other file of the repository that they link to (a benchmark script, a results file, a
  recipe) is published with the site under ``repo/`` and the link points there.

A link to a file that does not exist stays as written, and ``mkdocs build --strict`` fails on it.

After the build, every package that a page documents with ``::: torchslim.X`` must have an entry
for each name of its ``__all__``; a missing one (say a function shadowed by a submodule of the
same name) is a warning, so the strict build fails.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
INCLUDED = ("README.md", "BENCHMARKS.md")  # repository files that pages include
PAGES = {"README.md": "index.md", "BENCHMARKS.md": "benchmarks.md"}
LINK = re.compile(r"(\]\(\s*<?)([^)\s>#]+)(#[^)\s>]*)?")
PUBLISHED = "repo/"
DIRECTIVE = re.compile(r"^::: *(torchslim[\w.]*) *$", re.MULTILINE)
ANCHOR = re.compile(r'id="(torchslim[\w.]*)"')
log = logging.getLogger("mkdocs.plugins.torchslim")
documented: set[str] = set()  # the objects named by ::: directives


def _targets(text: str) -> set[str]:
    out = set()
    for match in LINK.finditer(text):
        target = match[2]
        if "://" in target or target.startswith(("/", "mailto:")):
            continue
        out.add(target)
    return out


def _repo_file(target: str) -> Path | None:
    path = Path(os.path.normpath(ROOT / target))  # not resolve(): keep symlinked paths
    if ROOT not in path.parents or not path.is_file():
        return None
    return path


def on_files(files: Files, config) -> Files:
    """Publish the repository files that README.md / BENCHMARKS.md link to."""
    for name in INCLUDED:
        source = ROOT / name
        if not source.is_file():
            continue
        for target in sorted(_targets(source.read_text(encoding="utf-8"))):
            path = _repo_file(target)
            if path is None or target in PAGES or target.startswith("docs/"):
                continue
            rel = path.relative_to(ROOT).as_posix()
            if files.get_file_from_path(PUBLISHED + rel) is None:
                files.append(File.generated(config, PUBLISHED + rel, abs_src_path=str(path)))
    return files


def on_pre_build(config) -> None:
    documented.clear()


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    """Rewrite repository-relative links in pages at the docs root (where the includes are)."""
    documented.update(DIRECTIVE.findall(markdown))
    if "/" in page.file.src_uri:
        return markdown

    def fix(match: re.Match) -> str:
        target, fragment = match[2], match[3] or ""
        if "://" in target or target.startswith(("/", "mailto:")):
            return match[0]
        if files.get_file_from_path(target) is not None:
            return match[0]
        if target in PAGES:
            return f"{match[1]}{PAGES[target]}{fragment}"
        if target.startswith("docs/"):
            return f"{match[1]}{target.removeprefix('docs/')}{fragment}"
        path = _repo_file(target)
        if path is not None:
            rel = path.relative_to(ROOT).as_posix()
            if files.get_file_from_path(PUBLISHED + rel) is not None:
                return f"{match[1]}{PUBLISHED}{rel}{fragment}"
        return match[0]

    return LINK.sub(fix, markdown)


def _resolve(path: str) -> object:
    """The object at a dotted path, or a sentinel when there is none."""
    module_path, _, attr = path.rpartition(".")
    parts = module_path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in [*parts[cut:], attr]:
                obj = getattr(obj, part)
        except AttributeError:
            return _resolve
        return obj
    return _resolve


def on_post_build(config) -> None:
    """Every public name of a documented package has an entry somewhere in the site."""
    anchors: dict[str, set[str]] = {}
    for html in Path(config.site_dir).rglob("*.html"):
        for anchor in ANCHOR.findall(html.read_text(encoding="utf-8")):
            anchors.setdefault(anchor.rsplit(".", 1)[-1], set()).add(anchor)
    for name in sorted(documented):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # a class or function directive, not a package
        for public in getattr(module, "__all__", ()):
            obj = getattr(module, public, None)
            if not any(_resolve(a) is obj for a in anchors.get(public, ())):
                log.warning("%s.%s is in __all__ but documented on no page", name, public)
