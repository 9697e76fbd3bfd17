from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from torchslim.analysis import analyze
from torchslim.models import create
from torchslim.tables import format_count


@pytest.mark.parametrize(
    ("name", "params", "gmacs", "head"),
    [
        # Published: ResNet-18 11.69 M / 1.82 G (1.814 G conv+fc), MobileNetV2 3.50 M / 0.30 G.
        ("resnet18", 11_689_512, 1.814, "fc"),
        ("mobilenet_v2", 3_504_872, 0.301, "classifier.1"),
    ],
)
def test_torchvision_counts_match_published(
    name: str, params: int, gmacs: float, head: str
) -> None:
    model = getattr(torchvision.models, name)()
    stats = analyze(model, torch.randn(1, 3, 224, 224))
    assert stats.params == params
    assert stats.macs / 1e9 == pytest.approx(gmacs, abs=0.005)
    assert stats.size_bytes == pytest.approx(params * 4, rel=0.01)  # + BN buffers
    # Per-layer MACs add up to the total, and the table names the layers.
    assert sum(layer.macs for layer in stats.layers) == stats.macs
    assert any(layer.name == head and layer.type == "Linear" for layer in stats.layers)


def test_hand_counted_conv_and_linear() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 25, 4),
    )
    stats = analyze(model, torch.randn(1, 3, 5, 5))
    conv_macs = 8 * 5 * 5 * 3 * 3 * 3
    assert stats.macs == conv_macs + 8 * 25 * 4
    assert stats.params == (8 * 27 + 8) + 16 + (200 * 4 + 4)
    rows = {layer.name: layer for layer in stats.layers}
    assert rows["0"].macs == conv_macs and rows["0"].output_shape == (1, 8, 5, 5)
    assert rows["1"].params == 16 and rows["1"].macs == 0
    # BN running stats (2 x 8 floats + the int64 counter) are buffers.
    assert stats.buffer_bytes == 16 * 4 + 8
    assert stats.bytes_at(8) == stats.params + stats.buffer_bytes
    assert stats.bytes_at(4) == (stats.params + 1) // 2 + stats.buffer_bytes
    with pytest.raises(ValueError):
        stats.bytes_at(0)


def test_attention_matmuls_counted_despite_fused_fast_path() -> None:
    model = _SelfAttention(nn.MultiheadAttention(16, 2, batch_first=True))
    for p in model.parameters():
        p.requires_grad_(False)  # also frozen weights must not hide the attention MACs
    stats = analyze(model, torch.randn(1, 10, 16))
    projections = 10 * 16 * 16 * 4  # q, k, v, out
    scores_and_mix = 2 * 10 * 10 * 16
    assert stats.macs == projections + scores_and_mix
    assert torch.backends.mha.get_fastpath_enabled()


def test_vit_macs_match_published() -> None:
    # ViT-B/32 at 224: 4.41 GMACs (torchvision's model card: 4.41 GFLOPS, counted as MACs).
    stats = analyze(torchvision.models.vit_b_32(), torch.randn(1, 3, 224, 224))
    assert stats.params == 88_224_232
    assert stats.macs / 1e9 == pytest.approx(4.41, abs=0.01)


class _SelfAttention(nn.Module):
    def __init__(self, attn: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def test_shared_parameters_counted_once_and_training_flag_restored() -> None:
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin).train()
    stats = analyze(model, torch.randn(2, 4))
    assert stats.params == 20 and model.training
    assert stats.macs == 2 * 2 * 16


def test_mixed_training_flags_come_back_exactly() -> None:
    # A model in training with a frozen BatchNorm: measuring it must not unfreeze the norm.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    model.train()
    model[1].eval()
    seen: list[bool] = []
    model[1].register_forward_pre_hook(lambda m, _a: seen.append(m.training))
    analyze(model, torch.randn(1, 3, 8, 8))
    assert seen == [False]  # measured in eval mode
    assert [m.training for m in model] == [True, False, True, True] and model.training


def test_table_prints_rows_and_totals() -> None:
    stats = analyze(create("resnet8", num_classes=10, in_channels=1), torch.randn(1, 1, 28, 28))
    text = str(stats)
    assert "layer1.0.conv1" in text and "Conv2d" in text
    assert text.splitlines()[-1].startswith("total:") and format_count(stats.params) in text
    assert stats.to_dict()["layers"][0]["name"] == stats.layers[0].name


IMAGE = (1, 3, 224, 224)


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (torchvision.models.resnet18, IMAGE),
        (torchvision.models.mobilenet_v3_small, IMAGE),
        (torchvision.models.swin_t, IMAGE),
        (lambda: _SelfAttention(nn.MultiheadAttention(16, 2, batch_first=True)), (1, 10, 16)),
        (lambda: create("resnet8", num_classes=10, in_channels=1), (1, 1, 28, 28)),
    ],
    ids=["resnet18", "mobilenet_v3_small", "swin_t", "mha", "resnet8"],
)
def test_shapes_only_pass_measures_the_same(build, shape: tuple[int, ...]) -> None:
    model, x = build(), torch.randn(shape)
    real, shapes = analyze(model, x), analyze(model, x, shapes_only=True)
    assert shapes == real
    assert real.macs > 0


def test_shapes_only_pass_still_rejects_mismatched_channels() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[1].weight = nn.Parameter(model[1].weight[:, :6].clone())  # a broken pruning
    with pytest.raises(RuntimeError, match="channel"):
        analyze(model, torch.randn(1, 3, 8, 8), shapes_only=True)


def test_shapes_only_pass_rejects_a_bias_of_the_wrong_length() -> None:
    model = nn.Sequential(nn.Linear(6, 4))
    with torch.no_grad():
        model[0].bias = nn.Parameter(torch.zeros(3))  # weight says 4 outputs, bias 3
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 6))  # the real op refuses it ...
    with pytest.raises(RuntimeError, match="broadcast"):
        analyze(model, torch.randn(2, 6), shapes_only=True)  # ... and so does the shape check


def test_shapes_only_pass_rejects_a_batchnorm_left_unpruned() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight = nn.Parameter(model[0].weight[:6].clone())  # a broken pruning:
        model[0].bias = nn.Parameter(model[0].bias[:6].clone())  # the norm still has 8
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="should contain 6 elements"):
        analyze(model, torch.randn(1, 3, 8, 8), shapes_only=True)


def test_a_compiled_submodule_is_measured_and_pruned_without_warnings() -> None:
    import warnings

    import torchslim as ts

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3)
            self.b = torch.compile(nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU()), backend="eager")
            self.c = nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.b(self.a(x)))

    net, x = Net().eval(), torch.randn(1, 3, 12, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. PyTorch's note on global hooks and torch.compile
        assert analyze(net, x).macs == 8 * 27 * 100 + 8 * 72 * 64 + 4 * 8 * 64
        ts.prune(net, x, {"ratio": 0.5})
    assert (net.a.out_channels, net.c.in_channels) == (4, 4)
    assert net(x).shape == (1, 4, 8, 8)


def test_a_wrong_input_names_its_shape_and_the_module() -> None:
    from torchslim.errors import InputError

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    with pytest.raises(InputError, match=r"\(shape \(1, 1, 8, 8\), torch\.float32\): module '0'"):
        analyze(net, torch.randn(1, 1, 8, 8))
