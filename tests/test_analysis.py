from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from torchslim.analysis import (
    ModuleScope,
    ShapesOnly,
    analyze,
    conv_output_shape,
    export_for_latency,
    format_count,
    measure_latency,
    round_robin_latency,
    shape_only_call,
    shape_only_modules,
)
from torchslim.models import create


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


def test_module_scope_ignores_modules_run_by_other_threads() -> None:
    import threading

    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    other = nn.Sequential(nn.Linear(4, 4))
    with ModuleScope(net) as scope:
        inside: list[list[str]] = []
        net[0].register_forward_pre_hook(lambda _m, _a: inside.append(list(scope.stack)))
        worker = threading.Thread(target=lambda: (net(torch.randn(1, 4)), other(torch.randn(1, 4))))
        worker.start()
        worker.join()
        assert scope.stack == [""] and scope.shapes == {}  # the other thread left no trace
        net(torch.randn(2, 4))
    assert inside[-1] == ["", "", "0"]  # root, then the Linear, on this thread
    assert scope.shapes == {"0": ((2, 4), (2, 3)), "1": ((2, 3), (2, 3))}
    assert scope.stack == [""]


def test_table_prints_rows_and_totals() -> None:
    stats = analyze(create("resnet8", num_classes=10, in_channels=1), torch.randn(1, 1, 28, 28))
    text = str(stats)
    assert "layer1.0.conv1" in text and "Conv2d" in text
    assert text.splitlines()[-1].startswith("total:") and format_count(stats.params) in text
    assert stats.to_dict()["layers"][0]["name"] == stats.layers[0].name


def test_format_count() -> None:
    assert format_count(1.82e9, "MACs") == "1.82 GMACs"
    assert format_count(950) == "950"


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_latency_reports_positive_median(backend: str) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    res = measure_latency(model, torch.randn(3, 1, 8, 8), backend=backend, warmup=1, repeats=3)
    assert res.backend == backend and res.repeats == 3 and res.batch_size == 3
    assert 0 < res.min_ms <= res.median_ms <= res.p90_ms
    assert "median" in str(res)


def test_latency_min_seconds_times_more_runs() -> None:
    res = measure_latency(nn.Linear(4, 4), torch.randn(1, 4), repeats=2, min_seconds=0.02)
    # two runs of a tiny layer take microseconds: it keeps timing until 20 ms or 100 x repeats
    assert res.repeats > 2
    assert res.repeats * res.mean_ms >= 20 or res.repeats == 200


def test_latency_keeps_each_submodules_mode() -> None:
    # a model in training with a frozen BatchNorm: timing must not unfreeze it
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).train()
    model[1].eval()
    measure_latency(model, torch.randn(2, 1, 8, 8), warmup=1, repeats=2)
    assert [m.training for m in model] == [True, False]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TorchScript is deprecated
def test_latency_of_frozen_torchscript_module() -> None:
    # a frozen ScriptModule has no ``training`` attribute; timing it must still work
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    frozen = torch.jit.freeze(torch.jit.script(model))
    res = measure_latency(frozen, torch.randn(1, 1, 8, 8), warmup=1, repeats=2)
    assert res.median_ms > 0


def test_latency_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backend"):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), backend="tvm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), repeats=0)


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


CONVS = [  # (input shape, weight shape, stride, padding, dilation, groups)
    ((2, 3, 17, 17), (8, 3, 3, 3), [2, 2], [1, 1], [1, 1], 1),
    ((1, 16, 9, 11), (16, 1, 5, 5), [1, 2], [2, 0], [1, 1], 16),  # depthwise, uneven
    ((1, 8, 12, 12), (12, 4, 3, 3), [1, 1], [2, 2], [2, 2], 2),  # grouped, dilated
    ((3, 4, 20), (6, 4, 4), [3], [0], [1], 1),  # 1-d
    ((1, 2, 5, 6, 7), (4, 2, 1, 3, 3), [1, 1, 2], [0, 1, 1], [1, 1, 1], 1),  # 3-d
]


@pytest.mark.parametrize(("x", "w", "stride", "padding", "dilation", "groups"), CONVS)
def test_conv_output_shape_equals_the_real_convolution(x, w, stride, padding, dilation, groups):
    args = (torch.randn(x), torch.randn(w), torch.randn(w[0]), stride, padding, dilation,
            False, [0] * len(stride), groups)  # fmt: skip
    real = torch.ops.aten.convolution.default(*args)
    assert conv_output_shape(*args) == list(real.shape)
    fake = shape_only_call(torch.ops.aten.convolution.default, args, {})
    assert fake.shape == real.shape and not fake.any()


