"""Distillation losses, each a small ``nn.Module`` behind one interface.

A loss reads the student's tensors at its ``student`` layers and the teacher's at its
``teacher`` layers (module names, or ``"output"`` for the logits) and returns a scalar:
``loss(student_feats, teacher_feats)``. ``prepare_teacher`` turns the teacher's raw tensors into
what the loss compares against (attention maps, FSP matrices...); that is also what a teacher
cache stores, so cached and live runs compute the same numbers. Losses with trainable parts
(FitNets adapters) create them in ``build`` from the first batch's shapes, before the optimizer
is made.

New criteria are a subclass and a :func:`register_loss` call.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.config import coerce, did_you_mean
from torchslim.errors import ConfigError

Tensors = list[torch.Tensor]


class DistillLoss(nn.Module):
    """Base class: override ``forward`` (and ``prepare_teacher`` / ``build`` when needed).

    ``response`` losses read the logits of every teacher (``teacher`` tensors are one per
    teacher, combined with ``teacher_weights``); the others read one teacher's layers.
    """

    response = False
    # Layers read when the config names none; None means the config must name them.
    default_layers: tuple[str, ...] | None = ("output",)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("teacher_weights", torch.ones(1), persistent=False)
        # the step's attention mask (N, L) where the batch has one: token losses skip padding
        self.token_mask: torch.Tensor | None = None

    def set_teacher_weights(self, weights: Sequence[float]) -> None:
        """Weights of the teachers (normalised to sum to 1) for response losses."""
        w = torch.tensor([float(x) for x in weights])
        self.teacher_weights = w / w.sum()

    def prepare_teacher(self, feats: Tensors) -> Tensors:
        """The teacher's tensors as this loss compares them (what a teacher cache keeps)."""
        return feats

    def build(self, student: Tensors, teacher: Tensors) -> None:
        """Create trainable parts from example tensors (student raw, teacher prepared) and
        check shapes; the base class checks that response losses compare equal shapes."""
        if not self.response:
            return
        for k, t in enumerate(teacher):
            if t.shape[1:] != student[0].shape[1:]:
                raise ConfigError(
                    f"{type(self).__name__}: the student's output has shape "
                    f"{tuple(student[0].shape[1:])} but teacher {k}'s has {tuple(t.shape[1:])}; "
                    "create the student with the teacher's number of classes"
                )

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        raise NotImplementedError


def _pairs(items: Tensors) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if len(items) % 2:
        raise ConfigError(
            f"fsp: layers must come in pairs (stage input, stage output), got {len(items)}"
        )
    return list(zip(items[0::2], items[1::2], strict=True))


def _weighted_mean(tensors: Tensors, weights: torch.Tensor) -> torch.Tensor:
    """Several teachers' tensors combined with their (normalised) weights."""
    stacked = torch.stack([t.float() for t in tensors])
    return torch.einsum("k,k...->...", weights.to(stacked), stacked)


def class_rows(logits: torch.Tensor, class_dim: int | None = None) -> torch.Tensor:
    """Logits as rows of class scores, ``(positions, classes)``: a classifier's ``(N, C)`` as
    it is, a dense map ``(N, C, H, W...)`` (segmentation, a YOLO level) with its classes on dim
    1, a per-anchor tensor ``(N, A, C)`` (SSD, RetinaNet heads) with its classes last.
    ``class_dim`` overrides the guess.

    Example:
        >>> class_rows(torch.zeros(2, 5, 4, 4)).shape, class_rows(torch.zeros(2, 30, 5)).shape
        (torch.Size([32, 5]), torch.Size([60, 5]))
    """
    dim = class_dim if class_dim is not None else (1 if logits.ndim > 3 else -1)
    return logits.movedim(dim, -1).reshape(-1, logits.shape[dim])


