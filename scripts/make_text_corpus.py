"""Build the embedded English corpus: sentences from the docstrings of Python's standard library.

Usage:
    python scripts/make_text_corpus.py [--out src/torchslim/data/embedded/python-docs]

The corpus the sentence-encoder figures are measured on (cosine to the float model's embeddings,
top-10 neighbour overlap in retrieval) must be real English, fixed, and shippable offline. The
docstrings of CPython's standard library are all three (PSF License). This script reads them from
the running interpreter (the shipped file came from CPython 3.11.7), splits them into sentences,
keeps plain prose of 8-40 words, removes duplicates and writes the first ``--sentences`` in a
fixed order, one per line. Run it again only to rebuild the file on purpose: its output depends on
the Python version.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email.message", "enum", "fnmatch", "fractions", "ftplib", "functools", "gettext", "glob",
    "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client", "http.server", "imaplib",
    "inspect", "io", "ipaddress", "itertools", "json", "logging", "lzma", "mailbox", "math",
    "mimetypes", "multiprocessing", "numbers", "operator", "optparse", "os", "pathlib", "pdb",
    "pickle", "platform", "plistlib", "poplib", "pprint", "queue", "random", "re", "sched",
    "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket",
    "socketserver", "sqlite3", "ssl", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "turtle", "typing",
    "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zlib",
)  # fmt: skip
LICENSE = """Sentences from the docstrings of the CPython {version} standard library.

Copyright (c) 2001-2023 Python Software Foundation. All rights reserved.
Distributed under the PSF License Agreement (version 2):
https://docs.python.org/3/license.html#psf-license-agreement-for-python-release

Selected by scripts/make_text_corpus.py (torchslim); the text is unchanged apart from
joining each sentence onto one line.
"""
SENTENCE_END = re.compile(r"(?<=[a-z0-9)][.!?])\s+(?=[A-Z])")
PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'()\-]+[.!?]$")


def docstrings(module_name: str) -> list[str]:
    """The module's docstring, then its public classes', functions' and methods'."""
    module = importlib.import_module(module_name)
    found = [inspect.getdoc(module) or ""]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        found.append(inspect.getdoc(obj) or "")
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):
                if not attr.startswith("_") and callable(member):
                    found.append(inspect.getdoc(member) or "")
    return found


def sentences(text: str) -> list[str]:
    """Prose sentences of 8-40 words from the paragraphs of ``text``."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.startswith((" ", ">>>")) or "::" in paragraph:
            continue  # code, doctests, directives
        flat = " ".join(paragraph.split())
        for s in SENTENCE_END.split(flat):
            if PROSE.match(s) and 8 <= len(s.split()) <= 40:
                out.append(s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="src/torchslim/data/embedded/python-docs")
    parser.add_argument("--sentences", type=int, default=1000)
    args = parser.parse_args()
    seen: set[str] = set()
    corpus: list[str] = []
    for name in MODULES:
        for doc in docstrings(name):
            for s in sentences(doc):
                if s.lower() not in seen:
                    seen.add(s.lower())
                    corpus.append(s)
    if len(corpus) < args.sentences:
        raise SystemExit(f"only {len(corpus)} sentences found, {args.sentences} asked")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sentences.txt").write_text("\n".join(corpus[: args.sentences]) + "\n")
    version = ".".join(map(str, sys.version_info[:3]))
    (out / "LICENSE").write_text(LICENSE.format(version=version))
    print(f"{args.sentences} of {len(corpus)} sentences -> {out / 'sentences.txt'}")


if __name__ == "__main__":
    main()
