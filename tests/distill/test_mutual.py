from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from torchslim.distill import mimicry_kl, mutual_learning
from torchslim.errors import ConfigError
from torchslim.models import create
from torchslim.train import seed_everything


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_mimicry_kl_two_networks_hand_computed() -> None:
    a, b = [2.0, 0.0], [0.0, 1.0]
    pa, pb = _softmax(a), _softmax(b)
    kl = lambda p, q: sum(x * math.log(x / y) for x, y in zip(p, q, strict=True))  # noqa: E731
    expected = kl(pb, pa) + kl(pa, pb)  # each network pulled towards the other
    got = mimicry_kl([torch.tensor([a]), torch.tensor([b])], temperature=1.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_mimicry_gradient_does_not_flow_into_the_targets() -> None:
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    mimicry_kl([a, b], 2.0).backward()
    # each network's gradient comes only from its own term: it equals the gradient of
    # KL(p_other || p_self) with p_other held fixed
    a2 = a.detach().clone().requires_grad_(True)
    pb = torch.softmax(b.detach() / 2, -1)
    kl = torch.nn.functional.kl_div(torch.log_softmax(a2 / 2, -1), pb, reduction="batchmean")
    (4 * kl).backward()
    torch.testing.assert_close(a.grad, a2.grad)


def test_cohort_trains_every_network_and_checkpoints_the_peers(tmp_path: Path) -> None:
    seed_everything(0)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,)))
    nets = [create(name, num_classes=10, in_channels=1) for name in ("resnet8", "smallcnn")]
    before = [[p.detach().clone() for p in n.parameters()] for n in nets]
    cfg = {"train": {"epochs": 1, "batch_size": 8, "progress": False}}
    res = mutual_learning(nets, data, cfg, eval_data=data, out_dir=tmp_path)
    for net, old in zip(nets, before, strict=True):
        assert any(not torch.equal(a, b) for a, b in zip(old, net.parameters(), strict=True))
    assert len(res.eval_acc) == 2 and {"peer_ce", "mutual_kl"} <= set(res.history.final)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    peer_state = ckpt["extra_modules"][0]
    torch.testing.assert_close(peer_state["peers.0.fc.weight"], nets[1].fc.weight)


def test_one_network_is_not_a_cohort() -> None:
    with pytest.raises(ConfigError, match="at least two"):
        mutual_learning([create("mlp", num_classes=10)], TensorDataset(torch.zeros(1)))
