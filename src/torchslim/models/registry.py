"""Model registry: torchslim's reference zoo first, then torchvision (every task), timm
(``timm:ARCH``), Hugging Face (``hf:PATH_OR_NAME``) and a user's own constructor
(``package.module:callable``) by name."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from torchslim.config import did_you_mean
from torchslim.errors import ConfigError, ModelNotFoundError
from torchslim.models import mobilenet, resnet_cifar, small
from torchslim.models.hf import create_hf, is_hf_name

# The zoo, listed explicitly (no registration by import side effect).
_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    **resnet_cifar.MODELS,
    **mobilenet.MODELS,
    **small.MODELS,
}
_BUILTIN = frozenset(_REGISTRY)


def register_model(name: str, fn: Callable[..., nn.Module]) -> None:
    """Add a constructor ``fn(num_classes=, in_channels=, **options)`` to the zoo under ``name``.

    Example:
        >>> def my_net(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        ...     return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
        >>> register_model("my_net", my_net)
        >>> create("my_net", num_classes=2).__class__.__name__
        'Sequential'
        >>> unregister_model("my_net")
    """
    if name in _REGISTRY:
        raise ConfigError(f"model name {name!r} is already registered")
    _REGISTRY[name] = fn


def unregister_model(name: str) -> None:
    """Remove a constructor added with :func:`register_model`; the built-in zoo stays.

    Example:
        >>> register_model("my_net", lambda num_classes=10, in_channels=3: nn.Identity())
        >>> unregister_model("my_net")
        >>> is_registered("my_net")
        False
    """
    if name in _BUILTIN:
        raise ConfigError(f"model {name!r} is part of torchslim's zoo and cannot be unregistered")
    if name not in _REGISTRY:
        raise ModelNotFoundError(f"model {name!r} is not registered; nothing to unregister")
    del _REGISTRY[name]


def is_registered(name: str) -> bool:
    """Whether ``name`` is in torchslim's own zoo (torchvision names are not).

    Example:
        >>> is_registered("resnet20"), is_registered("resnet18")
        (True, False)
    """
    return name in _REGISTRY


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models()


def torchvision_task(name: str) -> str:
    """The torchvision sub-package a model name belongs to: ``classification``,
    ``detection``, ``segmentation``, ``video``, ``optical_flow`` or ``quantization``.

    Example:
        >>> torchvision_task("resnet18"), torchvision_task("ssdlite320_mobilenet_v3_large")
        ('classification', 'detection')
    """
    import torchvision

    return module_task(torchvision.models.get_model_builder(name).__module__)


def module_task(module: str) -> str:
    """The torchvision sub-package of a module path (``torchvision.models.detection.ssd``).

    Example:
        >>> module_task("torchvision.models.detection.ssd"), module_task("torchvision.models.vgg")
        ('detection', 'classification')
    """
    parts = module.split(".")
    return parts[2] if len(parts) > 3 else "classification"


def list_models(include_torchvision: bool = False) -> list[str]:
    """Names ``create`` accepts: the zoo, and optionally torchvision's models of every task.

    Example:
        >>> "resnet20" in list_models()
        True
        >>> "fasterrcnn_mobilenet_v3_large_320_fpn" in list_models(include_torchvision=True)
        True
    """
    names = sorted(_REGISTRY)
    return names + _torchvision_names() if include_torchvision else names


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups if module.groups == 1 else in_channels,
                module.bias is not None,
                module.padding_mode,
            )
            model.set_submodule(name, new)
            return
    raise ConfigError(f"in_channels: found no Conv2d to adapt in {type(model).__name__}")


def _record_spec(
    model: nn.Module, name: str, num_classes: int | None, in_channels: int, kwargs: dict[str, Any]
) -> nn.Module:
    # How the model was built, as plain data: ts.save stores it so ts.load can rebuild the model.
    spec = {"name": name, "num_classes": num_classes, "in_channels": in_channels}
    model._torchslim_spec = {**spec, "kwargs": dict(kwargs)}
    return model


TIMM_PREFIX = "timm:"


def _create_timm(name: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]) -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model {name!r} needs timm: pip install timm") from None
    arch = name[len(TIMM_PREFIX) :]
    if not timm.is_model(arch):
        hint = did_you_mean(arch, timm.list_models())
        raise ModelNotFoundError(f"unknown timm model {arch!r}{hint}; see timm.list_models()")
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                 in_chans=in_channels, **kwargs)  # fmt: skip
    except TypeError as exc:
        raise ConfigError(f"timm model {arch!r} rejected its options: {exc}") from exc


def _create_torchvision(
    name: str, num_classes: int | None, in_channels: int, kwargs: dict[str, Any]
) -> nn.Module:
    import torchvision

    task = torchvision_task(name)
    options: dict[str, Any] = {"weights": None}
    params = inspect.signature(torchvision.models.get_model_builder(name)).parameters
    if "weights_backbone" in params:
        options["weights_backbone"] = None  # never download a backbone
    if task == "quantization":
        options["quantize"] = False  # the float model; torchslim quantizes it
    if num_classes is not None:
        if task == "optical_flow":
            raise ConfigError(f"torchvision model {name!r} predicts optical flow: no num_classes")
        options["num_classes"] = num_classes
    elif task in ("classification", "quantization"):
        options["num_classes"] = 1000
    if in_channels != 3 and task not in ("classification", "quantization"):
        raise ConfigError(
            f"in_channels={in_channels}: torchvision's {task} model {name!r} normalises 3-channel "
            "images; give it RGB inputs (repeat a grey channel) or build it yourself"
        )
    try:
        model = torchvision.models.get_model(name, **options, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"torchvision model {name!r} rejected its options: {exc}") from exc
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _create_hf(name: str, num_classes: int | None, in_channels: int,
               kwargs: dict[str, Any]) -> nn.Module:  # fmt: skip
    if num_classes is not None or in_channels != 3:
        raise ConfigError(f"model {name!r}: a Hugging Face model is built as its folder or Hub "
                          "name says; it takes no num_classes / in_channels")  # fmt: skip
    return create_hf(name, **kwargs)


def _create_callable(
    name: str, num_classes: int | None, in_channels: int, kwargs: dict[str, Any]
) -> nn.Module:
    module_name, _, attr = name.partition(":")
    try:
        fn: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError) as exc:
        raise ModelNotFoundError(
            f"model {name!r}: cannot find {attr!r} in module {module_name!r} ({exc}); "
            "name your own model as package.module:callable, importable from here"
        ) from exc
    try:
        params = dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: pass what was given
        params = {"kwargs": inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    options = dict(kwargs)
    if num_classes is not None:
        if "num_classes" not in params and not takes_any:
            raise ConfigError(
                f"model {name!r} takes no num_classes; its parameters: {list(params)}"
            )
        options["num_classes"] = num_classes
    if "in_channels" in params or (takes_any and in_channels != 3):
        options["in_channels"] = in_channels
    elif in_channels != 3:
        raise ConfigError(f"model {name!r} takes no in_channels; its parameters: {list(params)}")
    try:
        model = fn(**options)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} rejected its options {options}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def create(
    name: str, *, num_classes: int | None = None, in_channels: int = 3, **kwargs: Any
) -> nn.Module:
    """Build a model by name with ``num_classes`` outputs and ``in_channels`` input channels.

    torchslim's zoo is looked up first; any torchvision model name (every task: classifiers,
    detectors, segmenters, video, optical flow) is built by torchvision with ``weights=None``
    and ``weights_backbone=None`` (a classifier's first convolution adapted when
    ``in_channels != 3``); ``timm:ARCH`` is built by timm (``pip install timm``) with
    ``pretrained=False``; ``hf:PATH_OR_NAME`` is ``transformers.AutoModel.from_pretrained`` of
    a folder or Hub name (pretrained weights; :mod:`torchslim.models.hf`);
    ``package.module:callable`` calls your own constructor (with
    ``num_classes`` / ``in_channels`` where it takes them). ``num_classes=None`` means 1000 for
    classifiers and the model's own default otherwise (91 COCO classes for a detector).

    Example:
        >>> model = create("resnet20", num_classes=10, in_channels=1)
        >>> sum(p.numel() for p in model.parameters()) // 1000
        272
        >>> create("torch.nn:Linear", in_features=4, out_features=2).weight.shape
        torch.Size([2, 4])
    """
    if name in _REGISTRY:
        fn = _REGISTRY[name]
        params = inspect.signature(fn).parameters
        for key in kwargs:
            if key not in params:
                options = [p for p in params if p not in ("num_classes", "in_channels")]
                raise ConfigError(
                    f"model {name!r} has no option {key!r}{did_you_mean(key, options)}; "
                    f"its options are {options}"
                )
        num_classes = 1000 if num_classes is None else num_classes
        model = fn(num_classes=num_classes, in_channels=in_channels, **kwargs)
    elif name.startswith(TIMM_PREFIX):
        num_classes = 1000 if num_classes is None else num_classes
        model = _create_timm(name, num_classes, in_channels, kwargs)
    elif is_hf_name(name):
        model = _create_hf(name, num_classes, in_channels, kwargs)
    elif ":" in name:
        model = _create_callable(name, num_classes, in_channels, kwargs)
    else:
        tv_names = _torchvision_names()
        if name not in tv_names:
            hint = did_you_mean(name, list(_REGISTRY) + tv_names)
            raise ModelNotFoundError(
                f"unknown model {name!r}{hint}; see "
                "torchslim.models.list_models(include_torchvision=True), or name a timm model "
                "as timm:ARCH and your own as package.module:callable"
            )
        model = _create_torchvision(name, num_classes, in_channels, kwargs)
    return _record_spec(model, name, num_classes, in_channels, kwargs)
