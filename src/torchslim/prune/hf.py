"""Keep a pruned Hugging Face model's ``config`` true to its layers.

Pruning slices tensors and fixes module attributes (``num_attention_heads``, ``all_head_size``,
GPT-2's ``split_size``...); the model's ``config`` is what ``save_pretrained`` writes and what
people read. After pruning, :func:`update_config` records every layer's attention heads and
FFN width in ``config.torchslim_layers`` and, where every layer has the same FFN width, sets
the config's own field (``intermediate_size``, ``n_inner``...). Head counts stay as they were
in the standard fields: BERT-style models derive the head size from ``hidden_size /
num_attention_heads``, so fewer heads of the same size cannot be said there (Transformers 5
removed ``pruned_heads``); :func:`torchslim.pretrained.from_pretrained` rebuilds such a model.
Nothing here imports ``transformers``.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

# The config fields of an FFN's inner width, and the module attributes of a head count.
FFN_FIELDS = ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_dim", "dim_feedforward")
HEAD_FIELDS = ("num_attention_heads", "num_heads", "n_head", "n_heads")


def is_hf_model(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face ``PreTrainedModel`` (duck-typed).

    Example:
        >>> is_hf_model(nn.Linear(2, 2))
        False
    """
    config = getattr(model, "config", None)
    return hasattr(model, "save_pretrained") and hasattr(config, "to_dict")


def _ffn_widths(model: nn.Module) -> list[int]:
    """Inner width of each FFN: BERT's ``intermediate.dense``, GPT-2's ``mlp.c_fc``, or the
    first projection of a block's ``mlp`` / ``ffn`` / ``feed_forward``."""
    widths = []
    for name, module in model.named_modules():
        leaf = name.rpartition(".")[2]
        if leaf == "intermediate" and isinstance(getattr(module, "dense", None), nn.Linear):
            widths.append(module.dense.out_features)
        elif leaf in ("mlp", "ffn", "feed_forward"):
            first = next((m for m in module.children() if hasattr(m, "weight")), None)
            if isinstance(first, nn.Linear):
                widths.append(first.out_features)
            elif first is not None and hasattr(first, "nf"):  # GPT-2's Conv1D
                widths.append(int(first.nf))
    return widths


def _head_counts(model: nn.Module) -> list[int]:
    """Attention heads of each attention module that keeps a head count."""
    counts = []
    for module in model.modules():
        for attr in HEAD_FIELDS:
            value = vars(module).get(attr)
            if isinstance(value, int) and module is not model:
                counts.append(value)
                break
    return counts


def layer_summary(model: nn.Module) -> dict[str, list[int]]:
    """Per layer, the attention heads and the FFN width.

    Example:
        >>> layer_summary(nn.Linear(2, 2))
        {'heads': [], 'ffn': []}
    """
    return {"heads": _head_counts(model), "ffn": _ffn_widths(model)}


def update_config(model: nn.Module) -> dict[str, Any] | None:
    """Write the pruned shape of a Hugging Face model into its ``config`` (see the module
    docstring); returns what was written, ``None`` for any other model.

    Example:
        >>> update_config(nn.Linear(2, 2)) is None
        True
    """
    if not is_hf_model(model):
        return None
    # A config object may be shared (``BertModel(cfg)`` twice): this model gets its own copy,
    # which its submodules that keep the config point to as well.
    shared, config = model.config, copy.deepcopy(model.config)
    for module in model.modules():
        if vars(module).get("config") is shared:
            module.config = config
    summary = layer_summary(model)
    config.torchslim_layers = summary
    widths = set(summary["ffn"])
    field = next((f for f in FFN_FIELDS if hasattr(config, f)), None)
    if len(widths) == 1 and field is not None:  # GPT-2's n_inner None means 4 x n_embd
        setattr(config, field, widths.pop())
    return summary
