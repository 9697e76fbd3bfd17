"""The per-layer quantization report and the per-token scaling gains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchslim as ts
from torchslim.quant.ptq import calib_inputs
from torchslim.quant.report import layer_report, sqnr_db, token_scale_gains


class _Encoder(nn.Module):
    """Token rows in, token rows out, an attention mask beside them (as a tokenizer gives)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_padding_tokens_are_left_out_of_the_sqnr() -> None:
    torch.manual_seed(0)
    net = _Encoder().eval()
    x, mask = torch.randn(2, 6, 8), torch.ones(2, 6, dtype=torch.long)
    mask[1, 3:] = 0
    x[1, 3:] *= 30  # padding: large rows whose outputs no one reads
    batch = {"x": x, "attention_mask": mask}
    q = ts.quantize(net, [batch], {"dynamic": True, "embedding_bits": 0})
    batches = list(calib_inputs([batch], 1))
    with torch.no_grad():
        real = mask.bool()
        expected = sqnr_db(net(x, mask)[real], q(x, mask)[real])
        everything = sqnr_db(net(x, mask), q(x, mask))
    report = layer_report(net, q, batches, isolated=True)
    assert abs(expected - everything) > 1  # the padding would change the figure
    assert report.model_sqnr_db == pytest.approx(expected, abs=1e-3)
    assert report.layers[0].sqnr_db == pytest.approx(expected, abs=1e-3)
    assert report.layers[0].isolated_db == pytest.approx(expected, abs=1e-3)
    # the per-token gain is measured on the real tokens too
    gains = token_scale_gains(net, q, batches)
    q.lin.input_fake_quant.per_token = True
    with torch.no_grad():
        scaled = sqnr_db(net(x, mask)[real], q(x, mask)[real])
    assert gains["lin"] == pytest.approx(scaled - expected, abs=1e-3)