@pytest.mark.parametrize("broken", ["channels", "bias", "dtype", "too small"])
def test_conv_output_shape_refuses_what_the_real_convolution_refuses(broken: str) -> None:
    x, w, b = torch.randn(1, 4, 6, 6), torch.randn(8, 4, 3, 3), torch.randn(8)
    if broken == "channels":
        w = w[:, :3]
    elif broken == "bias":
        b = b[:5]
    elif broken == "dtype":
        w = w.double()
    else:
        x = x[..., :2, :2]
    args = (x, w, b, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    with pytest.raises(RuntimeError):
        torch.ops.aten.convolution.default(*args)
    with pytest.raises(RuntimeError):
        conv_output_shape(*args)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "op",
    [nn.ReLU(), nn.SiLU(inplace=True), nn.Hardswish(), nn.GELU(), nn.BatchNorm2d(6).eval()],
    ids=["relu", "silu_", "hardswish", "gelu", "batchnorm"],
)
def test_shapes_only_activation_and_norm_keep_shape_and_strides(op, channels_last) -> None:
    x = torch.randn(2, 6, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    inp = x.clone()
    with torch.no_grad():
        real = op(x.clone())
        with ShapesOnly():
            fake = op(inp)
    assert fake.shape == real.shape and fake.stride() == real.stride()
    if getattr(op, "inplace", False):
        assert fake is inp and torch.equal(fake, x)  # returned untouched
    else:
        assert not fake.any()  # not computed


def test_shapes_only_pass_rejects_a_batchnorm_left_unpruned() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight = nn.Parameter(model[0].weight[:6].clone())  # a broken pruning:
        model[0].bias = nn.Parameter(model[0].bias[:6].clone())  # the norm still has 8
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="should contain 6 elements"):
        analyze(model, torch.randn(1, 3, 8, 8), shapes_only=True)


def test_round_robin_latency_times_every_file_on_every_input(tmp_path) -> None:
    x = torch.randn(1, 8)
    paths = {name: export_for_latency(nn.Linear(8, 8).eval(), (x,), tmp_path / f"{name}.onnx")
             for name in ("a", "b")}  # fmt: skip
    ms = round_robin_latency(paths, [x, x + 1], rounds=2, repeats=(3, 2))
    assert list(ms) == ["a", "b"] and all(len(v) == 2 and min(v) > 0 for v in ms.values())
    with pytest.raises(ValueError):  # one repeat count per input
        round_robin_latency(paths, [x], repeats=(3, 2))


def test_shapes_only_batchnorm_checks_its_weight() -> None:
    # Stricter than the CPU kernel, which does not check the affine weight's length.
    x, stats = torch.randn(1, 8, 4, 4), torch.ones(8)
    args = (x, torch.ones(6), torch.zeros(8), stats, stats, False, 0.1, 1e-5)
    with pytest.raises(RuntimeError, match="weight should contain 8"):
        shape_only_call(torch.ops.aten.native_batch_norm.default, args, {})


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


class _OwnConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 1.0


def _module_zoo() -> list[tuple[nn.Module, torch.Tensor]]:
    nets = [
        (torchvision.models.mobilenet_v3_small(), torch.randn(1, 3, 64, 64)),
        (torchvision.models.resnet18(), torch.randn(2, 3, 64, 64)),
        (torchvision.models.regnet_y_400mf(), torch.randn(1, 3, 64, 64)),
        (
            nn.Sequential(
                nn.Conv2d(3, 6, 3, stride=2, padding=2, dilation=2),
                nn.BatchNorm2d(6),
                nn.ReLU6(),
                nn.Conv2d(6, 6, 3, groups=3, padding="same"),
                nn.GELU(),
                _OwnConv(6, 4, 1),
                nn.SiLU(inplace=True),
            ),
            torch.randn(2, 3, 17, 19).contiguous(memory_format=torch.channels_last),
        ),
        (
            nn.Sequential(
                nn.Conv1d(4, 8, 5, padding=1),
                nn.BatchNorm1d(8),
                nn.Hardswish(),
                nn.Conv1d(8, 8, 3, padding_mode="reflect", padding=1),
                nn.Tanh(),
            ),
            torch.randn(2, 4, 30),
        ),
        (nn.Sequential(nn.Conv2d(3, 5, 3), nn.Sigmoid()), torch.randn(3, 9, 9)),  # unbatched
    ]
    return [(net.eval(), x) for net, x in nets]


def test_shape_only_modules_give_the_real_shapes_and_put_forward_back() -> None:
    for net, x in _module_zoo():
        with torch.no_grad():
            real = net(x)
        with torch.no_grad(), ShapesOnly(), shape_only_modules(net):
            out = net(x)
        assert out.shape == real.shape, type(net).__name__
        if x.is_contiguous():  # (shapes-only convolutions give contiguous outputs, as before)
            assert out.stride() == real.stride()
        assert not any("forward" in vars(m) for m in net.modules())


def test_shape_only_modules_swap_only_the_exact_types() -> None:
    net = nn.Sequential(_OwnConv(3, 4, 1), nn.Conv2d(4, 4, 1), nn.ReLU())
    with shape_only_modules(net):
        swapped = ["forward" in vars(m) for m in net]
    assert swapped == [False, True, True]


def test_shape_only_modules_still_reject_a_broken_pruning_and_restore_forward() -> None:
    from torchslim.prune.pruner import check_forward

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    model.eval()
    x = torch.randn(1, 3, 8, 8)
    assert check_forward(model, (x,)).shape == (1, 4, 6, 6)
    with torch.no_grad():
        model[0].weight = nn.Parameter(model[0].weight[:6].clone())  # the norm still has 8
        model[0].bias = nn.Parameter(model[0].bias[:6].clone())
    with pytest.raises(RuntimeError, match="should contain 6 elements"):
        check_forward(model, (x,))
    model[1] = nn.BatchNorm2d(6).eval()  # the norm fixed, the next conv still reads 8
    with pytest.raises(RuntimeError, match="channels"):
        check_forward(model, (x,))
    assert not any("forward" in vars(m) for m in model.modules())


def test_a_wrong_input_names_its_shape_and_the_module() -> None:
    from torchslim.errors import InputError

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    with pytest.raises(InputError, match=r"\(shape \(1, 1, 8, 8\), torch\.float32\): module '0'"):
        analyze(net, torch.randn(1, 1, 8, 8))
