"""Quantization-aware training: ``ts.prepare_qat(model, config)`` -> train -> ``ts.convert``.

Weights and activations are fake-quantized in the forward pass and gradients pass with the
straight-through estimator. Quantizers:

* ``ste``: ranges from moving-average min/max (activations) and from the weights themselves;
* ``lsq``: learned step sizes (Esser et al. 2020), per output channel for weights;
* ``pact`` (activations): a learned clipping level α (Choi et al. 2018) after each ReLU, and
  the two-sided variant (clip to ``[-α, α]``) on tensors that are not ReLU outputs.

BatchNorm is folded into the convolutions first (with the statistics of the trained model), so
the trained weights are the ones that are exported. ``ts.convert`` turns every learned grid
into a fixed one; the result exports with ``ts.export_onnx``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import fx, nn

from torchslim import reports
from torchslim.config import from_dict
from torchslim.errors import ConfigError
from torchslim.quant.checks import check_weights, nonfinite_error, nonfinite_quantizers
from torchslim.quant.config import ActQuantizer as ActQuantizer
from torchslim.quant.config import QATConfig as QATConfig
from torchslim.quant.config import WeightQuantizer as WeightQuantizer
from torchslim.quant.fake_quant import (
    PACT,
    FakeQuantize,
    FixedQuantize,
    LSQQuantize,
    WeightQuantize,
    set_quantizers,
)
from torchslim.quant.fold import fold_batchnorm
from torchslim.quant.observers import Mapping as RangeMapping
from torchslim.quant.observers import QuantSpec
from torchslim.quant.placement import (
    drop_identities,
    edge_inputs,
    insert_quantizers,
    is_relu,
    layer_readers,
    plan,
    trace_for_quant,
)
from torchslim.quant.ptq import (
    QuantState,
    calib_forward,
    calib_inputs,
    check_layer_bits,
    skipped_layers,
)
from torchslim.quant.qmodules import to_quantized


def _act_module(cfg: QATConfig, after_relu: bool, bits: int) -> nn.Module:
    if cfg.act_quantizer is ActQuantizer.PACT:
        return PACT(bits=bits, alpha=cfg.pact_alpha or 1.0, two_sided=not after_relu)
    if cfg.act_quantizer is ActQuantizer.LSQ:
        mapping = RangeMapping.AFFINE if after_relu else RangeMapping.SYMMETRIC  # [0, 2^b-1]
        return LSQQuantize(QuantSpec(bits=bits, mapping=mapping))
    spec = QuantSpec(bits=bits, mapping=cfg.act_mapping, averaging=cfg.ema)
    return _TrainingFakeQuantize(spec)


class _TrainingFakeQuantize(FakeQuantize):
    """Observes while training (moving-average ranges), fixed while evaluating."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing != self.training:
            self.observing = self.training
        return super().forward(x)


def prepare_qat(
    model: nn.Module,
    config: QATConfig | Mapping[str, Any] | None = None,
    calib_data: Iterable[Any] | None = None,
) -> fx.GraphModule:
    """A copy of ``model`` with trainable fake quantizers, ready for the torchslim Trainer.

    ``calib_data`` (a few batches) initialises the activation ranges / PACT clipping levels /
    LSQ steps before training; without it the first training batch does. A batch the model
    does not run on raises :class:`~torchslim.errors.InputError`; NaN or inf in a weight, a
    batch or an activation raises :class:`~torchslim.errors.NonFiniteError` (as in
    ``ts.quantize``).

    Example:
        >>> import torchslim as ts
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
        ...                     nn.Linear(144, 3))
        >>> q = ts.prepare_qat(net, {"weight_bits": 4, "act_bits": 4})
        >>> q(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 3])
    """
    cfg = from_dict(QATConfig, config)
    check_weights(model, "ts.prepare_qat")
    float_model = copy.deepcopy(model)
    was_training = model.training
    float_model.eval()
    if cfg.fold_bn:
        fold_batchnorm(float_model)
    skip = skipped_layers(float_model, cfg)
    gm = trace_for_quant(float_model)
    drop_identities(gm)
    layers, tensors = plan(gm, lambda name: name not in skip)
    if not layers:
        raise ConfigError("prepare_qat: no Conv/Linear layer left to quantize (check skip=)")
    modules = dict(gm.named_modules())
    first, last = edge_inputs(layers)
    readers = layer_readers(layers)

    def make_act(node: fx.Node) -> nn.Module:
        bits = cfg.input_bits(node, first, last, readers.get(node, ()))
        return _act_module(cfg, is_relu(node, modules), bits)

    def quantize_module(name: str, index: int) -> None:
        spec = cfg.weight_spec(cfg.layer_weight_bits(index, len(layers), name))
        layer = to_quantized(gm.get_submodule(name), spec)
        if cfg.weight_quantizer is WeightQuantizer.LSQ:
            layer.weight_fake_quant = _LSQWeight(spec, layer.weight.shape[0])

    placement = insert_quantizers(gm, layers, tensors, make_act, quantize_module)
    check_layer_bits(cfg, placement.layers)
    gm.quant_state = QuantState(cfg, placement.layers, sorted(skip), placement.layer_input)
    gm.quant_report = None  # deprecated attribute: ts.report(model) (None: nothing measured)
    reports.record(gm, "qat", None)
    if calib_data is not None:
        _initialise(gm, cfg, list(calib_inputs(calib_data, cfg.calib_batches)))
    gm.train(was_training)
    return gm


