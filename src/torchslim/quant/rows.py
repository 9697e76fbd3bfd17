"""Calibration rows: a sample of what each layer reads, for per-layer fits (product
quantization's codebooks, SmoothQuant's strength)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchslim._tensors import call_model


def layer_input_rows(model: nn.Module, names: list[str], batches: list[tuple],
                  rows: int, gen: torch.Generator) -> dict[str, torch.Tensor]:  # fmt: skip
    """A random sample of ``rows`` rows of each layer's input over ``batches`` (argument
    tuples), as rows of its weight matrix's columns (im2col for convolutions).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.Conv2d(1, 2, 3))
        >>> got = layer_input_rows(nn.Sequential(net[0]), ["0"], [(torch.randn(5, 4),)], 8,
        ...                        torch.Generator().manual_seed(0))
        >>> tuple(got["0"].shape)
        (5, 4)
    """
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def hook(name: str) -> Any:
        def fn(mod: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0].detach()
            if isinstance(mod, nn.Conv2d):
                cols = F.unfold(x, mod.kernel_size, mod.dilation, mod.padding, mod.stride)
                x = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            else:
                x = x.reshape(-1, x.shape[-1])
            got[name].append(x[torch.randperm(x.shape[0], generator=gen)[:rows]])

        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for inputs in batches:
                call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v)[:rows] for n, v in got.items()}
