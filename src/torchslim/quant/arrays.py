"""Writing compressed weights as they would be deployed: named numpy arrays in a plain zip."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np

from torchslim.train.checkpoint import atomic_write


def save_arrays(arrays: Mapping[str, np.ndarray], path: str | os.PathLike) -> int:
    """Store each array as ``.npy`` bytes in an uncompressed zip (atomically); returns its size.

    Example:
        >>> save_arrays({"codes": np.zeros(4, np.uint8)}, "/tmp/a.zip") > 4
        True
    """

    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, array in arrays.items():
                buf = io.BytesIO()
                np.save(buf, array, allow_pickle=False)
                zf.writestr(name, buf.getvalue())

    return atomic_write(path, write).stat().st_size
