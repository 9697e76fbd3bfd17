"""Save and load pruned Hugging Face models in their own format (``save_pretrained`` folders).

A pruned BERT keeps 64-wide heads but fewer of them, possibly a different number per layer, and
FFNs of per-layer widths. ``transformers`` builds every layer from one config, and derives the
head size from ``hidden_size / num_attention_heads``; version 5 dropped ``pruned_heads``. So
:func:`save_pretrained` writes the usual folder (``config.json``, ``model.safetensors``) and adds
to the config, as plain data, what differs from a model freshly built from it: each changed
tensor's shape and each changed module attribute (``num_attention_heads``, ``all_head_size``,
``split_size``...). :func:`from_pretrained` builds the model from the config, gives those tensors
and attributes their saved values and loads the weights strictly. A folder with no such record
(an unpruned model, or one pruned only in FFN width with the same width everywhere) is loaded
by ``transformers``' own ``from_pretrained``.

Needs ``pip install "torchslim[transformers]"``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.errors import CheckpointError, ConfigError
from torchslim.serialize import changed_attributes, reshape_tensors, set_attributes

RECORD = "torchslim"
FORMAT = "torchslim.hf/1"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
        raise ConfigError(
            'Hugging Face models need transformers: pip install "torchslim[transformers]"'
        ) from exc
    return transformers


def _fresh(model_class: type, config: Any) -> nn.Module:
    """``model_class(config)`` without drawing from the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        return model_class(config)


def save_pretrained(model: nn.Module, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``model.save_pretrained(path)``, with what pruning changed recorded in the config so
    that :func:`from_pretrained` rebuilds it; returns the folder.

    Example:
        >>> import tempfile, torch, torchslim as ts
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
        ...                  num_attention_heads=4, intermediate_size=64)
        >>> bert = BertModel(cfg).eval()
        >>> ids = {"input_ids": torch.randint(0, 50, (1, 8))}
        >>> _ = ts.prune(bert, ids, {"ratio": 0.5})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = save_pretrained(bert, d)
        ...     back = from_pretrained(d)
        >>> back.encoder.layer[0].attention.self.num_attention_heads
        2
        >>> torch.equal(back(**ids).last_hidden_state, bert(**ids).last_hidden_state)
        True
    """
    path = Path(path)
    config = model.config
    config.__dict__.pop(RECORD, None)
    with torch.device("meta"):
        reference = _fresh(type(model), copy.deepcopy(config))
    ref_shapes = {n: tuple(t.shape) for n, t in _tensors(reference)}
    shapes = {n: list(t.shape) for n, t in _tensors(model) if ref_shapes.get(n) != t.shape}
    attributes = changed_attributes(model, reference)
    if shapes or attributes:
        setattr(config, RECORD, {"format": FORMAT, "shapes": shapes, "attributes": attributes})
    try:
        model.save_pretrained(path, **kwargs)
    finally:
        config.__dict__.pop(RECORD, None)
    return path


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False)]  # fmt: skip


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: {name} is missing (save with save_pretrained)")
        state.update(load_file(str(path / name)))
    return state


def from_pretrained(path: str | os.PathLike, model_class: type | None = None,
                    **kwargs: Any) -> nn.Module:  # fmt: skip
    """A model saved by :func:`save_pretrained` (pruned or not), in eval mode. ``model_class``
    defaults to the config's ``architectures[0]``; ``kwargs`` go to ``transformers``'
    ``from_pretrained`` for a folder without torchslim's record.

    Example: see :func:`save_pretrained`.
    """
    transformers = _transformers()
    path = Path(path)
    config = transformers.AutoConfig.from_pretrained(path)
    if model_class is None:
        names = getattr(config, "architectures", None) or []
        model_class = getattr(transformers, names[0], None) if names else None
        if model_class is None:
            raise ConfigError(f"{path}: the config names no known architecture; pass model_class")
    record = config.__dict__.pop(RECORD, None)
    if not record:
        return model_class.from_pretrained(path, **kwargs).eval()
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown torchslim record {record.get('format')!r}")
    model = _fresh(model_class, config)
    reshape_tensors(model, record["shapes"], {})
    set_attributes(model, record["attributes"])
    state = _read_weights(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = _tied_names(model)
    missing = [n for n in missing if n not in tied]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the weights do not match the rebuilt model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval()


def _tied_names(model: nn.Module) -> set[str]:
    """Parameters that share their tensor with an earlier one (not saved separately)."""
    seen: set[int] = set()
    tied = set()
    for name, tensor in _tensors(model):
        if id(tensor) in seen:
            tied.add(name)
        seen.add(id(tensor))
    return tied
