"""Weight-only int4/int8 quantization of Linear layers, group-wise, for ONNX Runtime's
``com.microsoft::MatMulNBits``.

Each output row of a weight ``[N, K]`` is cut into groups of ``group_size`` input channels;
every group has its own scale and zero point (affine, unsigned codes ``0..2^bits - 1``, the
range always holding 0 — ONNX Runtime's default layout). Activations stay float; with
``accuracy_level=4`` ONNX Runtime quantizes each row of the input to int8 per group at run time
and multiplies in integers (the fast CPU path), which :class:`WeightOnlyLinear` reproduces.

The group math lives here once (:func:`group_qparams`, :func:`quantize_groups`,
:func:`dequantize_groups`) and serves the PyTorch forward, round-to-nearest, GPTQ
(:func:`gptq_quantize`) and the ONNX packing (:func:`pack_nbits`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from torchslim._tensors import is_hf_conv1d
from torchslim.errors import ConfigError, TorchslimError
from torchslim.quant.fake_quant import WeightQuantize
from torchslim.quant.observers import QuantSpec
from torchslim.quant.qmodules import onnx_none

log = logging.getLogger("torchslim.quant")

INT8_ACCURACY = 4  # MatMulNBits accuracy_level: int8 activations, int32 accumulation


def _grouped(w: torch.Tensor, group_size: int, pad: float = 0.0) -> torch.Tensor:
    """``w [N, K]`` as ``[N, groups, group_size]``, the last group padded with ``pad``."""
    n, k = w.shape
    groups = math.ceil(k / group_size)
    if groups * group_size != k:
        w = F.pad(w, (0, groups * group_size - k), value=pad)
    return w.reshape(n, groups, group_size)


def group_qparams(w: torch.Tensor, bits: int,
                  group_size: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Scale (float32) and zero point (uint8), each ``[N, groups]``, of the affine grid of
    every group of ``group_size`` input channels of ``w [N, K]``; the range holds 0.

    Example:
        >>> scale, zero = group_qparams(torch.tensor([[-1.0, 0.0, 2.0, 3.0]]), 4, 2)
        >>> scale.tolist(), zero.tolist()
        ([[0.06666667014360428, 0.20000000298023224]], [[15, 0]])
    """
    g = _grouped(w.detach().float(), group_size)
    lo, hi = g.amin(-1).clamp(max=0.0), g.amax(-1).clamp(min=0.0)
    qmax = 2**bits - 1
    scale = (hi - lo) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group
    zero = torch.clamp(torch.round(-lo / scale), 0, qmax)
    return scale, zero.to(torch.uint8)


def quantize_groups(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                    group_size: int) -> torch.Tensor:  # fmt: skip
    """The uint8 codes ``[N, K]`` of ``w`` on the grid of :func:`group_qparams` (round half to
    even, clipped to ``0..2^bits - 1``).

    Example:
        >>> w = torch.tensor([[-1.0, 0.0, 2.0, 3.0]])
        >>> quantize_groups(w, *group_qparams(w, 4, 2), 4, 2).tolist()
        [[0, 15, 10, 15]]
    """
    k = w.shape[1]
    g = _grouped(w.detach().float(), group_size)
    q = torch.round(g / scale.unsqueeze(-1)) + zero.unsqueeze(-1).float()
    return q.clamp(0, 2**bits - 1).reshape(w.shape[0], -1)[:, :k].to(torch.uint8)


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                      group_size: int) -> torch.Tensor:  # fmt: skip
    """``(codes - zero) * scale`` per group: the float weight ``[N, K]`` the codes stand for
    (what ``MatMulNBits`` multiplies by).

    Example:
        >>> w = torch.tensor([[-1.0, 0.0, 2.0, 3.0]])
        >>> scale, zero = group_qparams(w, 4, 2)
        >>> dequantize_groups(quantize_groups(w, scale, zero, 4, 2), scale, zero, 2)
        tensor([[-1.,  0.,  2.,  3.]])
    """
    k = codes.shape[1]
    g = _grouped(codes.float(), group_size)
    w = (g - zero.unsqueeze(-1).float()) * scale.unsqueeze(-1)
    return w.reshape(codes.shape[0], -1)[:, :k]


