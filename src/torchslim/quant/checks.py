"""Refuse what would quantize to NaN: non-finite weights, calibration data or activations.

One NaN in a calibration batch, a weight or an activation that overflows makes an observed
range NaN or infinite, and with it every scale downstream: the quantized model computes NaN
and its report shows ``nan`` SQNR. These checks stop before that and say where it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from torchslim._tensors import call_model, first_nonfinite
from torchslim.errors import NonFiniteError
from torchslim.inputs import describe_inputs
from torchslim.quant.fake_quant import (
    PACT,
    QUANTIZER_TYPES,
    FakeQuantize,
    LSQQuantize,
    set_quantizers,
)
from torchslim.quant.observers import Observer


def _what(t: torch.Tensor) -> str:
    """How many NaN and infinite values ``t`` holds, e.g. ``"3 NaN values (of 288)"``."""
    nan, inf = int(t.isnan().sum()), int(t.isinf().sum())
    counts = " and ".join(p for p in (f"{nan} NaN" * bool(nan), f"{inf} infinite" * bool(inf)) if p)
    return f"{counts} value{'s' if nan + inf > 1 else ''} (of {t.numel()})"


def _finite(t: torch.Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def batch_name(index: int) -> str:
    """How errors name calibration batch ``index`` (counted from 0).

    Example:
        >>> batch_name(0), batch_name(22)
        ('calib_data batch 0 (the 1st)', 'calib_data batch 22 (the 23rd)')
    """
    n = index + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"calib_data batch {index} (the {n}{suffix})"


def check_weights(model: nn.Module, caller: str) -> None:
    """Raise :class:`NonFiniteError` naming the first parameter or buffer holding NaN or inf.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     net.weight[0, 0] = float("nan")
        >>> try:
        ...     check_weights(net, "ts.quantize")
        ... except NonFiniteError as e:
        ...     print(str(e).partition(";")[0])
        ts.quantize: parameter 'weight' holds 1 NaN value (of 4)
    """
    params = dict(model.named_parameters())
    tensors = {**params, **dict(model.named_buffers())}
    name = first_nonfinite(tensors)
    if name is not None:
        kind = "parameter" if name in params else "buffer"
        raise NonFiniteError(
            f"{caller}: {kind} {name!r} holds {_what(tensors[name])}; its quantization scales "
            "and every output would be NaN. The model is broken before quantization: check the "
            "checkpoint or the training run that produced it"
        )


def check_batch(inputs: Sequence[Any], index: int) -> None:
    """Raise :class:`NonFiniteError` if calibration batch ``index`` holds NaN or inf."""
    leaves = [x for x in tree_flatten(list(inputs))[0] if isinstance(x, torch.Tensor)]
    for k, x in enumerate(leaves):
        if not _finite(x):
            which = f"input {k} of " if len(leaves) > 1 else ""
            raise NonFiniteError(
                f"{batch_name(index)}, {describe_inputs(inputs)}: {which}the batch holds "
                f"{_what(x)}; the observers would record NaN ranges and the "
                "quantized model would compute NaN. Drop or repair those samples"
            )


def _calibrated(m: nn.Module) -> list[torch.Tensor]:
    """The tensors a quantizer's grid is made from (empty: not calibrated yet / not one)."""
    if isinstance(m, FakeQuantize):
        return [m.observer.min_val, m.observer.max_val]
    if isinstance(m, PACT):
        return [m.alpha]
    if isinstance(m, LSQQuantize) and bool(m.initialized):
        return [m.scale]
    return []


def ranges_finite(model: nn.Module) -> bool:
    """Whether every calibrated quantizer of ``model`` holds a finite range (one sync)."""
    values = [t.detach().float().flatten() for m in model.modules() for t in _calibrated(m)]
    return not values or bool(torch.isfinite(torch.cat(values)).all())


def nonfinite_quantizers(model: nn.Module) -> list[str]:
    """Qualified names of the quantizers whose range, step or clipping level is NaN or inf."""
    return [n for n, m in model.named_modules() if not all(_finite(t) for t in _calibrated(m))]


@torch.no_grad()
def first_nonfinite_layer(model: nn.Module, inputs: Sequence[Any]) -> tuple[str, bool, str] | None:
    """Run ``inputs`` through ``model`` in float (quantizers off) and find where values stop
    being finite: the first module to finish with a non-finite output, whether its inputs were
    finite, and ``"NaN"`` or ``"infinite"`` (what it made, or else what it was given); None if
    every output is finite.
    """
    found: list[tuple[str, bool, str]] = []

    def hook(name: str) -> Any:
        def record(_module: nn.Module, args: Any, out: Any) -> None:
            if found:
                return
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            bad = [t for t in outs if not _finite(t)]
            if bad:
                ins = [t for t in tree_flatten(list(args))[0] if isinstance(t, torch.Tensor)]
                bad_in = [t for t in ins if not _finite(t)]
                kind = "NaN" if any(bool(t.isnan().any()) for t in bad_in or bad) else "infinite"
                found.append((name, not bad_in, kind))

        return record

    skip = (*QUANTIZER_TYPES, Observer)
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if not isinstance(m, skip)]  # fmt: skip
    training = model.training
    set_quantizers(model, enabled=False, observing=False)
    model.eval()
    try:
        call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return found[0] if found else None


def nonfinite_error(model: nn.Module, batches: Iterable[tuple[int, Sequence[Any]]],
                    quantizers: list[str]) -> NonFiniteError:  # fmt: skip
    """The error for ``quantizers`` having recorded non-finite ranges: which calibration batch
    made them and which layer first produced NaN/inf (the batches are re-run in float).

    The model's quantizers are left switched off.
    """
    feeds: dict[str, list[str]] = {}
    state = getattr(model, "quant_state", None)
    for layer, quantizer in getattr(state, "layer_input", {}).items():
        feeds.setdefault(quantizer, []).append(layer)
    names = ", ".join(repr(q) for q in quantizers[:3]) + (" ..." if len(quantizers) > 3 else "")
    layers = [layer for q in quantizers for layer in feeds.get(q, [])]
    inputs_of = f" (the input of layer {', '.join(repr(n) for n in layers[:3])})" if layers else ""
    saw = f"the quantizer{'s' if len(quantizers) > 1 else ''} {names}{inputs_of}"
    for index, inputs in batches:
        source = first_nonfinite_layer(model, inputs)
        if source is None:
            continue
        name, inputs_finite, kind = source
        kind_of = type(model.get_submodule(name)).__name__
        if name and inputs_finite:
            origin = f"layer {name!r} ({kind_of}) turned finite inputs into {kind} values"
            check = "that layer's weights"
        elif name:
            origin = (f"{kind} values made by an operation outside any submodule first reach "
                      f"layer {name!r} ({kind_of})")  # fmt: skip
            check = "the operations before that layer"
        else:
            origin = f"the model's own forward ({kind_of}) made {kind} values"
            check = "the operations of the forward"
        return NonFiniteError(
            f"{batch_name(index)}: {origin}; {saw} observed them, and the quantized model "
            f"would compute NaN. Quantization needs finite activations: check {check} and the "
            "scale of the data"
        )
    return NonFiniteError(
        f"calibration: {saw} recorded a NaN or infinite range. Quantization needs finite "
        "activations: check the model's weights and the scale of the data"
    )


__all__ = [
    "batch_name",
    "check_batch",
    "check_weights",
    "first_nonfinite_layer",
    "nonfinite_error",
    "nonfinite_quantizers",
    "ranges_finite",
]