class KDLoss(DistillLoss):
    """Hinton et al. 2015: ``alpha * T^2 * KL(p_teacher^T || p_student^T)``; the hard-label
    cross-entropy gets ``1 - alpha`` (the distiller applies it). Several teachers: their softened
    distributions are averaged with the teacher weights. Dense outputs (a segmenter's
    ``(N, C, H, W)`` logits, a detector head's ``(N, anchors, C)``) are distilled per position
    and averaged over positions (:func:`class_rows`; ``class_dim`` overrides the class axis).

    Example:
        >>> s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> round(float(KDLoss(temperature=1.0, alpha=1.0)([s], [t])), 4)
        0.4621
    """

    response = True

    def __init__(
        self, temperature: float = 4.0, alpha: float = 0.9, class_dim: int | None = None
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"kd: temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"kd: alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha, self.class_dim = float(temperature), float(alpha), class_dim

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        t, dim = self.temperature, self.class_dim
        target = _weighted_mean([F.softmax(class_rows(z.float(), dim) / t, dim=-1)
                                 for z in teacher], self.teacher_weights)  # fmt: skip
        log_p = F.log_softmax(class_rows(student[0].float(), dim) / t, dim=-1)
        kl = F.kl_div(log_p, target, reduction="batchmean")
        return self.alpha * t * t * kl


class LogitL2Loss(DistillLoss):
    """Regress the teacher's logits: ``mean(((z_s - z_t) / T)^2)`` over samples and classes
    (several teachers: their logits averaged with the teacher weights).

    Example:
        >>> s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
        >>> float(LogitL2Loss(temperature=2.0)([s], [t]))
        0.625
    """

    response = True

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"l2_logit: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        target = _weighted_mean(teacher, self.teacher_weights)
        return ((student[0] - target) / self.temperature).pow(2).mean()


def _match_spatial(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a 4-D map to ``size``: average-pool down, bilinear up."""
    if x.ndim != 4 or tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _adapter(cin: int, cout: int, ndim: int) -> nn.Module:
    return nn.Conv2d(cin, cout, 1, bias=False) if ndim == 4 else nn.Linear(cin, cout, bias=False)


class FitNetLoss(DistillLoss):
    """FitNets hints (Romero et al. 2015): a learned adapter (1x1 conv for maps, linear for
    vectors) maps each student layer to its teacher layer's width, the map is resized to the
    teacher's spatial size, then mean squared error.

    Example:
        >>> loss = FitNetLoss()
        >>> s, t = [torch.randn(2, 4, 8, 8)], [torch.randn(2, 6, 4, 4)]
        >>> loss.build(s, t)
        >>> loss.adapters[0]
        Conv2d(4, 6, kernel_size=(1, 1), stride=(1, 1), bias=False)
        >>> loss(s, t).ndim
        0
    """

    default_layers = None

    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleList()

    def build(self, student: Tensors, teacher: Tensors) -> None:
        for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
            if s.ndim not in (2, 4) or s.ndim != t.ndim:
                raise ConfigError(
                    f"fitnet: layer pair {i} has shapes {tuple(s.shape)} (student) and "
                    f"{tuple(t.shape)} (teacher); hints need two 4-D maps or two 2-D vectors"
                )
            self.adapters.append(_adapter(s.shape[1], t.shape[1], s.ndim).to(s.device))

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        if len(self.adapters) != len(student):
            raise RuntimeError("FitNetLoss.build() must run before the loss is used")
        terms = []
        for adapter, s, t in zip(self.adapters, student, teacher, strict=True):
            hint = _match_spatial(adapter(s), t.shape[-2:])
            terms.append(F.mse_loss(hint, t.to(hint)))
        return torch.stack(terms).mean()


class DetectionHeadLoss(DistillLoss):
    """Distil a detector's head outputs, the PaddleSlim YOLO distillation recipe made general
    (any dense head: SSD, RetinaNet, FCOS, YOLO levels).

    Layers come in pairs: (class logits, box regression) of one head or one level, e.g.
    ``["head.classification_head", "head.regression_head"]`` for torchvision's SSD, or each
    level's two branches of a YOLO head. Per position (anchor or map cell, :func:`class_rows`):

    * class term: ``T^2 * KL`` of the softened class distributions (``activation="softmax"``,
      a background class included) or the binary cross-entropy against the teacher's sigmoid
      probabilities (``"sigmoid"``, YOLO / RetinaNet style), averaged over positions;
    * box term: smooth-L1 between the box outputs, each position weighted by the teacher's
      foreground score (``1 - p(background)`` for softmax with ``background`` set, else the
      highest class probability), so the student copies the boxes where the teacher sees
      objects (PaddleSlim's objectness-weighted regression).

    The loss is ``cls_weight * class + box_weight * box``, averaged over the pairs.

    Example:
        >>> cls, box = torch.randn(2, 30, 5), torch.randn(2, 30, 4)  # SSD-like: 30 anchors
        >>> loss = DetectionHeadLoss()
        >>> loss.build([cls, box], [cls, box])
        >>> abs(float(loss([cls, box], [cls, box]))) < 1e-6  # a perfect copy
        True
        >>> float(loss([cls, box + 1], [cls, box])) > 0
        True
    """

    default_layers = None

    def __init__(
        self,
        activation: str = "softmax",
        temperature: float = 1.0,
        background: int | None = 0,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        class_dim: int | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ConfigError(
                f"det_head: activation must be softmax or sigmoid, got {activation!r}"
            )
        if temperature <= 0:
            raise ConfigError(f"det_head: temperature must be > 0, got {temperature}")
        self.activation, self.temperature, self.background = (
            activation,
            float(temperature),
            background,
        )
        self.cls_weight, self.box_weight, self.class_dim = (
            float(cls_weight),
            float(box_weight),
            class_dim,
        )

    def build(self, student: Tensors, teacher: Tensors) -> None:
        if len(student) % 2:
            raise ConfigError(
                f"det_head: layers come in pairs (class logits, box regression), got {len(student)}"
            )
        for i in range(0, len(student), 2):
            for who, pair in (("student", student), ("teacher", teacher)):
                cls, box = (
                    class_rows(pair[i], self.class_dim),
                    class_rows(pair[i + 1], self.class_dim),
                )
                if len(cls) != len(box):
                    raise ConfigError(
                        f"det_head: pair {i // 2} of the {who}: {tuple(pair[i].shape)} class "
                        f"logits but {tuple(pair[i + 1].shape)} box outputs give {len(cls)} and "
                        f"{len(box)} positions; name one head's (or level's) two branches"
                    )
            if student[i].shape != teacher[i].shape or student[i + 1].shape != teacher[i + 1].shape:
                raise ConfigError(
                    f"det_head: pair {i // 2}: student {tuple(student[i].shape)} / "
                    f"{tuple(student[i + 1].shape)} vs teacher {tuple(teacher[i].shape)} / "
                    f"{tuple(teacher[i + 1].shape)}; head outputs must match (prune heads' "
                    "outputs never, and keep the same anchors and classes)"
                )

    def _foreground(self, probs: torch.Tensor) -> torch.Tensor:
        if self.activation == "softmax" and self.background is not None:
            return 1.0 - probs[:, self.background]
        return probs.max(dim=-1).values

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        t, dim, terms = self.temperature, self.class_dim, []
        for i in range(0, len(student), 2):
            s_cls, t_cls = class_rows(student[i].float(), dim), class_rows(teacher[i].float(), dim)
            s_box, t_box = (
                class_rows(student[i + 1].float(), dim),
                class_rows(teacher[i + 1].float(), dim),
            )
            if self.activation == "softmax":
                target = F.softmax(t_cls / t, dim=-1)
                cls = (
                    t
                    * t
                    * F.kl_div(F.log_softmax(s_cls / t, dim=-1), target, reduction="batchmean")
                )
                probs = target if t == 1.0 else F.softmax(t_cls, dim=-1)
            else:
                target = torch.sigmoid(t_cls / t)
                bce = F.binary_cross_entropy_with_logits(s_cls / t, target, reduction="none")
                cls = t * t * bce.sum(-1).mean()
                probs = target if t == 1.0 else torch.sigmoid(t_cls)
            weight = self._foreground(probs).detach()
            box = F.smooth_l1_loss(s_box, t_box, reduction="none").sum(-1)
            box = (box * weight).sum() / weight.sum().clamp_min(1e-6)
            terms.append(self.cls_weight * cls + self.box_weight * box)
        return torch.stack(terms).mean()


def attention_map(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention: ``mean_c |x|^p``, flattened, L2-normalised.

    Example:
        >>> attention_map(torch.ones(1, 3, 2, 2))
        tensor([[0.5000, 0.5000, 0.5000, 0.5000]])
    """
    return F.normalize(x.float().abs().pow(p).mean(1).flatten(1), dim=1)


class AttentionTransferLoss(DistillLoss):
    """Attention transfer: ``beta / 2 * mean((Q_s - Q_t)^2)`` per layer pair (averaged over
    pairs) with ``Q`` the normalised attention map; maps of different sizes are pooled to the
    smaller one. ``beta = 1000`` as in the paper.

    Example:
        >>> a = torch.ones(1, 3, 2, 2)
        >>> float(AttentionTransferLoss()([a], AttentionTransferLoss().prepare_teacher([a])))
        0.0
    """

    default_layers = None

    def __init__(self, p: float = 2.0, beta: float = 1000.0) -> None:
        super().__init__()
        self.p, self.beta = float(p), float(beta)

    def prepare_teacher(self, feats: Tensors) -> Tensors:
        # Keep the map at full resolution; reshaped back so the student can pool to it.
        return [attention_map(f, self.p).view(f.shape[0], 1, *f.shape[2:]) for f in feats]

    def build(self, student: Tensors, teacher: Tensors) -> None:
        for s in student:
            if s.ndim != 4:
                raise ConfigError(f"at: expects 4-D feature maps, got {tuple(s.shape)}")

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        terms = []
        for s, t in zip(student, teacher, strict=True):
            h, w = min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3])
            qs = attention_map(_match_spatial(s, (h, w)), self.p)
            qt = F.normalize(_match_spatial(t.float(), (h, w)).flatten(1), dim=1)
            terms.append((qs - qt).pow(2).mean())
        return self.beta / 2 * torch.stack(terms).mean()


def fsp_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Yim et al.'s flow of solution procedure: ``G = a^T b / (h w)`` between two maps of one
    image (the larger map is average-pooled to the smaller one's size).

    Example:
        >>> fsp_matrix(torch.ones(2, 3, 4, 4), torch.ones(2, 5, 2, 2)).shape
        torch.Size([2, 3, 5])
    """
    size = (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))
    a, b = _match_spatial(a.float(), size).flatten(2), _match_spatial(b.float(), size).flatten(2)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[2]


class FSPLoss(DistillLoss):
    """FSP matrices between consecutive pairs of layers (``layers`` lists 2k names: pair i is
    entries 2i and 2i+1), ``mean((G_s - G_t)^2)`` averaged over pairs. Student and teacher
    layers of a pair need equal channel counts (as in the paper's same-width networks).

    Example:
        >>> x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
        >>> loss = FSPLoss()
        >>> float(loss([x, y], loss.prepare_teacher([x, y])))
        0.0
    """

    default_layers = None

    def prepare_teacher(self, feats: Tensors) -> Tensors:
        return [fsp_matrix(a, b) for a, b in _pairs(feats)]

    def build(self, student: Tensors, teacher: Tensors) -> None:
        for i, ((a, b), g) in enumerate(zip(_pairs(student), teacher, strict=True)):
            if (a.shape[1], b.shape[1]) != tuple(g.shape[1:]):
                raise ConfigError(
                    f"fsp: pair {i} gives a {a.shape[1]}x{b.shape[1]} student matrix but a "
                    f"{g.shape[1]}x{g.shape[2]} teacher matrix; pick layers of equal widths"
                )

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        terms = [
            (fsp_matrix(a, b) - g.float()).pow(2).mean()
            for (a, b), g in zip(_pairs(student), teacher, strict=True)
        ]
        return torch.stack(terms).mean()


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(1e-12).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # [j, i] = e_i - e_j
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


class RKDLoss(DistillLoss):
    """Relational KD (Park et al. 2019) on flattened embeddings: the distance term (pairwise
    distances normalised by their mean, smooth-L1) weighted 25 and the angle term (cosines of
    the angles of every triple, smooth-L1) weighted 50, as in the paper.

    Example:
        >>> e = torch.randn(6, 4)
        >>> float(RKDLoss()([e], [2 * e]))  # relations are scale-free
        0.0
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__()
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        total = student[0].new_zeros(())
        for s, t in zip(student, teacher, strict=True):
            s, t = s.float().flatten(1), t.float().flatten(1)
            if self.distance_weight:
                ds, dt = _pairwise_distances(s), _pairwise_distances(t)
                off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
                ds, dt = ds / ds[off].mean(), dt / dt[off].mean()
                total = total + self.distance_weight * F.smooth_l1_loss(ds, dt)
            if self.angle_weight:
                total = total + self.angle_weight * F.smooth_l1_loss(_angles(s), _angles(t))
        return total / len(student)


def similarity_matrix(x: torch.Tensor) -> torch.Tensor:
    """Tung & Mori's batch similarity: ``normalize_rows(F F^T)`` for flattened features ``F``.

    Example:
        >>> similarity_matrix(torch.eye(2))
        tensor([[1., 0.],
                [0., 1.]])
    """
    f = x.float().flatten(1)
    return F.normalize(f @ f.t(), dim=1)


class SimilarityPreservingLoss(DistillLoss):
    """Similarity-preserving KD: ``gamma * ||G_s - G_t||_F^2 / b^2`` per layer pair (averaged),
    ``gamma = 3000`` as in the paper.

    Example:
        >>> x = torch.randn(4, 3, 2, 2)
        >>> float(SimilarityPreservingLoss()([x], [x]))
        0.0
    """

    def __init__(self, gamma: float = 3000.0) -> None:
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, student: Tensors, teacher: Tensors) -> torch.Tensor:
        terms = []
        for s, t in zip(student, teacher, strict=True):
            b = s.shape[0]
            diff = similarity_matrix(s) - similarity_matrix(t)
            terms.append(diff.pow(2).sum() / (b * b))
        return self.gamma * torch.stack(terms).mean()


# A closed registry: config names -> loss classes.
LOSSES: dict[str, Callable[..., DistillLoss]] = {
    "kd": KDLoss,
    "l2_logit": LogitL2Loss,
    "fitnet": FitNetLoss,
    "det_head": DetectionHeadLoss,
    "at": AttentionTransferLoss,
    "fsp": FSPLoss,
    "rkd": RKDLoss,
    "sp": SimilarityPreservingLoss,
}


def register_loss(name: str, cls: Callable[..., DistillLoss]) -> None:
    """Make ``cls`` available to configs as ``type: name``.

    Example:
        >>> class Cosine(DistillLoss):
        ...     def forward(self, student, teacher):
        ...         return 1 - F.cosine_similarity(student[0], teacher[0]).mean()
        >>> register_loss("cosine_logits", Cosine)
        >>> "cosine_logits" in LOSSES
        True
    """
    if name in LOSSES:
        raise ConfigError(f"distillation loss {name!r} is already registered")
    LOSSES[name] = cls


def _parameters(factory: Callable[..., DistillLoss]) -> tuple[dict[str, Any], bool]:
    """The keyword parameters of a loss factory with their annotated types (``Any`` where
    unknown), and whether it also takes ``**kwargs``."""
    signature = inspect.signature(factory)
    init = factory.__init__ if isinstance(factory, type) else factory
    try:
        hints = typing.get_type_hints(init)
    except (NameError, TypeError):  # annotations this module cannot resolve: left unchecked
        hints = {}
    params, open_ended = {}, False
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            open_ended = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params[p.name] = hints.get(p.name, Any)
    return params, open_ended


def loss_options(name: str, options: Mapping[str, Any], where: str = "options") -> dict[str, Any]:
    """``options`` for the loss registered as ``name``, each checked against the loss's keyword
    parameters and converted to its annotated type (YAML's ``1e-3`` arrives as a string and
    leaves as a float); an unknown option is a :class:`ConfigError` with a did-you-mean.

    Example:
        >>> loss_options("kd", {"temperature": "1e-3"})
        {'temperature': 0.001}
        >>> loss_options("kd", {"temprature": 2})
        Traceback (most recent call last):
        ...
        torchslim.errors.ConfigError: options.temprature: kd takes no option 'temprature' (did \
you mean 'temperature'?); its options are ['temperature', 'alpha', 'class_dim']
    """
    params, open_ended = _parameters(LOSSES[name])
    out = {}
    for key, value in options.items():
        if key in params:
            out[key] = coerce(value, params[key], f"{where}.{key}")
        elif open_ended:
            out[key] = value
        else:
            raise ConfigError(
                f"{where}.{key}: {name} takes no option {key!r}{did_you_mean(key, params)}; "
                f"its options are {list(params)}"
            )
    return out


def build_loss(name: str, options: dict) -> DistillLoss:
    """Instantiate the loss registered as ``name`` with ``options``; clear errors for both.

    Example:
        >>> build_loss("kd", {"temperature": 2.0}).temperature
        2.0
    """
    if name not in LOSSES:
        raise ConfigError(
            f"losses: unknown distillation loss {name!r}{did_you_mean(name, LOSSES)}; "
            f"choose from {sorted(LOSSES)}"
        )
    try:
        return LOSSES[name](**loss_options(name, options, f"losses: {name}: options"))
    except TypeError as exc:
        raise ConfigError(f"losses: {name}: {exc}") from None
