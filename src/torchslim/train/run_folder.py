"""One run per output folder: an OS file lock while a run writes there, and no silent reuse of a
folder that already holds a run.

Two ``torchslim train --out X`` started together would both write ``X/last.pt``; a rerun without
``--resume`` would replace a finished run's checkpoint. :func:`claim_run_folder` takes an
exclusive OS lock on ``FOLDER/.torchslim.lock`` (released by the OS when the process dies, so a
killed run never leaves the folder locked), records who holds it in ``.torchslim.lock.json`` for
the error the next run prints, and refuses a folder that already holds a run unless the caller
resumes it or asked to overwrite it.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from torchslim.errors import RunFolderError
from torchslim.train.checkpoint import atomic_write_text

LOCK_NAME = ".torchslim.lock"
HOLDER_NAME = ".torchslim.lock.json"


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return "another process (no holder record)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (
        f"process {info.get('pid')} on {info.get('host')} since {started} "
        f"({info.get('command', '?')})"
    )


@contextmanager
def claim_run_folder(
    folder: str | os.PathLike,
    *,
    existing: Callable[[], str | None],
    resume: bool,
    overwrite: bool,
) -> Iterator[Path]:
    """Hold ``folder`` for one run; yields its path.

    ``existing()`` describes the run already in the folder (``"last.pt of epoch 3/3"``) or
    returns ``None``; such a folder is refused unless ``resume`` or ``overwrite``. A folder held
    by another live process is always refused, naming the holder.

    Example:
        >>> with claim_run_folder("/tmp/run-a", existing=lambda: None, resume=False,
        ...                       overwrite=False) as folder:
        ...     _ = (folder / "last.pt").write_bytes(b"x")
        >>> with claim_run_folder("/tmp/run-a", existing=lambda: "last.pt", resume=False,
        ...                       overwrite=False):  # doctest: +ELLIPSIS
        ...     pass
        Traceback (most recent call last):
        torchslim.errors.RunFolderError: /tmp/run-a already holds a run (last.pt); ...
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunFolderError(
            f"{folder} is in use by {_holder(folder)}; wait for that run to finish, stop it, or "
            "choose another output folder"
        ) from None
    try:
        found = existing()
        if found is not None and not (resume or overwrite):
            raise RunFolderError(
                f"{folder} already holds a run ({found}); pass --resume (resume=True) to "
                "continue it, --overwrite (overwrite=True) to replace it, or choose another "
                "output folder"
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": shlex.join(sys.argv) if sys.argv and sys.argv[0] else "python",
        }
        atomic_write_text(json.dumps(record), folder / HOLDER_NAME)
        yield folder
    finally:
        (folder / HOLDER_NAME).unlink(missing_ok=True)
        lock.release()


__all__ = ["claim_run_folder"]
