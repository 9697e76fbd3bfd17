"""Atomic checkpoint files and the random-number state that makes a resumed run identical."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from torchslim.errors import CheckpointError

FORMAT = "torchslim.train/1"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary file in the same folder, fsync, then rename over
    ``path``. A run killed while writing leaves the previous file intact, never a truncated one.

    Example:
        >>> atomic_write("/tmp/hello.bin", lambda f: f.write(b"hi")).read_bytes()
        b'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`.

    Example:
        >>> atomic_save({"x": 1}, "/tmp/ckpt.pt").name
        'ckpt.pt'
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write UTF-8 text through :func:`atomic_write`.

    Example:
        >>> atomic_write_text("a,b\\n", "/tmp/m.csv").name
        'm.csv'
    """
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a trainer checkpoint, with a clear error when it is missing or foreign.

    Example:
        >>> ckpt = load_checkpoint("runs/fmnist/last.pt")  # doctest: +SKIP
        >>> ckpt["epoch"]  # doctest: +SKIP
        3
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first or point to the right folder")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torchslim trainer checkpoint ({FORMAT})")
    return ckpt


def rng_state() -> dict[str, Any]:
    """Snapshot of the Python, NumPy, torch (and CUDA) generators."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels.

    Example:
        >>> seed_everything(0)
        >>> torch.rand(1).item() == (seed_everything(0), torch.rand(1).item())[1]
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
