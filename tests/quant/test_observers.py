from __future__ import annotations

import pytest
import torch

from torchslim.errors import ConfigError
from torchslim.quant import Observer, QuantSpec, affine_qparams, symmetric_qparams


def test_symmetric_by_hand() -> None:
    scale, zero = symmetric_qparams(torch.tensor(1.27), 8)
    assert scale.item() == pytest.approx(0.01) and zero.item() == 0
    scale, _ = symmetric_qparams(torch.tensor(3.0), 4)  # qmax 7
    assert scale.item() == pytest.approx(3 / 7)
    scale, _ = symmetric_qparams(torch.tensor(1.0), 2)  # qmax 1
    assert scale.item() == pytest.approx(1.0)


def test_affine_by_hand() -> None:
    # [-1, 3] over 0..255: scale 4/255, zero point round(1 / (4/255)) = round(63.75) = 64
    scale, zero = affine_qparams(torch.tensor(-1.0), torch.tensor(3.0), 8)
    assert scale.item() == pytest.approx(4 / 255) and zero.item() == 64
    # all-positive range still represents 0 exactly: [0, 2] -> zero point 0
    scale, zero = affine_qparams(torch.tensor(0.5), torch.tensor(2.0), 8)
    assert scale.item() == pytest.approx(2 / 255) and zero.item() == 0
    # all-negative: [-2, 0] -> zero point 255
    _, zero = affine_qparams(torch.tensor(-2.0), torch.tensor(-0.5), 8)
    assert zero.item() == 255


def test_per_channel_ranges() -> None:
    obs = Observer(QuantSpec(mapping="symmetric", per_channel=True, ch_axis=0))
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25], [-4.0, 3.0]])
    obs(w)
    scale, zero = obs.qparams()
    torch.testing.assert_close(scale, torch.tensor([2.0, 0.5, 4.0]) / 127)
    assert zero.tolist() == [0, 0, 0]


def test_running_min_max_and_moving_average() -> None:
    obs = Observer(QuantSpec(mapping="affine"))
    obs(torch.tensor([0.0, 1.0]))
    obs(torch.tensor([-3.0, 0.5]))
    assert obs.min_val.item() == -3.0 and obs.max_val.item() == 1.0
    ema = Observer(QuantSpec(mapping="affine", averaging=0.5))
    ema(torch.tensor([0.0, 2.0]))
    ema(torch.tensor([0.0, 4.0]))
    assert ema.max_val.item() == pytest.approx(3.0)


def test_percentile_clips_outliers() -> None:
    x = torch.cat([torch.linspace(-1, 1, 100_000), torch.tensor([50.0])])
    sat = Observer(QuantSpec(mapping="saturating", calibration="percentile", percentile=99.9))
    plain = Observer(QuantSpec(mapping="symmetric"))
    sat(x)
    plain(x)
    assert plain.qparams()[0].item() == pytest.approx(50 / 127)
    assert sat.qparams()[0].item() == pytest.approx(1 / 127, rel=0.05)


def _laplace() -> torch.Tensor:
    torch.manual_seed(0)
    bulk = torch.distributions.Laplace(0.0, 1.0).sample((200_000,))
    return torch.cat([bulk, torch.tensor([100.0, -80.0])])  # two outliers set abs-max


def _mse(x: torch.Tensor, scale: torch.Tensor) -> float:
    return float(((torch.clamp(torch.round(x / scale), -128, 127) * scale - x) ** 2).mean())


def test_mse_threshold_beats_abs_max_and_is_near_the_grid_optimum() -> None:
    x = _laplace()
    sat = Observer(QuantSpec(mapping="saturating", calibration="mse"))
    plain = Observer(QuantSpec(mapping="symmetric"))
    sat(x)
    plain(x)
    s_sat = sat.qparams()[0]
    assert _mse(x, s_sat) < 0.8 * _mse(x, plain.qparams()[0])
    grid = [_mse(x, torch.tensor(t / 127)) for t in torch.linspace(2, 100, 99).tolist()]
    assert _mse(x, s_sat) <= min(grid) * 1.05


def test_kl_threshold_clips_the_tail_but_keeps_the_bulk() -> None:
    x = _laplace()
    sat = Observer(QuantSpec(mapping="saturating", calibration="kl"))
    sat(x)
    threshold = sat.qparams()[0].item() * 127
    assert 4.0 < threshold < 0.3 * x.abs().max().item()


def test_histogram_rebins_when_range_grows() -> None:
    obs = Observer(QuantSpec(mapping="saturating", calibration="percentile", percentile=100))
    obs(torch.full((10,), 1.0))
    obs(torch.full((10,), 4.0))
    assert obs.hist.sum().item() == 20 and obs.hist_max.item() == 4.0
    # all values >= 0: the symmetric range is stored unsigned, so 255 levels span [0, 4]
    assert obs.qparams()[0].item() == pytest.approx(4 / 255, rel=0.01)
    assert obs.qrange() == (0, 255)
    obs(torch.tensor([-0.5]))
    assert obs.qparams()[0].item() == pytest.approx(4 / 127, rel=0.01)
    assert obs.qrange() == (-128, 127)


def test_state_dict_round_trip_and_errors() -> None:
    obs = Observer(QuantSpec(mapping="affine"))
    obs(torch.tensor([-1.0, 1.0]))
    fresh = Observer(QuantSpec(mapping="affine"))
    fresh.load_state_dict(obs.state_dict())
    assert fresh.qparams()[1].item() == obs.qparams()[1].item()
    with pytest.raises(ConfigError, match="no data"):
        Observer(QuantSpec()).qparams()
    with pytest.raises(ConfigError, match="bits"):
        QuantSpec(bits=9)
    with pytest.raises(ValueError):
        QuantSpec(mapping="weird")


def test_kl_threshold_of_relu_outputs_is_not_dragged_down_by_zeros() -> None:
    # half the values are exact zeros (a ReLU): they must not pull the threshold into the bulk
    x = torch.relu(_laplace())
    sat = Observer(QuantSpec(mapping="saturating", calibration="kl"))
    sat(x)
    assert sat.unsigned
    threshold = sat.qparams()[0].item() * 255
    assert torch.quantile(x[x > 0], 0.99).item() < threshold <= x.max().item()
