"""Checkpoint files: no code runs on load, damaged bytes and non-finite weights are refused."""

from __future__ import annotations

import os
import random
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import torchslim as ts
from torchslim.errors import CheckpointError
from torchslim.pipeline import load_model_file, load_run
from torchslim.train import Trainer, load_checkpoint
from torchslim.train.checkpoint import (
    checksums,
    read_verified,
    rng_state,
    save_verified,
    set_rng_state,
)

sys.path.insert(0, str(Path(__file__).parent))
from tiny_run import tiny_data, tiny_model


class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def payload_file(folder: Path, name: str = "last.pt") -> tuple[Path, Path]:
    """A checkpoint-looking file whose unpickling would create a marker file."""
    marker = folder / "PAYLOAD-RAN"
    path = folder / name
    torch.save({"format": "torchslim.train/2", "model": {}, "x": _Payload(marker)}, path)
    return path, marker


def _trained(tmp_path: Path) -> Path:
    cfg = {"epochs": 1, "batch_size": 16, "progress": False}
    metadata = {"model": "tiny"}
    Trainer(tiny_model(), cfg, tiny_data(), out_dir=tmp_path, metadata=metadata).fit()
    return tmp_path / "last.pt"


@pytest.mark.parametrize(
    "load", [load_checkpoint, ts.load, load_model_file, load_run], ids=lambda f: f.__name__
)
def test_a_pickled_payload_is_refused_and_does_not_run(tmp_path: Path, load: object) -> None:
    path, marker = payload_file(tmp_path)
    with pytest.raises(CheckpointError, match=r"posix\.system.*arbitrary code"):
        load(path)  # type: ignore[operator]
    assert not marker.exists()


def test_trainer_checkpoints_hold_plain_data_only(tmp_path: Path) -> None:
    path = _trained(tmp_path)
    ckpt = torch.load(path, weights_only=True)  # numpy RNG state used to need pickle
    assert ckpt["format"] == "torchslim.train/2" and ckpt["checksums"] == checksums(ckpt)
    assert load_checkpoint(path)["epoch"] == 1


def test_rng_state_survives_a_weights_only_round_trip(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in the NumPy state
    save_verified({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(), torch.rand(1))
    set_rng_state(read_verified(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.standard_normal(), torch.rand(1)) == expected


def _overwrite_tensor_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` over the start of the first tensor storage inside the zip archive, as a
    disk or copy error would (the zip CRC is not checked by torch.load)."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if "/data/" in i.filename and i.file_size >= 8)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
        f.seek(info.header_offset + 30 + int(name_len) + int(extra_len))
        f.write(data)


@pytest.mark.parametrize("kind", ["trainer", "ts.save"])
def test_damaged_bytes_are_detected_on_load(tmp_path: Path, kind: str) -> None:
    if kind == "trainer":
        path, load = _trained(tmp_path), load_checkpoint
    else:
        model = ts.models.create("smallcnn", num_classes=10, in_channels=1)
        path, load = ts.save(model, tmp_path / "m.pt"), ts.load
    load(path)
    _overwrite_tensor_bytes(path, np.array([np.nan, np.nan], dtype=np.float32).tobytes())
    with pytest.raises(CheckpointError, match=r"is corrupt: tensor '.+' is damaged"):
        load(path)


def test_non_finite_weights_are_refused_by_name(tmp_path: Path) -> None:
    path = _trained(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["1.running_var"][0] = float("inf")
    ckpt["checksums"] = checksums(ckpt)  # consistent file, poisoned content
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"non-finite weights: 1\.running_var \(1 of 4"):
        load_checkpoint(path)

    model = ts.models.create("smallcnn", num_classes=10, in_channels=1)
    saved = ts.save(model, tmp_path / "m.pt")
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite values"):
        ts.save(model, saved)
    assert ts.load(saved) is not None  # the good file was not replaced


def test_ts_load_on_a_trainer_checkpoint_says_what_reads_it(tmp_path: Path) -> None:
    path = _trained(tmp_path)
    with pytest.raises(CheckpointError, match=r"trainer checkpoint.*load_run") as info:
        ts.load(path)
    assert "weights_only=False" not in str(info.value)
    saved = ts.save(ts.models.create("smallcnn", num_classes=10, in_channels=1), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"written by ts\.save.*torchslim\.load"):
        load_checkpoint(saved)
