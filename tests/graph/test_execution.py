"""The shapes-only execution engine (torchslim.graph.execution)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from torchslim.graph.execution import (
    ModuleScope,
    ShapesOnly,
    conv_output_shape,
    shape_only_call,
    shape_only_modules,
)


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


def test_shapes_only_batchnorm_checks_its_weight() -> None:
    # Stricter than the CPU kernel, which does not check the affine weight's length.
    x, stats = torch.randn(1, 8, 4, 4), torch.ones(8)
    args = (x, torch.ones(6), torch.zeros(8), stats, stats, False, 0.1, 1e-5)
    with pytest.raises(RuntimeError, match="weight should contain 8"):
        shape_only_call(torch.ops.aten.native_batch_norm.default, args, {})


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
