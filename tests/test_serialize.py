from __future__ import annotations

import pickletools
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer

import torchslim as ts
from torchslim import serialize
from torchslim.errors import CheckpointError, ConfigError
from torchslim.models import create, register_model, unregister_model
from torchslim.train.checkpoint import checksums

TINY_VIT = "test_serialize_tiny_vit"


def _tiny_vit(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    assert in_channels == 3
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=num_classes,
    )  # fmt: skip


class _Gated(nn.Module):
    """Reads a plain width attribute and a non-persistent buffer in its forward."""

    def __init__(self, num_classes: int = 3, in_channels: int = 4) -> None:
        super().__init__()
        self.hidden_dim = 8
        self.fc1, self.fc2 = nn.Linear(in_channels, 8), nn.Linear(8, num_classes)
        self.register_buffer("gate", torch.ones(8), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x).view(-1, self.hidden_dim) * self.gate
        return self.fc2(h)


GATED = "test_serialize_gated"


@pytest.fixture(scope="module")
def tiny_vit_registered() -> Iterator[str]:
    register_model(TINY_VIT, _tiny_vit)
    register_model(GATED, _Gated)
    try:
        yield TINY_VIT
    finally:  # other tests check that the registry holds only the zoo
        unregister_model(TINY_VIT)
        unregister_model(GATED)


# name -> (create kwargs, input shape)
CASES = {
    "resnet8": ({"num_classes": 10, "in_channels": 1}, (2, 1, 28, 28)),
    "mobilenet_v2": ({"num_classes": 10}, (2, 3, 64, 64)),
    TINY_VIT: ({"num_classes": 10}, (2, 3, 32, 32)),
}


@pytest.fixture(scope="module")
def pruned(tiny_vit_registered: str) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    out = {}
    for name, (kwargs, shape) in CASES.items():
        torch.manual_seed(0)
        model = create(name, **kwargs).eval()
        x = torch.randn(shape)
        ts.prune(model, x, {"ratio": 0.5})
        out[name] = (model, x)
    return out


def _plain_attributes(model: nn.Module) -> dict[tuple[str, str], object]:
    return {(n, k): v for n, m in model.named_modules() for k, v in serialize._plain_attributes(m)}


def test_round_trip_unpruned_model_is_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create("resnet8", num_classes=10, in_channels=1).eval()
    path = serialize.save(model, tmp_path / "m.pt")
    loaded = serialize.load(path).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded._torchslim_spec == model._torchslim_spec
    assert torch.load(path, weights_only=True)["attributes"] == {}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_pruned_model(name: str, pruned: dict, tmp_path: Path) -> None:
    model, x = pruned[name]
    fresh = create(name, **CASES[name][0])
    assert _plain_attributes(model) != _plain_attributes(fresh)  # pruning changed something
    loaded = serialize.load(serialize.save(model, tmp_path / "m.pt")).eval()
    torch.testing.assert_close(loaded(x), model(x))
    assert _plain_attributes(loaded) == _plain_attributes(model)
    for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert a.shape == b.shape and torch.equal(a, b), key
    for (key, a), b in zip(model.named_parameters(), loaded.parameters(), strict=True):
        assert type(a) is type(b) and a.requires_grad == b.requires_grad, key


def test_pruned_attributes_are_restored(pruned: dict, tmp_path: Path) -> None:
    resnet, _ = pruned["resnet8"]
    loaded = serialize.load(serialize.save(resnet, tmp_path / "r.pt"))
    conv = loaded.get_submodule("stem.0")
    assert conv.out_channels == resnet.get_submodule("stem.0").out_channels < 16
    assert conv.weight.shape[0] == conv.out_channels

    vit, _ = pruned[TINY_VIT]
    loaded = serialize.load(serialize.save(vit, tmp_path / "v.pt"))
    attn = loaded.encoder.layers[0].self_attention
    assert loaded.hidden_dim == vit.hidden_dim < 64
    assert attn.num_heads == vit.encoder.layers[0].self_attention.num_heads < 4
    assert attn.embed_dim == attn.kdim == attn.vdim == loaded.hidden_dim


