"""Hugging Face encoders and decoders (tiny, randomly initialised: no weights needed) taken as
they are called, with keyword inputs: pruned by heads and FFN channels, config kept true,
exported to ONNX with dynamic batch and sequence axes, and round-tripped through
``save_pretrained``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchslim as ts
from torchslim._tensors import input_tuple
from torchslim.pretrained import from_pretrained, save_pretrained
from torchslim.prune.pruner import prune_report
from torchslim.runtime import ort_feed, ort_session

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 64, 12


def tiny_bert() -> torch.nn.Module:
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2,
                                  num_attention_heads=6, intermediate_size=96,
                                  max_position_embeddings=32)  # fmt: skip
    torch.manual_seed(0)
    return transformers.BertModel(cfg).eval()


def tiny_gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=48, n_layer=2, n_head=6,
                                  n_positions=32, bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2Model(cfg).eval()


def tokens(batch: int = 2, seq: int = SEQ) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 100 + seq)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def hidden(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state


@pytest.mark.filterwarnings("ignore::UserWarning")  # BERT's mask check reads values
def test_bert_prunes_heads_and_ffn_from_keyword_inputs() -> None:
    bert = tiny_bert()
    before = ts.analyze(bert, tokens())
    ts.prune(bert, tokens(), {"ratio": 0.5})
    for layer in bert.encoder.layer:
        attn = layer.attention.self
        assert (attn.num_attention_heads, attn.attention_head_size) == (3, 8)
        assert attn.all_head_size == 24 and attn.query.out_features == 24
        assert layer.attention.output.dense.in_features == 24
        assert layer.intermediate.dense.out_features == 48
    # what the model hands out or looks up is left whole: hidden size, vocabulary, pooler
    assert bert.embeddings.word_embeddings.weight.shape == (VOCAB, 48)
    assert bert.pooler.dense.weight.shape == (48, 48)
    assert bert.config.intermediate_size == 48
    assert bert.config.torchslim_layers == {"heads": [3, 3], "ffn": [48, 48]}
    assert hidden(bert, tokens()).shape == (2, SEQ, 48)
    assert ts.analyze(bert, tokens()).macs < 0.7 * before.macs
    # the report counts a token layer's channels on its last axis, not the sequence
    rows = {r.name: r for r in prune_report(bert).layers}
    ffn = rows["encoder.layer.0.intermediate.dense"]
    assert (ffn.channels_before, ffn.channels_after) == (96, 48)


@pytest.mark.filterwarnings("ignore::UserWarning")  # BERT's mask check reads values
def test_global_ratio_counts_a_head_as_the_channels_it_spans() -> None:
    bert = tiny_bert()
    with torch.no_grad():  # heads 0-2 of every layer do nothing: the first units to go
        for layer in bert.encoder.layer:
            for lin in (layer.attention.self.query, layer.attention.self.key,
                        layer.attention.self.value):  # fmt: skip
                lin.weight[:24] = 0
                lin.bias[:24] = 0
            layer.attention.output.dense.weight[:, :24] = 0
    ts.prune(bert, tokens(), {"ratio": 0.25, "mode": "global", "round_to": 1})
    heads = [layer.attention.self.num_attention_heads for layer in bert.encoder.layer]
    ffn = [layer.intermediate.dense.out_features for layer in bert.encoder.layer]
    assert heads == [3, 3]
    # a quarter of 2 x (6 heads x 8 + 96) channels is 72: the idle heads' 48, then 24 FFN
    # channels (counting a head as one unit would take 45)
    assert 2 * 96 - sum(ffn) == 24


def test_pruning_leaves_a_shared_config_alone() -> None:
    cfg = tiny_bert().config
    first, second = transformers.BertModel(cfg), transformers.BertModel(cfg)
    ts.prune(first, tokens(), {"ratio": 0.5})
    assert first.config.intermediate_size == 48 and first.config is not cfg
    assert first.encoder.layer[0].attention.self.config is first.config
    assert cfg.intermediate_size == 96 and second.config.intermediate_size == 96
    assert transformers.BertModel(cfg).encoder.layer[0].intermediate.dense.out_features == 96


def test_gpt2_prunes_packed_qkv_and_conv1d() -> None:
    gpt = tiny_gpt2()
    inputs = {"input_ids": tokens()["input_ids"]}
    ts.prune(gpt, inputs, {"ratio": 0.5})
    attn, mlp = gpt.h[0].attn, gpt.h[0].mlp
    assert attn.c_attn.weight.shape == (48, 3 * 24) and attn.c_attn.nf == 72
    assert (attn.num_heads, attn.head_dim, attn.split_size) == (3, 8, 24)
    assert mlp.c_fc.weight.shape == (48, 96) and mlp.c_fc.nf == 96
    assert gpt.wte.weight.shape == (VOCAB, 48)  # the vocabulary is never pruned
    assert gpt.config.n_inner == 96
    assert hidden(gpt, inputs).shape == (2, SEQ, 48)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("build", [tiny_bert, tiny_gpt2], ids=["bert", "gpt2"])
def test_pruned_model_round_trips_through_save_pretrained(build, tmp_path: Path) -> None:
    model = build()
    # different head counts per layer: only the first layer's attention is cut
    first = "encoder.layer.0.*" if hasattr(model, "encoder") else "h.0.*"
    ts.prune(model, tokens(), {"ratio": 0.0, "ratios": {first: 0.5}})
    save_pretrained(model, tmp_path)
    back = from_pretrained(tmp_path)
    assert type(back) is type(model)
    assert {n: p.shape for n, p in back.named_parameters()} == {
        n: p.shape for n, p in model.named_parameters()
    }
    for inputs in (tokens(), tokens(batch=3, seq=7)):
        assert torch.equal(hidden(back, inputs), hidden(model, inputs))
    assert "torchslim" not in vars(model.config)  # the record lives only in the folder


def test_unpruned_and_uniform_ffn_models_load_with_transformers_alone(tmp_path: Path) -> None:
    bert = tiny_bert()
    ts.prune(bert, tokens(), {"ratio": 0.5, "ignore": ["*.attention"]})
    assert bert.encoder.layer[0].attention.self.num_attention_heads == 6
    save_pretrained(bert, tmp_path)
    plain = transformers.BertModel.from_pretrained(tmp_path).eval()
    assert torch.equal(hidden(plain, tokens()), hidden(bert, tokens()))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_onnx_export_takes_keyword_inputs_with_dynamic_batch_and_sequence(tmp_path: Path) -> None:
    bert = tiny_bert()
    ts.prune(bert, tokens(), {"ratio": 0.5})
    report = ts.export_onnx(bert, tokens(), tmp_path / "bert.onnx")
    assert report.max_abs_error < 1e-4
    session = ort_session(tmp_path / "bert.onnx")
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    other = tokens(batch=5, seq=9)
    other["attention_mask"][1:, 6:] = 0  # padded: the file must read the mask, not bake it in
    got = session.run(None, ort_feed(session, input_tuple(other)))[0]
    assert got.shape == (5, 9, 48)
    assert abs(torch.from_numpy(got) - hidden(bert, other)).max() < 1e-4
    assert torch.equal(ts.export.OnnxModule(tmp_path / "bert.onnx")(**other), torch.from_numpy(got))
    latency = ts.measure_latency(bert, other, backend="ort", repeats=2, warmup=1)
    assert latency.batch_size == 5


def test_dynamic_int8_takes_keyword_calibration_batches_and_exports(tmp_path: Path) -> None:
    bert = tiny_bert()
    quantized = ts.quantize(bert, [tokens()], {"dynamic": True}, progress=False)
    report = ts.export_onnx(quantized, tokens(), tmp_path / "q.onnx")
    assert report.quantized and report.int8_weights >= 12  # q, k, v, o, two FFN per layer
    assert report.max_abs_error < 0.05 * float(hidden(quantized, tokens()).abs().max())
    cos = torch.nn.functional.cosine_similarity(
        hidden(quantized, tokens()).flatten(1), hidden(bert, tokens()).flatten(1)
    )
    assert cos.min() > 0.95
    # the embedding tables are int8 in the file too (one scale per row)
    assert quantized.quant_state.embeddings == [
        "embeddings.word_embeddings", "embeddings.position_embeddings",
        "embeddings.token_type_embeddings",
    ]  # fmt: skip
    floats = ts.quantize(bert, [tokens()], {"dynamic": True, "embedding_bits": 0}, progress=False)
    assert floats.quant_state.embeddings == []
    kept = ts.export_onnx(floats, tokens(), tmp_path / "f.onnx", check=False)
    table_bytes = sum(m.weight.numel() for m in bert.embeddings.children() if hasattr(m, "weight")
                      and isinstance(m, torch.nn.Embedding))  # fmt: skip
    assert kept.file_bytes - report.file_bytes > 2.5 * table_bytes  # 4 bytes a value, not 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_heads_are_scored_by_the_gradient_of_a_label_free_loss_on_keyword_batches() -> None:
    """Taylor importance (Michel et al.'s head-mask gradient, to first order) from SimCSE's
    contrastive loss: keyword batches, no labels."""
    from torchslim.train.sentence import contrastive_loss, repeated

    bert = tiny_bert()
    batches = [repeated(tokens(4, SEQ)) for _ in range(2)]
    ts.prune(bert, tokens(), {"ratio": 0.5, "importance": "taylor", "taylor_batches": 2},
             data=batches, loss_fn=contrastive_loss)  # fmt: skip
    assert [layer.attention.self.num_attention_heads for layer in bert.encoder.layer] == [3, 3]
    assert all(p.grad is None for p in bert.parameters())  # the scoring leaves no gradients
