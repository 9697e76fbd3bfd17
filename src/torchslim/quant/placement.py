"""Where quantizers go: a ``torch.fx`` pass that marks the tensors to quantize.

The layout follows what ONNX Runtime fuses into int8 kernels: every Conv/Linear reads a
quantized input, and its output is quantized after a following ReLU/ReLU6 (so the activation
folds into the range) — ``DQ -> Conv -> Q`` then runs as one int8 convolution. Residual adds of
quantized tensors are quantized too (``QLinearAdd``). A tensor is quantized once, at its
producer, and every consumer reads the same quantized value, as in the exported graph.
Tensors that reach a model output stay float.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from torchslim.errors import UnsupportedOpError
from torchslim.quant.qmodules import is_quantizable

_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCTIONS = {F.relu, torch.relu, F.relu6, torch.relu_}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_RANGE_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Flatten)
_RANGE_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.flatten, torch.reshape}


@dataclass
class Placement:
    """The result of the pass: the quantized layers and the quantizer of each one's input."""

    layers: list[str] = field(default_factory=list)  # quantized Conv/Linear, graph order
    layer_input: dict[str, str] = field(default_factory=dict)  # layer -> its input quantizer


def trace_for_quant(model: nn.Module) -> fx.GraphModule:
    """``torch.fx`` trace with an error that says what to do when Python control flow stops it."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python
        raise UnsupportedOpError(
            f"ts.quantize: torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: "
            f"{exc}). Quantize a traceable sub-module, or make the data-dependent branch a "
            "leaf module, or use dynamic=True, which needs no graph."
        ) from exc


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` applies a ReLU/ReLU6 (module, function or tensor method)."""
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _RELU_MODULES)
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_add(node: fx.Node) -> bool:
    is_fn = node.op == "call_function" and node.target in _ADD_FUNCTIONS
    is_method = node.op == "call_method" and node.target in ("add", "add_")
    args = node.args
    return (is_fn or is_method) and len(args) >= 2 and all(isinstance(a, fx.Node) for a in args[:2])


def _absorb_relu(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    users = list(node.users)
    if len(users) == 1 and is_relu(users[0], modules):
        return users[0]
    return node


def _reaches_output(node: fx.Node) -> bool:
    return any(u.op == "output" for u in node.users)


def drop_identities(gm: fx.GraphModule) -> None:
    """Drop ``nn.Identity``/``nn.Dropout`` calls (folded BatchNorms): Conv -> ReLU adjacent."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        mod = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(mod, (nn.Identity, nn.Dropout)) and len(node.args) == 1:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()


def _passes_range(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Ops whose output values are a subset of their input values (max-pool, reshapes)."""
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _RANGE_MODULES)
    if node.op == "call_function":
        return node.target in _RANGE_FUNCTIONS
    return node.op == "call_method" and node.target in ("view", "reshape", "flatten")


def plan(
    gm: fx.GraphModule,
    quantize_layer: Callable[[str], bool],
    own_input: Callable[[str], bool] = lambda _: False,
    outputs: bool = True,
) -> tuple[list[fx.Node], list[fx.Node]]:
    """The layer nodes to quantize and the tensor nodes whose value gets a quantizer: each
    layer's input and, with ``outputs``, each layer's and residual sum's output. A layer for
    which ``own_input`` is true quantizes its input itself (SmoothQuant scales it first), so
    its input gets no quantizer on its account."""
    modules = dict(gm.named_modules())
    layers = [
        n
        for n in gm.graph.nodes
        if n.op == "call_module"
        and is_quantizable(modules[str(n.target)])
        and quantize_layer(str(n.target))
    ]
    layer_set = set(layers)
    tensors: dict[fx.Node, None] = {}
    for n in gm.graph.nodes if outputs else ():  # of layers and adds, after a ReLU
        if n in layer_set or _is_add(n):
            end = _absorb_relu(n, modules)
            if not _reaches_output(end):
                tensors[end] = None
    for n in layers:
        inp = n.args[0] if n.args else None
        if isinstance(inp, fx.Node) and not own_input(str(n.target)):
            tensors[inp] = None
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    return layers, sorted(tensors, key=order.__getitem__)


def layer_readers(layers: Iterable[fx.Node], prefix: str = "") -> dict[fx.Node, list[str]]:
    """The quantized layers (qualified names, ``prefix`` first) that read each tensor."""
    readers: dict[fx.Node, list[str]] = {}
    for n in layers:
        if n.args and isinstance(n.args[0], fx.Node):
            readers.setdefault(n.args[0], []).append(prefix + str(n.target))
    return readers


def edge_inputs(layers: list[fx.Node]) -> tuple[fx.Node | None, fx.Node | None]:
    """The input tensors of the first and of the last quantized layer."""

    def inp(n: fx.Node) -> fx.Node | None:
        return n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None

    return (inp(layers[0]), inp(layers[-1])) if layers else (None, None)


def shared_sources(gm: fx.GraphModule, tensors: Iterable[fx.Node]) -> dict[fx.Node, fx.Node]:
    """Quantized tensors that should reuse the scale of a quantized input (max-pool, reshape):
    ONNX Runtime then runs the op on int8 directly instead of dequantizing around it."""
    modules = dict(gm.named_modules())
    marked = set(tensors)
    shared: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node in marked and _passes_range(node, modules):
            src = node.args[0] if node.args else None
            if isinstance(src, fx.Node) and src in marked:
                shared[node] = shared.get(src, src)
    return shared


def insert_quantizers(
    gm: fx.GraphModule,
    layers: Iterable[fx.Node],
    tensors: Iterable[fx.Node],
    make_act: Callable[[fx.Node], nn.Module],
    quantize_module: Callable[[str, int], None],
    make_shared: Callable[[nn.Module], nn.Module] | None = None,
) -> Placement:
    """Swap the layers to their quantized classes and put a quantizer after each tensor.

    ``make_act(node)`` builds the quantizer of a tensor; tensors in ``shared_sources`` get
    ``make_shared(source_quantizer)`` instead of a new one.
    """
    placement = Placement()
    layers = list(layers)
    for i, n in enumerate(layers):
        quantize_module(str(n.target), i)
        placement.layers.append(str(n.target))
    tensors = list(tensors)
    shared = shared_sources(gm, tensors) if make_shared is not None else {}
    at: dict[fx.Node, str] = {}
    for node in tensors:
        name = f"act_quant_{node.name}"
        if node in shared and make_shared is not None:
            gm.add_submodule(name, make_shared(gm.get_submodule(at[shared[node]])))
        else:
            gm.add_submodule(name, make_act(node))
        with gm.graph.inserting_after(node):
            q = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda u, q=q: u is not q and u.op != "output")
        at[node] = name
    quantizers = set(at.values())
    for n in layers:
        src = n.args[0]
        if isinstance(src, fx.Node) and src.op == "call_module" and str(src.target) in quantizers:
            placement.layer_input[str(n.target)] = str(src.target)
    gm.graph.lint()
    gm.recompile()
    return placement
