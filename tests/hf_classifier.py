"""A tiny randomly initialised Hugging Face sequence classifier and a dataset of
(keyword-inputs dict, label) items, as a tokenizer-fed text task gives them."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

VOCAB, SEQ, LABELS = 64, 12, 3


def tiny_classifier() -> torch.nn.Module:
    import transformers

    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2,
                                  num_attention_heads=6, intermediate_size=96,
                                  max_position_embeddings=32, num_labels=LABELS)  # fmt: skip
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg).eval()


class TokenDataset(Dataset):
    """``n`` random token sequences; the label is the first token modulo 3."""

    def __init__(self, n: int = 96) -> None:
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids[0] % LABELS


def example_tokens(batch: int = 2) -> dict[str, torch.Tensor]:
    ids = TokenDataset(batch).ids
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
