"""The mixed-precision search space: one weight bit width per quantizable layer.

A candidate (bits per layer; 32 keeps a layer in float) is scored by post-training
quantization: ``ts.quantize`` with ``layer_bits`` set to it (and ``skip`` to the float layers),
calibrated on training images, evaluated on held-out training images. Its size is predicted
from the bits without quantizing anything: each quantized layer's weights at their bits,
everything else (biases, normalisations) at 4 bytes, against the float model's 4 bytes per
parameter; the ONNX export stores 2-4-bit layers as packed INT4 (``ts.export_onnx``), so the
file follows the prediction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchslim._tensors import Inputs
from torchslim.auto.config import FLOAT_BITS, activation_bits, quantizable_bits
from torchslim.auto.evaluate import held_out_score, output_sqnr
from torchslim.config import from_dict
from torchslim.errors import ConfigError
from torchslim.quant.config import QuantConfig
from torchslim.quant.ptq import quantize
from torchslim.train.evaluate import split_batch

if TYPE_CHECKING:
    from torchslim.auto.config import SearchConfig

ACT = "act:"  # the prefix of an activation-bits variable


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class BitSpace:
    """A model's quantizable layers (named as ``QuantConfig.layer_bits`` names them), their
    weight counts, and the bytes of any choice of per-layer weight bits.

    ``calib`` (training images) calibrates every candidate's activations (``calib_batches``
    batches of ``batch_size``); ``quant`` is the rest of the quantization config (activation
    bits, calibration, per-channel weights...). ``act_choices`` adds one variable per layer,
    ``act:<layer>``, its input activation bits (``QuantConfig.layer_act_bits``); empty: the
    config's ``act_bits`` everywhere. ``score`` is ``"accuracy"`` (top-1 %), ``"likelihood"``
    (%) or ``"sqnr"`` (dB of the outputs against the float model's).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 2))
        >>> data = TensorDataset(torch.randn(16, 1, 5, 5), torch.randint(0, 2, (16,)))
        >>> space = BitSpace(net, torch.randn(1, 1, 5, 5), data, choices=(4, 8))
        >>> space.names, space.sizes
        (['0', '3'], [72, 144])
        >>> round(space.bytes_ratio({"0": 4, "3": 8}), 3)
        0.243
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Inputs,
        calib: Dataset,
        *,
        choices: Sequence[int] = (4, 8),
        act_choices: Sequence[int] = (),
        score: str = "accuracy",
        quant: QuantConfig | Mapping[str, Any] | None = None,
        batch_size: int = 128,
        calib_batches: int = 4,
    ) -> None:
        self.model = model.eval()
        self.example_inputs = example_inputs
        self.choices = quantizable_bits(choices)
        self.score = score  # or "sqnr": outputs against the float model's, in dB
        self.act_choices = activation_bits(act_choices)
        self.quant = from_dict(QuantConfig, quant)
        loader = DataLoader(calib, batch_size=batch_size)
        self.calib = []
        for batch in loader:
            self.calib.append(batch if isinstance(batch, torch.Tensor) else split_batch(batch)[0])
            if len(self.calib) >= calib_batches:
                break
        base = quantize(model, self.calib, self.quant, progress=False, report=False)
        self.names = list(base.quant_state.layers)
        if not self.names:
            raise ConfigError(f"{type(model).__name__} has no quantizable layer to search")
        modules = dict(base.named_modules())
        self.sizes = [int(modules[n].weight.numel()) for n in self.names]
        self.other = _parameter_count(base) - sum(self.sizes)  # kept at 4 bytes each
        self.float_bytes = 4 * _parameter_count(model)

    def bytes(self, bits: Mapping[str, int]) -> float:
        """Predicted bytes of the weights at ``bits`` (a layer not named: the largest choice)."""
        top = self.choices[-1]
        quantized = sum(n * int(bits.get(name, top)) / 8
                        for name, n in zip(self.names, self.sizes, strict=True))  # fmt: skip
        return quantized + 4 * self.other

    def bytes_ratio(self, bits: Mapping[str, int]) -> float:
        """Predicted bytes over the float model's (4 bytes per parameter)."""
        return self.bytes(bits) / max(self.float_bytes, 1)

    def feasible(self, bits: Mapping[str, int], budget: float | None) -> bool:
        """Whether ``bits`` meet the bytes budget (a fraction; ``None``: no budget)."""
        return budget is None or self.bytes_ratio(bits) <= budget + 1e-9

    def uniform(self, budget: float | None) -> int:
        """The largest bit width that, for every layer, meets the budget (the search's first
        candidate); the smallest if none does."""
        for b in reversed(self.choices):
            if self.feasible(dict.fromkeys(self.names, b), budget):
                return b
        return self.choices[0]

    def quantized(self, bits: Mapping[str, int], model: nn.Module | None = None) -> nn.Module:
        """``model`` (default: this space's) quantized (PTQ, fake-quantized) with ``bits`` per
        layer; layers at 32 bits stay float (a copy of the model if all do)."""
        model = self.model if model is None else model
        floats = tuple(n for n in self.names if int(bits[n]) == FLOAT_BITS)
        if len(floats) == len(self.names):
            return copy.deepcopy(model)
        kept = [n for n in self.names if n not in floats]
        config = replace(self.quant, skip=(*self.quant.skip, *floats),
                         layer_bits={n: int(bits[n]) for n in kept},
                         layer_act_bits={n: int(bits[ACT + n]) for n in kept
                                         if ACT + n in bits})  # fmt: skip
        return quantize(model, self.calib, config, progress=False, report=False)

    # -- what ts.search asks of a space (PruneSpace and JointSpace answer the same) ---------
    def variables(self, cfg: SearchConfig) -> dict[str, list[int]]:
        """What each variable may take: a layer's weight bits (and its input's bits)."""
        acts = dict.fromkeys((ACT + n for n in self.names), self.act_choices)
        return {**dict.fromkeys(self.names, self.choices), **(acts if self.act_choices else {})}

    def by_size(self, cfg: SearchConfig) -> dict[str, list[int]]:
        """Each layer's weight bits from the most to the fewest (activation bits cost no
        bytes: not listed, so filling a candidate to the budget leaves them as they are)."""
        return dict.fromkeys(self.names, self.choices[::-1])

    def start(self, cfg: SearchConfig) -> dict[str, int]:
        """The first candidate: for every layer, the most weight bits that fit the budget
        (and the most activation bits)."""
        start = dict.fromkeys(self.names, self.uniform(cfg.fraction("bytes", self.float_bytes)))
        if self.act_choices:
            start.update(dict.fromkeys((ACT + n for n in self.names), self.act_choices[-1]))
        return start

    def meets(self, bits: Mapping[str, int], cfg: SearchConfig) -> bool:
        """Whether ``bits`` meet the config's bytes budget."""
        return self.feasible(bits, cfg.fraction("bytes", self.float_bytes))

    def measures(self, bits: Mapping[str, int]) -> dict[str, float]:
        """What a candidate costs, predicted (a trial's user attributes)."""
        return {"bytes_ratio": self.bytes_ratio(bits)}

    def evaluate(self, bits: Mapping[str, int], held_out: Dataset, bn_data: Dataset,
                 batch_size: int) -> float:  # fmt: skip
        """Top-1 accuracy or likelihood (percent) on ``held_out`` of the model quantized with
        ``bits`` (calibrated on this space's batches; ``bn_data`` is not used), or with
        ``score = "sqnr"`` the SQNR (dB) of its outputs against the float model's."""
        model = self.quantized(bits)
        if self.score == "sqnr":
            return output_sqnr(self.model, model, held_out, batch_size)
        return held_out_score(model, held_out, batch_size, self.score)

    def fields(self, bits: Mapping[str, int]) -> dict[str, Any]:
        """A candidate's search-result fields: weight (and activation) bits, bytes ratio."""
        chosen = {n: int(bits[n]) for n in self.names}
        fields: dict[str, Any] = {"bits": chosen, "bytes_ratio": self.bytes_ratio(chosen)}
        if self.act_choices:
            fields["act_bits"] = {n: int(bits[ACT + n]) for n in self.names}
        if self.score == "sqnr":
            fields["score_unit"] = "dB"
        return fields

    def outcome(self, bits: Mapping[str, int]) -> tuple[nn.Module, dict[str, Any]]:
        """The chosen candidate's model (quantized) and its search-result fields."""
        return self.quantized(bits), self.fields(bits)
