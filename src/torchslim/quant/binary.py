"""Binary networks: sign weights (and optionally sign activations) trained with the STE.

``ts.quant.binarize(model, config)`` swaps Conv/Linear layers for binary ones, keeping the first
and last layer at full precision by default. Weights are ``sign(W)`` (deterministic) or
``+1`` with probability ``hard_sigmoid(W)`` (stochastic, training only; BinaryConnect); with
``scaling="xnor"`` each output channel is scaled by ``mean|W|`` (XNOR-Net). Gradients pass
with the clipped straight-through estimator (zero where ``|W| > 1``).

Design guidance from the binary-network literature this follows:

* keep the first and last layer in higher precision — they are small and the most sensitive;
* avoid binarizing 1x1 convolutions (they carry little redundancy; ``skip_pointwise=True``);
* when accuracy falls short, widen the network (more channels) together with raising the
  activation precision rather than either alone;
* use BatchNorm after every binary layer and a smaller learning rate than for float training;
* with binary activations, put BatchNorm + hardtanh (not ReLU) before each binary layer: the
  sign of a ReLU output is always +1.

``binary_size(model)`` and ``save_packed(model, path)`` report and write the real compressed
size: binary weights packed 8 per byte, everything else float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.config import from_dict
from torchslim.errors import ConfigError
from torchslim.quant.arrays import save_arrays
from torchslim.quant.config import BinaryConfig as BinaryConfig
from torchslim.quant.config import BinaryScaling as BinaryScaling


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)  # clipped straight-through


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` in {-1, +1} forward; gradient 1 where ``|x| <= 1``, else 0.

    Example:
        >>> x = torch.tensor([-2.0, -0.5, 0.0, 3.0], requires_grad=True)
        >>> y = sign_ste(x); y.sum().backward()
        >>> y.tolist(), x.grad.tolist()
        ([-1.0, -1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0])
    """
    return _SignSTE.apply(x)


class _Binary:
    binary: BinaryConfig
    weight: nn.Parameter
    training: bool

    def binary_weight(self) -> torch.Tensor:
        w = self.weight
        if self.binary.stochastic and self.training:
            p = ((w + 1) / 2).clamp(0, 1)  # hard sigmoid
            target = torch.where(torch.rand_like(w) < p, 1.0, -1.0)
            clipped = w.clamp(-1, 1)  # gradient 1 inside [-1, 1], 0 outside, as sign_ste
            b = clipped + (target - clipped).detach()
        else:
            b = sign_ste(w)
        if self.binary.scaling is BinaryScaling.XNOR:
            alpha = w.detach().abs().flatten(1).mean(1).reshape(-1, *([1] * (w.ndim - 1)))
            b = b * alpha
        return b

    def binary_input(self, x: torch.Tensor) -> torch.Tensor:
        return sign_ste(x) if self.binary.binary_activations else x


class BinaryConv2d(_Binary, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.binary_input(x), self.binary_weight(), self.bias)


class BinaryLinear(_Binary, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.binary_input(x), self.binary_weight(), self.bias)


_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: BinaryConv2d,
    nn.Linear: BinaryLinear,
}


def binarize(model: nn.Module, config: BinaryConfig | Mapping[str, Any] | None = None) -> nn.Module:
    """Swap Conv2d/Linear layers of ``model`` (in place) for binary ones; returns the model.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3),
        ...                     nn.Flatten(), nn.Linear(64, 2))
        >>> binarize(net)[2].__class__.__name__
        'BinaryConv2d'
    """
    cfg = from_dict(BinaryConfig, config)
    chosen = cfg.selection.select(
        model, candidates=lambda _, m: type(m) in _CLASSES, what="plain Conv2d or Linear layer"
    )
    layers = [(n, m) for n, m in model.named_modules() if type(m) in _CLASSES]
    if cfg.keep_first_last:
        layers = layers[1:-1]
    if cfg.skip_pointwise:
        layers = [(n, m) for n, m in layers
                  if not (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))]  # fmt: skip
    layers = [(n, m) for n, m in layers if n in chosen]
    if not layers:
        raise ConfigError("binarize: no Conv2d/Linear left to binarize (first/last are kept; "
                          "check targets/ignore)")  # fmt: skip
    for _, m in layers:
        m.__class__ = _CLASSES[type(m)]
        m.binary = cfg
    return model


def binary_layers(model: nn.Module) -> list[str]:
    """Names of the binary layers of ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, _Binary)]


def _packed_state(model: nn.Module) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    binary = {n: m for n, m in model.named_modules() if isinstance(m, _Binary)}
    for name, tensor in model.state_dict().items():
        owner, _, attr = name.rpartition(".")
        if owner in binary and attr == "weight":
            w = tensor.detach()
            state[f"{name}.bits"] = np.packbits((w >= 0).flatten().numpy())
            if binary[owner].binary.scaling is BinaryScaling.XNOR:
                state[f"{name}.alpha"] = w.abs().flatten(1).mean(1).numpy().astype(np.float32)
        else:
            state[name] = tensor.detach().cpu().numpy()
    return state


def save_packed(model: nn.Module, path: str | Path) -> int:
    """Write the deployable weights (binary ones 8 per byte) to a zip file; returns its bytes.

    Example:
        >>> import tempfile
        >>> net = binarize(nn.Sequential(nn.Linear(8, 64), nn.Linear(64, 64), nn.Linear(64, 2)))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_packed(net, f"{d}/b.zip") < 4 * sum(p.numel() for p in net.parameters())
        True
    """
    return save_arrays(_packed_state(model), path)


def binary_size(model: nn.Module) -> dict[str, int]:
    """Raw bytes of the deployable weights: binary bits + scales, and float32 for the rest."""
    raw = sum(a.nbytes for a in _packed_state(model).values())
    dense = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    return {"packed_bytes": raw, "float32_bytes": dense}


def export_binary_as_float(model: nn.Module) -> nn.Module:
    """Bake the (scaled) binary weights into plain float layers, e.g. for ONNX export."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _Binary) and not m.binary.binary_activations:
                was = m.training
                m.eval()
                m.weight.copy_(m.binary_weight())
                m.train(was)
                m.__class__ = nn.Conv2d if isinstance(m, nn.Conv2d) else nn.Linear
    return model


__all__ = [
    "BinaryConfig",
    "BinaryScaling",
    "binarize",
    "binary_layers",
    "binary_size",
    "save_packed",
    "sign_ste",
]
