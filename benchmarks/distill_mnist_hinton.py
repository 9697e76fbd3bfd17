"""Hinton, Vinyals & Dean (2015), section 3, in miniature: MNIST test errors of a 2x1200 teacher,
a 2x800 student trained alone, and the same student distilled at T=20.

Usage:
    python benchmarks/distill_mnist_hinton.py [--teacher-epochs 30] [--epochs 30] [--seed 0]
        [--temperatures 20,8,4] [--alpha 0.9] [--lr 0.05] [--data-root ../shared/datasets/mnist]
        [--results benchmarks/results/distill_mnist_hinton.jsonl]

Teacher: MLP 2x1200 (ReLU), dropout 0.5 on the hidden layers, inputs jittered by up to 2 pixels
(the paper also used input dropout and weight constraints, and trained far longer). Students:
MLP 2x800, no dropout, no jitter; one trained on the labels only, one on the teacher's T=20 soft
targets (weight alpha) plus the labels (1 - alpha), teacher outputs cached once. SGD momentum
0.9, lr 0.05 cosine, batch 128, no weight decay; full 60k training set; errors counted on the
10k test images.
The paper's full-scale figures: teacher 67 errors, student alone 146, distilled student 74.
The figures are appended to --results (block ``distill_hinton``) for benchmarks/render.py; the
teacher's row only when this run trained it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

from torchslim.data import get_dataset
from torchslim.distill import fit_distillation
from torchslim.models import create
from torchslim.train import Trainer, atomic_save, evaluate, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

HIN = "Hinton et al.'s MNIST distillation in miniature: test errors"  # headline claim


def config(epochs: int, seed: int, lr: float = 0.05) -> dict:
    return {"epochs": epochs, "batch_size": 128, "lr": lr, "schedule": "cosine",
            "weight_decay": 0.0, "seed": seed, "eval_every": epochs, "progress": False}  # fmt: skip


class Jittered(Dataset):
    """Each image shifted by up to ``pixels`` in x and y (zero fill), drawn afresh every time."""

    def __init__(self, base: TensorDataset, pixels: int) -> None:
        self.base, self.crop = base, v2.RandomCrop(28, padding=pixels)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[i]
        return self.crop(x), y


def minutes(start: float) -> float:
    return (time.perf_counter() - start) / 60


def errors(model: torch.nn.Module, test: object) -> int:
    res = evaluate(model, test, batch_size=1000)
    return round((1 - res.accuracy) * res.samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--temperatures", default="20", help="one distilled row per T")
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--lr", type=float, default=0.05, help="the students' learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default="../shared/datasets/mnist",
                        help="folder holding MNIST/raw/*.gz")  # fmt: skip
    parser.add_argument("--teacher-file", default="bench-out/mnist-mlp2x1200.pt",
                        help="teacher weights: loaded if present, else trained")  # fmt: skip
    add_results_option(parser, "distill_mnist_hinton")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = args.data_root
    # The images fit in memory: decode them once; the teacher's jitter works on the tensors.
    plain = get_dataset("mnist", train=True, root=root, augment=[])
    plain = TensorDataset(*next(iter(DataLoader(plain, batch_size=len(plain)))))
    jittered = Jittered(plain, pixels=2)
    test = get_dataset("mnist", train=False, root=root)
    rows = []

    start = time.perf_counter()
    seed_everything(args.seed)
    teacher = create("mlp", num_classes=10, in_channels=1, hidden=(1200, 1200), dropout=0.5)
    saved = Path(args.teacher_file)
    trained_teacher = not saved.exists()
    if saved.exists():
        teacher.load_state_dict(torch.load(saved, weights_only=True))
    else:
        Trainer(teacher, config(args.teacher_epochs, args.seed), jittered, None).fit()
        atomic_save(teacher.state_dict(), saved)
    rows.append(("teacher 2x1200, dropout + jitter", errors(teacher, test), minutes(start), 67))
    with torch.no_grad():
        logits = teacher.eval()(plain.tensors[0][:1000])
    print(
        f"teacher logits on 1000 training images: std {logits.std():.1f}, "
        f"max - min per image {(logits.max(1).values - logits.min(1).values).mean():.1f}"
    )

    start = time.perf_counter()
    seed_everything(args.seed)
    alone = create("mlp", num_classes=10, in_channels=1, hidden=(800, 800))
    Trainer(alone, config(args.epochs, args.seed, args.lr), plain, None).fit()
    rows.append(("student 2x800 alone", errors(alone, test), minutes(start), 146))

    for temp in (float(t) for t in args.temperatures.split(",")):
        start = time.perf_counter()
        seed_everything(args.seed)
        student = create("mlp", num_classes=10, in_channels=1, hidden=(800, 800))
        kd = {"type": "kd", "options": {"temperature": temp, "alpha": args.alpha}}
        train_cfg = config(args.epochs, args.seed, args.lr)
        cfg = {"losses": [kd], "cache_teacher": True, "train": train_cfg}
        fit_distillation(student, teacher, plain, cfg)
        name = f"student 2x800 distilled, T={temp:g}, alpha={args.alpha:g}"
        rows.append((name, errors(student, test), minutes(start), 74 if temp == 20 else "-"))

    print(f"\nMNIST, 60k training images; teacher {args.teacher_epochs} epochs, students "
          f"{args.epochs} epochs at lr {args.lr:g}, seed {args.seed}; errors on 10k test "
          "images\n")  # fmt: skip
    print("| network | test errors | paper (full scale) | minutes |")
    print("|---|---|---|---|")
    for name, err, mins, paper in rows:
        print(f"| {name} | {err} | {paper} | {mins:.1f} |")
    res = Results(args.results, table="distill_hinton", area="distillation",
                  claim="Hinton et al.'s MNIST experiment in miniature: test errors on the 10k "
                  "test images", row_header=["network", "students' lr"], threads=2,
                  settings={"teacher epochs": args.teacher_epochs, "epochs": args.epochs,
                            "alpha": args.alpha, "seed": args.seed})  # fmt: skip
    for name, err, mins, paper in rows:
        teacher = name.startswith("teacher")
        if teacher and not trained_teacher:
            continue  # loaded from --teacher-file: its errors are the run's that trained it
        lr = "0.05" if teacher else f"{args.lr:g}"  # the teacher always trains at 0.05
        head = None
        if name == "student 2x800 alone" or name.startswith("student 2x800 distilled, T=20,"):
            what = "alone" if name.endswith("alone") else "T=20"
            head = {"claim": HIN, "order": 24, "label": f"{what} lr {lr}"}
        peer = None
        if paper != "-":
            peer = {"name": "paper (full scale)", "label": "paper (full scale)", "value": paper,
                    "unit": "errors", "digits": 0}  # fmt: skip
        res.add([name, lr], "test errors", err, "errors", 0, peer=peer, headline=head)
        res.add([name, lr], "minutes", round(mins, 2), "min", 1)


if __name__ == "__main__":
    main()
