from __future__ import annotations

import contextlib
import sys
import weakref

import pytest
import torch
import torchvision
from torch import nn

import torchslim as ts
from torchslim.graph import trace

_trace_module = sys.modules["torchslim.graph.trace"]


class _Chain(nn.Module):
    """Many short-lived activations: freed ones' ids get reused by later tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(6))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for conv in self.convs:
            x = torch.relu(conv(x)) + x  # a residual chain: every conv's channels tied
        return self.head(x)


def test_trace_frees_activations_and_keeps_layouts_right() -> None:
    model = _Chain().eval()
    seen: list[weakref.ref] = []
    alive: list[int] = []  # at each conv's call, how many earlier conv outputs still exist

    def hook(_m: nn.Module, _a: object, out: torch.Tensor) -> None:
        alive.append(sum(ref() is not None for ref in seen))
        seen.append(weakref.ref(out))

    for conv in model.convs:
        conv.register_forward_hook(hook)
    graph = trace(model, torch.randn(1, 3, 16, 16))
    assert alive == [0] * 6  # the trace holds no activation the model has let go of
    # The residual chain ties the stem's channels to every conv's output (and input): one
    # group, found only if every freed activation's layouts were looked up right.
    assert len(graph.prunable()) == 1
    ts.prune(model, torch.randn(1, 3, 16, 16), {"ratio": 0.5})
    assert model.stem.out_channels == 4
    assert all((c.in_channels, c.out_channels) == (4, 4) for c in model.convs)


def _mixed_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 8, 3, groups=2),
        nn.BatchNorm2d(8, track_running_stats=False), nn.GELU(), nn.Conv2d(8, 6, 1),
        nn.Hardswish(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
        nn.BatchNorm1d(3), nn.Sigmoid(),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("build", "x"),
    [
        (_mixed_net, torch.randn(2, 3, 12, 12)),
        (_mixed_net, torch.randn(2, 3, 12, 12).contiguous(memory_format=torch.channels_last)),
        (torchvision.models.mobilenet_v3_small, torch.randn(1, 3, 64, 64)),
        (torchvision.models.regnet_y_400mf, torch.randn(1, 3, 64, 64)),
    ],
)
def test_module_shortcuts_leave_the_graph_as_the_op_by_op_trace(monkeypatch, build, x) -> None:
    model = build().eval()
    fast = trace(model, x)
    assert not any("forward" in vars(m) for m in model.modules())
    monkeypatch.setattr(_trace_module, "_module_shortcuts", lambda *_: contextlib.nullcontext())
    slow = trace(model, x)

    def groups(g: object) -> list:
        return sorted(sorted(g.members(a)) for a in g.prunable())

    assert groups(fast) == groups(slow) and groups(fast)
    assert fast.macs_after() == slow.macs_after()
    assert fast.stats_after() == slow.stats_after()


class _Branchy(nn.Module):
    """c1, then c2 or c3 by the sign of c1's output: control flow that depends on values.

    The shapes-only pass gives c1 an all-zero output, so ``a.sum() > 0`` is False there and
    ``a.sum() <= 0`` True; the example input below makes the real sum positive, so the real
    branch is the other one in both cases."""

    def __init__(self, take_c2_if_positive: bool, via_item: bool = False) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)
        self.c2 = nn.Conv2d(8, 4, 1)
        self.c3 = nn.Conv2d(8, 4, 3, padding=1)
        nn.init.constant_(self.c1.weight, 0.1)
        nn.init.zeros_(self.c1.bias)
        self.positive_to_c2 = take_c2_if_positive
        self.via_item = via_item

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.c1(x)
        total = a.sum().item() if self.via_item else a.sum()
        cond = total > 0 if self.positive_to_c2 else total <= 0
        return self.c2(a) if cond else self.c3(a)


_POSITIVE = torch.rand(1, 3, 8, 8) + 0.1  # c1's real output sums to > 0


@pytest.mark.parametrize("positive_to_c2", [True, False], ids=["real-c2", "real-c3"])
@pytest.mark.parametrize("via_item", [False, True], ids=["bool", "item"])
def test_data_dependent_branch_is_traced_on_real_values(
    positive_to_c2: bool, via_item: bool
) -> None:
    model = _Branchy(positive_to_c2, via_item)
    taken = "c2" if positive_to_c2 else "c3"
    with pytest.warns(UserWarning, match=r"branch.*example input"):
        graph = trace(model, _POSITIVE)
    op = "_local_scalar_dense"  # what bool(tensor) and .item() both come down to
    assert graph.data_dependent == [f"aten.{op} in the model's own forward (_Branchy)"]
    # The traced branch is the real one: its conv is coupled to c1, the other conv is not.
    assert f"{taken}.weight" in {n for a in graph.prunable() for n, _ in graph.members(a)}
    with pytest.warns(UserWarning, match=r"never reached.*" + ("c3" if positive_to_c2 else "c2")):
        ts.prune(model, _POSITIVE, {"ratio": 0.5})
    assert model.c1.out_channels == 4 and getattr(model, taken).in_channels == 4
    assert model(_POSITIVE).shape == (1, 4, 8, 8)


def test_ordinary_model_keeps_the_shapes_only_trace(recwarn: pytest.WarningsRecorder) -> None:
    graph = trace(_Chain(), torch.randn(1, 3, 8, 8))
    assert graph.data_dependent == [] and not recwarn.list


def test_data_dependent_pruning_is_checked_on_the_real_input() -> None:
    class Fragile(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 1)
            self.fc = nn.Linear(8, 4)
            nn.init.constant_(self.c1.weight, 0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.c1(x)
            if a.sum() > 0:  # the example input's branch; 8 is a constant of the code
                return self.fc(a.mean((2, 3)).reshape(-1, 8))
            return a.mean((1, 2, 3)).unsqueeze(1).repeat(1, 4)  # any channel count runs

    # Pruned, only the other branch still runs, and a shapes-only check would take it (its
    # all-zero c1 output): the check must run the real input, refuse and restore (strict), or
    # keep c1 whole (default).
    model = Fragile()
    with pytest.warns(UserWarning), pytest.raises(ts.PruningError, match="restored"):
        ts.prune(model, _POSITIVE, {"ratio": 0.5, "strict": True})
    assert model.c1.out_channels == 8 and model(_POSITIVE).shape == (1, 4)
    with pytest.warns(UserWarning, match="removed nothing"):
        ts.prune(model, _POSITIVE, {"ratio": 0.5})
    assert model.c1.out_channels == 8 and ts.report(model).repaired[0][0] == "c1"


def test_values_that_cannot_be_read_are_a_typed_error_naming_the_module() -> None:
    class Gate(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.mean().item() > 0 else -x

    model = nn.Sequential(nn.Linear(4, 8), Gate(), nn.Linear(8, 2)).to("meta")
    with pytest.raises(ts.UnsupportedOpError, match=r"module '1' \(Gate\).*real values"):
        trace(model, torch.randn(2, 4, device="meta"))


def test_wrong_input_names_the_input_and_the_module() -> None:
    from torchslim.errors import InputError

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with pytest.raises(InputError, match=r"\(1, 1, 16, 16\).*float32.*'0' \(Conv2d\).*3 channels"):
        ts.prune(model, torch.randn(1, 1, 16, 16), {"ratio": 0.5})
    with pytest.raises(InputError, match=r"'0' \(Conv2d\)"):
        trace(model, torch.randn(1, 1, 16, 16))


class _ByRule(nn.Module):
    """Ops with no handler of their own, covered by rule: in-place pointwise variants
    (``leaky_relu_``), ``rsub``, ``_safe_softmax``, ``im2col`` (``F.unfold``), ``unfold``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.b = nn.Linear(16 * 9, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = 1 - self.act(self.a(x))  # rsub
        y = torch.ops.aten._safe_softmax(y, 2)
        cols = nn.functional.unfold(y, 3, padding=1)  # (N, 16 * 9, L), channel-major
        z = self.b(cols.transpose(1, 2))  # (N, L, 8)
        z = z.unfold(1, 4, 4).mean((1, 3))  # windows along L
        return self.fc(z)


def test_ops_without_handlers_are_covered_by_rule() -> None:
    model, x = _ByRule(), torch.randn(2, 3, 6, 6)
    graph = trace(model, x, strict=True)  # no op of unknown behaviour
    assert not graph.unknown_ops
    ts.prune(model, x, {"ratio": 0.5, "strict": True})
    assert model.a.out_channels == 8 and model.b.in_features == 8 * 9
    assert model.b.out_features == 4 and model(x).shape == (2, 2)


def test_many_channel_spaces_are_all_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # The live spaces were once resolved as one layout: past MAX_SEGMENTS segments in all
    # (CoaT, GhostNetV3, RDNet have that many), the whole model was frozen and nothing pruned.
    from torchslim.graph import spaces

    monkeypatch.setattr(spaces, "MAX_SEGMENTS", 6)
    layers = [nn.Conv2d(3, 8, 1)] + [nn.Conv2d(8, 8, 1) for _ in range(9)]
    model = nn.Sequential(*(m for conv in layers for m in (conv, nn.ReLU())))
    graph = trace(model, torch.randn(1, 3, 4, 4))
    assert len(graph.prunable()) == 9  # every hidden layer; the last one reaches the output


def test_a_value_read_on_the_placeholders_branch_only_still_marks_the_graph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The shapes-only pass runs on placeholder values; a branch only they take may read values
    # that the real pass never reads (a trained detector whose example input leaves no box for
    # NMS to sort). The graph is still data-dependent (a detector's box count then varies with
    # the weights: pruning compares the output structure without it); it once failed with an
    # IndexError, then counted boxes and kept every group of a trained SSD whole.
    real_pass = _trace_module._trace_pass
    calls = []

    def first_stops_for_values(*args: object, **kwargs: object) -> object:
        calls.append(kwargs["real"])
        return "aten.nonzero in module 'post'" if not kwargs["real"] else real_pass(*args, **kwargs)

    monkeypatch.setattr(_trace_module, "_trace_pass", first_stops_for_values)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    with pytest.warns(UserWarning, match=r"aten\.nonzero in module 'post' reads tensor values"):
        graph = trace(model, torch.randn(2, 3, 4, 4))
    assert calls == [False, True] and graph.data_dependent == ["aten.nonzero in module 'post'"]
    assert graph.prunable()
