from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.errors import ConfigError, InputError
from torchslim.inputs import describe_inputs, failing_module, run_forward


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.scale = nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale  # the product is an op of Block itself


def test_wrong_input_names_the_input_and_the_innermost_module() -> None:
    net = nn.Sequential(nn.Identity(), Block())
    with pytest.raises(InputError) as info:
        run_forward(net, (torch.zeros(2, 1, 7, 7),), "calib_data batch 3")
    msg = str(info.value)
    assert msg.startswith("the model does not run on calib_data batch 3 (shape (2, 1, 7, 7), ")
    assert "module '1.inner.0' (Conv2d) rejected it (RuntimeError: " in msg
    assert "\n" not in msg and isinstance(info.value.__cause__, RuntimeError)


def test_an_op_of_a_module_itself_names_that_module_and_the_root_is_named_as_such() -> None:
    net = nn.Sequential(Block())
    with pytest.raises(InputError, match=r"module '0' \(Block\) rejected it"):
        run_forward(net, (torch.zeros(1, 3, 5, 5),), "x")  # 3x3 map against 5 scales
    block = Block()
    with pytest.raises(InputError, match=r"teacher 0 does not .*the model's own forward \(Block\)"):
        run_forward(block, (torch.zeros(1, 3, 5, 5),), "x", who="teacher 0")
    assert failing_module(block, ValueError("raised outside")) is None


def test_success_returns_the_output_and_torchslim_errors_pass_through() -> None:
    net = nn.Linear(3, 2)
    assert run_forward(net, (torch.zeros(4, 3),), "x").shape == (4, 2)

    class Refuses(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ConfigError("own error")

    with pytest.raises(ConfigError, match="own error"):
        run_forward(Refuses(), (torch.zeros(1),), "x")


def test_describe_inputs_flattens_containers() -> None:
    text = describe_inputs(([torch.zeros(2, 3)], {"ids": torch.zeros(2, dtype=torch.long)}, 7))
    assert text == "shape (2, 3), torch.float32; shape (2,), torch.int64; int"
