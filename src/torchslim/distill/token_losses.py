"""Distillation losses for token sequences (transformers): tensors ``(N, L, C)`` with the
features on the last axis, as a Hugging Face layer returns them.

* ``hidden``: TinyBERT's hidden-state loss, mean squared error per layer pair (a learned linear
  map when the widths differ);
* ``attn_relation``: MiniLM v2's self-attention relations — for the query, key and value
  projections of a layer, the token-to-token softmax ``(X X^T / sqrt(d))`` per relation head,
  teacher to student by KL divergence; it needs no equal head count or width;
* ``cosine``: one minus the cosine between student and teacher features (per token, or of the
  mean over tokens: a sentence embedding).

Where the training batch has an ``attention_mask`` (a tokenizer's output), every average over
tokens leaves the padding out. Registered on import of :mod:`torchslim.distill`.

Example:
    >>> s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 12)
    >>> loss = HiddenStateLoss()
    >>> loss.build([s], [t])
    >>> loss([s], [t]).ndim
    0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.distill.losses import DistillLoss, FitNetLoss, Tensors, register_loss
from torchslim.errors import ConfigError


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``values`` ``(N, L, ...)`` over the real tokens of ``mask`` ``(N, L)``, or
    over everything when there is no mask or it does not fit.

    Example:
        >>> masked_mean(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[True, True, False]]))
        tensor(2.)
    """
    weights = _token_weights(values, mask)
    if weights is None:
        return values.mean()
    weights = weights.expand_as(values)
    return (values * weights).sum() / weights.sum().clamp(min=1)


def _token_weights(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """``mask`` ``(N, L)`` as weights broadcasting over ``x`` ``(N, L, ...)``; None when there
    is no mask or it does not fit ``x``."""
    if mask is None or tuple(x.shape[:2]) != tuple(mask.shape):
        return None
    return mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - 2)))


