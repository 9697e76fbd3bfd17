"""Attention masks that ONNX Runtime's Softmax runs fast on.

PyTorch's exporter writes a masked attention as ``Softmax(scores + Where(mask, 0, -inf))``
(Hugging Face's own masks fill with float32's minimum). ONNX Runtime's Softmax computes
``exp(x - max)``, and its vectorised ``exp`` takes a much slower path for arguments under
about -87, where the result underflows: every masked key of a padded sentence lands there. On
all-MiniLM-L6-v2 at 128 tokens (a short sentence, mostly padding) the finite fill took the
dynamic int8 model from 13.7 to 10.0 ms at batch 1, one thread (``benchmarks/minilm_quant.py``
before and after).

:func:`finite_attention_masks` gives those masks a finite fill instead, :data:`MASK_FILL`: a
masked key then gets ``exp(-40)`` (4e-18) of the weight of a key scoring as high, lost in a
float32 sum of weights, and its ``exp`` argument stays in the fast range unless its
score sits more than 47 below the row's highest. One difference remains: a row whose keys are
all masked (a sequence of padding only) averages them instead of giving zeros.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

MASK_FILL = -40.0  # what a masked attention score is given instead of -inf
_FILL_BELOW = -1e4  # a constant at or under this, in a mask feeding a Softmax, is a mask fill
# ops a mask passes through between its fill constant and the Softmax
_MASK_OPS = {"Add", "Where", "Mul", "Expand", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Sub"}


def finite_attention_masks(graph: onnx.GraphProto, fill: float = MASK_FILL) -> int:
    """Replace the ``-inf`` (or any value at most -1e4) a ``Where`` or ``Mul`` puts into the
    input of a ``Softmax`` by ``fill``; returns how many were replaced. Other users of the same
    constant keep it (the replacement is a new constant).

    Example:
        >>> from onnx import TensorProto, helper
        >>> minus_inf = helper.make_node("Constant", [], ["c"], value=helper.make_tensor(
        ...     "c", TensorProto.FLOAT, [], [float("-inf")]))
        >>> zero = helper.make_node("Constant", [], ["z"], value=helper.make_tensor(
        ...     "z", TensorProto.FLOAT, [], [0.0]))
        >>> nodes = [minus_inf, zero, helper.make_node("Where", ["keep", "z", "c"], ["m"]),
        ...          helper.make_node("Add", ["s", "m"], ["x"]),
        ...          helper.make_node("Softmax", ["x"], ["y"], axis=-1)]
        >>> g = helper.make_graph(nodes, "g", [], [])
        >>> finite_attention_masks(g), [n.input[2] for n in g.node if n.op_type == "Where"]
        (1, ['attention_mask_fill_float32'])
    """
    from torchslim.export.onnx import constant_values  # that module runs this pass

    producer = {o: n for n in graph.node for o in n.output}
    values = constant_values(graph, max_size=1)  # a fill value is a scalar
    fills: dict[np.dtype, str] = {}  # one fill constant per dtype the masks are in
    replaced, seen = 0, set()
    stack = [(n.input[0], 0) for n in graph.node if n.op_type == "Softmax"]
    while stack:
        name, depth = stack.pop()
        node = producer.get(name)
        if node is None or node.op_type not in _MASK_OPS or depth > 8 or id(node) in seen:
            continue
        seen.add(id(node))
        for i, inp in enumerate(node.input):
            value = values.get(inp)
            is_fill = (value is not None and value.dtype.kind == "f" and value.size == 1
                       and float(value.reshape(-1)[0]) <= _FILL_BELOW)  # fmt: skip
            if is_fill and node.op_type in ("Where", "Mul"):
                assert value is not None
                if value.dtype not in fills:
                    fills[value.dtype] = f"attention_mask_fill_{value.dtype.name}"
                    graph.initializer.append(numpy_helper.from_array(
                        np.array(fill, value.dtype), fills[value.dtype]))  # fmt: skip
                node.input[i] = fills[value.dtype]
                replaced += 1
            elif value is None:
                stack.append((inp, depth + 1))
    return replaced
