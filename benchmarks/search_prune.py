"""Searched per-layer ratios against hand-set rules: a trained classifier at a MACs budget.

Usage:
    python benchmarks/search_prune.py --run bench-out/fmnist-resnet20 [--data fashion-mnist]
        [--macs 0.5,0.25] [--methods uniform,global,sensitivity,sa,tpe] [--seeds 0,1,2]
        [--epochs 2] [--trials 200] [--results benchmarks/results/search_fmnist.jsonl]
(the Fashion-MNIST run folder comes from benchmarks/train_fmnist_resnet20.sh; for
``--data cifar10`` train one with ``torchslim train --data cifar10`` and pass it as ``--run``;
its figures then go to ``search_cifar10``).

Every row prunes the same trained baseline to the budget and gets the same fine-tune (``--epochs``
on the full training set, cosine, seeded); the figure is test top-1, mean over ``--seeds`` (the
fine-tune's seed and the search's). Choices come from training data only:

* ``uniform``: ``ts.prune(..., {"target_macs": m})``, L1, every group cut alike;
* ``global``: the same with ``mode: global`` (one threshold over group-normalised L1 scores);
* ``sensitivity``: PaddleSlim's per-group sensitivity, scored on 2,000 training images;
* ``sa`` / ``tpe`` / ``nsga2`` / ``random``: ``ts.search`` (``--trials`` candidates, each
  scored by top-1 on ``--eval-images`` training images after BatchNorm re-estimation on
  ``--bn-images`` others);
* ``sa-tuned`` (any strategy ``-tuned``): the same, each candidate first fine-tuned for 20 SGD
  steps on the BatchNorm images and scored by its likelihood (``score: likelihood``);
  ``sa-sens``: started from the search's own sensitivity analysis (``start: sensitivity``,
  about 8 more candidates scored per variable); ``sa-sens-tuned``: both; ``-final``: the 4
  best candidates and the start each fine-tuned 200 SGD steps (``finalists: 4``), the best
  of them after it chosen; ``-wide``: ratios up to 0.9 (``max_ratio``; default 0.8).

Prints a Markdown table and appends its figures to ``--results`` for benchmarks/render.py.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import torchslim as ts
from torchslim.data import dataset_info, get_dataset, in_memory, stratified_subset
from torchslim.pipeline import load_run
from torchslim.train import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _finetune import finetune_and_test
from _results import Results, add_results_option

# Figures here cut single channels (round_to 1): pruning's default round_to is the CPU's
# vector width, so the run pins it (a round_to in a config, or the variable set, wins).
os.environ.setdefault("TORCHSLIM_VECTOR_FLOATS", "1")

SEARCHED = ("sa", "tpe", "nsga2", "random")
VARIANTS = {  # "<strategy>-<variant>[-<variant>]" rows: what each variant adds to the config
    "tuned": {"tune_steps": 20, "score": "likelihood"},
    "sens": {"start": "sensitivity"},
    "final": {"finalists": 4},
    "wide": {"max_ratio": 0.9},
}


TABLES = {"fashion-mnist": "search_fmnist", "cifar10": "search_cifar10"}


def pruned_model(method: str, base: nn.Module, x: torch.Tensor, macs: float, seed: int,
                 args: argparse.Namespace, plain: Any) -> tuple[nn.Module, float]:  # fmt: skip
    """(the baseline pruned to ``macs`` by ``method``, seconds spent choosing and pruning)."""
    model = copy.deepcopy(base)
    start = time.perf_counter()
    if method in ("uniform", "global"):
        ts.prune(model, x, {"target_macs": macs, "mode": method})
    elif method == "sensitivity":
        from torchslim.prune.sensitivity import ratios_for_target, sensitivity

        small = in_memory(stratified_subset(plain, per_class=200, seed=seed))
        result = sensitivity(model, x, lambda m: evaluate(m, small, batch_size=512).accuracy,
                             progress=False)  # fmt: skip
        ts.prune(model, x, {"ratio": 0.0, "ratios": ratios_for_target(result, macs)})
    elif method.split("-")[0] in SEARCHED:
        strategy, *variants = method.split("-")
        cfg = {"strategy": strategy, "macs": macs, "trials": args.trials, "seed": seed,
               "eval_images": args.eval_images, "bn_images": args.bn_images}  # fmt: skip
        for variant in variants:
            if variant not in VARIANTS:
                raise SystemExit(f"unknown variant {variant!r} of {method!r}: one of {VARIANTS}")
            cfg.update(VARIANTS[variant])
        found = ts.search(model, x, cfg, data=plain, progress=False)
        first, best = found.study.trials[0], found.study.best_trial
        print(
            f"  search: best trial {best.number} ({best.value:.2f}) of "
            f"{len(found.study.trials)}; the first scored {first.value:.2f}",
            flush=True,
        )
        finals = found.study.user_attrs.get("final_scores", {})
        if finals:
            tuned = ", ".join(f"{n}: {found.study.trials[int(n)].value:.2f} -> {v:.2f}"
                              for n, v in finals.items())  # fmt: skip
            print(f"  finalists (score -> after the fine-tune): {tuned}; chose "
                  f"{found.final_score:.2f}", flush=True)  # fmt: skip
        model = found.model
    else:
        raise SystemExit(f"unknown method {method!r}")
    return model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="bench-out/fmnist-resnet20")
    parser.add_argument("--data", default="fashion-mnist", choices=sorted(TABLES))
    parser.add_argument("--macs", default="0.5,0.25", help="MACs budgets (fractions)")
    parser.add_argument("--methods", default="uniform,global,sensitivity,sa,tpe")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tune epochs, every row")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--bn-images", type=int, default=512)
    parser.add_argument(
        "--train-subset",
        type=int,
        default=0,
        help="fine-tune on this many training images (0: all; for a smoke run)",
    )
    add_results_option(parser, "<table>")
    args = parser.parse_args()
    table_name = TABLES[args.data]
    args.results = args.results.replace("<table>", table_name)
    budgets = [float(m) for m in args.macs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = {
        "fine-tune epochs": args.epochs,
        "lr": args.lr,
        "seeds": seeds,
        "trials": args.trials,
        "eval images": args.eval_images,
        "BN images": args.bn_images,
        "train subset": args.train_subset or "all",
    }
    base, _ = load_run(Path(args.run))
    base.eval()
    info = dataset_info(args.data)
    model_name = type(base).__name__
    res = Results(args.results, table=table_name, area="search",
                  claim=f"{args.data} {model_name} pruned to a MACs budget: searched per-layer "
                  "ratios vs hand-set rules, same fine-tune", row_header=["method"],
                  model=model_name, settings=settings)  # fmt: skip
    # Fashion-MNIST rows flip only (as they always have); CIFAR-10 also random-crops.
    augment = ["hflip"] if args.data == "fashion-mnist" else ["random_crop", "hflip"]
    train = get_dataset(args.data, train=True, augment=augment)
    if args.train_subset:
        train = stratified_subset(train, per_class=args.train_subset // 10, seed=0)
    plain = get_dataset(args.data, train=True, augment=[])
    test = get_dataset(args.data, train=False)
    base_acc = evaluate(base, test, batch_size=512).accuracy
    x = torch.randn(1, info.in_channels, info.image_size, info.image_size)
    base_macs = ts.analyze(base, x).macs
    print(f"baseline test top-1 {100 * base_acc:.2f}%")
    table: dict[tuple[str, float], list[float]] = {}
    for macs in budgets:
        for method in args.methods.split(","):
            for seed in seeds:
                torch.manual_seed(seed)
                model, choose_s = pruned_model(method, base, x, macs, seed, args, plain)
                ratio = ts.analyze(model, x).macs / base_macs
                acc, tune_s = finetune_and_test(model, train, test, args.epochs, args.lr, seed)
                table.setdefault((method, macs), []).append(acc)
                print(f"{method:12s} MACs {macs:.2f} (got {ratio:.3f}) seed {seed}: "
                      f"{acc:.2f}% (choose {choose_s:.0f} s, fine-tune {tune_s:.0f} s)",
                      flush=True)  # fmt: skip
                res.add([method], f"MACs ratio at {macs:g}", round(ratio, 4), "ratio", 3,
                        run=f"seed {seed}")  # fmt: skip
                res.add([method], f"choose + prune seconds at {macs:g}", round(choose_s, 1),
                        "s", 0, run=f"seed {seed}")  # fmt: skip
            accs = table[(method, macs)]
            spread = max(accs) - min(accs) if len(accs) > 1 else 0.0
            res.add(
                [method],
                f"test top-1 at {macs:g} MACs, mean of {len(accs)} seeds",
                round(statistics.mean(accs), 3),
                "%",
                2,
                note=f"spread {spread:.2f}",
            )
    print("\n| method | " + " | ".join(f"top-1 at {m:g} MACs" for m in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for method in args.methods.split(","):
        cells = [f"{statistics.mean(table[(method, m)]):.2f}%" for m in budgets]
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
