"""Small helpers on the tensors and modules that every layer of torchslim passes around.

Nothing here imports another torchslim module: it sits at the bottom of the layering
(``tests/test_layering.py``).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree

# What a model's forward takes: a tensor, a sequence of positional tensors, or a mapping of
# keyword tensors (``{"input_ids": ..., "attention_mask": ...}``).
Inputs = torch.Tensor | Sequence[Any] | Mapping[str, Any]


class Kwargs(dict):
    """Keyword arguments of a model's forward, carried as the last element of an inputs tuple
    (see :func:`input_tuple`); a plain ``dict`` there stays one positional argument."""


_pytree.register_pytree_node(
    Kwargs,
    lambda d: (list(d.values()), list(d)),
    lambda values, keys: Kwargs(zip(keys, values, strict=True)),
    serialized_type_name="torchslim.Kwargs",
)


def input_tuple(inputs: Inputs) -> tuple[Any, ...]:
    """Example inputs as a tuple of the forward's arguments: a lone tensor is wrapped, a
    mapping becomes keyword arguments (a :class:`Kwargs` as the tuple's last element).
    :func:`call_model` calls a model with it.

    Example:
        >>> len(input_tuple(torch.zeros(2))), len(input_tuple([torch.zeros(2), torch.ones(1)]))
        (1, 2)
        >>> input_tuple({"input_ids": torch.zeros(1, 4)})[-1].keys()
        dict_keys(['input_ids'])
    """
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, Mapping):
        return (Kwargs(inputs),)
    return tuple(inputs)


def split_inputs(inputs: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(positional arguments, keyword arguments) of an :func:`input_tuple`.

    Example:
        >>> split_inputs(input_tuple({"a": 1}))
        ((), {'a': 1})
    """
    if inputs and isinstance(inputs[-1], Kwargs):
        return tuple(inputs[:-1]), dict(inputs[-1])
    return tuple(inputs), {}


def model_args(inputs: Any) -> tuple[Any, ...]:
    """A batch's inputs as the forward's arguments (an :func:`input_tuple`): a mapping (a
    tokenizer's output) is passed as keywords, anything else (a tensor, a detector's list of
    images) as the one positional argument.

    Example:
        >>> call_model(lambda input_ids, attention_mask: input_ids + attention_mask,
        ...            model_args({"input_ids": 1, "attention_mask": 2}))
        3
        >>> len(model_args([torch.zeros(3, 4, 4), torch.zeros(3, 5, 5)]))
        1
    """
    return input_tuple(inputs) if isinstance(inputs, Mapping) else (inputs,)


def token_mask(inputs: Any) -> torch.Tensor | None:
    """The ``attention_mask`` of a keyword batch as booleans ``(N, L)`` (True: a real token),
    or None (no such key: a tensor batch, or keyword inputs without a mask).

    Example:
        >>> token_mask({"input_ids": torch.zeros(1, 3), "attention_mask": torch.tensor([[1, 0]])})
        tensor([[ True, False]])
        >>> token_mask(torch.zeros(2, 3)) is None
        True
    """
    if isinstance(inputs, Mapping):
        mask = inputs.get("attention_mask")
        return mask.bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
    if isinstance(inputs, tuple) and inputs and isinstance(inputs[-1], Kwargs):
        return token_mask(inputs[-1])
    return None


def call_model(model: Callable[..., Any], inputs: Sequence[Any]) -> Any:
    """``model`` called with an :func:`input_tuple`: ``model(*args, **kwargs)``.

    Example:
        >>> call_model(lambda x, scale=1: x * scale, input_tuple({"x": 2, "scale": 3}))
        6
    """
    args, kwargs = split_inputs(inputs)
    return model(*args, **kwargs)


def input_names(model: nn.Module, inputs: Sequence[Any]) -> list[str]:
    """Names of the tensors of an :func:`input_tuple`, in the order an ONNX export lists them:
    positional ones ``input`` (or ``input0``, ``input1``...), keyword tensors by their keys in
    the order of the forward's signature (the exporter's order); other keywords (flags) are
    constants of the file, not inputs.

    Example:
        >>> class Net(nn.Module):
        ...     def forward(self, input_ids, attention_mask=None):
        ...         return input_ids
        >>> ids, mask = torch.zeros(1, 4), torch.ones(1, 4)
        >>> input_names(Net(), input_tuple({"attention_mask": mask, "input_ids": ids}))
        ['input_ids', 'attention_mask']
    """
    args, kwargs = split_inputs(inputs)
    leaves = _pytree.tree_flatten(list(args))[0]
    names = [f"input{i}" if len(leaves) > 1 else "input" for i in range(len(leaves))]
    keyword = ordered_kwargs(model, kwargs)
    return names + [k for k, v in keyword.items() if isinstance(v, torch.Tensor)]


def ordered_kwargs(model: nn.Module, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` in the order of ``model.forward``'s parameters (unknown keys last)."""
    try:
        order = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return dict(kwargs)
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(kwargs.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is Hugging Face's ``Conv1D`` (GPT-2's Linear, weight ``(in, out)``),
    without importing ``transformers``.

    Example:
        >>> is_hf_conv1d(nn.Linear(2, 2))
        False
    """
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def first_tensor(out: Any) -> torch.Tensor:
    """The first tensor of a model or module output (tensor, tuple/list, or dict).

    Example:
        >>> first_tensor((torch.zeros(2), "aux")).shape
        torch.Size([2])
    """
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise TypeError(f"model output has no tensor: {type(out).__name__}")


def lead_tensor(value: Any) -> torch.Tensor | None:
    """The tensor a module's input or output is reported by: itself, or the first of a list.

    Example:
        >>> lead_tensor([torch.zeros(2), torch.zeros(3)]).shape, lead_tensor("text")
        (torch.Size([2]), None)
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def map_tensors(fn: Callable[[Any], Any], value: Any, kind: type = torch.Tensor) -> Any:
    """``fn`` applied to every tensor in an ATen argument or result (lists, tuples, dicts).

    A cheap stand-in for ``torch.utils._pytree.tree_map`` on what ATen ops take and return;
    ``kind`` maps leaves of another type instead (e.g. the tracer's stand-ins for tensors).

    Example:
        >>> map_tensors(lambda t: t.shape[0], (torch.zeros(2), [torch.zeros(3), 1.5]))
        (2, [3, 1.5])
    """
    if isinstance(value, kind):
        return fn(value)
    if isinstance(value, (list, tuple)):  # leaves inline: this runs for every traced op
        return type(value)(
            [
                fn(v) if isinstance(v, kind) else map_tensors(fn, v, kind) if _nested(v) else v
                for v in value
            ]
        )
    if isinstance(value, dict):
        return type(value)({k: map_tensors(fn, v, kind) for k, v in value.items()})
    return value


def _nested(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict))


def aten_tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in an ATen argument or result, in order.

    Example:
        >>> len(aten_tensors((torch.zeros(2), [torch.zeros(3), 1.5])))
        2
    """
    found: list[torch.Tensor] = []
    map_tensors(found.append, value)
    return found


@contextlib.contextmanager
def module_mode(model: nn.Module, *, training: bool) -> Iterator[nn.Module]:
    """``model.train(training)`` inside; on exit every submodule gets back its own flag.

    ``model.train(was)`` would set one flag on the whole tree, so a model in training with
    some parts kept in eval (a frozen BatchNorm) would come back with them unfrozen. Nothing
    is called when the model is already entirely in the asked mode.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
        >>> _ = net[1].eval()
        >>> with module_mode(net, training=False):
        ...     net[0].training
        False
        >>> [m.training for m in net]
        [True, False]
    """
    # a frozen TorchScript module has no training flag (it is inference-only)
    flags = [(m, m.training) for m in model.modules() if hasattr(m, "training")]
    if any(was != training for _, was in flags):
        model.train(training)
    try:
        yield model
    finally:
        for m, was in flags:
            if m.training != was:
                m.training = was


def first_nonfinite(tensors: Mapping[str, Any] | Iterator[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor holding NaN or infinity, else ``None``.

    Example:
        >>> first_nonfinite({"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")])})
        'b'
    """
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, t in items:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all()):
            return name
    return None


def describe_nonfinite(name: str, tensor: torch.Tensor) -> str:
    """``"bn.running_var (3 of 4 values NaN/inf, largest finite 3.1e+15)"``-style text."""
    t = tensor.detach().float()
    bad = int((~t.isfinite()).sum())
    finite = t[t.isfinite()]
    largest = (
        f", largest finite magnitude {finite.abs().max().item():.3g}" if finite.numel() else ""
    )
    return f"{name} ({bad} of {t.numel()} values NaN/inf{largest})"
