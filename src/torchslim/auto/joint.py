"""The joint search space: per-group pruning ratios and per-layer weight bits at once.

A candidate is pruned (its ratios), its BatchNorm statistics re-estimated on the calibration
batches, then quantized (its bits) by post-training quantization calibrated on the same
batches, and scored on held-out training images. Its MACs,
parameters and latency come from the pruning space; its bytes from each quantized layer's
weights *after* pruning at its bits, every other parameter at 4 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.utils.data import Dataset

from torchslim.auto.bits import ACT, BitSpace
from torchslim.auto.evaluate import held_out_score, recalibrate_batchnorm
from torchslim.auto.space import PruneSpace

if TYPE_CHECKING:
    from torchslim.auto.config import SearchConfig

RATIO, BITS = "ratio:", "bits:"  # the prefixes of the two kinds of variable


class JointSpace:
    """A :class:`PruneSpace` and a :class:`BitSpace` of one model searched together: variables
    ``ratio:<group>`` and ``bits:<layer>``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 2))
        >>> x, data = torch.randn(1, 1, 5, 5), TensorDataset(torch.randn(8, 1, 5, 5),
        ...                                                  torch.randint(0, 2, (8,)))
        >>> space = JointSpace(PruneSpace(net, x), BitSpace(net, x, data))
        >>> space.names
        ['ratio:0', 'bits:0', 'bits:3']
        >>> round(space.bytes_ratio({"ratio:0": 0.5, "bits:0": 8, "bits:3": 8}), 3)
        0.146
    """

    def __init__(self, prune: PruneSpace, bits: BitSpace) -> None:
        self.prune, self.bits = prune, bits
        self.names = [RATIO + n for n in prune.variable_names] + [BITS + n for n in bits.names]

    def split(self, params: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
        """(the pruning space's variables, the bits space's variables) of a candidate."""
        ratios = {n: float(params[RATIO + n]) for n in self.prune.variable_names}
        bits = {k.removeprefix(BITS): int(v) for k, v in params.items() if k.startswith(BITS)}
        return ratios, bits

    def bytes(self, params: Mapping[str, Any]) -> float:
        """Predicted bytes: each quantized layer's weights once pruned, at their bits; every
        other parameter of the pruned model at 4 bytes."""
        ratios, bits = self.split(params)
        sizes = self.prune.tensor_sizes(self.prune.expand(ratios))
        total = quantized = 0.0
        for name, full in zip(self.bits.names, self.bits.sizes, strict=True):
            n = sizes.get(f"{name}.weight", full)  # a layer the trace does not name: unpruned
            quantized += n
            total += n * bits[name] / 8
        return total + 4 * max(sum(sizes.values()) - quantized, 0.0)

    def bytes_ratio(self, params: Mapping[str, Any]) -> float:
        """Predicted bytes over the float model's (4 bytes per parameter)."""
        return self.bytes(params) / max(self.bits.float_bytes, 1)

    # -- what ts.search asks of a space (PruneSpace and BitSpace answer the same) -----------
    def variables(self, cfg: SearchConfig) -> dict[str, list[Any]]:
        """What each variable may take: ratios on the grid, bits from ``weight_bits``."""
        ratios = {RATIO + n: v for n, v in self.prune.variables(cfg).items()}
        return {**ratios, **{BITS + n: v for n, v in self.bits.variables(cfg).items()}}

    def by_size(self, cfg: SearchConfig) -> dict[str, list[Any]]:
        """Each variable's choices from the largest model to the smallest: the pruning
        space's ratios, then the bits space's weight bits."""
        ratios = {RATIO + n: v for n, v in self.prune.by_size(cfg).items()}
        return {**ratios, **{BITS + n: v for n, v in self.bits.by_size(cfg).items()}}

    def start(self, cfg: SearchConfig) -> dict[str, Any]:
        """The first candidate: the pruning space's first ratios, then the most bits for
        every layer that fit the bytes budget with them (the fewest if none do)."""
        ratios = {RATIO + n: r for n, r in self.prune.start(cfg).items()}
        acts = {BITS + k: v for k, v in self.bits.start(cfg).items() if k.startswith(ACT)}
        candidate: dict[str, Any] = {}
        for b in reversed(self.bits.choices):
            candidate = {**ratios, **{BITS + n: b for n in self.bits.names}, **acts}
            if self._bytes_ok(candidate, cfg):
                break
        return candidate

    def _bytes_ok(self, params: Mapping[str, Any], cfg: SearchConfig) -> bool:
        budget = cfg.fraction("bytes", self.bits.float_bytes)
        return budget is None or self.bytes_ratio(params) <= budget + 1e-9

    def meets(self, params: Mapping[str, Any], cfg: SearchConfig) -> bool:
        """Whether a candidate meets the config's MACs / parameter / latency and bytes budgets."""
        return self._bytes_ok(params, cfg) and self.prune.meets(self.split(params)[0], cfg)

    def measures(self, params: Mapping[str, Any]) -> dict[str, float]:
        """What a candidate costs, predicted (a trial's user attributes)."""
        found = self.prune.measures(self.split(params)[0])
        return {**found, "bytes_ratio": self.bytes_ratio(params)}

    def model(self, params: Mapping[str, Any]) -> nn.Module:
        """The candidate's model: pruned, BatchNorm re-estimated, quantized (both on the
        bits space's calibration batches)."""
        ratios, bits = self.split(params)
        pruned = recalibrate_batchnorm(self.prune.pruned(self.prune.expand(ratios)),
                                       self.bits.calib)  # fmt: skip
        return self.bits.quantized(bits, pruned)

    def evaluate(self, params: Mapping[str, Any], held_out: Dataset, bn_data: Dataset,
                 batch_size: int) -> float:  # fmt: skip
        """Top-1 accuracy or likelihood (percent, the bits space's ``score``) on ``held_out``
        of the candidate's model (``bn_data`` is not used: the calibration batches come from
        it)."""
        return held_out_score(self.model(params), held_out, batch_size, self.bits.score)

    def outcome(self, params: Mapping[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        """The chosen candidate's model (pruned and quantized) and its search-result fields."""
        ratios, bits = self.split(params)
        fields = {**self.prune.fields(ratios), **self.bits.fields(bits),
                  "bytes_ratio": self.bytes_ratio(params)}  # fmt: skip
        return self.model(params), fields
