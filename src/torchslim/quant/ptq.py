"""Static and dynamic post-training quantization: ``ts.quantize(model, calib_data, config)``."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from tqdm.auto import tqdm

from torchslim import reports
from torchslim._tensors import call_model, input_tuple
from torchslim.config import from_dict
from torchslim.errors import ConfigError
from torchslim.inputs import run_forward
from torchslim.quant.checks import (
    batch_name,
    check_batch,
    check_weights,
    nonfinite_error,
    nonfinite_quantizers,
    ranges_finite,
)
from torchslim.quant.config import (
    ActPlacement,
    EmbeddingScales,
    QuantConfig,
    WeightOnlyAlgorithm,
)
from torchslim.quant.fake_quant import (
    DynamicQuantize,
    FakeQuantize,
    SharedQuantize,
    SmoothQuantize,
    float16_values,
    set_quantizers,
)
from torchslim.quant.fold import fold_batchnorm
from torchslim.quant.observers import QuantSpec
from torchslim.quant.parts import trace_part, traceable_parts
from torchslim.quant.placement import (
    drop_identities,
    edge_inputs,
    insert_quantizers,
    layer_readers,
    plan,
    trace_for_quant,
)
from torchslim.quant.qmodules import is_quantizable, to_quantized
from torchslim.quant.report import QuantReport, layer_report, token_scale_gains
from torchslim.quant.smooth import half_inverse, smooth_linear, smoothing_factors
from torchslim.quant.weight_only import (
    WeightOnlyQuantize,
    as_linear,
    gptq_layers,
    is_weight_only_target,
    to_weight_only,
)
from torchslim.selection import Selection
from torchslim.train.tasks import Task, infer_task

log = logging.getLogger("torchslim.quant")


@dataclass
class QuantState:
    """Recorded on a quantized model as ``model.quant_state``: what was done to it."""

    config: QuantConfig
    layers: list[str]  # the quantized Conv/Linear layers
    skipped: list[str]
    layer_input: dict[str, str] = field(default_factory=dict)  # layer -> its input quantizer
    embeddings: list[str] = field(default_factory=list)  # tables stored on an integer grid


@dataclass
class Smoothing:
    """What SmoothQuant needs, measured on the float model's calibration batches: per Linear,
    its input's largest |value| per channel (``amax``), and the Linears reading one tensor
    (``groups``, see :func:`shared_input_groups`)."""

    amax: dict[str, torch.Tensor] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)


def calib_inputs(calib_data: Iterable[Any], limit: int) -> Iterator[tuple[Any, ...]]:
    """Model inputs from a loader yielding tensors, ``(inputs, targets)``, input tuples or
    dicts of keyword inputs (``{"input_ids": ..., "attention_mask": ...}``); a
    detection batch ``(images, target dicts)`` (the trainer's collate) gives its list of
    images as the one argument a detector takes.

    Example:
        >>> next(calib_inputs([(torch.ones(2, 3), torch.zeros(2))], 1))[0].shape
        torch.Size([2, 3])
        >>> images = [torch.rand(3, 8, 8), torch.rand(3, 8, 8)]
        >>> len(next(calib_inputs([(images, [{"boxes": torch.zeros(0, 4)}] * 2)], 1))[0])
        2
    """
    for batch in itertools.islice(calib_data, limit):
        if isinstance(batch, torch.Tensor):
            yield (batch,)
        elif isinstance(batch, Mapping):  # keyword inputs (a tokenizer's output)
            yield input_tuple(batch)
        elif (
            isinstance(batch, (list, tuple))
            and len(batch) >= 2
            and isinstance(batch[0], list)
            and infer_task(batch[0], batch[1]) is Task.DETECTION
        ):
            yield (batch[0],)
        elif isinstance(batch, (list, tuple)) and batch:
            first = batch[0]
            yield input_tuple(first) if isinstance(first, Mapping | list | tuple) else (first,)
        else:
            raise ConfigError(
                f"calib_data: batches must be tensors or (inputs, targets) pairs, got "
                f"{type(batch).__name__}"
            )


def skipped_layers(model: nn.Module, cfg: QuantConfig) -> set[str]:
    """The quantizable layers of ``model`` that ``cfg.skip`` keeps in float (a pattern that
    selects none of them is a :class:`ConfigError`)."""
    return cfg.selection.ignored(
        model,
        candidates=lambda _, m: is_quantizable(m),
        what="quantizable layer (Conv1d/2d/3d, Linear)",
        field="skip",
    )


def smoothed_layers(model: nn.Module, cfg: QuantConfig, linears: list[str]) -> list[str]:
    """Those of the quantized ``linears`` that SmoothQuant smooths: the ones
    ``cfg.smooth_layers`` selects (every one when it is empty; a pattern that selects none
    is a :class:`ConfigError`), in model order.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
        >>> cfg = QuantConfig(smooth=0.5, smooth_layers=("2",))
        >>> smoothed_layers(net, cfg, ["0", "2"])
        ['2']
    """
    if not cfg.smooth_layers:
        return list(linears)
    return _selected_linears(model, cfg.smooth_layers, linears, "smooth_layers")


def token_scaled_layers(model: nn.Module, cfg: QuantConfig, linears: list[str]) -> list[str]:
    """Those of the dynamically quantized ``linears`` that ``cfg.token_scale_layers`` selects
    (none when it is empty; a pattern that selects none is a :class:`ConfigError`).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
        >>> cfg = QuantConfig(dynamic=True, token_scale_layers=("2",))
        >>> token_scaled_layers(net, cfg, ["0", "2"])
        ['2']
    """
    if not cfg.token_scale_layers:
        return []
    return _selected_linears(model, cfg.token_scale_layers, linears, "token_scale_layers")


def _selected_linears(model: nn.Module, patterns: Sequence[str], linears: list[str],
                      field: str) -> list[str]:  # fmt: skip
    wanted = set(linears)
    return list(Selection(targets=tuple(patterns)).select(
        model, candidates=lambda n, _: n in wanted, what="quantized Linear",
        fields=(field, "skip")))  # fmt: skip


def _build_static(
    float_model: nn.Module,
    cfg: QuantConfig,
    skip: set[str],
    parts: Sequence[str] = ("",),
    smoothing: Smoothing | None = None,
) -> nn.Module:
    """A fake-quantized copy of ``float_model``: its traced ``parts`` (qualified names; ``""``
    is the whole model, a GraphModule) get quantizers; the rest stays as it is, in float.
    The Linears in ``smoothing.amax`` are smoothed (SmoothQuant): those reading one tensor, in
    one part's graph or, across parts, as ``smoothing.groups`` says, share one scaled
    quantizer of it."""
    model = copy.deepcopy(float_model)
    smoothing = smoothing or Smoothing()
    amax = smoothing.amax
    outputs = cfg.act_placement is ActPlacement.ALL or (
        cfg.act_placement is ActPlacement.AUTO and any(
            isinstance(m, nn.modules.conv._ConvNd) and is_quantizable(m) and n not in skip
            for n, m in model.named_modules()))  # fmt: skip
    plans = []
    for name in parts:
        prefix = f"{name}." if name else ""
        gm = trace_part(model.get_submodule(name)) if name else trace_for_quant(model)
        drop_identities(gm)
        layers, tensors = plan(gm, lambda layer, prefix=prefix: prefix + layer not in skip,
                               lambda layer, prefix=prefix: prefix + layer in amax,
                               outputs)  # fmt: skip
        if layers:
            plans.append((name, prefix, gm, layers, tensors))
    total = sum(len(p[3]) for p in plans)
    if not total:
        raise ConfigError("ts.quantize: no Conv/Linear layer left to quantize (check skip=)")
    state = QuantState(cfg, [], sorted(skip))
    planned = {p[1] + str(n.target) for p in plans for n in p[3]}
    groups = {k: g for k, g in smoothing.groups.items() if set(g) <= planned}
    smoothers: dict[tuple[str, ...], SmoothQuantize] = {}  # one per smoothed tensor
    offset = 0
    for k, (name, prefix, gm, layers, tensors) in enumerate(plans):
        first, last = edge_inputs(
            layers
        )  # the model's first / last layer: in its first / last part
        first, last = (first if k == 0 else None), (last if k == len(plans) - 1 else None)

        def quantize_module(
            layer: str, index: int, gm: fx.GraphModule = gm, at: int = offset, prefix: str = prefix
        ) -> None:
            bits = cfg.layer_weight_bits(at + index, total, prefix + layer)
            to_quantized(gm.get_submodule(layer), cfg.weight_spec(bits))

        readers = layer_readers(layers, prefix)

        def make_act(node: fx.Node, first: Any = first, last: Any = last,
                     readers: dict = readers) -> nn.Module:  # fmt: skip
            bits = cfg.input_bits(node, first, last, readers.get(node, ()))
            return FakeQuantize(cfg.act_spec(bits))

        placement = insert_quantizers(
            gm, layers, tensors, make_act, quantize_module, SharedQuantize
        )
        placement.layer_input.update(
            _smooth_inputs(model, gm, layers, prefix, smoothing, groups, smoothers, cfg)
        )
        state.layers += [prefix + layer for layer in placement.layers]
        state.layer_input.update({prefix + a: prefix + b for a, b in placement.layer_input.items()})
        offset += len(layers)
        if name:
            model.set_submodule(name, gm)
        else:
            model = gm
    check_layer_bits(cfg, state.layers)
    state.embeddings = quantize_embeddings(model, cfg, skip)
    # Linears only: a convolution's int32 bias must stay on the grid its scales make
    linears = [n for n in state.layers if isinstance(model.get_submodule(n), nn.Linear)]
    _half_model_vectors(model, [*linears, *state.embeddings])
    model.quant_state = state
    return model


def _smooth_inputs(
    model: nn.Module,
    gm: fx.GraphModule,
    layers: Sequence[fx.Node],
    prefix: str,
    smoothing: Smoothing,
    groups: Mapping[str, tuple[str, ...]],
    smoothers: dict[tuple[str, ...], SmoothQuantize],
    cfg: QuantConfig,
) -> dict[str, str]:
    """SmoothQuant on the quantized Linears of the part ``gm`` (of ``model``) that are in
    ``smoothing.amax``. Linears reading one tensor (Q, K and V) share one smoothing
    (:func:`smoothing_factors` over all their weights) and one :class:`SmoothQuantize`: in
    this graph, or across parts where ``groups`` says so (then the same module sits in each
    part, and ONNX Runtime merges the identical ``Mul`` and ``QuantizeLinear`` nodes).
    ``smoothers`` holds the modules made so far. Returns ``{layer: its input quantizer}``."""
    by_input: dict[fx.Node, list[fx.Node]] = {}
    amax = smoothing.amax
    for n in layers:
        if prefix + str(n.target) in amax and n.args and isinstance(n.args[0], fx.Node):
            by_input.setdefault(n.args[0], []).append(n)
    inputs = {}
    for src, readers in by_input.items():
        names = [prefix + str(n.target) for n in readers]
        key = groups.get(names[0], ())
        key = key if set(names) <= set(key) else tuple(names)
        if key not in smoothers:
            members = [model.get_submodule(k) for k in key]
            seen = torch.stack([amax[name] for name in key]).amax(0)
            bits = cfg.input_bits(None, None, None, list(key))
            inverse = half_inverse(members, smoothing_factors(members, seen, cfg.smooth))
            smoothers[key] = SmoothQuantize(cfg.act_spec(bits), inverse)
        quantizer = f"smooth_quant_{src.name}"
        gm.add_submodule(quantizer, smoothers[key])
        with gm.graph.inserting_after(src):
            q = gm.graph.call_module(quantizer, (src,))
        for n in readers:
            n.replace_input_with(src, q)
            inputs[str(n.target)] = quantizer
    gm.graph.lint()
    gm.recompile()
    return inputs


@torch.no_grad()
def shared_input_groups(
    model: nn.Module, names: Sequence[str], inputs: tuple[Any, ...]
) -> dict[str, tuple[str, ...]]:
    """The layers of ``names`` that read one tensor object on a forward of ``inputs``, as
    ``{layer: all layers reading its input}`` (only inputs read by two or more): Q, K and V of
    an attention block, also where ``torch.fx`` traces each of them alone.

    Example:
        >>> class QK(nn.Module):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.q, self.k, self.o = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        ...     def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...         return self.o(self.q(x) * self.k(x))
        >>> shared_input_groups(QK(), ["q", "k", "o"], (torch.randn(1, 4),))
        {'q': ('q', 'k'), 'k': ('q', 'k')}
    """
    seen: dict[int, tuple[torch.Tensor, list[str]]] = {}  # the tensor is held: ids stay unique

    def hook(name: str) -> Any:
        def record(_mod: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                seen.setdefault(id(args[0]), (args[0], []))[1].append(name)

        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        calib_forward(model, inputs, 0)
    finally:
        for h in handles:
            h.remove()
    return {n: tuple(readers) for _, readers in seen.values() if len(readers) > 1 for n in readers}


def check_layer_bits(cfg: QuantConfig, layers: Sequence[str]) -> None:
    """A ``layer_bits`` / ``layer_act_bits`` pattern that names no quantized layer is a
    :class:`ConfigError`."""
    for key in ("layer_bits", "layer_act_bits"):
        for pattern in getattr(cfg, key):
            if not any(fnmatchcase(name, pattern) for name in layers):
                sample = ", ".join(list(layers)[:6])
                raise ConfigError(
                    f"{key}: {pattern!r} matches no quantized layer (they are: {sample}"
                    f"{', ...' if len(layers) > 6 else ''})"
                )


def quant_parts(
    model: nn.Module, inputs: tuple[Any, ...], skip: set[str]
) -> tuple[list[str], set[str]]:
    """``[""]`` when ``torch.fx`` traces the whole model, else the qualified names of its
    largest traceable parts (:func:`~torchslim.quant.parts.traceable_parts`, checked on
    ``inputs``): a detector's backbone, neck and heads, its post-processing left in float.

    A part that is one Conv/Linear is wrapped in place in ``nn.Sequential`` (the layer becomes
    ``NAME.0``, as :func:`~torchslim.quant.parts.trace_part` traces it), unless ``skip`` keeps
    it float: then it is no part at all and stays where it is (a model may read its
    ``weight``, as Hugging Face's ViT does). Returns the parts and ``skip``.
    """
    try:
        fx.symbolic_trace(model)
        return [""], skip
    except Exception as exc:  # fx raises many types for untraceable Python
        parts = list(traceable_parts(model, inputs))
        log.info("ts.quantize: torch.fx cannot trace %s as a whole (%s: %s); quantizing its "
                 "parts %s, the rest stays float", type(model).__name__, type(exc).__name__,
                 str(exc).splitlines()[0][:200], parts)  # fmt: skip
    skip = set(skip)
    kept = []
    for name in parts:
        layer = model.get_submodule(name)
        if is_quantizable(layer):
            if name in skip:
                continue  # a lone layer kept float: nothing to quantize, left as it is
            model.set_submodule(name, nn.Sequential(layer))
        kept.append(name)
    return kept, skip


@torch.no_grad()
def input_amax(
    model: nn.Module, names: list[str], batches: list[tuple[Any, ...]]
) -> dict[str, torch.Tensor]:
    """The largest |input| per input channel (the last axis) of each layer in ``names`` over
    ``batches``."""
    amax: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        def record(_mod: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
            amax[name] = torch.maximum(amax[name], x) if name in amax else x

        return record

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        for i, inputs in enumerate(batches):
            calib_forward(model, inputs, i)
    finally:
        for h in handles:
            h.remove()
    return amax


def _build_dynamic(float_model: nn.Module, cfg: QuantConfig, skip: set[str],
                   batches: list[tuple[Any, ...]]) -> nn.Module:  # fmt: skip
    model = copy.deepcopy(float_model)
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and is_quantizable(m) and n not in skip]  # fmt: skip
    if not names:
        raise ConfigError("ts.quantize(dynamic=True): the model has no nn.Linear to quantize")
    amax = input_amax(model, smoothed_layers(model, cfg, names), batches) if cfg.smooth else {}
    # Linears that read one input (Q, K, V) share one smoothing vector: their Muls are then
    # the same node, and so are their input quantizers (one in ONNX Runtime, as unsmoothed)
    groups = shared_input_groups(model, list(amax), batches[0]) if amax else {}
    for i, name in enumerate(names):
        layer = to_quantized(model.get_submodule(name), cfg.weight_spec(
            cfg.layer_weight_bits(i, len(names), name)))  # fmt: skip
        layer.input_fake_quant = DynamicQuantize(cfg.act_bits)  # QuantLinear applies it
    for name in token_scaled_layers(model, cfg, names):
        model.get_submodule(name).input_fake_quant.per_token = True
    for name in amax:
        group = groups.get(name, (name,))
        if name == group[0]:
            smooth_linear([model.get_submodule(n) for n in group], amax[name], cfg.smooth)
    check_layer_bits(cfg, names)
    embeddings = quantize_embeddings(model, cfg, skip)
    _half_model_vectors(model, [*names, *embeddings])
    model.quant_state = QuantState(cfg, names, sorted(skip), embeddings=embeddings)
    return model


def _half_model_vectors(model: nn.Module, layers: Sequence[str]) -> None:
    """:func:`_half_vectors` of the quantized ``layers`` and of every LayerNorm."""
    for name in layers:
        _half_vectors(model.get_submodule(name))
    for layer in model.modules():
        if isinstance(layer, nn.LayerNorm):
            _half_vectors(layer)


def _half_vectors(layer: nn.Module) -> None:
    """An int8 layer's weight scales and bias (a LayerNorm's weight and bias) as float16
    values (float32 tensors), so its ONNX file stores them in half the bytes unchanged
    (``export_onnx``): a relative rounding of 2^-11, far below the int8 weight's own."""
    norm = isinstance(layer, nn.LayerNorm)
    if not norm:
        layer.weight_fake_quant.half_scales = True  # the int8 weight itself stays as it is
    for name in ("weight", "bias") if norm else ("bias",):
        tensor = getattr(layer, name, None)
        if isinstance(tensor, torch.Tensor):
            with torch.no_grad():
                rounded = float16_values(tensor.float(), additive=name == "bias")
                tensor.copy_(rounded.to(tensor.dtype))


def quantize_embeddings(model: nn.Module, cfg: QuantConfig, skip: set[str]) -> list[str]:
    """Store every ``nn.Embedding`` table not in ``skip`` on a ``cfg.embedding_bits`` grid, one
    symmetric scale per row or per column (``cfg.embedding_scales``; the rows are only looked
    up, never multiplied: an int8 ``Gather`` in ONNX); returns their names (none with
    ``embedding_bits=0``).

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
        >>> quantize_embeddings(net, QuantConfig(), set()), type(net[0]).__name__
        (['0'], 'QuantEmbedding')
    """
    if not cfg.embedding_bits:
        return []
    tables = [n for n, m in model.named_modules() if type(m) is nn.Embedding and n not in skip]
    axis = 0 if cfg.embedding_scales is EmbeddingScales.ROW else 1
    spec = QuantSpec(bits=cfg.embedding_bits, per_channel=True, ch_axis=axis)
    for name in tables:
        to_quantized(model.get_submodule(name), spec)
    return tables


def _quantize_dynamic(float_model: nn.Module, calib_data: Iterable[Any] | None,
                      cfg: QuantConfig, skip: set[str], progress: bool) -> nn.Module:  # fmt: skip
    """Dynamic quantization; with ``auto_token_scale``, the Linears scaled per token are chosen
    first; with ``auto_skip``, the layers whose quantization alone hurts the output most (on
    two calibration batches) are kept float and the model is built again."""
    needs = [key for key in ("smooth", "auto_skip", "auto_token_scale") if getattr(cfg, key)]
    if needs and calib_data is None:
        raise ConfigError(f"{' and '.join(needs)}: needs calib_data (a few batches of inputs)")
    batches = list(calib_inputs(calib_data, cfg.calib_batches)) if needs else []
    qmodel = _build_dynamic(float_model, cfg, skip, batches)
    if cfg.auto_token_scale:
        cfg = _choose_token_scaled(float_model, qmodel, batches, progress)
    table = None
    if cfg.auto_skip:
        table = layer_report(float_model, qmodel, batches[:2], isolated=True, progress=progress)
        worst = table.most_harmful(cfg.auto_skip)
        log.info("auto_skip: keeping %s in float", ", ".join(worst))
        if cfg.token_scale_layers:  # a Linear kept float has no input range to scale
            scaled = token_scaled_layers(qmodel, cfg, qmodel.quant_state.layers)
            cfg = replace(cfg, token_scale_layers=tuple(n for n in scaled if n not in worst))
        qmodel = _build_dynamic(float_model, cfg, skip | set(worst), batches)
        table = layer_report(float_model, qmodel, batches[:2], isolated=False,
                             isolated_from=table)  # fmt: skip
    qmodel.quant_report = table  # deprecated attribute: ts.report(qmodel)
    reports.record(qmodel, "quantize", table)
    return qmodel


def _choose_token_scaled(
    float_model: nn.Module, qmodel: nn.Module, batches: list[tuple[Any, ...]], progress: bool
) -> QuantConfig:
    """Scale per token, in ``qmodel`` (built with its config's ``token_scale_layers``), also the
    ``auto_token_scale`` Linears whose per-token scaling raises the output SQNR most
    (:func:`~torchslim.quant.report.token_scale_gains` on two calibration batches); returns
    the config with the scaled Linears named (recorded on ``qmodel``: it rebuilds as it is)."""
    state = qmodel.quant_state
    gains = token_scale_gains(float_model, qmodel, batches[:2], progress=progress)
    ranked = sorted((g, n) for n, g in gains.items() if g > 0)[::-1]
    chosen = [n for _, n in ranked[: state.config.auto_token_scale]]
    named = ", ".join(f"{n} (+{gains[n]:.2f} dB)" for n in chosen)
    log.info("auto_token_scale: per-token input ranges for %s", named or "no layer (none gains)")
    for n in chosen:
        qmodel.get_submodule(n).input_fake_quant.per_token = True
    given = token_scaled_layers(qmodel, state.config, state.layers)
    state.config = replace(state.config, token_scale_layers=(*given, *chosen), auto_token_scale=0)
    return state.config


def _quantize_weight_only(float_model: nn.Module, calib_data: Iterable[Any] | None,
                          cfg: QuantConfig, progress: bool, report: bool) -> nn.Module:  # fmt: skip
    """Weight-only quantization of every ``nn.Linear`` and transformers ``Conv1D`` (which
    becomes the equivalent ``nn.Linear``) but those ``skip`` selects."""
    gptq = cfg.algorithm is WeightOnlyAlgorithm.GPTQ
    if gptq and calib_data is None:
        raise ConfigError("algorithm='gptq': needs calib_data (a few batches of inputs, e.g. "
                          "tokenized text) to measure each Linear's inputs; algorithm='rtn' "
                          "needs none")  # fmt: skip
    skip = cfg.selection.ignored(float_model, candidates=lambda _, m: is_weight_only_target(m),
                                 what="Linear (nn.Linear, transformers Conv1D)",
                                 field="skip")  # fmt: skip
    model = copy.deepcopy(float_model)
    names = [n for n, m in model.named_modules() if is_weight_only_target(m) and n not in skip]
    if not names:
        raise ConfigError("ts.quantize(weight_only=True): the model has no nn.Linear (or "
                          "transformers Conv1D) left to quantize (check skip=)")  # fmt: skip
    check_layer_bits(cfg, names)
    batches = list(calib_inputs(calib_data, cfg.calib_batches)) if calib_data is not None else []
    if gptq and not batches:
        raise ConfigError("calib_data: yielded no batches; pass a loader with at least one")
    for name in names:
        model.set_submodule(name, as_linear(model.get_submodule(name)))
    bits = {name: cfg.layer_weight_bits(i, len(names), name) for i, name in enumerate(names)}
    if gptq:
        gptq_layers(model, names, bits, batches, group_size=cfg.group_size,
                    accuracy_level=cfg.accuracy_level, run=calib_forward,
                    progress=progress, act_order=cfg.act_order)  # fmt: skip
    else:
        for name in names:
            layer = model.get_submodule(name)
            to_weight_only(layer, WeightOnlyQuantize.round_to_nearest(
                layer.weight, bits=bits[name], group_size=cfg.group_size,
                accuracy_level=cfg.accuracy_level))  # fmt: skip
    model.quant_state = QuantState(cfg, names, sorted(skip))
    table = None
    if report and batches:
        table = layer_report(float_model, model, batches[:2], isolated=False)
    model.quant_report = table  # deprecated attribute: ts.report(qmodel)
    reports.record(model, "quantize", table)
    return model


_CALIB_HINT = (
    "Calibration batches must be what the model's forward takes: tensors, or (inputs, targets) "
    "pairs, of the training data's shape and dtype"
)


def calib_forward(model: nn.Module, inputs: tuple[Any, ...], index: int) -> Any:
    """Run calibration batch ``index`` (counted from 0): refused if it holds NaN/inf, and a
    batch the model does not run on is an :class:`~torchslim.errors.InputError` naming it."""
    check_batch(inputs, index)
    return run_forward(model, inputs, batch_name(index), hint=_CALIB_HINT)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]],
              progress: bool = True, total: int | None = None) -> int:  # fmt: skip
    """Run float batches through the model with observers recording ranges; then freeze them.

    A batch the model does not run on raises :class:`~torchslim.errors.InputError`; one holding
    NaN/inf, or making an activation NaN/inf, raises :class:`~torchslim.errors.NonFiniteError`
    (each names the batch, counted from 0, and the layer).
    """
    set_quantizers(model, enabled=False, observing=True)
    seen = 0
    for inputs in tqdm(batches, total=total, disable=not progress, desc="calibrate", unit="batch"):
        calib_forward(model, inputs, seen)
        if not ranges_finite(model):
            raise nonfinite_error(model, [(seen, inputs)], nonfinite_quantizers(model))
        seen += 1
    if seen == 0:
        raise ConfigError("calib_data: yielded no batches; pass a loader with at least one")
    set_quantizers(model, enabled=True, observing=False)
    return seen


