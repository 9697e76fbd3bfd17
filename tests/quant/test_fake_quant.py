from __future__ import annotations

import math

import pytest
import torch

from torchslim.quant import QuantSpec
from torchslim.quant.fake_quant import PACT, FakeQuantize, LSQQuantize, fake_quantize, round_ste


def test_ste_gradient_is_identity_inside_and_zero_outside() -> None:
    x = torch.tensor([0.26, -0.31, 5.0, -5.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.1), torch.tensor(0), -8, 7)
    torch.testing.assert_close(y.detach(), torch.tensor([0.3, -0.3, 0.7, -0.8]))
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_round_ste_and_per_channel() -> None:
    x = torch.tensor([[1.0, 2.0], [10.0, 20.0]])
    y = fake_quantize(x, torch.tensor([1.0, 10.0]), torch.tensor([0, 0]), -128, 127, axis=0)
    torch.testing.assert_close(y, x)
    v = torch.tensor([1.4], requires_grad=True)
    round_ste(v).backward()
    assert v.grad.item() == 1.0


def test_fake_quantize_module_calibrates_then_quantizes() -> None:
    fq = FakeQuantize(QuantSpec(bits=8, mapping="affine"))
    fq(torch.tensor([-1.0, 3.0]))
    fq.observing = False
    out = fq(torch.tensor([0.0, 1.0, 10.0]))
    s = 4 / 255
    torch.testing.assert_close(out, torch.tensor([0.0, round(1 / s) * s, (255 - 64) * s]))


def test_lsq_scale_gradient_matches_the_paper() -> None:
    lsq = LSQQuantize(QuantSpec(bits=4, mapping="symmetric"))
    x = torch.tensor([0.5, 2.0, -9.0])
    lsq(x)  # initialises the scale
    with torch.no_grad():
        lsq.scale.fill_(1.0)
    y = lsq(x)
    torch.testing.assert_close(y.detach(), torch.tensor([0.0, 2.0, -8.0]))  # round half to even
    y.sum().backward()
    # d/ds of s*round(x/s) (STE): round(x/s) - x/s inside, qmin/qmax when clipped.
    raw = (0.0 - 0.5) + (2.0 - 2.0) + (-8.0)
    g = 1 / math.sqrt(3 * 7)
    assert lsq.scale.grad.item() == pytest.approx(raw * g)


def test_lsq_initial_scale() -> None:
    lsq = LSQQuantize(QuantSpec(bits=8))
    lsq(torch.tensor([1.0, -3.0]))
    assert lsq.scale.item() == pytest.approx(2 * 2.0 / math.sqrt(127))


def test_pact_clips_quantizes_and_learns_alpha() -> None:
    pact = PACT(bits=2, alpha=3.0)
    x = torch.tensor([-1.0, 0.9, 2.2, 9.0], requires_grad=True)
    y = pact(x)
    assert y.tolist() == [0.0, 1.0, 2.0, 3.0]
    y.sum().backward()
    assert pact.alpha.grad.item() == 1.0  # only the clipped input contributes
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_two_sided_pact() -> None:
    pact = PACT(bits=3, alpha=1.5, two_sided=True)  # levels: 3 per side, step 0.5
    x = torch.tensor([-4.0, -0.6, 0.2, 0.8], requires_grad=True)
    y = pact(x)
    assert y.tolist() == [-1.5, -0.5, 0.0, 1.0]
    y.sum().backward()
    assert pact.alpha.grad.item() == -1.0  # the input clipped at -alpha
