"""Stop other jobs (and every process they started) while a benchmark times something: the two
cores of this machine are shared, and an accuracy job may keep running beside a timing one."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def pause(pids: Iterable[int] | int | None, stop: bool) -> None:
    """SIGSTOP (``stop``) or SIGCONT each of ``pids`` and all their descendants."""
    if pids is None:
        return
    for root in [pids] if isinstance(pids, int) else pids:
        for pid in _tree(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP if stop else signal.SIGCONT)
    time.sleep(1.0 if stop else 0.0)
