"""Per-layer quantization error: SQNR of each layer's output, and of the model output when only
that layer is quantized (which layer hurts), and what per-token input ranges would gain."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten
from tqdm.auto import tqdm

from torchslim._tensors import call_model, first_tensor, token_mask
from torchslim.quant.fake_quant import DynamicQuantize, set_quantizers
from torchslim.tables import text_table


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(|ref|² / |ref - test|²)`` in dB.

    Example:
        >>> round(sqnr_db(torch.tensor([1.0, 1.0]), torch.tensor([1.1, 0.9])), 2)
        20.0
    """
    return _db(*_energies(ref, test, None))


def output_tensor(out: Any) -> torch.Tensor:
    """The tensor a model's output is compared by: the first, depth first (a detector's list
    of dicts gives the first image's boxes; an output with no tensor, an empty tensor).

    Example:
        >>> output_tensor([{"boxes": torch.zeros(3, 4), "labels": torch.ones(3)}]).shape
        torch.Size([3, 4])
    """
    found = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    return found[0] if found else torch.empty(0)


def _db(signal: float, noise: float) -> float:
    return math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)


@dataclass
class LayerError:
    name: str
    sqnr_db: float  # the layer's output in the quantized model vs the float model
    isolated_db: float | None  # model output SQNR when only this layer is quantized
    in_float: bool = False


@dataclass
class QuantReport:
    """Per-layer SQNR table; ``str(report)`` prints it, ``most_harmful(k)`` ranks the layers."""

    layers: list[LayerError] = field(default_factory=list)
    model_sqnr_db: float = math.inf
    top1_agreement: float | None = None  # argmax agreement with the float model (classifiers)

    def most_harmful(self, k: int) -> list[str]:
        """The ``k`` quantized layers whose quantization alone costs the most output SQNR."""
        known = [e for e in self.layers if e.isolated_db is not None and not e.in_float]
        ranked = [e for e in known if not math.isnan(e.isolated_db)]
        ranked.sort(key=lambda e: e.isolated_db)
        return [e.name for e in ranked[:k]]

    def to_dict(self) -> dict[str, Any]:
        return {"model_sqnr_db": self.model_sqnr_db, "top1_agreement": self.top1_agreement,
                "layers": [vars(e) for e in self.layers]}  # fmt: skip

    def __str__(self) -> str:
        def db(v: float | None) -> str:
            if v is None or math.isnan(v):  # nan: outputs of data-dependent size (detections)
                return "-"
            return "inf" if math.isinf(v) else f"{v:.1f}"

        header = ("layer", "output SQNR dB", "alone: model SQNR dB", "")
        rows = [(e.name, db(e.sqnr_db), db(e.isolated_db), "(kept float)" if e.in_float else "")
                for e in self.layers]  # fmt: skip
        lines = text_table(header, rows, right={1, 2})
        agree = (
            "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.3f}"
        )
        lines.append(f"model output SQNR {db(self.model_sqnr_db)} dB{agree}")
        return "\n".join(lines)


def _outputs(
    model: nn.Module, names: Sequence[str], inputs: tuple
) -> tuple[dict, torch.Tensor, bool]:
    """The named layers' outputs, the model's output tensor, and whether the model returned
    a tensor (rows of logits, not a detector's boxes)."""
    got: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:

        def hook(_m: nn.Module, _a: tuple, out: Any, name: str = name) -> None:
            got[name] = first_tensor(out).detach().clone()  # later in-place ops

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        raw = call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return got, output_tensor(raw).detach(), isinstance(raw, torch.Tensor)


def _quantizers_of(qmodel: nn.Module, layer: str) -> list[nn.Module]:
    state = qmodel.quant_state
    module = qmodel.get_submodule(layer)
    mods = [module.weight_fake_quant]
    if layer in state.layer_input:
        mods.append(qmodel.get_submodule(state.layer_input[layer]))
    dynamic = module._modules.get("input_fake_quant")  # dynamic quantization: its own input
    if dynamic is not None:
        mods.append(dynamic)
    return mods