class _LSQWeight(LSQQuantize):
    """LSQ on a weight (per output channel when the spec says so), as a weight quantizer."""

    def __init__(self, spec: QuantSpec, channels: int) -> None:
        super().__init__(spec, channels)
        self.enabled = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return super().forward(w) if self.enabled else w


@torch.no_grad()
def _initialise(gm: fx.GraphModule, cfg: QATConfig, batches: list[tuple]) -> None:
    gm.eval()
    pacts = [m for m in gm.modules() if isinstance(m, PACT)]
    if pacts and not cfg.pact_alpha:  # clip at the 99.9th percentile of the float activations
        seen: dict[PACT, list[torch.Tensor]] = {p: [] for p in pacts}
        hooks = [p.register_forward_pre_hook(lambda m, a: seen[m].append(a[0].abs().flatten()))
                 for p in pacts]  # fmt: skip
        set_quantizers(gm, enabled=False)
        try:
            for index, inputs in enumerate(batches):
                calib_forward(gm, inputs, index)
        finally:
            for h in hooks:
                h.remove()
            set_quantizers(gm, enabled=True)
        for p, values in seen.items():
            v = torch.cat(values)
            sample = v[torch.randperm(v.numel())[:1_000_000]]
            p.alpha.fill_(max(float(torch.quantile(sample, 0.999)), 1e-3))
    for m in gm.modules():
        if isinstance(m, _TrainingFakeQuantize):
            m.train()  # ranges from the calibration batches
    for index, inputs in enumerate(batches):
        calib_forward(gm, inputs, index)  # LSQ steps initialise on their first batch
    bad = nonfinite_quantizers(gm)
    if bad:
        raise nonfinite_error(gm, enumerate(batches), bad)


def convert(model: nn.Module) -> nn.Module:
    """Fix every learned quantization grid (LSQ steps, PACT clipping, observed ranges).

    Returns the same model in eval mode; ``ts.export_onnx`` then writes it as int8 QDQ.

    Example:
        >>> import torchslim as ts
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> q = ts.prepare_qat(net, {"weight_bits": 8, "act_bits": 8})
        >>> _ = q(torch.randn(8, 4))
        >>> ts.convert(q).training
        False
    """
    if not hasattr(model, "quant_state"):
        raise ConfigError("convert: the model was not prepared with ts.prepare_qat")
    model.eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, (PACT, LSQQuantize)) and not isinstance(module, _LSQWeight):
            model.set_submodule(name, FixedQuantize(*module.qparams()))
        elif isinstance(module, _TrainingFakeQuantize):
            if module.observer.min_val.numel() == 0:
                raise ConfigError(f"convert: quantizer {name} never saw data; train first")
            fixed = FakeQuantize(module.spec)
            fixed.load_state_dict(module.state_dict())
            fixed.observing = False
            model.set_submodule(name, fixed)
        wq = getattr(module, "weight_fake_quant", None)
        if isinstance(wq, _LSQWeight):
            spec = wq.spec
            scale, zero, qmin, qmax = wq.qparams()
            new = WeightQuantize(spec)
            new.fixed = FixedQuantize(scale, zero, qmin, qmax, spec.ch_axis)
            module.weight_fake_quant = new
    return model


__all__ = ["QATConfig", "convert", "prepare_qat"]
