"""Attention masks exported with a finite fill: ONNX Runtime's Softmax is much
slower on the ``exp`` of the -inf (or float32 minimum) a padded key gets otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import torchslim as ts
from torchslim._tensors import input_tuple
from torchslim.export.masks import MASK_FILL
from torchslim.runtime import ort_feed, ort_session

transformers = pytest.importorskip("transformers")

VOCAB = 64


def padded(batch: int = 3, seq: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row, length in enumerate([seq, 5, 2][:batch]):
        mask[row, length:] = 0  # mostly padding, as a short sentence at a fixed length
    return {"input_ids": torch.randint(1, VOCAB, (batch, seq), generator=g),
            "attention_mask": mask}  # fmt: skip


def models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    bert = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=32)  # fmt: skip
    gpt2 = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                   n_positions=32, bos_token_id=0, eos_token_id=0,
                                   use_cache=False)  # fmt: skip
    return [transformers.BertModel(bert).eval(), transformers.GPT2Model(gpt2).eval()]


def _mask_fills(path: Path) -> list[float]:
    """The values of every scalar constant reaching a Softmax through a Where or Mul."""
    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in graph.node for o in n.output}
    found, stack, seen = [], [n.input[0] for n in graph.node if n.op_type == "Softmax"], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.op_type in ("MatMul", "Gemm") or id(node) in seen:
            continue
        seen.add(id(node))
        for i in node.input:
            v = values.get(i)
            if v is not None and v.size == 1 and v.dtype.kind == "f":
                if node.op_type in ("Where", "Mul"):
                    found.append(float(v.reshape(-1)[0]))
            else:
                stack.append(i)
    return found


@pytest.mark.filterwarnings("ignore::UserWarning")  # BERT's mask check reads values
@pytest.mark.parametrize("index", [0, 1], ids=["bert", "gpt2"])
def test_padded_attention_exports_a_finite_mask_with_the_same_outputs(
    index: int, tmp_path: Path
) -> None:
    model = models()[index]
    inputs = padded()
    report = ts.export_onnx(model, inputs, tmp_path / "m.onnx")
    fills = [v for v in _mask_fills(tmp_path / "m.onnx") if v < 0]
    assert fills and all(v == MASK_FILL for v in fills)  # no -inf left in a mask
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    used = {i for n in graph.node for i in n.input}
    constants = [n.output[0] for n in graph.node if n.op_type == "Constant"]
    unused = [c for c in [*constants, *(t.name for t in graph.initializer)] if c not in used]
    assert not unused  # nothing left for ONNX Runtime to warn about and remove
    session = ort_session(tmp_path / "m.onnx", 1)
    got = session.run(None, ort_feed(session, input_tuple(inputs)))[0]
    with torch.no_grad():
        want = model(**inputs).last_hidden_state.numpy()
    real = inputs["attention_mask"].bool().numpy()  # padded positions' outputs are not used
    assert np.abs(got - want)[real].max() < 1e-4
    assert report.max_abs_error is not None
