"""Transformer distillation: a pruned tiny BERT (randomly initialised, no weights needed) learns
its unpruned self back from unlabelled keyword batches, with the token losses (hidden states
mapped layer to layer, MiniLM v2 attention relations, cosine of the output)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import torchslim as ts
from torchslim.distill import AttentionRelationLoss, CosineLoss, HiddenStateLoss, fit_distillation
from torchslim.errors import ConfigError
from torchslim.train import Trainer

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 64, 10


def tiny_bert() -> torch.nn.Module:
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=32,
                                  initializer_range=0.2)  # fmt: skip
    torch.manual_seed(0)  # wider initial weights than BERT's 0.02: blocks that change the output
    return transformers.BertModel(cfg).eval()


def sentences(n: int = 64) -> list[dict[str, torch.Tensor]]:
    """Unlabelled items: keyword tensors only, as a tokenizer gives them."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)
    return [{"input_ids": i, "attention_mask": torch.ones(SEQ, dtype=torch.long)} for i in ids]


def output_cosine(student: torch.nn.Module, teacher: torch.nn.Module) -> float:
    batch = torch.utils.data.default_collate(sentences(16))
    with torch.no_grad():
        s, t = student(**batch).last_hidden_state, teacher(**batch).last_hidden_state
    return float(F.cosine_similarity(s, t, dim=-1).mean())


LAST = "encoder.layer.1.attention.self"
LOSSES = [
    {"type": "hidden", "student": ["encoder.layer.0", "encoder.layer.1"]},
    {"type": "attn_relation", "student": [f"{LAST}.query", f"{LAST}.key", f"{LAST}.value"],
     "options": {"relation_heads": 4}},
    {"type": "cosine"},
]  # fmt: skip
TRAIN = {"epochs": 3, "batch_size": 16, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.0,
         "progress": False}  # fmt: skip


@pytest.mark.filterwarnings("ignore::UserWarning")  # BERT's mask check reads values
def test_a_pruned_bert_learns_its_teacher_back_from_unlabelled_keyword_batches() -> None:
    teacher = tiny_bert()
    student = copy.deepcopy(teacher)
    ts.prune(student, torch.utils.data.default_collate(sentences(2)), {"ratio": 0.5})
    assert student.encoder.layer[1].attention.self.num_attention_heads == 2
    before = output_cosine(student, teacher)
    res = fit_distillation(student, teacher, sentences(), {"losses": LOSSES, "train": TRAIN})
    after = output_cosine(student.eval(), teacher)
    history = res.phases["distill"].history
    assert {"hidden", "attn_relation", "cosine"} <= set(history[-1])
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert after > before + 0.1, (before, after)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_dataloader_collate_function_is_used_for_the_batches() -> None:
    """Items of other lengths, padded by the loader's own collate (as a tokenizer pads)."""
    teacher, student = tiny_bert(), tiny_bert()
    items = [torch.arange(1, 4 + i % 5) for i in range(32)]
    seen = []

    def pad(batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        length = max(len(b) for b in batch)
        ids = torch.stack([F.pad(b, (0, length - len(b))) for b in batch])
        seen.append(length)
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}

    loader = DataLoader(items, batch_size=8, collate_fn=pad)
    fit_distillation(student, teacher, loader, {"losses": [{"type": "cosine"}],
                                                   "train": {**TRAIN, "epochs": 1}})  # fmt: skip
    assert len(seen) == 3 and len(set(seen)) > 1  # the example batch, then 2 steps


def test_unlabelled_data_needs_a_distillation_loss_and_no_eval_data() -> None:
    model = tiny_bert()
    with pytest.raises(ConfigError, match="no labels"):
        Trainer(model, {**TRAIN, "epochs": 1}, sentences(16)).fit()
    with pytest.raises(ConfigError, match="no task metric"):
        fit_distillation(tiny_bert(), model, sentences(16),
                            {"losses": [{"type": "cosine"}], "train": TRAIN},
                            eval_data=sentences(16))  # fmt: skip
    with pytest.raises(ConfigError, match="teacher cache"):
        fit_distillation(tiny_bert(), model, sentences(16),
                            {"losses": [{"type": "cosine"}], "train": TRAIN,
                             "cache_teacher": True})  # fmt: skip


def test_token_losses_check_their_layers() -> None:
    with pytest.raises(ConfigError, match="only the last"):
        HiddenStateLoss().build([torch.zeros(2, 5, 8)], [torch.zeros(2, 6, 8)])
    with pytest.raises(ConfigError, match="does not divide"):
        AttentionRelationLoss(relation_heads=3).prepare_teacher([torch.zeros(2, 5, 8)])
    with pytest.raises(ConfigError, match="one width"):
        CosineLoss().build([torch.zeros(2, 8)], [torch.zeros(2, 6)])
    s, t = torch.randn(4, 6, 8), torch.randn(4, 6, 8)
    pooled = CosineLoss(pool="mean")([s], [t])
    expected = 1 - F.cosine_similarity(s.mean(1), t.mean(1), dim=-1).mean()
    assert torch.allclose(pooled, expected)
    hidden = HiddenStateLoss()
    hidden.build([s[..., :4]], [t])
    assert isinstance(hidden.adapters[0], torch.nn.Linear)  # widths differ: a learned map


def test_token_losses_leave_padding_out_where_the_batch_has_a_mask() -> None:
    torch.manual_seed(0)
    real = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    s, t = real.clone(), real.clone()
    s[~mask] = torch.randn(int((~mask).sum()), 8) * 10  # the student differs only on padding
    hidden = HiddenStateLoss()
    hidden.build([s], [t])
    for loss in (hidden, CosineLoss(), CosineLoss(pool="mean")):
        assert float(loss([s], [t])) > 1e-3  # padding counted
        loss.token_mask = mask
        assert float(loss([s], [t])) < 1e-6, type(loss).__name__  # padding left out
        loss.token_mask = None


@pytest.mark.filterwarnings("ignore::UserWarning")  # BERT's mask check reads values
def test_distillation_hands_each_step_its_attention_mask_to_the_losses() -> None:
    seen: list[torch.Tensor | None] = []

    class Recording(CosineLoss):
        def forward(self, student, teacher):  # type: ignore[no-untyped-def]
            seen.append(self.token_mask)
            return super().forward(student, teacher)

    from torchslim.distill.losses import LOSSES as REGISTRY

    REGISTRY["recording_cosine"] = Recording
    try:
        items = sentences(16)
        for item in items[:8]:
            item["attention_mask"] = torch.tensor([1] * (SEQ - 3) + [0] * 3)
        teacher, student = tiny_bert(), tiny_bert()
        fit_distillation(student, teacher, items, {"losses": [{"type": "recording_cosine"}],
                         "train": {**TRAIN, "epochs": 1, "batch_size": 8}})  # fmt: skip
    finally:
        del REGISTRY["recording_cosine"]
    masks = [m for m in seen if m is not None]
    assert masks and any(not bool(m.all()) for m in masks)
    assert all(m.shape[1] == SEQ for m in masks)
