"""Run a model's forward on data from the user and say clearly when the data does not fit.

A calibration batch or a teacher input of the wrong shape otherwise ends in a PyTorch error
many frames deep (``expected input[8, 4, 16, 16] to have 3 channels``) that says neither which
batch it was nor which layer refused it. :func:`run_forward` turns it into an
:class:`~torchslim.errors.InputError` naming both, with PyTorch's message in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from torchslim._tensors import call_model
from torchslim.errors import InputError, TorchslimError

# What PyTorch raises for inputs of the wrong shape, dtype or number (and models for theirs).
_INPUT_ERRORS = (RuntimeError, ValueError, TypeError, IndexError)


def describe_inputs(inputs: Sequence[Any]) -> str:
    """Shape and dtype of each tensor in ``inputs`` (nested containers are flattened).

    Example:
        >>> describe_inputs((torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)))
        'shape (2, 3), torch.float32; shape (2,), torch.int64'
    """
    leaves = tree_flatten(list(inputs))[0]
    return "; ".join(
        f"shape {tuple(x.shape)}, {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        for x in leaves
    )


def failing_module(model: nn.Module, exc: BaseException) -> str | None:
    """Qualified name of the innermost module of ``model`` running when ``exc`` was raised
    (``""``: the model's own forward), from the frames of its traceback; None if none ran.

    Example:
        >>> net = nn.Sequential(nn.ReLU(), nn.Linear(4, 3))
        >>> try:
        ...     net(torch.zeros(1, 5))
        ... except RuntimeError as e:
        ...     failing_module(net, e)
        '1'
    """
    names = {id(m): n for n, m in model.named_modules()}
    where = None
    tb = exc.__traceback__
    while tb is not None:  # outermost frame first: the last module found is the innermost
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            where = names[id(owner)]
        tb = tb.tb_next
    return where


def one_line(exc: BaseException, limit: int = 400) -> str:
    """``exc``'s message on one line, cut at ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_forward(
    model: nn.Module,
    inputs: Sequence[Any],
    what: str,
    *,
    who: str = "the model",
    hint: str = "Pass inputs of the shape, dtype and number the model's forward expects",
) -> Any:
    """``model(*inputs)``; an error of the forward becomes an :class:`InputError` naming
    ``what`` was passed (shapes, dtypes), the module that rejected it and the cause.

    torchslim's own errors and running out of memory pass through unchanged.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> try:
        ...     run_forward(net, (torch.zeros(1, 4, 8, 8),), "calib_data batch 2")
        ... except InputError as e:
        ...     msg = str(e)
        >>> msg.partition(": module")[0]
        'the model does not run on calib_data batch 2 (shape (1, 4, 8, 8), torch.float32)'
        >>> msg.partition(": ")[2].partition(" (")[0], "have 3 channels, but got 4" in msg
        ("module '0'", True)
    """
    try:
        return call_model(model, inputs)
    except (TorchslimError, torch.cuda.OutOfMemoryError):
        raise
    except _INPUT_ERRORS as exc:
        raise input_error(model, inputs, what, exc, who=who, hint=hint) from exc


def input_error(
    model: nn.Module,
    inputs: Sequence[Any],
    what: str,
    exc: BaseException,
    *,
    who: str = "the model",
    hint: str = "Pass inputs of the shape, dtype and number the model's forward expects",
) -> InputError:
    """The :class:`InputError` for ``model``'s forward on ``inputs`` having raised ``exc``:
    ``what`` was passed (shapes, dtypes), the innermost module running, and the cause.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> try:
        ...     net(torch.zeros(2, 5))
        ... except RuntimeError as e:
        ...     str(input_error(net, (torch.zeros(2, 5),), "the example input", e))[:85]
        "the model does not run on the example input (shape (2, 5), torch.float32): module '0'"
    """
    where = failing_module(model, exc)
    if where is None:
        place = "its forward"
    elif where:
        place = f"module {where!r} ({type(model.get_submodule(where)).__name__})"
    else:
        place = f"the model's own forward ({type(model).__name__})"
    return InputError(
        f"{who} does not run on {what} ({describe_inputs(inputs)}): {place} rejected it "
        f"({type(exc).__name__}: {one_line(exc)}). {hint}"
    )


__all__ = ["describe_inputs", "failing_module", "input_error", "one_line", "run_forward"]
