"""One timm model per way ``ts.prune`` used to fail on timm (issue 18's failure classes), on a
small input: each prunes, keeps its output shape, and saves/loads with identical outputs.

The whole sweep over every timm family is ``benchmarks/prune_sweep.py --models timm``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import torchslim as ts

timm = pytest.importorskip("timm")

# (architecture, input side, what it exercises)
CASES = [
    ("cs3darknet_focus_s", 64, "in-place leaky_relu_; a split by a width stored on the module"),
    ("test_vit", 160, "sizes read from x.shape reshape another tensor; softmax variants"),
    ("test_nfnet", 160, "weight-standardised, same-padded convs"),
    ("test_coatnet", 160, "relative-position tables"),
    ("mixnet_s", 32, "split_with_sizes with fixed sizes"),
]


def _prune(arch: str, side: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=10).eval()
    x = torch.randn(1, 3, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's own deprecation notices
        ts.prune(model, x, {"ratio": 0.5})
    return model, x


@pytest.mark.parametrize(("arch", "side", "what"), CASES, ids=[c[0] for c in CASES])
def test_timm_model_prunes_runs_and_round_trips(
    arch: str, side: int, what: str, tmp_path: Path
) -> None:
    model, x = _prune(arch, side)
    report = ts.report(model)
    assert report.macs_after < 0.9 * report.macs_before, what
    assert report.params_after < 0.9 * report.params_before, what
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 10)
    if arch in ("cs3darknet_focus_s", "mixnet_s", "test_nfnet"):
        assert not report.repaired  # split sizes kept on the module follow the pruning
    loaded = ts.load(ts.save(model, tmp_path / "m.pt")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), out)


def test_weight_standardised_conv_kernels_are_not_channels() -> None:
    # timm's ScaledStdConv2d flattens (in, kh, kw) to standardise its weight; the kernel dims
    # once became prunable groups (3x3 kernels cut to 2x2, spatial sizes off by one).
    model, _ = _prune("test_nfnet", 160)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            assert tuple(module.weight.shape[2:]) == tuple(module.kernel_size), name
    assert not ts.report(model).repaired


def test_vit_attention_widths_are_kept_whole_and_named() -> None:
    # timm's Attention reshapes with its own attn_dim attribute, which no trace can tie to a
    # channel space: the repair keeps the q/k/v width whole and names it.
    model, _ = _prune("test_vit", 160)
    repaired = dict(ts.report(model).repaired)
    assert "blocks.0.attn.qkv" in repaired
    assert repaired["blocks.0.attn.qkv"].startswith("in module 'blocks.0.attn'")
    assert model.blocks[0].mlp.fc1.out_features < 4 * model.blocks[0].attn.qkv.in_features
