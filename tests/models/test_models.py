from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_MODELS
from torch import nn

from torchslim.errors import ConfigError, ModelNotFoundError
from torchslim.models import (
    create,
    is_registered,
    list_models,
    register_model,
    unregister_model,
    zero_init_last_bn,
)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 32)])
def test_zoo_forward_and_fx_trace(name: str, in_channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = create(name, num_classes=7, in_channels=in_channels, **TINY_MODELS[name]).eval()
    kwargs = {"in_features": in_channels * size * size} if name == "mlp" else {}
    if kwargs:
        model = create(name, num_classes=7, in_channels=in_channels, **TINY_MODELS[name], **kwargs)
        model.eval()
    x = torch.randn(2, in_channels, size, size)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), out)


def test_every_registered_model_is_in_the_tiny_list_or_a_resnet_depth() -> None:
    for name in list_models():
        assert name in TINY_MODELS or name.startswith("resnet"), name


@pytest.mark.parametrize("depth", [14, 20, 32])
def test_resnet_depths_trace(depth: int) -> None:
    model = create(f"resnet{depth}", num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == depth - 1  # every layer but the classifier is a 3x3 conv


def test_resnet20_parameter_count() -> None:
    n = _params(create("resnet20", num_classes=10, in_channels=1))
    assert 260_000 <= n <= 280_000


@pytest.mark.parametrize(
    ("options", "extra_convs"), [({"stem": "deep"}, 2), ({"downsample": "avgpool"}, 0)]
)
def test_resnet_c_and_d_variants(options: dict, extra_convs: int) -> None:
    base = create("resnet8", num_classes=10)
    model = create("resnet8", num_classes=10, **options)
    count = lambda m: sum(isinstance(x, nn.Conv2d) for x in m.modules())  # noqa: E731
    assert count(model) == count(base) + extra_convs
    if options.get("downsample") == "avgpool":
        assert any(isinstance(m, nn.AvgPool2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(("name", "expected"), [("mobilenetv1", 4.23e6), ("mobilenetv2", 3.50e6)])
def test_mobilenet_imagenet_parameter_counts(name: str, expected: float) -> None:
    n = _params(create(name, num_classes=1000, small_input=False))
    assert abs(n - expected) / expected < 0.03


def test_mobilenetv2_matches_torchvision_size() -> None:
    ours = create("mobilenetv2", num_classes=1000, small_input=False)
    theirs = create("mobilenet_v2", num_classes=1000)
    assert _params(ours) == _params(theirs)


@pytest.mark.parametrize("name", ["mobilenetv1", "mobilenetv2"])
def test_small_input_keeps_spatial_resolution(name: str) -> None:
    small = create(name, width_mult=0.25, small_input=True).features.eval()
    large = create(name, width_mult=0.25, small_input=False).features.eval()
    x = torch.randn(1, 3, 32, 32)
    assert small(x).shape[-1] == 4 and large(x).shape[-1] == 1


def test_width_multiplier_shrinks() -> None:
    assert _params(create("mobilenetv1", width_mult=0.5)) < _params(create("mobilenetv1"))


def test_torchvision_pass_through_with_new_input_channels() -> None:
    model = create("resnet18", num_classes=10, in_channels=1)
    assert model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    small = create("mobilenet_v3_small", num_classes=5, in_channels=4)
    assert small(torch.randn(1, 4, 64, 64)).shape == (1, 5)


def test_unknown_model_suggests_a_name() -> None:
    with pytest.raises(ModelNotFoundError, match="did you mean 'resnet20'"):
        create("resnet_20")


def test_unknown_option_names_model_and_option() -> None:
    with pytest.raises(
        ConfigError, match=r"'resnet20' has no option 'widht' \(did you mean 'width'"
    ):
        create("resnet20", widht=8)


def test_bad_option_values() -> None:
    with pytest.raises(ConfigError, match="stem"):
        create("resnet20", stem="fancy")
    with pytest.raises(ConfigError, match="width_mult"):
        create("mobilenetv2", width_mult=0)


def test_register_model_adds_and_refuses_duplicates() -> None:
    def tiny(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 4, num_classes))

    register_model("test_tiny_registered", tiny)
    try:
        out = create("test_tiny_registered", num_classes=3)(torch.randn(1, 3, 2, 2))
        assert out.shape == (1, 3)
        with pytest.raises(ConfigError, match="already registered"):
            register_model("test_tiny_registered", tiny)
    finally:  # leave the zoo as it was: other tests check what it holds
        unregister_model("test_tiny_registered")
    assert not is_registered("test_tiny_registered")


def test_unregister_model_keeps_the_builtin_zoo() -> None:
    with pytest.raises(ConfigError, match="cannot be unregistered"):
        unregister_model("resnet20")
    with pytest.raises(ModelNotFoundError, match="not registered"):
        unregister_model("test_never_registered")
    assert is_registered("resnet20")


def test_zero_init_last_bn_makes_blocks_start_as_shortcuts() -> None:
    model = create("resnet8", num_classes=10).eval()
    for m in model.modules():  # give BN non-trivial statistics and shifts of zero
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    assert zero_init_last_bn(model) == 3
    block = model.layer2[0]
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(block.shortcut(x)))
    assert zero_init_last_bn(create("mobilenetv2")) == 10  # residual inverted blocks only
    assert zero_init_last_bn(create("resnet18")) == 8
    assert zero_init_last_bn(create("smallcnn")) == 0


def build_for_test(num_classes: int = 4, width: int = 8) -> nn.Module:
    """A user's own constructor, named ``tests.models.test_models:build_for_test``."""
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.Flatten(), nn.LazyLinear(num_classes))


