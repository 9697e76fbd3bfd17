"""How close a compressed sentence encoder stays to its float self, with no labels: cosine of
the embeddings, and overlap of each sentence's top-k neighbours in retrieval over a corpus
(:func:`torchslim.data.text_corpus`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from torchslim._tensors import call_model, first_tensor, input_tuple


def mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers makes them: the token states averaged over
    the attention mask, then L2-normalised.

    Example:
        >>> h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
        >>> mean_pooled(h, torch.tensor([[1, 1, 0]])).tolist()
        [[0.7071067690849304, 0.7071067690849304]]
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(summed, dim=-1)


@torch.no_grad()
def encode(model: Callable[..., Any], batches: Iterable[Mapping[str, Any]]) -> torch.Tensor:
    """Mean-pooled embeddings of every sentence of ``batches`` (a tokenizer's outputs: keyword
    inputs with an ``attention_mask``); ``model`` returns the token states first (a Hugging
    Face encoder, or an ONNX Runtime session wrapped to take keyword tensors)."""
    out = []
    for batch in batches:
        hidden = first_tensor(call_model(model, input_tuple(batch)))
        out.append(mean_pooled(hidden.float(), batch["attention_mask"]))
    return torch.cat(out)


@dataclass(frozen=True)
class EmbeddingFidelity:
    """A candidate encoder's embeddings against the reference's, over the same sentences."""

    cosine_min: float
    cosine_mean: float
    topk_overlap: float  # mean share of each sentence's k nearest neighbours both agree on
    k: int

    def __str__(self) -> str:
        return (f"cosine min {self.cosine_min:.4f}, mean {self.cosine_mean:.4f}; "
                f"top-{self.k} neighbour overlap {100 * self.topk_overlap:.1f}%")  # fmt: skip


def embedding_fidelity(reference: torch.Tensor, candidate: torch.Tensor,
                       k: int = 10) -> EmbeddingFidelity:  # fmt: skip
    """Cosine between matching rows, and how many of each sentence's ``k`` nearest others
    (by cosine, itself excluded) the candidate's embeddings find too.

    Example:
        >>> ref = F.normalize(torch.randn(50, 8), dim=-1)
        >>> same = embedding_fidelity(ref, ref)
        >>> same.cosine_min > 0.9999, same.topk_overlap
        (True, 1.0)
    """
    ref, cand = F.normalize(reference.float(), dim=-1), F.normalize(candidate.float(), dim=-1)
    cos = (ref * cand).sum(-1)
    k = min(k, len(ref) - 1)
    overlap = 1.0
    if k > 0:
        eye = torch.eye(len(ref), dtype=torch.bool)
        near_ref = (ref @ ref.T).masked_fill(eye, -2).topk(k, dim=1).indices
        near_cand = (cand @ cand.T).masked_fill(eye, -2).topk(k, dim=1).indices
        hits = (near_ref.unsqueeze(2) == near_cand.unsqueeze(1)).any(2).sum(1)
        overlap = float(hits.float().mean() / k)
    return EmbeddingFidelity(float(cos.min()), float(cos.mean()), overlap, k)


def repeated(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A keyword batch holding each sentence twice (rows ``i`` and ``i + N``), the input
    :func:`contrastive_loss` expects.

    Example:
        >>> repeated({"input_ids": torch.tensor([[5, 6]])})["input_ids"].tolist()
        [[5, 6], [5, 6]]
    """
    return {k: torch.cat([v, v]) for k, v in batch.items()}


def contrastive_loss(outputs: Any, temperature: float = 0.05) -> torch.Tensor:
    """SimCSE's unsupervised loss (Gao et al. 2021), a training signal with no labels: the
    batch holds each sentence twice (:func:`repeated`), the two copies see other dropout
    masks in train mode, and each embedding (the token states of the first output, averaged)
    must pick its own copy among the batch's others (cross-entropy over cosines /
    ``temperature``). What ``ts.prune(..., {"importance": "taylor"}, data=..., loss_fn=...)``
    needs to score heads and FFN channels of a sentence encoder by their gradients (Michel et
    al.'s head-mask gradient, to first order).

    Example:
        >>> h = torch.randn(3, 4, 8)
        >>> float(contrastive_loss(torch.cat([h, h]))) < 0.01
        True
    """
    hidden = first_tensor(outputs).float().mean(1)
    n = hidden.shape[0] // 2
    a, b = F.normalize(hidden[:n], dim=-1), F.normalize(hidden[n : 2 * n], dim=-1)
    return F.cross_entropy(a @ b.T / temperature, torch.arange(n, device=hidden.device))