def test_arbitrary_attributes_and_nonpersistent_buffers(
    tiny_vit_registered: str, tmp_path: Path
) -> None:
    model = create(GATED, num_classes=3, in_channels=4).eval()
    keep = torch.tensor([1, 4, 6])  # shrink by hand the way the pruner does
    with torch.no_grad():
        model.fc1.weight = nn.Parameter(model.fc1.weight[keep])
        model.fc1.bias = nn.Parameter(model.fc1.bias[keep])
        model.fc2.weight = nn.Parameter(model.fc2.weight[:, keep])
    model.gate = torch.tensor([0.5, 2.0, -1.0])
    model.hidden_dim = model.fc1.out_features = model.fc2.in_features = 3
    loaded = serialize.load(serialize.save(model, tmp_path / "g.pt")).eval()
    assert loaded.hidden_dim == 3 and loaded.fc2.in_features == 3
    assert torch.equal(loaded.gate, model.gate) and "gate" not in loaded.state_dict()
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded(x), model(x))


def test_file_holds_plain_data_only(pruned: dict, tmp_path: Path) -> None:
    model, _ = pruned["mobilenet_v2"]
    path = serialize.save(model, tmp_path / "m.pt", metadata={"top1": 0.5, "notes": ["a"]})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == serialize.FORMAT
    assert payload["spec"] == {
        "name": "mobilenet_v2",
        "num_classes": 10,
        "in_channels": 3,
        "kwargs": {},
    }
    assert serialize.load_metadata(path) == {"top1": 0.5, "notes": ["a"]}
    with zipfile.ZipFile(path) as zf:
        pickle = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    classes = {arg for op, arg, _ in pickletools.genops(pickle) if "GLOBAL" in op.name}
    assert classes <= {
        "collections OrderedDict", "torch._utils _rebuild_tensor_v2",
        "torch FloatStorage", "torch LongStorage",
    }, classes  # fmt: skip


