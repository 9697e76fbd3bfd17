"""Machine-readable benchmark results: one JSON line per measured figure.

Every script under benchmarks/ takes ``--results PATH`` (default
``benchmarks/results/<script>.jsonl``; ``--results ''`` writes nothing) and appends one line
per figure it measures, with what ``benchmarks/render.py`` needs to regenerate the tables of
BENCHMARKS.md. A line (a *record*) holds:

* ``table`` (the ``<!-- results:TABLE -->`` block of BENCHMARKS.md it belongs to), ``area``,
  ``claim`` (what the table measures), ``row`` (the row's label cells) and ``row_header``;
* ``metric`` (the column), ``value`` (a number, a string, a list, or null), ``unit``,
  ``digits`` (decimals as printed) and ``of`` (for counts such as 68 of 69);
* ``model``, ``settings``; ``peer`` (a peer tool's or a paper's figure for the same thing:
  ``{"name", "value", "unit", "digits"}``); ``target`` (``{"text", "op", "value"}``, or
  ``"ref": "peer"`` to compare with the claim's peer-side records of the same model);
  ``headline`` (``{"claim", "order", "label", "side"}``: the figure appears in the headline
  table; ``side: "peer"`` puts it in the "compared with" cell); ``note``; ``run`` (only where
  one table keeps several runs of the same rows on purpose);
* ``command``, ``machine`` (CPU model, flags, cores, threads), ``versions`` (Python, torch,
  torchvision, ONNX Runtime, ...), ``date``, ``source`` (``"measured"``, or where a figure was
  transcribed from) and ``torchslim_source`` (the checkout's commit).

Where the same (table, row, metric, run) appears more than once, the last line wins: a new run
of a script supersedes the figures it measures again, and the older lines stay in the file
(and in git) as history.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("benchmarks") / "results"
_ISA = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def add_results_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--results`` with ``benchmarks/results/NAME.jsonl`` as its default."""
    parser.add_argument(
        "--results",
        default=str(RESULTS_DIR / f"{name}.jsonl"),
        help="append one JSON line per measured figure here, for benchmarks/render.py "
        "(default: %(default)s; '' writes nothing)",
    )


def machine(threads: int | None = None) -> dict[str, Any]:
    """The CPU model, its vector-instruction flags, cores and the threads used."""
    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name" and not cpu:
                cpu = val.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(val.split())
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()
    if threads is None:
        try:
            import torch

            threads = torch.get_num_threads()
        except ImportError:
            threads = None
    present = [f for f in _ISA if f in flags]
    vnni = any("vnni" in f for f in flags)
    return {
        "label": f"{cpu}, {os.cpu_count()} cores",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "flags": ", ".join(present) + ("" if vnni else "; no VNNI"),
        "threads": threads,
    }


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages the figures depend on."""
    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "onnxruntime", "torch_pruning"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        out[name] = getattr(module, "__version__", "?")
    return out


def source_commit() -> str:
    """The checkout's commit, with "+dirty" where src/ has uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        git = ["git", "-C", str(root)]
        run = lambda *a: subprocess.run([*git, *a], capture_output=True, text=True, check=False)  # noqa: E731
        head = run("rev-parse", "--short", "HEAD").stdout.strip()
        dirty = run("status", "--porcelain", "--", "src").stdout.strip()
    except OSError:
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def this_command() -> str:
    """How this process was started, as one shell command line."""
    return shlex.join(["python", *sys.argv])


def now() -> str:
    """The date and time as the results write it."""
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M")


class Results:
    """Appends records to one ``.jsonl`` file; the fields shared by a run are set once.

    ``command`` and ``date`` default to this process's command line and start; a script run by
    a driver (a shell script) passes the driver's.

    Example:
        >>> res = Results("", table="demo", area="pipeline", claim="a claim")  # '' = no file
        >>> res.add(["baseline"], "top-1", 85.13, "%", 2)["value"]
        85.13
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        table: str,
        area: str,
        claim: str,
        row_header: list[str] | None = None,
        model: str | None = None,
        settings: dict[str, Any] | None = None,
        threads: int | None = None,
        command: str | None = None,
        date: str | None = None,
    ) -> None:
        self.path = Path(path) if path else None
        self.common: dict[str, Any] = {
            "table": table,
            "area": area,
            "claim": claim,
            "row_header": row_header,
            "model": model,
            "settings": settings or {},
        }
        self.provenance = {
            "command": command or this_command(),
            "machine": machine(threads),
            "versions": versions(),
            "date": date or now(),
            "source": "measured",
            "torchslim_source": source_commit(),
        }

    def add(
        self,
        row: list[str] | str,
        metric: str,
        value: Any,
        unit: str,
        digits: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Append one figure; ``fields`` override the shared ones (table, claim, settings...)
        or add ``of``, ``peer``, ``target``, ``headline``, ``note``, ``run``."""
        rec = {**self.common, "row": [row] if isinstance(row, str) else list(row)}
        rec.update(metric=metric, value=value, unit=unit, digits=digits)
        rec.update(fields)
        rec.update(self.provenance)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return rec