def test_torchvision_models_of_every_task_build_without_downloads() -> None:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.segmentation import LRASPP

    detector = create("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3)
    assert isinstance(detector, FasterRCNN)
    assert detector.roi_heads.box_predictor.cls_score.out_features == 3
    segmenter = create("lraspp_mobilenet_v3_large")  # the model's own default: 21 classes
    assert isinstance(segmenter, LRASPP) and segmenter.classifier.low_classifier.out_channels == 21
    assert create("resnet18").fc.out_features == 1000  # classifiers default to 1000 as before
    assert create("raft_small").__class__.__name__ == "RAFT"
    with pytest.raises(ConfigError, match="optical flow: no num_classes"):
        create("raft_small", num_classes=3)
    with pytest.raises(ConfigError, match="normalises 3-channel images"):
        create("lraspp_mobilenet_v3_large", in_channels=1)


def test_package_module_callable_names_a_users_own_model() -> None:
    name = "tests.models.test_models:build_for_test"
    model = create(name, num_classes=6, width=4)
    assert model[0].out_channels == 4 and model._torchslim_spec["name"] == name
    assert model._torchslim_spec["kwargs"] == {"width": 4}
    with pytest.raises(ConfigError, match="takes no in_channels"):
        create(name, in_channels=1)
    with pytest.raises(ConfigError, match="rejected its options"):
        create(name, depth=3)
    with pytest.raises(ModelNotFoundError, match="cannot find 'nothing_here'"):
        create("tests.models.test_models:nothing_here")
    with pytest.raises(ModelNotFoundError, match="cannot find"):
        create("no_such_package.models:build")
    with pytest.raises(ConfigError, match=r"not an nn\.Module"):
        create("collections:OrderedDict", a=1)


def test_a_torchvision_builder_that_reads_tensor_values_is_recognised_from_shapes() -> None:
    # RegNet's builders compute their widths with tensors, so they cannot run on the meta
    # device; they are built for real with torch.nn.init skipped (regnet_y_128gf, tried before
    # regnet_y_400mf, took 17 s to initialise), and the initialisers are restored afterwards.
    import torchvision
    from torch.nn import init

    from torchslim.models.specs import _build_shapes, torchvision_spec

    before = {n: getattr(init, n) for n in ("kaiming_normal_", "normal_", "zeros_", "ones_")}
    _build_shapes.cache_clear()
    model = torchvision.models.regnet_x_400mf(num_classes=7)
    assert torchvision_spec(model) == {"name": "regnet_x_400mf", "num_classes": 7,
                                       "in_channels": 3, "kwargs": {}}  # fmt: skip
    assert _build_shapes("regnet_x_400mf", 7) == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }
    assert all(getattr(init, n) is fn for n, fn in before.items())
    w = torch.empty(4, 4)
    init.ones_(w)
    assert torch.equal(w, torch.ones(4, 4))
