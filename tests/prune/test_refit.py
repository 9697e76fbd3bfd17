"""Least-squares reconstruction after pruning (``torchslim.prune.reconstruct``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torchslim as ts
from torchslim.errors import ConfigError
from torchslim.prune import reconstruct

transformers = pytest.importorskip("transformers")


def _bert() -> nn.Module:
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=48, num_hidden_layers=2,
                                  num_attention_heads=6, intermediate_size=96,
                                  max_position_embeddings=32)  # fmt: skip
    torch.manual_seed(0)
    return transformers.BertModel(cfg).eval()


def _batches(n: int, pad: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(n)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 64, (8, 12), generator=g)
        mask = torch.ones(8, 12, dtype=torch.long)
        if pad:
            ids[:, -pad:], mask[:, -pad:] = 0, 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _error(a: nn.Module, b: nn.Module, batch: dict) -> float:
    with torch.no_grad():
        x, y = a(**batch).last_hidden_state, b(**batch).last_hidden_state
    return float((x - y).square().mean())


@pytest.mark.filterwarnings("ignore::UserWarning")  # BERT's mask check reads values
def test_reconstruct_refits_the_layers_that_lost_inputs_towards_the_unpruned_model() -> None:
    bert = _bert()
    pruned = copy.deepcopy(bert)
    ts.prune(pruned, _batches(1)[0], {"ratio": 0.5})
    held_out = _batches(3)[-1]
    before = _error(pruned, bert, held_out)
    shapes = [tuple(p.shape) for p in pruned.parameters()]
    report = reconstruct(pruned, bert, _batches(8, pad=3), progress=False)
    # the attention output projections and the FFNs' second Linears, in forward order
    assert report.layers == [f"encoder.layer.{i}.{n}" for i in range(2)
                             for n in ("attention.output.dense", "output.dense")]  # fmt: skip
    assert all(report.error_after[n] < report.error_before[n] for n in report.layers)
    assert [tuple(p.shape) for p in pruned.parameters()] == shapes  # weights refit, not resized
    assert _error(pruned, bert, held_out) < 0.5 * before  # on tokens it was not fit on


def test_reconstruct_says_when_there_is_nothing_to_refit() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    data = [torch.randn(16, 4)]
    with pytest.raises(ConfigError, match="lost input channels"):
        reconstruct(copy.deepcopy(net), net, data, progress=False)
    with pytest.raises(ConfigError, match=r"matches no nn\.Linear"):
        reconstruct(copy.deepcopy(net), net, data, layers=["head*"], progress=False)
    with pytest.raises(ConfigError, match="no batches"):
        reconstruct(copy.deepcopy(net), net, [], progress=False)
    copy_ = copy.deepcopy(net)  # an unpruned layer named explicitly: its fit changes nothing
    report = reconstruct(copy_, net, data, layers=["2"], progress=False)
    assert report.error_after["2"] <= report.error_before["2"] + 1e-9
