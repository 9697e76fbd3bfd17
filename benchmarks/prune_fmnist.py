"""Fashion-MNIST ResNet-20 pruned to -50% MACs (L1, FPGM, sensitivity-derived) + short fine-tune.

Usage:
    python benchmarks/prune_fmnist.py --run bench-out/fmnist-resnet20 --epochs 2
        [--methods l1,fpgm,sensitivity] [--results benchmarks/results/prune_fmnist.jsonl]
(the run folder comes from benchmarks/train_fmnist_resnet20.sh). Prints a Markdown table and
appends its figures to --results for benchmarks/render.py.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

import torchslim as ts
from torchslim.data import get_dataset, stratified_subset
from torchslim.pipeline import load_run
from torchslim.train import Trainer, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

# Figures here cut single channels (round_to 1): pruning's default round_to is the CPU's
# vector width, so the run pins it (a round_to in a config, or the variable set, wins).
os.environ.setdefault("TORCHSLIM_VECTOR_FLOATS", "1")

FT = "Fashion-MNIST ResNet-20 at −50% MACs + 2-epoch fine-tune: change"  # headline claims
SENS = "Sensitivity-derived ratios vs a uniform L1 cut at equal MACs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="bench-out/fmnist-resnet20")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--target-macs", type=float, default=0.5)
    parser.add_argument("--methods", default="l1,fpgm", help="comma list; 'sensitivity' too")
    parser.add_argument(
        "--sens-samples",
        type=int,
        default=2000,
        help="training images (not augmented) that score the sensitivity analysis",
    )
    add_results_option(parser, "prune_fmnist")
    args = parser.parse_args()
    res = Results(args.results, table="prune_fmnist", area="pruning",
                  claim="Fashion-MNIST ResNet-20 pruned to -50% MACs, then fine-tuned",
                  row_header=["method"], model="ResNet-20",
                  settings={"run": args.run, "fine-tune epochs": args.epochs, "lr": args.lr,
                            "target_macs": args.target_macs,
                            "sensitivity eval images": args.sens_samples})  # fmt: skip
    claimed = args.epochs == 2 and args.target_macs == 0.5  # what the headline claims stand for

    torch.manual_seed(0)
    base, _ = load_run(Path(args.run))
    train = get_dataset("fashion-mnist", train=True, augment=["hflip"])
    test = get_dataset("fashion-mnist", train=False)
    x = torch.randn(1, 1, 28, 28)
    base_acc = evaluate(base, test, batch_size=512).accuracy
    base_macs = ts.analyze(base, x).macs
    print(f"fine-tune: {args.epochs} epochs, lr {args.lr}, cosine, full 60k train set\n")
    print("| method | MACs kept | top-1 right after pruning | top-1 after fine-tune | change "
          "vs baseline | prune s | fine-tune s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")

    def row(name: str, macs: float, pa: float, fa: float, ps: float, fs: float) -> None:
        print(f"| {name} | {macs:.3f} | {100 * pa:.2f}% | {100 * fa:.2f}% | "
              f"{100 * (fa - base_acc):+.2f} | {ps:.1f} | {fs:.0f} |", flush=True)  # fmt: skip
        extra: dict[str, dict[str, Any]] = {}
        if claimed and name != "baseline":
            label = {"l1": "L1", "fpgm": "FPGM"}.get(name, name)
            extra["change vs baseline"] = {
                "target": {"text": "≤ 1 point lost", "op": ">=", "value": -1.0},
                "headline": {"claim": FT, "order": 11, "label": label},
            }
        if claimed and name in ("l1", "sensitivity"):
            for metric in ("top-1 right after pruning", "top-1 after fine-tune"):
                short = metric.replace("top-1 ", "")
                if name == "l1":  # the uniform cut the sensitivity-derived one is compared with
                    head = {"claim": SENS, "order": 12, "label": f"uniform L1, {short}",
                            "side": "peer"}  # fmt: skip
                    extra[metric] = {"headline": head}
                else:
                    extra[metric] = {
                        "headline": {"claim": SENS, "order": 12, "label": short},
                        "target": {"text": "≥ uniform L1", "op": ">=", "ref": "peer"},
                    }
        for metric, value, unit, digits in (
            ("MACs kept", macs, "ratio", 3), ("top-1 right after pruning", 100 * pa, "%", 2),
            ("top-1 after fine-tune", 100 * fa, "%", 2),
            ("change vs baseline", 100 * (fa - base_acc), "pt", 2), ("prune s", ps, "s", 1),
            ("fine-tune s", fs, "s", 0),
        ):  # fmt: skip
            res.add(name, metric, round(value, 4), unit, digits, **extra.get(metric, {}))

    row("baseline", 1.0, base_acc, base_acc, 0.0, 0.0)
    for method in args.methods.split(","):
        model = copy.deepcopy(base)
        start = time.perf_counter()
        if method == "sensitivity":
            from torchslim.prune.sensitivity import ratios_for_target, sensitivity

            # Scored on held-out *training* images: the test set only reports.
            plain = get_dataset("fashion-mnist", train=True, augment=[])
            small = stratified_subset(plain, per_class=args.sens_samples // 10, seed=1)

            def score(m: torch.nn.Module, data: object = small) -> float:
                return evaluate(m, data, batch_size=512, progress=False).accuracy

            result = sensitivity(model, x, score)
            ratios = ratios_for_target(result, args.target_macs)
            ts.prune(model, x, {"ratio": 0.0, "ratios": ratios})
        else:
            ts.prune(model, x, {"target_macs": args.target_macs, "importance": method})
        prune_s = time.perf_counter() - start
        macs = ts.analyze(model, x).macs / base_macs
        pruned_acc = evaluate(model, test, batch_size=512).accuracy
        start = time.perf_counter()
        cfg = {"epochs": args.epochs, "lr": args.lr, "batch_size": 128, "schedule": "cosine",
               "weight_decay": 5e-4, "progress": False, "seed": 0}  # fmt: skip
        Trainer(model, cfg, train, test).fit()
        tune_s = time.perf_counter() - start
        final = evaluate(model, test, batch_size=512).accuracy
        row(method, macs, pruned_acc, final, prune_s, tune_s)


if __name__ == "__main__":
    main()
