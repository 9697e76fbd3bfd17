from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from torchslim.errors import ConfigError
from torchslim.quant import binarize, binary_size, pq_size, product_quantize, save_packed, save_pq
from torchslim.quant.binary import binary_layers, export_binary_as_float, sign_ste


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))  # fmt: skip


def test_sign_ste_gradient_is_clipped_identity() -> None:
    x = torch.tensor([-1.5, -1.0, -0.2, 0.0, 0.7, 2.0], requires_grad=True)
    y = sign_ste(x)
    (y * torch.arange(6.0)).sum().backward()
    assert y.tolist() == [-1, -1, -1, 1, 1, 1]
    assert x.grad.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 0.0]


def test_binarize_keeps_first_and_last_float_and_uses_xnor_scales() -> None:
    net = binarize(_mlp(), {"scaling": "xnor"})
    assert binary_layers(net) == ["2", "4"]
    w = net[2].weight.detach()
    alpha = w.abs().mean(1, keepdim=True)
    torch.testing.assert_close(net[2].binary_weight().detach(), torch.where(w >= 0, 1.0, -1.0)
                               * alpha)  # fmt: skip
    x = torch.randn(5, 16)
    assert net(x).shape == (5, 3)
    with pytest.raises(ConfigError, match="scaling"):
        binarize(_mlp(), {"scaling": "xnr"})
    with pytest.raises(ConfigError, match="no Conv2d/Linear"):
        binarize(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))


def test_stochastic_binarization_is_random_in_training_and_sign_in_eval() -> None:
    net = binarize(_mlp(), {"stochastic": True, "scaling": "none"})
    layer = net[2]
    with torch.no_grad():
        layer.weight.fill_(0.0)  # p(+1) = 1/2
    layer.train()
    b = layer.binary_weight()
    assert set(b.unique().tolist()) == {-1.0, 1.0} and 0.3 < (b > 0).float().mean() < 0.7
    layer.eval()
    assert (layer.binary_weight() == 1).all()


def test_binary_network_trains_with_binary_activations() -> None:
    torch.manual_seed(0)
    x = torch.randn(128, 16)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    # BNN layout: BatchNorm + hardtanh before each sign() (a ReLU would make every sign +1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.Hardtanh(),
                        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.Hardtanh(),
                        nn.Linear(64, 3))  # fmt: skip
    net = binarize(net, {"binary_activations": True})
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert net[3].weight.grad is not None and net[3].weight.grad.abs().sum() > 0


def test_packed_size_is_real_and_about_32x_smaller_for_binary_layers(tmp_path: Path) -> None:
    net = binarize(_mlp())
    sizes = binary_size(net)
    binary_params = 2 * 64 * 64
    assert sizes["float32_bytes"] - sizes["packed_bytes"] >= binary_params * 4 - binary_params
    on_disk = save_packed(net, tmp_path / "b.zip")
    assert on_disk < 0.6 * sizes["float32_bytes"]
    x = torch.randn(4, 16)
    net.eval()
    with torch.no_grad():
        ref = net(x)
        export_binary_as_float(net)
        torch.testing.assert_close(net(x), ref)
    assert binary_layers(net) == []


def test_product_quantization_codes_and_honest_size(tmp_path: Path) -> None:
    net = _mlp()
    dense = [m.weight.detach().clone() for m in net if isinstance(m, nn.Linear)]
    product_quantize(net, {"subvector": 4, "codebook_size": 16}, progress=False)
    layer = net[2]
    assert layer.pq_codes.shape == (16, 64) and layer.pq_codebooks.shape == (16, 16, 4)
    assert int(layer.pq_codes.max()) < 16
    # the weight is exactly what codebooks and codes encode
    rebuilt = torch.cat([layer.pq_codebooks[s][layer.pq_codes[s].long()] for s in range(16)], 1)
    torch.testing.assert_close(layer.weight.detach(), rebuilt)
    assert not torch.equal(layer.weight.detach(), dense[1])
    assert not hasattr(net[6], "pq_codes")  # 3 output rows: below min_rows, stays float
    sizes = pq_size(net)
    assert sizes["packed_bytes"] < 0.5 * sizes["float32_bytes"]
    assert save_pq(net, tmp_path / "pq.zip") < 0.6 * sizes["float32_bytes"]


def test_qcnn_fits_layer_outputs_better_than_plain_kmeans() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
    mix = torch.randn(32, 32)
    data = [torch.randn(64, 32) @ mix for _ in range(4)]  # correlated inputs
    errors = {}
    for method in ("kmeans", "qcnn"):
        net = copy.deepcopy(base)
        cfg = {"subvector": 4, "codebook_size": 8, "method": method, "layers": ["0"]}
        product_quantize(net, cfg, calib_data=data, progress=False)
        with torch.no_grad():
            errors[method] = sum(float((net[0](x) - base[0](x)).pow(2).mean()) for x in data)
    assert errors["qcnn"] < 0.8 * errors["kmeans"]
    with pytest.raises(ConfigError, match="calib_data"):
        product_quantize(base, {"method": "qcnn"}, progress=False)
    with pytest.raises(ConfigError, match="no layer"):
        product_quantize(base, {"subvector": 7}, progress=False)
