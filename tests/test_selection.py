"""The one module selector: globs, type names (subclasses included), ignore over targets,
and a selector that matches nothing is a ConfigError with a did-you-mean, in every method."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from torchslim.distill.hooks import FeatureHooks
from torchslim.errors import ConfigError
from torchslim.prune import prune, sparsify
from torchslim.quant import PQConfig, binarize, prepare_qat, product_quantize, quantize
from torchslim.quant.binary import binary_layers
from torchslim.selection import Selection, check_module_names, escape, matches


class QuantConv2d(nn.Conv2d):
    """A user's subclass: ``Conv2d`` should still select it."""


def net() -> nn.Module:
    block = nn.Sequential(OrderedDict(conv=nn.Conv2d(4, 4, 3, padding=1), relu=nn.ReLU()))
    return nn.Sequential(
        OrderedDict(
            stem=QuantConv2d(1, 4, 3, padding=1),
            layer1=block,
            layer2=nn.Sequential(OrderedDict(conv=nn.Conv2d(4, 4, 1))),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(4, 2),
        )
    )


def test_name_globs_select_modules_and_everything_inside_them() -> None:
    model = net()
    assert list(Selection(targets=("layer*",)).select(model)) == [
        "layer1", "layer1.conv", "layer1.relu", "layer2", "layer2.conv"
    ]  # fmt: skip
    assert list(Selection(targets=("layer1",)).select(model)) == [
        "layer1", "layer1.conv", "layer1.relu"
    ]  # fmt: skip
    assert list(Selection(targets=("*.conv",)).select(model)) == ["layer1.conv", "layer2.conv"]


def test_type_names_match_subclasses_and_dotted_paths() -> None:
    model = net()
    convs = ["stem", "layer1.conv", "layer2.conv"]
    assert list(Selection(targets=("Conv2d",)).select(model)) == convs  # QuantConv2d included
    assert list(Selection(targets=("torch.nn.Conv2d",)).select(model)) == convs
    assert list(Selection(targets=("torch.nn.modules.conv.Conv2d",)).select(model)) == convs
    assert list(Selection(targets=("QuantConv2d",)).select(model)) == ["stem"]
    assert not matches("fc", nn.Linear(1, 1), "torch.nn.Conv2d")


def test_ignore_beats_targets_and_empty_targets_mean_the_default() -> None:
    model = net()
    sel = Selection(targets=("Conv2d", "fc"), ignore=("layer1", "fc"))
    assert list(sel.select(model)) == ["stem", "layer2.conv"]
    linear_or_conv = lambda n, m: isinstance(m, (nn.Conv2d, nn.Linear))  # noqa: E731
    default = Selection(ignore=("stem",)).select(model, default=linear_or_conv)
    assert list(default) == ["layer1.conv", "layer2.conv", "fc"]


def test_a_single_string_is_one_pattern_and_empty_ones_are_refused() -> None:
    assert Selection(targets="fc").targets == ("fc",)
    with pytest.raises(ConfigError, match="non-empty strings"):
        Selection(ignore=("",))


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (Selection(targets=("layre1.*",)), r"targets: selector 'layre1\.\*' .*did you mean"),
        (Selection(ignore=("Conv1d",)), r"ignore: selector 'Conv1d' .*did you mean 'Conv2d'"),
        (Selection(ignore=("torch.nn.Conv1d",)), r"ignore: selector 'torch\.nn\.Conv1d'"),
    ],
)
def test_nothing_matched_is_a_config_error_with_did_you_mean(
    selection: Selection, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        selection.select(net())


def test_a_pattern_outside_the_candidates_is_an_error_too() -> None:
    convs = lambda n, m: isinstance(m, nn.Conv2d)  # noqa: E731
    with pytest.raises(ConfigError, match=r"matches no conv in .*'stem', 'layer1\.conv'"):
        Selection(ignore=("pool",)).select(net(), candidates=convs, what="conv")


def test_escape_matches_exactly_one_name() -> None:
    assert matches("blocks[0].conv*", nn.Identity(), escape("blocks[0].conv*"))
    assert not matches("blocks0.conv1", nn.Identity(), escape("blocks[0].conv*"))


def test_exact_names_for_hooks_name_the_close_match() -> None:
    with pytest.raises(ConfigError, match=r"no module 'layer3' \(did you mean 'layer2'\?\)"):
        check_module_names(net(), ["layer3"], "layers")
    with pytest.raises(ConfigError, match=r"did you mean 'layer2\.conv'"):
        FeatureHooks(net(), ["layer2.cnv"])


X = torch.randn(2, 1, 8, 8)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: prune(m, X, {"ratio": 0.5, "ignore": ["layer3"]}),
        lambda m: sparsify(m, {"ignore": ["layer3"]}),
        lambda m: quantize(m, [X], {"skip": ["layer3"]}, progress=False),
        lambda m: prepare_qat(m, {"skip": ["layer3"]}),
        lambda m: product_quantize(m, {"skip": ["layer3"]}, progress=False),
        lambda m: binarize(m, {"ignore": ["layer3"]}),
    ],
    ids=["prune", "sparsify", "quantize", "qat", "pq", "binary"],
)
def test_every_method_refuses_a_selector_matching_nothing(call) -> None:
    with pytest.raises(ConfigError, match=r"selector 'layer3' .*did you mean"):
        call(net())


def test_the_type_rule_is_the_same_in_every_method() -> None:
    # 'Conv2d' selects the QuantConv2d stem in each method, as it does in Selection
    model = sparsify(net(), {"targets": ["Conv2d"]})
    assert hasattr(model.stem, "parametrizations") and not hasattr(model.fc, "parametrizations")
    model = binarize(net(), {"keep_first_last": False, "targets": ["Conv2d"]})
    assert binary_layers(model) == ["layer1.conv", "layer2.conv"]  # binarize swaps plain types
    model = product_quantize(net(), PQConfig(subvector=1, codebook_size=2, min_rows=1,
                                             layers=("Conv2d",)), progress=False)  # fmt: skip
    assert [n for n, m in model.named_modules() if hasattr(m, "pq_codes")] == [
        "stem", "layer1.conv", "layer2.conv"
    ]  # fmt: skip
