"""Save and load models whose architecture changed after construction (pruned models).

A pruned model no longer matches what its constructor builds, so a plain ``state_dict`` cannot be
loaded back. :func:`save` writes, as plain data only (no pickled classes), how the model was built
(its *spec*), the shape of every parameter and buffer, the plain-valued module attributes that
differ from a freshly built model (``out_channels``, ``num_heads``...) and the ``state_dict``.
:func:`load` rebuilds the model from the spec, reshapes the tensors, restores the attributes and
loads the weights with ``strict=True``. Files are read with ``torch.load(weights_only=True)``
(no code is unpickled), each tensor's CRC-32 recorded at save is checked, and non-finite weights
are refused both ways.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim._tensors import describe_nonfinite, first_nonfinite
from torchslim.config import did_you_mean
from torchslim.errors import CheckpointError, ConfigError, ModelNotFoundError
from torchslim.prune.sparsity import apply_masks, make_permanent, masks_of
from torchslim.quant.fake_quant import quantized_modules
from torchslim.train import checkpoint as ckpt_io

FORMAT = "torchslim.model/1"
_FORMAT_PREFIX = "torchslim.model/"
_SPEC_KEYS = ("name", "num_classes", "in_channels", "kwargs")
_PAYLOAD_KEYS = ("spec", "modules", "shapes", "attributes", "buffers", "state_dict")
_SCALARS = (type(None), bool, int, float, str)
# nn.Module's own bookkeeping (hooks, ``training``...): never a model attribute worth restoring.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def _is_plain(value: Any, *, tensors: bool = False) -> bool:
    """Whether ``value`` is plain data that ``torch.load(weights_only=True)`` reads back.

    Exact types only: a ``str`` enum member would pickle its class.
    """
    if type(value) in _SCALARS or (tensors and isinstance(value, torch.Tensor)):
        return True
    if type(value) in (tuple, list):
        return all(_is_plain(v, tensors=tensors) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v, tensors=tensors) for k, v in value.items())
    return False


def _same(a: Any, b: Any) -> bool:
    # repr tells 1, 1.0 and True apart, and tuples from lists; nan equals nan.
    return repr(a) == repr(b)


def _type_name(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def _resolve_spec(model: nn.Module, spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The spec to store: ``spec=`` if given, else what ``ts.models.create`` recorded."""
    if spec is None:
        from torchslim.models.specs import model_spec

        spec = model_spec(model)  # recorded by create/prune, or a timm/torchvision model
    if spec is None:
        raise ConfigError(
            f"save: cannot tell how to rebuild this {type(model).__name__}; build it with "
            "ts.models.create(...) or pass spec={'name': ..., 'num_classes': ..., "
            "'in_channels': ..., 'kwargs': {...}} (the arguments of ts.models.create)"
        )
    if not isinstance(spec, Mapping):
        raise ConfigError(f"spec: must be a dict of ts.models.create arguments, got {spec!r}")
    for key in spec:
        if key not in _SPEC_KEYS:
            raise ConfigError(
                f"spec: unknown key {key!r}{did_you_mean(str(key), _SPEC_KEYS)}; "
                f"the keys are {list(_SPEC_KEYS)}"
            )
    if not isinstance(spec.get("name"), str):
        raise ConfigError(f"spec: 'name' must be a model name (str), got {spec.get('name')!r}")
    out = {k: spec[k] for k in _SPEC_KEYS if k in spec}
    out["kwargs"] = dict(out.get("kwargs") or {})
    for key, value in out.items():
        if not _is_plain(value):
            raise ConfigError(
                f"spec.{key}: {value!r} is not plain data (None, bool, int, float, str and "
                "lists/tuples/dicts of them), so ts.save cannot store it; build the model "
                "with plain-valued options"
            )
    return out


def _create(spec: Mapping[str, Any]) -> nn.Module:
    from torchslim.models import create

    options = {k: spec[k] for k in ("num_classes", "in_channels") if k in spec}
    # Building draws random initial weights: leave the caller's random stream untouched.
    with torch.random.fork_rng(devices=[]):
        return create(spec["name"], **options, **spec.get("kwargs", {}))


def _reference(spec: Mapping[str, Any]) -> nn.Module:
    """The model as its constructor builds it, on the meta device when the constructor allows."""
    try:
        with torch.device("meta"):
            return _create(spec)
    except (RuntimeError, NotImplementedError):
        # Some constructors read tensor values (``.item()``), which meta tensors do not have.
        with torch.no_grad():
            return _create(spec)


def _plain_attributes(module: nn.Module) -> Iterator[tuple[str, Any]]:
    for key, value in vars(module).items():
        if key not in _MODULE_INTERNALS and _is_plain(value):
            yield key, value


