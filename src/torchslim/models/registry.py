"""Model registry: torchslim's reference zoo first, then any torchvision classifier by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from torchslim.config import did_you_mean
from torchslim.errors import ConfigError, ModelNotFoundError
from torchslim.models import mobilenet, resnet_cifar, small

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

    return torchvision.models.list_models(module=torchvision.models)


def list_models(include_torchvision: bool = False) -> list[str]:
    """Names ``create`` accepts: the zoo, and optionally torchvision's classifiers.

    Example:
        >>> "resnet20" in list_models()
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
    model: nn.Module, name: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]
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
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if not isinstance(arch, str) or first is None:
        return None
    return {"name": TIMM_PREFIX + arch, "num_classes": int(getattr(model, "num_classes", 1000)),
            "in_channels": first.in_channels, "kwargs": {}}  # fmt: skip


def create(name: str, *, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build a model by name with ``num_classes`` outputs and ``in_channels`` input channels.

    torchslim's zoo is looked up first; any other torchvision classification model name is
    built by torchvision with ``weights=None`` (its first convolution adapted when
    ``in_channels != 3``); ``timm:ARCH`` is built by timm (``pip install timm``) with
    ``pretrained=False``.

    Example:
        >>> model = create("resnet20", num_classes=10, in_channels=1)
        >>> sum(p.numel() for p in model.parameters()) // 1000
        272
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
        model = fn(num_classes=num_classes, in_channels=in_channels, **kwargs)
        return _record_spec(model, name, num_classes, in_channels, kwargs)
    if name.startswith(TIMM_PREFIX):
        return _record_spec(_create_timm(name, num_classes, in_channels, kwargs), name,
                            num_classes, in_channels, kwargs)  # fmt: skip
    tv_names = _torchvision_names()
    if name not in tv_names:
        hint = did_you_mean(name, list(_REGISTRY) + tv_names)
        raise ModelNotFoundError(
            f"unknown model {name!r}{hint}; "
            "see torchslim.models.list_models(include_torchvision=True)"
        )
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"torchvision model {name!r} rejected its options: {exc}") from exc
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return _record_spec(model, name, num_classes, in_channels, kwargs)
