"""Cheap scores for search candidates: BatchNorm statistics re-estimated on a few training
images, then top-1 accuracy on a held-out split of the training set (never the test set)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from torchslim._tensors import call_model, first_tensor, model_args
from torchslim.errors import ConfigError
from torchslim.quant.report import sqnr_db
from torchslim.train.evaluate import evaluate, split_batch


def holdout_split(data: Dataset, eval_images: int, bn_images: int,
                  seed: int) -> tuple[Dataset, Dataset]:  # fmt: skip
    """(held-out images to score on, other images to re-estimate BatchNorm on), both drawn
    from ``data`` (a training set) by a seeded permutation, disjoint.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> held, bn = holdout_split(TensorDataset(torch.arange(10)), 3, 4, seed=0)
        >>> len(held), len(bn), set(held.indices) & set(bn.indices)
        (3, 4, set())
    """
    held, rest = _split(data, eval_images, seed)
    return Subset(data, held), Subset(data, rest[:bn_images])


def tuning_split(data: Dataset, eval_images: int, seed: int) -> Dataset:
    """Every image of ``data`` outside :func:`holdout_split`'s held-out images (same
    ``eval_images`` and ``seed``): what a search's finalists are fine-tuned on.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.arange(10))
        >>> held, _ = holdout_split(data, 3, 4, seed=0)
        >>> rest = tuning_split(data, 3, seed=0)
        >>> len(rest), set(held.indices) & set(rest.indices)
        (7, set())
    """
    return Subset(data, _split(data, eval_images, seed)[1])


def _split(data: Dataset, eval_images: int, seed: int) -> tuple[list[int], list[int]]:
    """(held-out indices, the others), by a seeded permutation."""
    n = len(data)  # type: ignore[arg-type]
    if n < 2:
        raise ConfigError(f"data: the search needs training images to score on, got {n}")
    eval_images = min(eval_images, n // 2)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[:eval_images], order[eval_images:]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any]) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics as the plain average over
    ``batches`` (momentum ``None``), the rest of the model in eval mode; returns the model
    in eval mode. Pruning changes what each BatchNorm sees; this makes a candidate's score
    reflect its channels, not stale statistics.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).eval()
        >>> _ = recalibrate_batchnorm(net, [torch.randn(8, 1, 4, 4) + 3])
        >>> bool(net[1].running_mean.abs().sum() > 0), net.training
        (True, False)
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in norms]
    model.eval()
    for m in norms:
        if m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None
            m.train()
    try:
        for batch in batches:
            inputs = batch if isinstance(batch, torch.Tensor) else split_batch(batch)[0]
            call_model(model, model_args(inputs))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
            m.eval()
    return model


def held_out_score(model: nn.Module, held_out: Dataset, batch_size: int,
                   kind: str = "accuracy") -> float:  # fmt: skip
    """``model``'s score on ``held_out`` in percent: top-1 accuracy (``kind="accuracy"``), or
    the likelihood ``100 * exp(-mean loss)`` (``"likelihood"``; with cross-entropy, the
    geometric mean of the probability of the true label).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
        >>> net = nn.Linear(4, 2)
        >>> _ = nn.init.zeros_(net.weight), nn.init.zeros_(net.bias)  # p(true label) = 0.5
        >>> held_out_score(net, data, 4), round(held_out_score(net, data, 4, "likelihood"), 3)
        (100.0, 50.0)
    """
    result = evaluate(model, held_out, batch_size=batch_size)
    if kind != "likelihood":
        return 100.0 * result.metric
    loss = getattr(result, "loss", None)
    if loss is None or not math.isfinite(loss):
        raise ConfigError(
            f"score: likelihood needs a finite held-out loss (classification or "
            f"segmentation); this model's evaluation gives {loss}: use score: accuracy"
        )
    return 100.0 * math.exp(-loss)


def score(model: nn.Module, held_out: Dataset, bn_data: Dataset, batch_size: int,
          tune_steps: int = 0, tune_lr: float = 0.01, kind: str = "accuracy",
          tune_data: Dataset | None = None, lr_key: str = "tune_lr") -> float:  # fmt: skip
    """:func:`held_out_score` (top-1 or likelihood, %) on ``held_out`` after ``tune_steps`` SGD
    steps on ``tune_data`` (default ``bn_data``; if any steps) and re-estimating BatchNorm on
    ``bn_data``; ``lr_key`` names the setting a diverging fine-tune should lower."""
    if tune_steps:
        few_step_tune(model, bn_data if tune_data is None else tune_data, batch_size, tune_steps,
                      tune_lr, lr_key)  # fmt: skip
    recalibrate_batchnorm(model, DataLoader(bn_data, batch_size=batch_size))
    return held_out_score(model, held_out, batch_size, kind)


def few_step_tune(model: nn.Module, data: Dataset, batch_size: int, steps: int,
                  lr: float, lr_key: str = "tune_lr") -> nn.Module:  # fmt: skip
    """``steps`` SGD steps (momentum 0.9, cross-entropy) on batches of ``data`` (cycled,
    shuffled with a fixed seed); returns the model in eval mode. A cheap fine-tune that lets
    a pruned candidate's remaining channels adapt before it is scored.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> data = TensorDataset(torch.randn(16, 1, 2, 2), torch.randint(0, 2, (16,)))
        >>> few_step_tune(net, data, 8, steps=3, lr=0.1).training
        False
    """
    loader = DataLoader(data, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                          momentum=0.9)  # fmt: skip
    model.train()
    done = 0
    while done < steps:
        for batch in loader:
            inputs, targets = split_batch(batch)
            logits = first_tensor(call_model(model, model_args(inputs)))
            loss = torch.nn.functional.cross_entropy(logits, targets)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"search: a candidate's fine-tune loss is {loss.item()} at step {done}; "
                    f"lower {lr_key} (it is {lr:g})"
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return model.eval()


@torch.no_grad()
def output_sqnr(reference: nn.Module, model: nn.Module, data: Dataset, batch_size: int) -> float:
    """SQNR in dB of ``model``'s outputs against ``reference``'s on the inputs of ``data``:
    ``10 log10(sum ref^2 / sum (ref - out)^2)`` (labels unused).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> net = nn.Linear(4, 2).eval()
        >>> data = TensorDataset(torch.randn(8, 4), torch.zeros(8))
        >>> output_sqnr(net, net, data, 4) > 100
        True
    """
    refs, outs = [], []
    for batch in DataLoader(data, batch_size=batch_size):
        inputs = batch if isinstance(batch, torch.Tensor) else split_batch(batch)[0]
        refs.append(first_tensor(call_model(reference, model_args(inputs))))
        outs.append(first_tensor(call_model(model, model_args(inputs))))
    return sqnr_db(torch.cat(refs), torch.cat(outs))
