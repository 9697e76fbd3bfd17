from __future__ import annotations

import math

import pytest
import torch

from torchslim.distill import (
    AttentionTransferLoss,
    DetectionHeadLoss,
    FitNetLoss,
    FSPLoss,
    KDLoss,
    LogitL2Loss,
    LossSpec,
    RKDLoss,
    SimilarityPreservingLoss,
    build_loss,
)
from torchslim.errors import ConfigError


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_kd_matches_hand_computed_kl_scaled_by_t_squared_and_alpha() -> None:
    s, t, temp, alpha = [2.0, 0.0, -1.0], [0.0, 1.0, 3.0], 2.0, 0.6
    ps, pt = _softmax([v / temp for v in s]), _softmax([v / temp for v in t])
    kl = sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))
    got = KDLoss(temperature=temp, alpha=alpha)([torch.tensor([s])], [torch.tensor([t])])
    assert float(got) == pytest.approx(alpha * temp**2 * kl, rel=1e-5)


def test_kd_several_teachers_average_their_soft_targets() -> None:
    s, t1, t2 = [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]
    loss = KDLoss(temperature=1.0, alpha=1.0)
    loss.set_teacher_weights([3.0, 1.0])
    p1, p2 = _softmax(t1), _softmax(t2)
    target = [0.75 * a + 0.25 * b for a, b in zip(p1, p2, strict=True)]
    ps = _softmax(s)
    kl = sum(b * math.log(b / a) for a, b in zip(ps, target, strict=True))
    got = loss([torch.tensor([s])], [torch.tensor([t1]), torch.tensor([t2])])
    assert float(got) == pytest.approx(kl, rel=1e-5)


def test_l2_logit_is_squared_difference_over_t() -> None:
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[3.0, 2.0], [1.0, -1.0]])
    # squared differences over T: (1, 0, 0.25, 0.25); their mean is 0.375
    assert float(LogitL2Loss(temperature=2.0)([s], [t])) == pytest.approx(0.375)


def test_fitnet_with_identity_adapter_is_mse_and_resizes_to_teacher() -> None:
    loss = FitNetLoss()
    s, t = torch.arange(16.0).view(1, 1, 4, 4), torch.ones(1, 1, 2, 2)
    loss.build([s], [t])
    with torch.no_grad():
        loss.adapters[0].weight.fill_(1.0)
    pooled = torch.tensor([[2.5, 4.5], [10.5, 12.5]])  # 2x2 average pools of arange(16)
    expected = float(((pooled - 1.0) ** 2).mean())
    assert float(loss([s], [t]).detach()) == pytest.approx(expected)
    vec = FitNetLoss()
    vec.build([torch.randn(3, 5)], [torch.randn(3, 7)])
    assert vec.adapters[0].weight.shape == (7, 5)


def test_fitnet_rejects_mismatched_ranks() -> None:
    with pytest.raises(ConfigError, match="hints need two 4-D maps"):
        FitNetLoss().build([torch.randn(2, 4, 3, 3)], [torch.randn(2, 4)])


def test_attention_transfer_hand_computed() -> None:
    s = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    t = torch.ones(1, 1, 2, 2)
    loss = AttentionTransferLoss(beta=2.0)
    # Q_s = (1,0,0,0), Q_t = (.5,.5,.5,.5): mean sq diff = (0.25 + 3 * 0.25) / 4 = 0.25
    assert float(loss([s], loss.prepare_teacher([t]))) == pytest.approx(0.25)


def test_fsp_matrix_hand_computed() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    b = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]]).view(1, 2, 2, 2)
    loss = FSPLoss()
    g_t = loss.prepare_teacher([torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2)])
    loss.build([a, b], g_t)
    # G = [(1 + 4) / 4, (2 + 4 + 6 + 8) / 4] = [1.25, 5]; mean square against zeros
    assert float(loss([a, b], g_t)) == pytest.approx((1.25**2 + 5**2) / 2)


def test_fsp_rejects_width_mismatch_and_odd_layer_lists() -> None:
    loss = FSPLoss()
    g_t = loss.prepare_teacher([torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, 2)])
    with pytest.raises(ConfigError, match="equal widths"):
        loss.build([torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2)], g_t)
    with pytest.raises(ConfigError, match="pairs"):
        loss.prepare_teacher([torch.zeros(1, 1, 2, 2)])


def _rkd_reference(s: list[list[float]], t: list[list[float]]) -> float:
    def dist(e: list[list[float]]) -> list[float]:
        d = [math.dist(a, b) for i, a in enumerate(e) for j, b in enumerate(e) if i != j]
        mean = sum(d) / len(d)
        return [x / mean for x in d]

    def angles(e: list[list[float]]) -> list[float]:
        out = []
        for j in range(len(e)):
            for i in range(len(e)):
                for k in range(len(e)):
                    u = [a - b for a, b in zip(e[i], e[j], strict=True)]
                    v = [a - b for a, b in zip(e[k], e[j], strict=True)]
                    nu, nv = math.hypot(*u) or 1.0, math.hypot(*v) or 1.0
                    out.append(sum(a * b for a, b in zip(u, v, strict=True)) / (nu * nv))
        return out

    def smooth_l1(x: list[float], y: list[float]) -> float:
        d = [abs(a - b) for a, b in zip(x, y, strict=True)]
        return sum(0.5 * v * v if v < 1 else v - 0.5 for v in d) / len(d)

    # torch's pairwise-distance matrix keeps the zero diagonal: n*n entries, n*(n-1) non-zero
    n = len(s)
    ds, dt = dist(s), dist(t)
    dist_term = smooth_l1(ds, dt) * len(ds) / (n * n)
    return 25 * dist_term + 50 * smooth_l1(angles(s), angles(t))


