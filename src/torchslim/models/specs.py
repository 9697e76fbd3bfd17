"""How to rebuild a model: ``ts.models.create``'s arguments for a model built some other way.

``ts.save`` stores these arguments (the *spec*) so that ``ts.load`` rebuilds the model before
reshaping it to its pruned sizes. A model built by ``ts.models.create`` carries its spec; a
model built directly by timm or torchvision is recognised here, by its architecture name
(timm) or by matching its parameter names and shapes against torchvision's builders.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.nn import init

from torchslim.models.registry import TIMM_PREFIX, module_task, torchvision_task

# Attribute under which a model carries its spec (set by ts.models.create, and by ts.prune for
# a torchvision model it recognised before changing its shapes).
SPEC_ATTR = "_torchslim_spec"


def timm_spec(model: nn.Module) -> dict[str, Any] | None:
    """How to rebuild a model that timm built (``timm.create_model``), as ``create``'s
    arguments (``timm:ARCH``), or None for a model timm did not build.

    Example:
        >>> import timm
        >>> timm_spec(timm.create_model("test_resnet", pretrained=False, num_classes=5))
        {'name': 'timm:test_resnet', 'num_classes': 5, 'in_channels': 3, 'kwargs': {}}
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if not type(model).__module__.startswith("timm.") or not isinstance(cfg, dict):
        return None
    arch = cfg.get("architecture")
    if not isinstance(arch, str):
        return None
    # The first convolution's input channels; a model without one (a linear patch embedding)
    # was built for its configuration's input.
    in_channels = _first_conv_in(model) or int(cfg.get("input_size", (3,))[0])
    return {"name": TIMM_PREFIX + arch, "num_classes": int(getattr(model, "num_classes", 1000)),
            "in_channels": in_channels, "kwargs": {}}  # fmt: skip


def _first_conv_in(model: nn.Module) -> int | None:
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return None if first is None else first.in_channels


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@contextmanager
def _weights_left_uninitialised() -> Iterator[None]:
    """``torch.nn.init``'s in-place initialisers as no-ops: a model built only for its shapes
    skips the random draws (torchvision's regnet_y_128gf: 17 s to build, 0.05 s without).
    Patches the module for the duration: not for concurrent use with real initialisation."""
    names = [n for n in vars(init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(init, n) for n in names if callable(getattr(init, n))}
    try:
        for n in saved:
            setattr(init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(init, n, fn)


@cache
def _build_shapes(
    name: str, num_classes: int | None, flags: tuple[tuple[str, bool], ...] = ()
) -> dict[str, tuple[int, ...]] | None:
    from torchslim.models.registry import create

    options: dict[str, Any] = dict(flags)
    if num_classes is not None:
        options["num_classes"] = num_classes
    with torch.random.fork_rng(devices=[]):
        try:
            try:
                with torch.device("meta"):
                    return _shapes(create(name, **options))
            except (RuntimeError, NotImplementedError):  # a builder that reads tensor values
                with torch.no_grad(), _weights_left_uninitialised():
                    return _shapes(create(name, **options))
        except Exception:  # a builder that refuses this class count: not this builder
            return None


@cache
def _builders_of(cls: type) -> tuple[str, ...]:
    """torchvision model names whose builder may return ``cls`` (same sub-package)."""
    import torchvision

    task = module_task(cls.__module__)
    names = []
    for name in torchvision.models.list_models():
        if torchvision_task(name) != task:
            continue
        builder_module = torchvision.models.get_model_builder(name).__module__
        if task != "classification" or builder_module == cls.__module__:
            names.append(name)
    return tuple(names)


def torchvision_spec(model: nn.Module) -> dict[str, Any] | None:
    """``create``'s arguments for a model that a torchvision builder made with its default
    options (any class count), found by matching parameter names and shapes, or None.

    The match needs the model's original shapes: ``ts.prune`` records the spec before it
    prunes, so a pruned torchvision model saves and loads without one.

    Example:
        >>> import torchvision
        >>> torchvision_spec(torchvision.models.resnet18(num_classes=7))["name"]
        'resnet18'
        >>> torchvision_spec(nn.Linear(2, 2)) is None
        True
    """
    cls = type(model)
    if not cls.__module__.startswith("torchvision.models."):
        return None
    shapes = _shapes(model)
    for name in _builders_of(cls):
        for flags in _FLAGS:
            default = _build_shapes(name, None, flags)
            if default is None or default.keys() != shapes.keys():
                continue
            differ = [k for k in shapes if shapes[k] != default[k]]
            counts = [None] if not differ else sorted({shapes[k][0] for k in differ if shapes[k]})
            for num_classes in counts[:4]:
                if _build_shapes(name, num_classes, flags) == shapes:
                    task = torchvision_task(name)
                    if num_classes is None and task in ("classification", "quantization"):
                        num_classes = 1000
                    return {"name": name, "num_classes": num_classes,
                            "in_channels": _first_conv_in(model) or 3,
                            "kwargs": dict(flags)}  # fmt: skip
    return None


# Options that add or remove parameters, tried flipped where the defaults do not match
# (GoogLeNet's and Inception's auxiliary classifiers, a segmenter's auxiliary head).
_FLAGS: tuple[tuple[tuple[str, bool], ...], ...] = (
    (),
    (("aux_logits", False),),
    (("aux_logits", True),),
    (("aux_loss", True),),
)


def model_spec(model: nn.Module) -> dict[str, Any] | None:
    """The spec ``ts.save`` stores for ``model``: the one ``create`` recorded, else the one
    recognised for a timm or torchvision model, else None.

    Example:
        >>> from torchslim.models import create
        >>> model_spec(create("resnet8", num_classes=10))["name"]
        'resnet8'
    """
    spec = getattr(model, SPEC_ATTR, None)
    if spec is None:
        spec = timm_spec(model) or torchvision_spec(model)
    return spec


def remember_spec(model: nn.Module) -> None:
    """Record the spec of a model recognised now, before its shapes change (``ts.prune``).

    Example:
        >>> import torchvision
        >>> model = torchvision.models.resnet18()
        >>> remember_spec(model)
        >>> model._torchslim_spec["name"]
        'resnet18'
    """
    if getattr(model, SPEC_ATTR, None) is None:
        spec = torchvision_spec(model)
        if spec is not None:
            setattr(model, SPEC_ATTR, spec)