@torch.no_grad()
def correct_bias(model: nn.Module, layers: Iterable[str],
                 batches: Iterable[tuple[torch.Tensor, ...]]) -> None:  # fmt: skip
    """Empirical bias correction: add back each layer's mean output shift due to weight rounding.

    The shift is measured on the layer's real (quantized) input, per output channel.
    """
    sums: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        layer = model.get_submodule(name)

        def hook(mod: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
            x = args[0]
            if isinstance(mod, nn.Linear):
                ref = F.linear(x, mod.weight)
                diff = (ref - F.linear(x, mod.quantized_weight())).reshape(-1, ref.shape[-1])
                d = diff.mean(0)
            else:
                ref = mod._conv_forward(x, mod.weight, None)
                diff = ref - mod._conv_forward(x, mod.quantized_weight(), None)
                d = diff.transpose(0, 1).reshape(diff.shape[1], -1).mean(1)
            sums[name] = sums.get(name, 0) + d

        handles.append(layer.register_forward_hook(hook))
    count = 0
    try:
        for inputs in batches:
            call_model(model, inputs)
            count += 1
    finally:
        for h in handles:
            h.remove()
    for name, total in sums.items():
        layer = model.get_submodule(name)
        shift = total / max(count, 1)
        if layer.bias is None:
            layer.bias = nn.Parameter(shift)
        else:
            layer.bias.add_(shift)


def quantize(
    model: nn.Module,
    calib_data: Iterable[Any] | None,
    config: QuantConfig | Mapping[str, Any] | None = None,
    *,
    progress: bool = True,
    report: bool = True,
) -> nn.Module:
    """Post-training quantization: fold BN, place quantizers, calibrate, optionally bias-correct.

    Returns a new fake-quantized model (the input model is not changed) that computes what the
    int8 graph computes; ``ts.export_onnx`` writes it as a QDQ ONNX file with int8 weights.
    ``ts.report(qmodel)`` is the per-layer SQNR table (a :class:`QuantReport`). With
    ``dynamic=True`` only Linear layers are quantized, activations at run time, and
    ``calib_data`` may be ``None``. With ``weight_only=True`` every ``nn.Linear`` (and
    transformers' ``Conv1D``) gets group-wise int4/int8 weights and keeps float activations
    (round-to-nearest needs no ``calib_data``; ``algorithm="gptq"`` does); ``ts.export_onnx``
    writes them as ONNX Runtime ``MatMulNBits`` nodes. ``report=False`` skips the per-layer
    SQNR passes (a search scoring many candidates; ``auto_skip`` needs them and runs them
    anyway).
    A calibration batch the model does not run on raises :class:`~torchslim.errors.InputError`;
    NaN or inf in a weight, a batch or an activation raises
    :class:`~torchslim.errors.NonFiniteError` naming the parameter, the batch or the layer.

    Example:
        >>> import torchslim as ts
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        ...                     nn.Flatten(), nn.Linear(144, 3)).eval()
        >>> data = [torch.randn(8, 1, 8, 8) for _ in range(4)]
        >>> q = ts.quantize(net, data, {"weight_bits": 8, "act_bits": 8}, progress=False)
        >>> q.quant_state.layers
        ['0', '4']
    """
    cfg = from_dict(QuantConfig, config)
    check_weights(model, "ts.quantize")
    float_model = copy.deepcopy(model).eval()
    if cfg.weight_only:
        return _quantize_weight_only(float_model, calib_data, cfg, progress, report)
    skip = skipped_layers(float_model, cfg)
    if cfg.dynamic:
        return _quantize_dynamic(float_model, calib_data, cfg, skip, progress)
    if calib_data is None:
        raise ConfigError("calib_data: static quantization needs calibration batches "
                          "(or set dynamic=True)")  # fmt: skip
    keep = list(calib_inputs(calib_data, cfg.calib_batches))
    if not keep:
        raise ConfigError("calib_data: yielded no batches; pass a loader with at least one")
    check_batch(keep[0], 0)
    parts, skip = quant_parts(float_model, keep[0], skip)
    if cfg.fold_bn:
        for name in parts:
            fold_batchnorm(float_model.get_submodule(name))
    smoothing = None
    if cfg.smooth:  # every quantized Linear in a part: its input's largest |value| per channel
        linears = [f"{name}.{n}" if name else n for name in parts
                   for n, m in float_model.get_submodule(name).named_modules()
                   if type(m) is nn.Linear]  # fmt: skip
        linears = smoothed_layers(float_model, cfg, [n for n in linears if n not in skip])
        smoothing = Smoothing(
            amax=input_amax(float_model, linears, keep),
            groups=shared_input_groups(float_model, linears, keep[0]),
        )
    qmodel = _build_static(float_model, cfg, skip, parts, smoothing)
    calibrate(qmodel, keep, progress, total=len(keep))
    report_batches = keep[:2]
    if not report and not cfg.auto_skip:
        if cfg.bias_correction:
            correct_bias(qmodel, qmodel.quant_state.layers, keep)
        qmodel.quant_report = None  # deprecated attribute: ts.report(qmodel)
        reports.record(qmodel, "quantize", None)
        return qmodel
    table = layer_report(float_model, qmodel, report_batches, isolated=True, progress=progress)
    if cfg.auto_skip:
        worst = table.most_harmful(cfg.auto_skip)
        log.info("auto_skip: keeping %s in float", ", ".join(worst))
        qmodel = _build_static(float_model, cfg, skip | set(worst), parts, smoothing)
        calibrate(qmodel, keep, progress, total=len(keep))
    if cfg.bias_correction:
        correct_bias(qmodel, qmodel.quant_state.layers, keep)
    if cfg.auto_skip or cfg.bias_correction:
        table = layer_report(float_model, qmodel, report_batches, isolated=False,
                             isolated_from=table)  # fmt: skip
    qmodel.quant_report = table  # deprecated attribute: ts.report(qmodel)
    reports.record(qmodel, "quantize", table)
    return qmodel


__all__ = ["QuantReport", "QuantState", "calibrate", "quantize", "skipped_layers"]