def _pooled(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean over tokens of ``x`` ``(N, L, C)``, over the real ones where ``mask`` fits."""
    weights = _token_weights(x, mask)
    if weights is None:
        return x.mean(1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


def _tokens(x: torch.Tensor, who: str, i: int) -> torch.Tensor:
    if x.ndim < 2:
        raise ConfigError(
            f"{who}: layer pair {i} gives a tensor of shape {tuple(x.shape)}; it compares "
            "token features (N, L, C) or vectors (N, C)"
        )
    return x.float()


class HiddenStateLoss(FitNetLoss):
    """TinyBERT's hidden-state loss (Jiao et al. 2020): mean squared error between the student's
    and the teacher's token states per layer pair, averaged over the pairs; a student layer of
    another width is first mapped to the teacher's by a learned linear layer (trained with the
    student, saved with the distiller): FitNets' adapters on the feature axis.

    Example:
        >>> x = torch.randn(2, 4, 6)
        >>> loss = HiddenStateLoss()
        >>> loss.build([x], [x])
        >>> float(loss([x], [x])), len(loss.adapters)
        (0.0, 1)
    """

    def build(self, student: Tensors, teacher: Tensors) -> None:
        for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
            _tokens(s, "hidden", i), _tokens(t, "hidden", i)
            if s.shape[:-1] != t.shape[:-1]:
                raise ConfigError(
                    f"hidden: layer pair {i} has shapes {tuple(s.shape)} (student) and "
                    f"{tuple(t.shape)} (teacher); only the last (feature) axis may differ"
                )
            width, target = s.shape[-1], t.shape[-1]
            adapter = nn.Identity() if width == target else nn.Linear(width, target, bias=False)
            self.adapters.append(adapter.to(s.device))

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        if len(self.adapters) != len(student):
            raise RuntimeError("HiddenStateLoss.build() must run before the loss is used")
        terms = [masked_mean((a(s.float()) - t.float()).square().mean(-1), self.token_mask)
                 for a, s, t in zip(self.adapters, student, teacher, strict=True)]  # fmt: skip
        return torch.stack(terms).mean()


def relation_log_probs(x: torch.Tensor, heads: int) -> torch.Tensor:
    """MiniLM v2's self-attention relation of token features ``x`` ``(N, L, C)``: split into
    ``heads`` relation heads of ``C / heads`` features, ``log_softmax(x_h x_h^T / sqrt(d))``
    over the tokens, shape ``(N, heads, L, L)``.

    Example:
        >>> rel = relation_log_probs(torch.randn(2, 5, 8), heads=4)
        >>> tuple(rel.shape), bool(torch.allclose(rel.exp().sum(-1), torch.ones(2, 4, 5)))
        ((2, 4, 5, 5), True)
    """
    n, length, width = x.shape
    if width % heads:
        raise ConfigError(
            f"attn_relation: relation_heads={heads} does not divide a layer of width {width}; "
            "pick a divisor of both the student's and the teacher's widths"
        )
    d = width // heads
    h = x.float().reshape(n, length, heads, d).transpose(1, 2)
    return F.log_softmax(h @ h.transpose(-1, -2) / math.sqrt(d), dim=-1)


class AttentionRelationLoss(DistillLoss):
    """MiniLM v2's multi-head self-attention relation distillation (Wang et al. 2021): for
    each layer pair (typically the query, key and value projections of the last layer) the
    KL divergence from the teacher's token-to-token relations to the student's, averaged over
    the tokens, relation heads and pairs. Student and teacher may have other head counts and
    widths: ``relation_heads`` must divide both widths.

    Example:
        >>> s, t = torch.randn(2, 5, 16), torch.randn(2, 5, 24)
        >>> loss = AttentionRelationLoss(relation_heads=8)
        >>> rel = loss.prepare_teacher([t])
        >>> float(loss([t], rel)) < 1e-6, float(loss([s], rel)) > 0
        (True, True)
    """

    default_layers = None

    def __init__(self, relation_heads: int = 8) -> None:
        super().__init__()
        if relation_heads < 1:
            raise ConfigError(f"attn_relation: relation_heads must be >= 1, got {relation_heads}")
        self.relation_heads = int(relation_heads)

    def prepare_teacher(self, feats: Tensors) -> Tensors:
        return [relation_log_probs(_tokens(t, "attn_relation", i), self.relation_heads)
                for i, t in enumerate(feats)]  # fmt: skip

    def build(self, student: Tensors, teacher: Tensors) -> None:
        for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
            rel = relation_log_probs(_tokens(s, "attn_relation", i), self.relation_heads)
            if rel.shape != t.shape:
                raise ConfigError(
                    f"attn_relation: layer pair {i} relates {tuple(rel.shape)} (student) and "
                    f"{tuple(t.shape)} (teacher): give layers of the same batch and tokens"
                )

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        terms = []
        for s, t in zip(student, teacher, strict=True):
            log_p = relation_log_probs(s, self.relation_heads)
            kl = F.kl_div(log_p, t.to(log_p), log_target=True, reduction="none").sum(-1)
            terms.append(masked_mean(kl.transpose(1, 2), self.token_mask))  # (N, L, heads)
        return torch.stack(terms).mean()


class CosineLoss(DistillLoss):
    """``1 - cos(student, teacher)`` over the feature (last) axis, averaged over tokens and
    layer pairs; ``pool="mean"`` first averages ``(N, L, C)`` features over the (real) tokens
    (the sentence embedding of a mean-pooling encoder). Reads the model's output by default.

    Example:
        >>> x = torch.randn(2, 5, 8)
        >>> same, opposite = float(CosineLoss()([x], [x])), float(CosineLoss()([x], [-x]))
        >>> abs(round(same, 6)), round(opposite, 6)  # abs: rounding may leave -0.0
        (0.0, 2.0)
    """

    def __init__(self, pool: str = "none") -> None:
        super().__init__()
        if pool not in ("none", "mean"):
            raise ConfigError(f"cosine: pool is 'none' or 'mean', got {pool!r}")
        self.pool = pool

    def build(self, student: Tensors, teacher: Tensors) -> None:
        for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
            if s.shape != t.shape:
                raise ConfigError(
                    f"cosine: layer pair {i} has shapes {tuple(s.shape)} (student) and "
                    f"{tuple(t.shape)} (teacher); the cosine compares features of one width"
                )

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        terms = []
        for s, t in zip(student, teacher, strict=True):
            s, t = s.float(), t.float()
            if self.pool == "mean" and s.ndim == 3:
                s, t = _pooled(s, self.token_mask), _pooled(t, self.token_mask)
            terms.append(masked_mean(1 - F.cosine_similarity(s, t, dim=-1), self.token_mask))
        return torch.stack(terms).mean()


register_loss("hidden", HiddenStateLoss)
register_loss("attn_relation", AttentionRelationLoss)
register_loss("cosine", CosineLoss)