def int8_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """``x`` quantized to int8 and back, symmetric, one scale ``max|x| / 127`` per ``block``
    consecutive values of the last axis: what ``MatMulNBits`` with ``accuracy_level=4`` does to
    its input before its integer dot products.

    Example:
        >>> x = torch.tensor([[1.0, 0.003, -0.5, 0.25]])  # blocks [1.0, 0.003], [-0.5, 0.25]
        >>> [round(v, 4) for v in int8_blocks(x, 2)[0].tolist()]  # steps 1/127, 0.5/127
        [1.0, 0.0, -0.5, 0.252]
    """
    k = x.shape[-1]
    blocks = math.ceil(k / block)
    flat = F.pad(x.reshape(-1, k), (0, blocks * block - k)).reshape(-1, blocks, block)
    amax = flat.detach().abs().amax(-1, keepdim=True)
    inverse = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(flat * inverse).clamp(-127, 127)
    out = (q * (amax / 127.0)).reshape(-1, blocks * block)[:, :k]
    return out.reshape(x.shape)


# ---- the layer --------------------------------------------------------------------------------


class WeightOnlyQuantize(WeightQuantize):
    """The fixed group-wise grid of one weight: uint8 ``codes [N, K]``, ``scale`` and ``zero``
    ``[N, groups]``, set when the layer is quantized (round-to-nearest or GPTQ). Enabled, it
    returns the dequantized weight whatever it is given; disabled, the float weight.

    Example:
        >>> w = torch.randn(3, 8)
        >>> wq = WeightOnlyQuantize.round_to_nearest(w, bits=4, group_size=4)
        >>> (wq(w) - w).abs().max() < 0.5 * wq.scale.max()
        tensor(True)
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, *,
                 bits: int, group_size: int, accuracy_level: int = INT8_ACCURACY,
                 algorithm: str = "rtn") -> None:  # fmt: skip
        super().__init__(QuantSpec(bits=bits, mapping="affine", per_channel=True))
        self.group_size = group_size
        self.accuracy_level = accuracy_level
        self.algorithm = algorithm
        self.register_buffer("codes", codes.to(torch.uint8))
        self.register_buffer("scale", scale.to(torch.float32))
        self.register_buffer("zero", zero.to(torch.uint8))

    @classmethod
    def round_to_nearest(cls, w: torch.Tensor, *, bits: int, group_size: int,
                         accuracy_level: int = INT8_ACCURACY) -> WeightOnlyQuantize:  # fmt: skip
        """The grid of ``w [N, K]`` rounded to nearest (RTN)."""
        scale, zero = group_qparams(w, bits, group_size)
        codes = quantize_groups(w, scale, zero, bits, group_size)
        return cls(codes, scale, zero, bits=bits, group_size=group_size,
                   accuracy_level=accuracy_level, algorithm="rtn")  # fmt: skip

    @property
    def bits(self) -> int:
        return self.spec.bits

    def dequantized(self) -> torch.Tensor:
        return dequantize_groups(self.codes, self.scale, self.zero, self.group_size)

    def freeze(self, w: torch.Tensor) -> torch.Tensor:
        return self.dequantized().to(w.dtype)  # the grid is fixed already

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.dequantized().to(w.dtype) if self.enabled else w

    def extra_repr(self) -> str:
        return f"bits={self.bits}, group_size={self.group_size}, algorithm={self.algorithm}, " \
               f"accuracy_level={self.accuracy_level}"  # fmt: skip


class WeightOnlyLinear(nn.Linear):
    """A Linear whose weight is group-wise int4/int8 (``weight_fake_quant``, a
    :class:`WeightOnlyQuantize`) and whose input stays float; with ``accuracy_level=4`` the
    input is rounded to int8 per group as ONNX Runtime does. Exported as one
    ``com.microsoft::MatMulNBits`` node holding the packed codes (see :class:`MatMulNBits`).
    The ``weight`` parameter keeps the float weight (the layer computes float with its
    quantizer disabled)."""

    weight_fake_quant: WeightOnlyQuantize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wq = self.weight_fake_quant
        if not wq.enabled:
            return F.linear(x, self.weight, self.bias)
        form = self.__dict__.get("onnx_nbits")
        if form is not None and torch.onnx.is_in_onnx_export():
            return MatMulNBits.apply(x, *form, self.bias, self.in_features, wq.bits,
                                     wq.group_size, wq.accuracy_level)  # fmt: skip
        if wq.accuracy_level == INT8_ACCURACY:
            x = int8_blocks(x, wq.group_size)
        return F.linear(x, wq(self.weight), self.bias)


def is_weight_only_target(module: nn.Module) -> bool:
    """A plain ``nn.Linear`` or a Hugging Face ``Conv1D``: what weight-only quantization takes.

    Example:
        >>> is_weight_only_target(nn.Linear(2, 2)), is_weight_only_target(nn.Conv1d(2, 2, 1))
        (True, False)
    """
    return type(module) is nn.Linear or is_hf_conv1d(module)


def as_linear(module: nn.Module) -> nn.Linear:
    """``module`` itself if it is an ``nn.Linear``; a Hugging Face ``Conv1D`` becomes the
    ``nn.Linear`` computing the same (its weight transposed to ``[out, in]``, the same bias)."""
    if type(module) is nn.Linear:
        return module
    n_in, n_out = module.weight.shape
    linear = nn.Linear(n_in, n_out, bias=module.bias is not None,
                       device=module.weight.device, dtype=module.weight.dtype)  # fmt: skip
    with torch.no_grad():
        linear.weight.copy_(module.weight.t())
        if module.bias is not None:
            linear.bias.copy_(module.bias)
    return linear.train(module.training)


def to_weight_only(linear: nn.Linear, quantizer: WeightOnlyQuantize) -> WeightOnlyLinear:
    """Turn ``linear`` into a :class:`WeightOnlyLinear` in place with the grid ``quantizer``.

    Example:
        >>> layer = nn.Linear(32, 4)
        >>> wq = WeightOnlyQuantize.round_to_nearest(layer.weight, bits=4, group_size=16)
        >>> q = to_weight_only(layer, wq)
        >>> type(q).__name__, q(torch.randn(2, 32)).shape
        ('WeightOnlyLinear', torch.Size([2, 4]))
    """
    linear.__class__ = WeightOnlyLinear
    linear.weight_fake_quant = quantizer.to(linear.weight.device)
    return linear  # type: ignore[return-value]


# ---- GPTQ -------------------------------------------------------------------------------------


class Hessian:
    """Accumulates ``H = 2 X^T X / n`` of a Linear's inputs (rows of the last axis), as GPTQ
    needs it.

    Example:
        >>> h = Hessian(3)
        >>> h.add(torch.ones(4, 3))
        >>> h.value()[0].tolist()
        [2.0, 2.0, 2.0]
    """

    def __init__(self, features: int) -> None:
        self.sum = torch.zeros(features, features, dtype=torch.float64)
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
        self.sum += (x.t() @ x).to(self.sum.device, torch.float64)
        self.rows += x.shape[0]

    def value(self) -> torch.Tensor:
        return 2.0 * self.sum / max(self.rows, 1)


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``; the dampening grows
    tenfold (up to three times) while ``H`` is not positive definite."""
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    mean = float(torch.diag(h).mean())
    for attempt in range(4):
        factor, info = torch.linalg.cholesky_ex(h + damp * 10**attempt * mean * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
    raise ValueError("the input Hessian is not positive definite even with 1000x dampening")


@torch.no_grad()
def gptq_quantize(
    weight: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int, *,
    damp: float = 0.01, block: int = 128, act_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """GPTQ (Frantar et al., 2022) of ``weight [N, K]`` with the input Hessian ``H [K, K]``:
    the columns are quantized in order, and each one's rounding error, weighted by the upper
    Cholesky factor of ``H^-1``, is pushed onto the columns not yet quantized. A group's scale
    and zero point are computed from its (already updated) weights when its first column is
    reached. ``damp`` adds that fraction of ``H``'s mean diagonal to it; inputs that are always
    zero get their weights zeroed. ``act_order`` quantizes the columns in descending order of
    ``H``'s diagonal instead, each group's scale and zero point computed beforehand from the
    unquantized weights (the groups stay contiguous, as ``MatMulNBits`` needs). Returns
    ``(codes [N, K], scale, zero)``, as :func:`quantize_groups` and :func:`group_qparams` do.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> w = torch.randn(8, 64, generator=g)
        >>> x = torch.randn(256, 8, generator=g) @ torch.randn(8, 64, generator=g)  # correlated
        >>> h = 2 * x.t() @ x / 256
        >>> codes, scale, zero = gptq_quantize(w, h, 4, 32)
        >>> rtn = dequantize_groups(quantize_groups(w, *group_qparams(w, 4, 32), 4, 32),
        ...                         *group_qparams(w, 4, 32), 32)
        >>> gptq = dequantize_groups(codes, scale, zero, 32)
        >>> bool((x @ (gptq - w).t()).norm() < (x @ (rtn - w).t()).norm())
        True
        >>> ordered = dequantize_groups(*gptq_quantize(w, h, 4, 32, act_order=True), 32)
        >>> bool((x @ (ordered - w).t()).norm() < (x @ (rtn - w).t()).norm())
        True
    """
    w = weight.detach().to(torch.float32).clone()
    n, k = w.shape
    h = hessian.detach().to(torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    groups = math.ceil(k / group_size)
    codes = torch.zeros(n, k, dtype=torch.uint8)
    scale = torch.ones(n, groups)
    zero = torch.zeros(n, groups, dtype=torch.uint8)
    order = torch.arange(k)
    if act_order:  # the groups' qparams now, from the weights as they are
        fixed = group_qparams(w, bits, group_size)
        scale[:], zero[:] = fixed
        order = torch.argsort(torch.diag(h), descending=True, stable=True)
        w, h = w[:, order], h[order][:, order]
    upper = _inverse_cholesky(h, damp).to(torch.float32)
    block = max(block // group_size, 1) * group_size  # whole groups in every block
    s = z = None
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        errors = torch.zeros_like(w1)
        u1 = upper[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(order[i1 + i])  # the column's place in the weight
            if act_order:
                g = col // group_size
                s, z = scale[:, g : g + 1], zero[:, g : g + 1]
            elif col % group_size == 0:
                s, z = group_qparams(w1[:, i : i + group_size], bits, group_size)
                scale[:, col // group_size], zero[:, col // group_size] = s[:, 0], z[:, 0]
            column = w1[:, i : i + 1]
            q = quantize_groups(column, s, z, bits, group_size)
            codes[:, col] = q[:, 0]
            err = (column - dequantize_groups(q, s, z, group_size)) / u1[i, i]
            w1[:, i:] -= err @ u1[i : i + 1, i:]
            errors[:, i] = err[:, 0]
        w[:, i2:] -= errors @ upper[i1:i2, i2:]
    return codes, scale, zero


class _GroupDone(TorchslimError):
    """Raised by a hook to end a calibration forward once the layers measured have run."""


Run = Callable[[nn.Module, tuple[Any, ...], int], Any]  # (model, inputs, batch index) -> output


def gptq_layers(model: nn.Module, names: Sequence[str], bits: Mapping[str, int],
                batches: Sequence[tuple[Any, ...]], *, group_size: int, accuracy_level: int,
                run: Run, progress: bool = True, act_order: bool = False) -> None:  # fmt: skip
    """GPTQ of the ``nn.Linear`` layers ``names`` of ``model`` (made :class:`WeightOnlyLinear`
    in place), one after another in the order the forward runs them: each layer's Hessian is
    measured on its inputs in the model whose earlier layers are quantized already (so it
    corrects their error too). Layers that read the very same input tensor (an attention
    block's query, key and value) are measured in one pass; a pass stops once they have run.
    ``run(model, inputs, index)`` runs one calibration batch. A layer the forward never reaches
    is rounded to nearest (with a warning)."""
    pending = list(names)
    bar = tqdm(total=len(pending), disable=not progress, desc="gptq", unit="layer")
    try:
        while pending:
            hessians: dict[str, torch.Tensor | None] = {}
            hessians.update(_next_hessians(model, pending, batches, run))
            if not hessians:
                log.warning("gptq: %s never ran on calib_data; rounded to nearest",
                            ", ".join(pending))  # fmt: skip
                hessians = dict.fromkeys(pending)
            for name, hessian in hessians.items():
                layer = model.get_submodule(name)
                options = {"bits": bits[name], "group_size": group_size,
                           "accuracy_level": accuracy_level}  # fmt: skip
                if hessian is None:
                    wq = WeightOnlyQuantize.round_to_nearest(layer.weight, **options)
                else:
                    try:
                        grid = gptq_quantize(layer.weight.cpu(), hessian, bits[name],
                                             group_size, act_order=act_order)  # fmt: skip
                    except ValueError as exc:
                        raise ConfigError(f"gptq: layer {name!r}: {exc}") from exc
                    wq = WeightOnlyQuantize(*grid, **options, algorithm="gptq")
                to_weight_only(layer, wq)
                pending.remove(name)
                bar.update(1)
    finally:
        bar.close()


@torch.no_grad()
def _next_hessians(model: nn.Module, pending: Sequence[str], batches: Sequence[tuple[Any, ...]],
                   run: Run) -> dict[str, torch.Tensor]:  # fmt: skip
    """The input Hessians of the first of ``pending`` that the forward runs and of the pending
    layers reading the same input tensor, over ``batches`` (empty if none of them runs)."""
    group: dict[str, Hessian] = {}
    first: list[torch.Tensor] = []  # the input of the first pending layer called
    calls: dict[str, int] = {}
    seen: set[str] = set()
    measuring = [False]  # batch 0 decides the group; later batches end once it has run

    def hook(name: str) -> Callable[[nn.Module, tuple], None]:
        def record(_mod: nn.Module, args: tuple) -> None:
            x = args[0]
            if not measuring[0]:
                if not first:
                    first.append(x)
                if x is first[0] or name in group:
                    group.setdefault(name, Hessian(x.shape[-1])).add(x)
                    calls[name] = calls.get(name, 0) + 1
                return
            if name in group:
                group[name].add(x)
                seen.add(name)
                if len(seen) == len(group) and all(c == 1 for c in calls.values()):
                    raise _GroupDone("gptq: the layers measured have run")

        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in pending]
    try:
        for i, inputs in enumerate(batches):
            seen.clear()
            with contextlib.suppress(_GroupDone):
                run(model, inputs, i)
            measuring[0] = True
    finally:
        for h in handles:
            h.remove()
    return {name: h.value() for name, h in group.items()}


# ---- ONNX -------------------------------------------------------------------------------------


def pack_nbits(codes: torch.Tensor, bits: int, group_size: int,
               pad: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Codes ``[N, K]`` as ``MatMulNBits``' input B: uint8 ``[N, groups, group_size * bits /
    8]``, two 4-bit codes per byte, the first in the low nibble. The last group is padded with
    ``pad`` (``[N, groups]``, the zero points, so the padding stands for 0).

    Example:
        >>> pack_nbits(torch.tensor([[1, 2, 3, 4]], dtype=torch.uint8), 4, 4).tolist()
        [[[33, 67]]]
    """
    n, k = codes.shape
    groups = math.ceil(k / group_size)
    if groups * group_size != k:
        fill = torch.zeros(n, 1, dtype=torch.uint8) if pad is None else pad[:, -1:]
        codes = torch.cat([codes, fill.expand(n, groups * group_size - k)], 1)
    codes = codes.to(torch.uint8).reshape(n, groups, group_size)
    if bits == 8:
        return codes.contiguous()
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).contiguous()


def pack_zero_points(zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Zero points ``[N, groups]`` as ``MatMulNBits`` takes them: uint8, flat; at 4 bits two
    per byte (low nibble first), each row padded to whole bytes.

    Example:
        >>> pack_zero_points(torch.tensor([[1, 2, 3]], dtype=torch.uint8), 4).tolist()
        [33, 3]
    """
    zero = zero.to(torch.uint8)
    if bits == 8:
        return zero.reshape(-1).contiguous()
    if zero.shape[1] % 2:
        zero = torch.cat([zero, torch.zeros(zero.shape[0], 1, dtype=torch.uint8)], 1)
    return (zero[:, 0::2] | (zero[:, 1::2] << 4)).reshape(-1).contiguous()


def unpack_nbits(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_nbits`: the codes ``[N, K]``.

    Example:
        >>> codes = torch.randint(0, 16, (3, 40), dtype=torch.uint8)
        >>> torch.equal(unpack_nbits(pack_nbits(codes, 4, 16), 4, 40), codes)
        True
    """
    n = packed.shape[0]
    if bits == 8:
        return packed.reshape(n, -1)[:, :k]
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], -1).reshape(n, -1)[:, :k]


def onnx_nbits_weight(layer: WeightOnlyLinear) -> tuple[torch.Tensor, torch.Tensor,
                                                        torch.Tensor]:  # fmt: skip
    """``(B, scales, zero_points)`` of a :class:`WeightOnlyLinear` for :class:`MatMulNBits`,
    made outside the export's trace so they are constants of the file.

    Example:
        >>> layer = nn.Linear(40, 3)
        >>> q = to_weight_only(layer, WeightOnlyQuantize.round_to_nearest(
        ...     layer.weight, bits=4, group_size=16))
        >>> [tuple(t.shape) for t in onnx_nbits_weight(q)]
        [(3, 3, 8), (9,), (6,)]
    """
    wq = layer.weight_fake_quant
    zero = wq.zero.detach().cpu()
    packed = pack_nbits(wq.codes.detach().cpu(), wq.bits, wq.group_size, pad=zero)
    return packed, wq.scale.detach().cpu().reshape(-1).contiguous(), pack_zero_points(zero, wq.bits)


class MatMulNBits(torch.autograd.Function):
    """ONNX form of a :class:`WeightOnlyLinear`: one ``com.microsoft::MatMulNBits`` node
    (inputs A, B, scales, zero_points, the bias as input 5; attributes K, N, bits, block_size,
    accuracy_level). ``forward`` computes the same from the packed tensors for the exporter's
    trace."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor,
                zeros: torch.Tensor, bias: torch.Tensor | None, k: int, bits: int,
                group_size: int, accuracy_level: int) -> torch.Tensor:  # fmt: skip
        n, groups = packed.shape[0], packed.shape[1]
        zero = unpack_nbits(zeros.reshape(n, -1), bits, groups).reshape(n, groups)
        w = dequantize_groups(unpack_nbits(packed, bits, k), scales.reshape(n, groups), zero,
                              group_size)  # fmt: skip
        if accuracy_level == INT8_ACCURACY:
            x = int8_blocks(x, group_size)
        return F.linear(x, w.to(x.dtype), bias)

    @staticmethod
    def symbolic(g: Any, x: Any, packed: Any, scales: Any, zeros: Any, bias: Any, k: int,
                 bits: int, group_size: int, accuracy_level: int) -> Any:  # fmt: skip
        from torch.onnx.symbolic_helper import _optional_input_placeholder_tensor

        inputs = [x, packed, scales, zeros]
        if not onnx_none(bias):  # input 4 (g_idx, deprecated) left empty
            inputs += [_optional_input_placeholder_tensor(g), bias]
        n = packed.type().sizes()[0]
        attrs = {"K_i": k, "N_i": n, "bits_i": bits, "block_size_i": group_size}
        if accuracy_level:
            attrs["accuracy_level_i"] = accuracy_level
        out = g.op("com.microsoft::MatMulNBits", *inputs, **attrs)
        sizes = x.type().varyingSizes() if x.type().dim() is not None else None
        if sizes is not None:
            out.setType(x.type().with_sizes([*sizes[:-1], n]))
        return out


__all__ = [
    "Hessian",
    "MatMulNBits",
    "WeightOnlyLinear",
    "WeightOnlyQuantize",
    "as_linear",
    "dequantize_groups",
    "gptq_layers",
    "gptq_quantize",
    "group_qparams",
    "int8_blocks",
    "is_weight_only_target",
    "onnx_nbits_weight",
    "pack_nbits",
    "pack_zero_points",
    "quantize_groups",
    "to_weight_only",
    "unpack_nbits",
]
