"""A tiny distillation run driven by the kill/resume test.

Usage: python tiny_distill.py OUT_DIR [--resume] [--kill-at-step N]
Writes OUT_DIR/final.pt with the student's and the FitNets adapter's final weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from tiny_run import KillAt, tiny_data, tiny_model

from torchslim.distill import fit_distillation
from torchslim.train import seed_everything


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-at-step", type=int, default=0)
    args = p.parse_args(argv)
    seed_everything(1)
    teacher = tiny_model()
    seed_everything(0)
    student = tiny_model()
    config = {
        "losses": [
            {"type": "kd", "options": {"temperature": 2.0, "alpha": 0.7}},
            {"type": "fitnet", "student": ["2"], "weight": 0.5},
        ],
        "cache_teacher": True,
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.05, "progress": False},
    }
    callbacks = [KillAt(args.kill_at_step)] if args.kill_at_step else []
    seen = {}
    res = fit_distillation(
        student, teacher, tiny_data(), config, eval_data=tiny_data(32), out_dir=args.out,
        resume=args.resume, callbacks=callbacks,
    )  # fmt: skip
    seen["student"] = res.student.state_dict()
    ckpt = torch.load(Path(args.out) / "distill" / "last.pt", weights_only=False)
    seen["adapter"] = ckpt["extra_modules"][0]
    torch.save(seen, Path(args.out) / "final.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
