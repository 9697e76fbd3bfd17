from __future__ import annotations

import torch
import torch.nn.functional as F

from torchslim.data import text_corpus
from torchslim.train.sentence import embedding_fidelity, encode, mean_pooled


def test_corpus_is_fixed_real_english() -> None:
    sentences = text_corpus()
    assert len(sentences) == len(set(sentences)) == 1000
    assert all(8 <= len(s.split()) <= 40 and s[0].isupper() for s in sentences)
    assert text_corpus(limit=5) == sentences[:5]


def test_padding_does_not_move_an_embedding() -> None:
    hidden = torch.randn(1, 6, 4)
    short = mean_pooled(hidden[:, :3], torch.ones(1, 3, dtype=torch.long))
    padded = mean_pooled(hidden, torch.tensor([[1, 1, 1, 0, 0, 0]]))
    assert torch.allclose(short, padded)


def test_fidelity_sees_a_degraded_encoder() -> None:
    g = torch.Generator().manual_seed(0)
    ref = F.normalize(torch.randn(200, 16, generator=g), dim=-1)
    slightly = embedding_fidelity(ref, ref + 0.01 * torch.randn(200, 16, generator=g))
    badly = embedding_fidelity(ref, ref + 0.5 * torch.randn(200, 16, generator=g))
    assert slightly.cosine_min > 0.99 and slightly.topk_overlap > 0.9
    assert badly.cosine_mean < 0.95 and badly.topk_overlap < slightly.topk_overlap
    assert 0.0 <= badly.topk_overlap <= 1.0 and badly.k == 10


def test_encode_reads_keyword_batches() -> None:
    class Encoder(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
            return {"last_hidden_state": F.one_hot(input_ids, 5).float()}

    batch = {"input_ids": torch.tensor([[1, 2, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    emb = encode(Encoder(), [batch, batch])
    assert emb.shape == (2, 5)
    assert torch.allclose(emb[0, 1:3], torch.tensor([0.7071] * 2), atol=1e-4)
