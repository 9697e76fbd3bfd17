"""Atomic, verified checkpoint files and the random-number state that makes a resumed run
identical.

Every file torchslim writes holds tensors and plain data only, is read back with
``torch.load(weights_only=True)`` (unpickling nothing that could run code) and carries a CRC-32
of each tensor, checked on load, so damaged bytes are an error instead of silently wrong weights.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from torchslim._tensors import describe_nonfinite, first_nonfinite
from torchslim.errors import CheckpointError

FORMAT = "torchslim.train/2"
_FORMAT_PREFIX = "torchslim.train/"
MODEL_FORMAT_PREFIX = "torchslim.model/"  # files written by ts.save (torchslim.serialize)
CHECKSUMS = "checksums"


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


def named_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside nested dicts / lists / tuples, with its key path.

    Example:
        >>> [name for name, _ in named_tensors({"a": torch.zeros(1), "b": [torch.ones(2)]})]
        ['a', 'b.0']
    """
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from named_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from named_tensors(value, f"{prefix}.{i}" if prefix else str(i))


def _crc32(tensor: torch.Tensor) -> int:
    t = tensor.detach().cpu().contiguous()
    if t.numel() == 0:
        return 0
    return zlib.crc32(t.reshape(-1).view(torch.uint8).numpy().data)


def checksums(payload: Mapping[str, Any]) -> dict[str, int]:
    """CRC-32 of every tensor's bytes in ``payload`` (the ``checksums`` entry itself excluded).

    Example:
        >>> checksums({"w": torch.zeros(2)})
        {'w': 1696784233}
    """
    body = {k: v for k, v in payload.items() if k != CHECKSUMS}
    return {name: _crc32(t) for name, t in named_tensors(body)}


def save_verified(payload: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """:func:`atomic_save` of a plain-data payload with the CRC-32 of each tensor recorded, so
    :func:`read_verified` detects damaged bytes.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     save_verified({"w": torch.ones(3)}, f"{tmp}/verified.pt").name
        'verified.pt'
    """
    return atomic_save({**payload, CHECKSUMS: checksums(payload)}, path)


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_plain(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never code.

    A file that holds pickled Python objects is refused with a :class:`CheckpointError` naming
    the object, before anything in it runs.

    Example:
        >>> read_plain(save_verified({"w": torch.ones(1)}, "/tmp/plain.pt"))["w"]
        tensor([1.])
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        text = str(exc)
        found = _GLOBAL.search(text)
        if found:
            what = f" ({found.group(1)})"
            raise CheckpointError(
                f"{path} holds pickled Python objects{what}, not just tensors and plain data; "
                "torchslim refuses to unpickle them because that can run arbitrary code. Files "
                "written by torchslim never need it: was this file written by another tool or "
                "an older torchslim? Only if you trust it, unpickle it yourself with torch.load "
                "and pass the model object instead"
            ) from None
        reason = text.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
        reason = " ".join(reason.split()) if "WeightsUnpickler" in text else " ".join(text.split())
        raise CheckpointError(
            f"cannot read {path}: not a PyTorch file, or a damaged one ({reason})"
        ) from exc


def read_verified(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """:func:`read_plain`, then the recorded CRC-32 of every tensor checked (when the file has
    them): a damaged file is a :class:`CheckpointError` naming the first damaged tensor.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # doctests run in name order: its own file
        ...     path = save_verified({"w": torch.ones(3)}, f"{tmp}/verified.pt")
        ...     read_verified(path)["w"]
        tensor([1., 1., 1.])
    """
    payload = read_plain(path, map_location)
    recorded = payload.get(CHECKSUMS) if isinstance(payload, dict) else None
    if recorded is None:
        return payload
    found = checksums(payload)
    for name in [*found, *(n for n in recorded if n not in found)]:
        if recorded.get(name) != found.get(name):
            state = "missing" if name not in found else "damaged (checksum mismatch)"
            raise CheckpointError(
                f"{path} is corrupt: tensor {name!r} is {state}; the file was changed after "
                "torchslim wrote it. Use another copy or the previous checkpoint"
            )
    return payload


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a trainer checkpoint safely (tensors and plain data only, checksums and finite
    weights checked), with a clear error when it is missing, foreign or damaged.

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from torchslim.train import Trainer
        >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
        >>> cfg = {"epochs": 3, "batch_size": 16, "progress": False}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = Trainer(nn.Linear(4, 2), cfg, data, out_dir=tmp).fit()
        ...     ckpt = load_checkpoint(f"{tmp}/last.pt")
        >>> ckpt["epoch"]
        3
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first or point to the right folder")
    ckpt = read_verified(path)
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if isinstance(found, str) and found.startswith(MODEL_FORMAT_PREFIX):
        raise CheckpointError(
            f"{path} is a model file written by ts.save ({found}), not a trainer checkpoint; "
            "read it with torchslim.load(path) (or name it in a recipe's model.checkpoint)"
        )
    if isinstance(found, str) and found.startswith(_FORMAT_PREFIX) and found != FORMAT:
        raise CheckpointError(
            f"{path} is a trainer checkpoint in format {found!r}; this torchslim reads {FORMAT!r} "
            "(older checkpoints stored pickled random-number state): retrain, or load the "
            "weights with the torchslim version that wrote it"
        )
    if found != FORMAT:
        raise CheckpointError(f"{path} is not a torchslim trainer checkpoint ({FORMAT})")
    bad = first_nonfinite(named_tensors(ckpt.get("model", {})))
    if bad is not None:
        tensor = dict(named_tensors(ckpt["model"]))[bad]
        raise CheckpointError(
            f"{path} holds non-finite weights: {describe_nonfinite(bad, tensor)}; the run that "
            "wrote it had diverged. Use an earlier checkpoint or retrain with a lower lr"
        )
    return ckpt


def rng_state() -> dict[str, Any]:
    """Snapshot of the Python, NumPy, torch (and CUDA) generators."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        # As tensors and plain numbers: ``torch.load(weights_only=True)`` reads no NumPy arrays.
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
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