def test_spec_argument_and_rng_untouched(tmp_path: Path) -> None:
    model = create("resnet8", num_classes=4)
    del model._torchslim_spec
    state = torch.get_rng_state()
    path = serialize.save(model, tmp_path / "m.pt", spec={"name": "resnet8", "num_classes": 4})
    loaded = serialize.load(path)
    assert torch.equal(torch.get_rng_state(), state)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_interrupted_write_keeps_previous_file(
    pruned: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = pruned["resnet8"]
    path = serialize.save(model, tmp_path / "m.pt")

    def broken_save(obj: object, f: object) -> None:
        f.write(b"half a file")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        serialize.save(create("resnet8", num_classes=10, in_channels=1), path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind
    torch.testing.assert_close(serialize.load(path).eval()(x), model(x))


def test_missing_garbage_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no model file"):
        serialize.load(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        serialize.load(garbage)
    plain = tmp_path / "state.pt"
    torch.save(create("resnet8").state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a torchslim model file"):
        serialize.load(plain)
    newer = tmp_path / "newer.pt"
    torch.save({"format": "torchslim.model/99"}, newer)
    with pytest.raises(CheckpointError, match=r"torchslim\.model/99"):
        serialize.load(newer)


def test_model_without_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="spec="):
        serialize.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="unknown key 'nmae'"):
        serialize.save(nn.Sequential(), tmp_path / "m.pt", spec={"nmae": "resnet8"})
    with pytest.raises(ConfigError, match="metadata"):
        serialize.save(create("resnet8"), tmp_path / "m.pt", metadata={"f": print})
    assert not (tmp_path / "m.pt").exists()


def _tamper(path: Path, edit: object) -> Path:
    payload = torch.load(path, weights_only=True)
    edit(payload)  # type: ignore[operator]
    # Consistent checksums: these tests are about the structure checks behind the CRC check.
    payload["checksums"] = checksums(payload)
    torch.save(payload, path)
    return path


def test_module_and_weight_mismatches_are_named(tmp_path: Path) -> None:
    model = create("resnet8", num_classes=10)
    path = serialize.save(model, tmp_path / "m.pt")
    _tamper(path, lambda p: p["modules"].update({"fc": "torch.nn.modules.conv.Conv2d"}))
    with pytest.raises(CheckpointError, match=r"module 'fc' is a torch\.nn\.modules\.conv\.Conv2d"):
        serialize.load(path)

    path = serialize.save(model, tmp_path / "m.pt")
    _tamper(path, lambda p: p["state_dict"].pop("fc.bias"))
    with pytest.raises(CheckpointError, match=r"missing keys \['fc\.bias'\]"):
        serialize.load(path)

    model.fc = nn.Sequential(nn.Linear(64, 10))
    with pytest.raises(CheckpointError, match="module 'fc'"):
        serialize.save(model, tmp_path / "m.pt")


def test_sparsity_masks_survive_save_and_load(tmp_path: Path) -> None:
    from torchslim.prune import make_permanent, sparsify

    model = ts.models.create("resnet8", num_classes=10, in_channels=1)
    sparsify(model, {"sparsity": 0.6})
    ts.save(model, tmp_path / "sparse.pt")
    loaded = ts.load(tmp_path / "sparse.pt")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
    with torch.no_grad():  # the masks are live again: pruned weights stay zero after updates
        for p in loaded.parameters():
            p.add_(1.0)
    make_permanent(loaded)
    zeros = sum(int((m.weight == 0).sum()) for m in loaded.modules() if isinstance(m, nn.Conv2d))
    total = sum(m.weight.numel() for m in loaded.modules() if isinstance(m, nn.Conv2d))
    assert zeros / total == pytest.approx(0.6, abs=0.01)


def test_quantized_model_is_refused_with_the_way_out(tmp_path: Path) -> None:
    model = create("resnet8", num_classes=10, in_channels=1).eval()
    x = torch.randn(4, 1, 28, 28)
    qmodel = ts.quantize(model, [x], {"weight_bits": 8, "act_bits": 8})
    path = tmp_path / "q.pt"
    spec = {"name": "resnet8", "num_classes": 10, "in_channels": 1}
    with pytest.raises(ConfigError, match=r"quantized .*ts\.export_onnx"):
        ts.save(qmodel, path, spec=spec)
    assert not path.exists()
    ts.save(model, path)  # the float model still saves
    assert path.exists()


def test_one_definition_of_quantized_for_saving_and_export(tmp_path: Path) -> None:
    from torchslim.export.onnx import is_quantized as export_says
    from torchslim.quant import binarize

    model = create("resnet8", num_classes=10, in_channels=1).eval()
    q = ts.quantize(model, [(torch.randn(2, 1, 28, 28),)], {"calib_batches": 1}, progress=False)
    assert export_says(q) and not export_says(model)
    with pytest.raises(ConfigError, match=r"the model is quantized \(module '.+' is a"):
        serialize.save(q, tmp_path / "q.pt")
    binary = binarize(create("resnet8", num_classes=10, in_channels=1))
    with pytest.raises((ConfigError, CheckpointError), match="Binary"):
        serialize.save(binary, tmp_path / "b.pt")  # replaced modules: not a rebuildable spec


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit", "test_efficientnet", "test_nfnet"])
def test_a_pruned_timm_model_round_trips_with_no_registration(arch: str, tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=5).eval()
    x = torch.randn(2, *model.pretrained_cfg["input_size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's own deprecation notices
        ts.prune(model, x, {"ratio": 0.5})
    assert ts.report(model).params_after < ts.report(model).params_before
    path = ts.save(model, tmp_path / "m.pt")
    loaded = ts.load(path).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    again = create(f"timm:{arch}", num_classes=3, in_channels=1)
    assert again._torchslim_spec["name"] == f"timm:{arch}"


@pytest.mark.parametrize(
    ("name", "options", "x"),
    [
        ("resnet18", {"num_classes": 5}, torch.randn(1, 3, 64, 64)),
        ("lraspp_mobilenet_v3_large", {"weights_backbone": None}, torch.randn(1, 3, 64, 64)),
        ("googlenet", {"aux_logits": False, "init_weights": False}, torch.randn(1, 3, 64, 64)),
    ],
)
def test_a_pruned_torchvision_model_built_directly_round_trips(
    name: str, options: dict, x: torch.Tensor, tmp_path: Path
) -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **options).eval()
    ts.prune(model, x, {"ratio": 0.5})  # recognises the builder before changing the shapes
    assert ts.report(model).params_after < ts.report(model).params_before
    loaded = ts.load(ts.save(model, tmp_path / "m.pt")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    unpruned = torchvision.models.get_model(name, weights=None, **options)
    ts.save(unpruned, tmp_path / "plain.pt")  # recognised at save time too
    assert type(ts.load(tmp_path / "plain.pt")) is type(unpruned)
    odd = torchvision.models.get_model(name, weights=None, **options)
    odd.extra = nn.Linear(2, 2)  # not what any builder makes: today's clear error
    with pytest.raises(ConfigError, match="cannot tell how to rebuild"):
        ts.save(odd, tmp_path / "odd.pt")
