"""One run per output folder: a held folder and a folder holding a run are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchslim.errors import RunFolderError
from torchslim.train import Trainer
from torchslim.train.run_folder import claim_run_folder

sys.path.insert(0, str(Path(__file__).parent))
from tiny_run import tiny_data, tiny_model

CFG = {"epochs": 1, "batch_size": 16, "progress": False}


def hold_folder(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder`` (as a running ``torchslim train`` does) until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from torchslim.train.run_folder import claim_run_folder
        with claim_run_folder({str(folder)!r}, existing=lambda: None, resume=False,
                              overwrite=False):
            print("held", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_held_by_a_live_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    proc = hold_folder(tmp_path)
    try:
        with pytest.raises(RunFolderError, match=rf"in use by process {proc.pid} on .* since"):
            Trainer(tiny_model(), CFG, tiny_data(), out_dir=tmp_path).fit()
        assert not (tmp_path / "last.pt").exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # the OS released the killed holder's lock: the folder is usable again
    Trainer(tiny_model(), CFG, tiny_data(), out_dir=tmp_path).fit()
    assert (tmp_path / "last.pt").exists()


def test_a_finished_run_is_not_replaced_without_resume_or_overwrite(tmp_path: Path) -> None:
    Trainer(tiny_model(), CFG, tiny_data(), out_dir=tmp_path).fit()
    first = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(RunFolderError, match=r"already holds a run \(its checkpoint last\.pt"):
        Trainer(tiny_model(), CFG, tiny_data(), out_dir=tmp_path).fit()
    assert (tmp_path / "last.pt").read_bytes() == first
    Trainer(tiny_model(), CFG, tiny_data(), out_dir=tmp_path).fit(resume=True)  # nothing left
    assert (tmp_path / "last.pt").read_bytes() == first
    Trainer(tiny_model(), {**CFG, "seed": 5}, tiny_data(), out_dir=tmp_path).fit(overwrite=True)
    assert (tmp_path / "last.pt").read_bytes() != first


def test_the_lock_is_released_after_an_error(tmp_path: Path) -> None:
    with (
        pytest.raises(ZeroDivisionError),
        claim_run_folder(tmp_path, existing=lambda: None, resume=False, overwrite=False),
    ):
        1 / 0  # noqa: B018
    with claim_run_folder(tmp_path, existing=lambda: None, resume=False, overwrite=False):
        pass
