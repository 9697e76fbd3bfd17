from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import torchslim as ts
from torchslim.errors import ConfigError, InputError, NonFiniteError
from torchslim.quant import PACT, LSQQuantize
from torchslim.quant.fake_quant import FixedQuantize


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip


def _task(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    return x + (2 * y.float() - 1)[:, None, None, None] * 0.5, y


@pytest.mark.parametrize("act", ["ste", "lsq", "pact"])
@pytest.mark.parametrize("weight", ["ste", "lsq"])
def test_qat_trains_converts_and_exports(act: str, weight: str, tmp_path: Path) -> None:
    x, y = _task()
    cfg = {"weight_bits": 4, "act_bits": 4, "act_quantizer": act, "weight_quantizer": weight}
    q = ts.prepare_qat(_net().eval(), cfg, calib_data=[x[:32]])
    q.train()
    opt = torch.optim.Adam(q.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(q(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    learned = [m for m in q.modules() if isinstance(m, (PACT, LSQQuantize))]
    if act != "ste" or weight == "lsq":  # the learned grids are trained too
        assert learned and all(p.grad is not None for m in learned for p in m.parameters())
    ts.convert(q)
    assert not any(isinstance(m, (PACT, LSQQuantize)) for m in q.modules())
    with torch.no_grad():
        out = q(x)
    report = ts.export_onnx(q, x, tmp_path / "qat.onnx")
    assert report.int4_weights == 3 and report.int8_weights == 0  # 4-bit weights, packed
    assert report.top1_agreement >= 0.95
    assert report.max_abs_error < 0.1 * float(out.abs().max())


def test_pact_is_one_sided_after_relu_and_two_sided_elsewhere() -> None:
    q = ts.prepare_qat(_net().eval(), {"act_quantizer": "pact"}, calib_data=[_task()[0]])
    sides = {n: m.two_sided for n, m in q.named_modules() if isinstance(m, PACT)}
    # model input and the pooled features are signed; the two ReLU outputs are not
    assert sides == {"act_quant_input_1": True, "act_quant__2": False, "act_quant__4": False,
                     "act_quant__6": True}  # fmt: skip
    # alpha starts at the 99.9th percentile of what it clips, not at an arbitrary constant
    alphas = [m.alpha.item() for m in q.modules() if isinstance(m, PACT)]
    assert all(0 < a < 50 for a in alphas) and len(set(alphas)) == 4


def test_convert_fixes_the_learned_grids() -> None:
    q = ts.prepare_qat(_net().eval(), {"weight_bits": 4, "act_bits": 4}, calib_data=[_task()[0]])
    x = _task()[0]
    q.eval()
    with torch.no_grad():
        before = q(x)
    ts.convert(q)
    assert any(isinstance(m, FixedQuantize) for m in q.modules())
    with torch.no_grad():
        torch.testing.assert_close(q(x), before)
    with pytest.raises(ConfigError, match="prepare_qat"):
        ts.convert(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="act_quantizer"):
        ts.prepare_qat(_net(), {"act_quantizer": "pactt"})


@pytest.mark.parametrize("act", ["ste", "lsq", "pact"])
def test_calibration_data_that_does_not_fit_is_refused_naming_batch_and_layer(act: str) -> None:
    x = _task(16)[0]
    cfg = {"act_quantizer": act}
    with pytest.raises(InputError, match=r"batch 1 .*\(8, 3, 8, 8\).*module '0' \(\w*Conv2d\)"):
        ts.prepare_qat(_net(), cfg, calib_data=[x[:8], torch.randn(8, 3, 8, 8)])
    bad = x[8:].clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"calib_data batch 1 .*1 infinite value"):
        ts.prepare_qat(_net(), cfg, calib_data=[x[:8], bad])
    net = _net()
    with torch.no_grad():
        net[3].weight.fill_(1e38)  # finite weights, infinite outputs
    with pytest.raises(NonFiniteError, match=r"layer '3' \(\w*Conv2d\) turned finite inputs"):
        ts.prepare_qat(net, cfg, calib_data=[x[:8]])
    with torch.no_grad():
        net[3].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"ts\.prepare_qat: parameter '3\.weight'"):
        ts.prepare_qat(net, cfg)