def test_rkd_matches_loop_reference_and_is_scale_free() -> None:
    s = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
    t = [[0.0, 0.0], [2.0, 1.0], [1.0, 1.0]]
    got = float(RKDLoss()([torch.tensor(s)], [torch.tensor(t)]))
    assert got == pytest.approx(_rkd_reference(s, t), rel=1e-4)
    e = torch.randn(5, 3)
    assert float(RKDLoss()([e], [3 * e])) == pytest.approx(0.0, abs=1e-5)


def test_similarity_preserving_hand_computed() -> None:
    b = 3
    s, t = torch.eye(b), torch.ones(b, b)
    # G_s = I; G_t rows are all 1/sqrt(3): ||I - G_t||^2 = 3 * ((1 - r)^2 + 2 r^2), r = 3^-0.5
    r = 3**-0.5
    expected = 10.0 * 3 * ((1 - r) ** 2 + 2 * r * r) / (b * b)
    assert float(SimilarityPreservingLoss(gamma=10.0)([s], [t])) == pytest.approx(expected)


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="did you mean 'fitnet'"):
        build_loss("fitnet2", {})
    with pytest.raises(ConfigError, match=r"kd: .*tempreature"):
        build_loss("kd", {"tempreature": 3})
    with pytest.raises(ConfigError, match="alpha must be in"):
        build_loss("kd", {"alpha": 1.5})


def test_loss_spec_parse_and_validation() -> None:
    spec = LossSpec.parse("fitnet:student=layer1+layer2,teacher=layer2+layer3,weight=0.5")
    assert (spec.student, spec.teacher, spec.weight) == (
        ("layer1", "layer2"),
        ("layer2", "layer3"),
        0.5,
    )
    assert LossSpec.parse("kd:T=4,alpha=0.9").options == {"temperature": 4, "alpha": 0.9}
    with pytest.raises(ConfigError, match="key=value"):
        LossSpec.parse("kd:T")
    with pytest.raises(ConfigError, match="matching pairs"):
        LossSpec("at", student=("a", "b"), teacher=("c",))


def test_kd_on_dense_maps_is_per_position_kd_averaged() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)  # segmentation logits
    rows = lambda z: z.permute(0, 2, 3, 1).reshape(-1, 5)  # noqa: E731
    loss = KDLoss(temperature=2.0, alpha=1.0)
    assert float(loss([s], [t])) == pytest.approx(float(loss([rows(s)], [rows(t)])), rel=1e-6)
    # per-anchor head outputs (N, anchors, classes) keep their classes last; class_dim overrides
    a, b = torch.randn(2, 7, 5), torch.randn(2, 7, 5)
    assert float(loss([a], [b])) == pytest.approx(float(loss([a.view(14, 5)], [b.view(14, 5)])))
    moved = KDLoss(temperature=2.0, alpha=1.0, class_dim=1)
    assert float(moved([a.transpose(1, 2)], [b.transpose(1, 2)])) == pytest.approx(
        float(loss([a], [b])), rel=1e-6
    )


def test_det_head_weights_boxes_by_the_teachers_foreground() -> None:
    torch.manual_seed(0)
    # two anchors: the teacher calls anchor 0 background (class 0) and anchor 1 an object
    t_cls = torch.tensor([[[20.0, 0.0, 0.0], [0.0, 20.0, 0.0]]])
    t_box = torch.zeros(1, 2, 4)
    loss = DetectionHeadLoss()
    loss.build([t_cls, t_box], [t_cls, t_box])
    off_background = t_box.clone()
    off_background[0, 0] = 5.0  # wrong box where there is no object: nearly free
    off_object = t_box.clone()
    off_object[0, 1] = 5.0
    assert float(loss([t_cls, off_background], [t_cls, t_box])) < 1e-6
    assert float(loss([t_cls, off_object], [t_cls, t_box])) == pytest.approx(4 * 4.5, rel=1e-4)


def test_det_head_sigmoid_on_dense_levels_matches_hand_computation() -> None:
    torch.manual_seed(0)
    s_cls, t_cls = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)  # a YOLO level: 3 classes
    s_box, t_box = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    loss = DetectionHeadLoss(activation="sigmoid", background=None, box_weight=0.5)
    loss.build([s_cls, s_box], [t_cls, t_box])
    rows = lambda z: z.permute(0, 2, 3, 1).reshape(4, -1)  # noqa: E731
    p = torch.sigmoid(rows(t_cls))
    cls = torch.nn.functional.binary_cross_entropy_with_logits(rows(s_cls), p, reduction="none")
    w = p.max(-1).values
    box = torch.nn.functional.smooth_l1_loss(rows(s_box), rows(t_box), reduction="none").sum(-1)
    expected = cls.sum(-1).mean() + 0.5 * (box * w).sum() / w.sum()
    got = loss([s_cls, s_box], [t_cls, t_box])
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_det_head_rejects_unpaired_or_mismatched_layers() -> None:
    cls, box = torch.randn(1, 6, 3), torch.randn(1, 6, 4)
    with pytest.raises(ConfigError, match="pairs"):
        DetectionHeadLoss().build([cls], [cls])
    with pytest.raises(ConfigError, match="positions"):
        DetectionHeadLoss().build([cls, torch.randn(1, 5, 4)], [cls, box])
    with pytest.raises(ConfigError, match="must match"):
        DetectionHeadLoss().build([cls, box], [torch.randn(1, 6, 5), box])
    with pytest.raises(ConfigError, match="softmax or sigmoid"):
        build_loss("det_head", {"activation": "tanh"})