def changed_attributes(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """Per module name, the plain attributes whose value differs from the reference model's."""
    ref_modules = dict(reference.named_modules())
    changes: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        ref = dict(_plain_attributes(ref_modules[name]))
        diff = {k: v for k, v in _plain_attributes(module) if k not in ref or not _same(ref[k], v)}
        if diff:
            changes[name] = diff
    return changes


def _check_modules(saved: Mapping[str, str], model: nn.Module, spec: Mapping[str, Any]) -> None:
    """Raise when the module tree differs (by name or type) from the one built from ``spec``."""
    built = {name: _type_name(m) for name, m in model.named_modules()}
    for name, type_name in saved.items():
        where = f"module {name or '<root>'!r}"
        if name not in built:
            raise CheckpointError(
                f"{where} ({type_name}) does not exist in the model built from spec {dict(spec)}; "
                "ts.save/ts.load support models whose modules were reshaped, not added or removed"
            )
        if built[name] != type_name:
            raise CheckpointError(
                f"{where} is a {type_name} but the model built from spec {dict(spec)} has a "
                f"{built[name]} there; was the model built with different options, or were "
                "modules replaced after construction?"
            )
    extra = [name for name in built if name not in saved]
    if extra:
        raise CheckpointError(
            f"modules {extra[:5]} of the model built from spec {dict(spec)} are missing from the "
            "saved model; ts.save/ts.load support modules reshaped, not added or removed"
        )


def _changed_nonpersistent(model: nn.Module, reference: nn.Module) -> dict[str, torch.Tensor]:
    """Non-persistent buffers (absent from the state_dict) whose shape was changed: keep values."""
    ref_buffers = dict(reference.named_buffers(remove_duplicate=False))
    out: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        for attr in module._non_persistent_buffers_set:
            buf = module._buffers.get(attr)
            name = f"{module_name}.{attr}" if module_name else attr
            ref = ref_buffers.get(name)
            if buf is not None and (ref is None or ref.shape != buf.shape):
                out[name] = buf.detach()
    return out


def _state_dict(model: nn.Module) -> dict[str, Any]:
    state = model.state_dict()
    for key, value in state.items():
        if not _is_plain(value, tensors=True):
            raise CheckpointError(
                f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor or plain "
                "data; ts.save writes no pickled objects, so this model cannot be saved"
            )
    return state


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    spec: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` so that :func:`load` rebuilds it, pruned shapes included.

    ``spec`` is the arguments of ``ts.models.create`` that build the original model (recorded
    automatically by ``create``); ``metadata`` is any plain data (numbers, strings, tensors...)
    stored alongside, read back by :func:`load_metadata`. The write is atomic: an interrupted
    save leaves the previous file intact. Quantized models are refused with a clear error: their
    deployable form is the int8 ONNX file of ``ts.export_onnx``.

    Example:
        >>> import tempfile, torch, torchslim as ts
        >>> model = ts.models.create("resnet8", num_classes=10, in_channels=1)
        >>> _ = ts.prune(model, torch.randn(1, 1, 28, 28), {"ratio": 0.5})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     save(model, f"{tmp}/resnet8.pt", metadata={"top1": 0.91}).name
        'resnet8.pt'
    """
    _refuse_quantized(model)
    spec = _resolve_spec(model, spec)
    masks = masks_of(model)
    if masks:
        # Store plain (masked) weights and the masks beside them, then put the masks back.
        # (A deep copy would share the parametrized classes that removal edits.)
        make_permanent(model)
        try:
            return _save(model, path, spec, metadata, masks)
        finally:
            apply_masks(model, masks)
    return _save(model, path, spec, metadata, masks)


def _refuse_quantized(model: nn.Module) -> None:
    for name in quantized_modules(model)[:1]:
        module = model.get_submodule(name)
        raise ConfigError(
            f"save: the model is quantized (module {name!r} is a {type(module).__name__}); "
            "ts.save stores float architectures (pruned or sparse ones included). Export "
            "a quantized model with ts.export_onnx(qmodel, x, path) — the int8 ONNX file "
            "is its deployable form — or ts.save the float model before ts.quantize / "
            "ts.prepare_qat and quantize again after loading"
        )


def _save(
    model: nn.Module,
    path: str | os.PathLike,
    spec: dict[str, Any],
    metadata: Mapping[str, Any] | None,
    masks: dict[str, Any],
) -> Path:
    if metadata is not None and not _is_plain(dict(metadata), tensors=True):
        raise ConfigError(
            "metadata: must be plain data (str keys; None, bool, int, float, str, tensors and "
            f"lists/tuples/dicts of them), got {metadata!r}"
        )
    reference = _reference(spec)
    modules = {name: _type_name(m) for name, m in model.named_modules()}
    _check_modules(modules, reference, spec)
    tensors = [*model.named_parameters(remove_duplicate=False)]
    tensors += [*model.named_buffers(remove_duplicate=False)]
    payload = {
        "format": FORMAT,
        "torch_version": str(torch.__version__),
        "spec": spec,
        "modules": modules,
        "shapes": {name: list(t.shape) for name, t in tensors},
        "attributes": changed_attributes(model, reference),
        "buffers": _changed_nonpersistent(model, reference),
        "state_dict": _state_dict(model),
        "metadata": None if metadata is None else dict(metadata),
        "masks": masks,
    }
    bad = first_nonfinite(payload["state_dict"])
    if bad is not None:
        raise CheckpointError(
            "save: the model holds non-finite values, "
            f"{describe_nonfinite(bad, payload['state_dict'][bad])}; refusing to write "
            f"{path}. Did training diverge? Save an earlier, finite model"
        )
    return ckpt_io.save_verified(payload, path)


def _read(path: str | os.PathLike, map_location: str | torch.device) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model file at {path}; save one with ts.save(model, path)")
    payload = ckpt_io.read_verified(path, map_location)
    found = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(found, str) and found.startswith("torchslim.train/"):
        raise CheckpointError(
            f"{path} is a trainer checkpoint ({found}: weights, optimizer and run state written "
            "by `torchslim train` / ts.train.Trainer), not a ts.save model file; read it with "
            "torchslim.pipeline.load_run(path) (model and metadata) or "
            "torchslim.train.load_checkpoint(path) (the raw checkpoint)"
        )
    if isinstance(found, str) and found.startswith(_FORMAT_PREFIX) and found != FORMAT:
        raise CheckpointError(
            f"{path} has format {found!r}; this torchslim reads {FORMAT!r}: "
            "load it with the torchslim version that wrote it"
        )
    if found != FORMAT:
        what = f"format {found!r}" if found else f"a {type(payload).__name__} without a format"
        raise CheckpointError(f"{path} is not a torchslim model file ({FORMAT}); it holds {what}")
    missing = [key for key in _PAYLOAD_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path} is a damaged torchslim model file: missing {missing}")
    return payload


def _rebuild(spec: Mapping[str, Any], path: Path) -> nn.Module:
    try:
        return _create(spec)
    except (ModelNotFoundError, ConfigError) as exc:
        raise CheckpointError(
            f"{path} holds a {spec['name']!r} model that cannot be built here: {exc}. "
            "Register custom models with ts.models.register_model before loading"
        ) from exc


def reshape_tensors(
    model: nn.Module, shapes: Mapping[str, list[int]], values: Mapping[str, torch.Tensor]
) -> None:
    """Give every parameter/buffer its recorded shape (empty; ``load_state_dict`` fills it)."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    unknown = [name for name in shapes if name not in tensors]
    if unknown:
        raise CheckpointError(f"saved tensors {unknown[:5]} do not exist in the rebuilt model")
    replaced: dict[int, torch.Tensor] = {}  # tied tensors stay tied
    for name, shape in shapes.items():
        old = tensors[name]
        if name in values:
            new = values[name].to(old.dtype)
        elif list(old.shape) == list(shape):
            continue
        elif id(old) in replaced:
            new = replaced[id(old)]
        else:
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            if isinstance(old, nn.Parameter):
                new = nn.Parameter(new, requires_grad=old.requires_grad)
        replaced[id(old)] = new
        owner, attr = _owner(model, name)
        if isinstance(old, nn.Parameter):
            owner._parameters[attr] = new
        else:
            owner._buffers[attr] = new


def set_attributes(model: nn.Module, attributes: Mapping[str, Mapping[str, Any]]) -> None:
    for module_name, attrs in attributes.items():
        module = model.get_submodule(module_name) if module_name else model
        for attr, value in attrs.items():
            setattr(module, attr, value)


def _load_weights(model: nn.Module, state: Mapping[str, Any], path: Path) -> None:
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the weights do not match the rebuilt model: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit the rebuilt model: {exc}") from exc


def load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by :func:`save`, with its pruned shapes and its weights.

    The model is rebuilt with ``ts.models.create`` from the stored spec (custom constructors
    must be registered with ``ts.models.register_model`` first), then reshaped and loaded with
    ``strict=True``. It comes back on ``map_location``, in training mode like any new model.

    Example:
        >>> import tempfile, torch, torchslim as ts
        >>> pruned = ts.models.create("resnet8", num_classes=10, in_channels=1)
        >>> _ = ts.prune(pruned, torch.randn(1, 1, 28, 28), {"ratio": 0.5})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = save(pruned, f"{tmp}/resnet8.pt")
        ...     model = load(f"{tmp}/resnet8.pt").eval()
        >>> model(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> model.layer1[0].conv1.out_channels  # pruned from 16
        8
    """
    path = Path(path)
    payload = _read(path, map_location)
    spec = payload["spec"]
    model = _rebuild(spec, path)
    _check_modules(payload["modules"], model, spec)
    reshape_tensors(model, payload["shapes"], payload["buffers"])
    set_attributes(model, payload["attributes"])
    model.to(map_location)
    bad = first_nonfinite(payload["state_dict"])
    if bad is not None:
        raise CheckpointError(
            f"{path} holds non-finite weights: "
            f"{describe_nonfinite(bad, payload['state_dict'][bad])}"
        )
    _load_weights(model, payload["state_dict"], path)
    if payload.get("masks"):
        apply_masks(model, payload["masks"])
    return model


def load_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``metadata`` dict given to :func:`save` (``None`` when none was given).

    Example:
        >>> import tempfile, torchslim as ts
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = save(ts.models.create("resnet8"), f"{tmp}/m.pt", metadata={"top1": 0.91})
        ...     load_metadata(f"{tmp}/m.pt")
        {'top1': 0.91}
    """
    return _read(path, "cpu")["metadata"]
