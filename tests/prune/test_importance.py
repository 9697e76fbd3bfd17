import pytest
import torch
import torchvision
from torch import nn

from torchslim.graph.trace import trace
from torchslim.prune.importance import get_importance
from torchslim.prune.pruner import build_groups


def _net() -> nn.Module:
    # A weight over the two-step-reduction size (64*128*3*3), BatchNorm vectors, and a Linear
    # after flatten (several positions per channel).
    return nn.Sequential(
        nn.Conv2d(3, 64, 3),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3),
        nn.BatchNorm2d(128),
        nn.Flatten(),
        nn.Linear(128 * 4, 10),
    )


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize(
    ("build", "size"),
    [(_net, 6), (lambda: torchvision.models.regnet_x_400mf(), 64)],  # RegNet: grouped convs
)
def test_norm_importance_is_the_sum_of_powered_slices(p, build, size) -> None:
    torch.manual_seed(0)
    model = build().eval()
    for module in model.modules():  # non-trivial norm scales and shifts
        if isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight)
            nn.init.normal_(module.bias)
    graph = trace(model, torch.randn(1, 3, size, size))
    groups = build_groups(graph, False)
    assert groups
    fn = get_importance({1: "l1", 2: "l2"}[p])
    for group in groups:
        expected = sum(m.slices().abs().pow(p).sum(1) for m in group.parameters())
        torch.testing.assert_close(fn(group), expected, rtol=1e-4, atol=1e-4)