@torch.no_grad()
def layer_report(
    float_model: nn.Module,
    qmodel: nn.Module,
    batches: Sequence[tuple[torch.Tensor, ...]],
    isolated: bool = True,
    isolated_from: QuantReport | None = None,
    progress: bool = False,
) -> QuantReport:
    """Compare ``qmodel`` with ``float_model`` on ``batches`` (same layer names in both)."""
    state = qmodel.quant_state
    names = list(state.layers)
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    out_signal = out_noise = 0.0
    agree = total = 0
    for inputs in batches:
        ref, ref_out, logits = _outputs(float_model, names, inputs)
        got, out, _ = _outputs(qmodel, names, inputs)
        mask = token_mask(inputs)
        for n in names:
            s, e = _energies(ref[n], got[n], mask)
            signal[n] += s
            noise[n] += e
        if ref_out.shape != out.shape:  # a detector: as many boxes as each model keeps
            out_signal, out_noise = math.nan, math.nan
            continue
        s, e = _energies(ref_out, out, mask)
        out_signal += s
        out_noise += e
        if logits and ref_out.ndim == 2:
            agree += int((ref_out.argmax(1) == out.argmax(1)).sum())
            total += ref_out.shape[0]

    previous = {e.name: e.isolated_db for e in isolated_from.layers} if isolated_from else {}
    report = QuantReport(model_sqnr_db=_db(out_signal, out_noise),
                         top1_agreement=agree / total if total else None)  # fmt: skip
    alone = {}
    if isolated and batches:
        alone = _isolated(float_model, qmodel, names, batches[:1], progress)
    for n in names:
        report.layers.append(LayerError(n, _db(signal[n], noise[n]), alone.get(n)))
    for n in state.skipped:
        if n in previous:
            report.layers.append(LayerError(n, math.inf, previous[n], in_float=True))
    for e in report.layers:
        if e.isolated_db is None:
            e.isolated_db = previous.get(e.name)
    set_quantizers(qmodel, enabled=True)
    return report


def _energies(
    ref: torch.Tensor, test: torch.Tensor, mask: torch.Tensor | None
) -> tuple[float, float]:
    """``|ref|²`` and ``|ref - test|²``; with a ``[batch, seq]`` attention mask and outputs
    that start with those axes, over the real tokens only (padding's outputs are computed,
    never used)."""
    ref, test = ref.float(), test.float()
    if mask is not None and ref.dim() >= 2 and ref.shape[:2] == mask.shape:
        ref, test = ref[mask], test[mask]
    return float(ref.pow(2).sum()), float((ref - test).pow(2).sum())


def _output_sqnr(model: nn.Module, batches: Sequence[tuple], refs: Sequence[torch.Tensor]) -> float:
    """SQNR (dB) of ``model``'s output against ``refs`` over ``batches``; nan where the
    shapes differ (outputs of data-dependent size: no comparison)."""
    s = noise = 0.0
    for inputs, ref in zip(batches, refs, strict=True):
        out = output_tensor(call_model(model, inputs))
        if out.shape != ref.shape:
            return math.nan
        signal, error = _energies(ref, out, token_mask(inputs))
        s += signal
        noise += error
    return _db(s, noise)


def _isolated(float_model: nn.Module, qmodel: nn.Module, names: Sequence[str],
              batches: Sequence[tuple], progress: bool) -> dict[str, float]:  # fmt: skip
    refs = [output_tensor(call_model(float_model, inputs)) for inputs in batches]
    result = {}
    for n in tqdm(names, disable=not progress, desc="per-layer error", unit="layer"):
        set_quantizers(qmodel, enabled=False)
        for m in _quantizers_of(qmodel, n):
            m.enabled = True
        result[n] = _output_sqnr(qmodel, batches, refs)
    set_quantizers(qmodel, enabled=True)
    return result


@torch.no_grad()
def token_scale_gains(
    float_model: nn.Module,
    qmodel: nn.Module,
    batches: Sequence[tuple],
    progress: bool = False,
) -> dict[str, float]:
    """For each dynamically quantized Linear of ``qmodel`` not yet scaled per token: the
    model output SQNR (dB, against ``float_model`` on ``batches``) gained by dividing its
    input per token (``DynamicQuantize.per_token``), the rest of the model as it is.

    Example:
        >>> import torch, torchslim as ts
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
        >>> x = torch.randn(16, 8) * torch.logspace(-2, 2, 16)[:, None]  # rows of all sizes
        >>> q = ts.quantize(net, [x], {"dynamic": True, "embedding_bits": 0})
        >>> gains = token_scale_gains(net, q, [(x,)])
        >>> sorted(gains), min(gains.values()) > 0
        (['0', '2'], True)
    """
    refs = [output_tensor(call_model(float_model, inputs)) for inputs in batches]
    base = _output_sqnr(qmodel, batches, refs)
    quantizers = {n: qmodel.get_submodule(n)._modules.get("input_fake_quant")
                  for n in qmodel.quant_state.layers}  # fmt: skip
    names = [n for n, q in quantizers.items()
             if isinstance(q, DynamicQuantize) and not q.per_token]  # fmt: skip
    gains = {}
    for n in tqdm(names, disable=not progress, desc="per-token scaling", unit="layer"):
        quantizers[n].per_token = True
        try:
            gains[n] = _output_sqnr(qmodel, batches, refs) - base
        finally:
            quantizers[n].per_token = False
    return gains
