from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchslim.distill import Distiller, distill, fit_distillation
from torchslim.errors import ConfigError, InputError
from torchslim.models import create
from torchslim.train import StepContext, seed_everything

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "models"))
from tiny_models import TINY_MODELS  # noqa: E402

SCRIPT = HERE / "tiny_distill.py"
QUICK = {"epochs": 1, "batch_size": 8, "lr": 0.05, "progress": False}


def _data(n: int = 32, size: int = 28) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, size, size, generator=g)
    return TensorDataset(x, torch.randint(0, 10, (n,), generator=g))


def _pair() -> tuple[nn.Module, nn.Module]:
    seed_everything(0)
    return create("resnet8", num_classes=10, in_channels=1), create(
        "resnet14", num_classes=10, in_channels=1
    )


ALL_LOSSES = [
    {"type": "kd", "options": {"temperature": 4.0, "alpha": 0.9}},
    {"type": "l2_logit"},
    {"type": "fitnet", "student": ["layer2"]},
    {"type": "at", "student": ["layer1", "layer2", "layer3"]},
    {"type": "fsp", "student": ["stem", "layer1", "layer1", "layer2"]},
    {"type": "rkd", "student": ["flatten"]},
    {"type": "sp", "student": ["layer3"]},
]


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def _step(distiller: Distiller, student: nn.Module, x: torch.Tensor, extra=None) -> dict:
    out = student(x)
    ctx = StepContext(student, x, torch.zeros(len(x), dtype=torch.long), out, 0, 0, extra)
    return distiller(ctx)


def test_gradients_reach_student_and_adapters_only() -> None:
    student, teacher = _pair()
    x = torch.randn(4, 1, 28, 28)
    d = Distiller(student, [teacher], {"losses": ALL_LOSSES}, x[:2])
    terms = _step(d, student, x)
    assert set(terms) == {"kd", "l2_logit", "fitnet", "at", "fsp", "rkd", "sp"}
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in d.parameters())  # the FitNets adapter
    assert student.stem[0].weight.grad.abs().sum() > 0
    assert all(torch.isfinite(t) for t in terms.values())
    d.close()
    assert _hooks(student) == _hooks(teacher) == 0


def test_teacher_stays_in_its_mode_and_unchanged() -> None:
    student, teacher = _pair()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distill(student, teacher, _data(), {"losses": ALL_LOSSES, "train": QUICK})
    assert teacher.training
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    assert _hooks(student) == _hooks(teacher) == 0


def test_cached_teacher_outputs_equal_live_ones() -> None:
    student, teacher = _pair()
    data = _data(12)
    d = Distiller(student, [teacher], {"losses": ALL_LOSSES}, data.tensors[0][:2])
    idx = torch.tensor([5, 0, 7])
    x = data.tensors[0][idx]
    student.eval()
    live = _step(d, student, x)
    d.build_cache(data, batch_size=5, progress=False)
    cached = _step(d, student, x, extra=idx)
    for k in live:
        torch.testing.assert_close(cached[k], live[k], rtol=1e-5, atol=1e-6, msg=k)
    d.close()


def test_hard_label_weight_defaults_to_one_minus_alpha() -> None:
    student, teacher = _pair()
    x = torch.randn(2, 1, 28, 28)
    kd = {"type": "kd", "options": {"alpha": 0.7}}
    assert Distiller(student, [teacher], {"losses": [kd]}, x).hard_label_weight == pytest.approx(
        0.3
    )
    assert (
        Distiller(student, [teacher], {"losses": [{"type": "l2_logit"}]}, x).hard_label_weight == 1
    )
    cfg = {"losses": [kd], "hard_label_weight": 0.5}
    assert Distiller(student, [teacher], cfg, x).hard_label_weight == 0.5


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"losses": [{"type": "fitnet"}]}, "give student"),
        ({"losses": [{"type": "at", "student": ["layer9"]}]}, "no module 'layer9'"),
        ({"losses": [{"type": "kd", "student": ["stem", "fc"]}]}, "reads one layer"),
        ({"losses": [{"type": "sp", "student": ["fc"], "teacher_index": 2}]}, "teacher_index 2"),
        ({"losses": [{"type": "kd"}], "teacher_weights": [1.0, 2.0]}, "2 weights for 1"),
        ({"losses": [{"type": "kdd"}]}, "did you mean 'kd'"),
        ({"losses": []}, "at least one"),
    ],
)
def test_bad_configs_are_clear_errors(config: dict, match: str) -> None:
    student, teacher = _pair()
    with pytest.raises(ConfigError, match=match):
        Distiller(student, [teacher], config, torch.randn(2, 1, 28, 28))
    assert _hooks(student) == _hooks(teacher) == 0


def test_class_count_mismatch_is_explained() -> None:
    teacher = create("resnet8", num_classes=10, in_channels=1)
    student = create("resnet8", num_classes=5, in_channels=1)
    cfg = {"losses": [{"type": "kd"}, {"type": "at", "student": ["layer1"]}]}
    with pytest.raises(ConfigError, match="number of classes"):
        Distiller(student, [teacher], cfg, torch.randn(2, 1, 28, 28))
    assert _hooks(student) == _hooks(teacher) == 0


def test_multi_teacher_reads_every_teacher_for_response_losses() -> None:
    student, t1 = _pair()
    t2 = create("resnet8", num_classes=10, in_channels=1)
    calls = []
    t2.register_forward_hook(lambda *a: calls.append(1))
    cfg = {
        "losses": [{"type": "kd"}, {"type": "at", "student": ["layer3"], "teacher_index": 0}],
        "teacher_weights": [2.0, 1.0],
        "train": QUICK,
    }
    res = fit_distillation(student, [t1, t2], _data(16), cfg)
    assert len(calls) == 1 + 2  # the shape probe, then one per step
    assert "kd" in res.phases["distill"].final and "at" in res.phases["distill"].final


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_tiny_zoo_students_learn_from_a_teacher(name: str) -> None:
    seed_everything(0)
    student = create(name, num_classes=10, in_channels=1, **TINY_MODELS[name])
    teacher = create("resnet8", num_classes=10, in_channels=1)
    before = [p.detach().clone() for p in student.parameters()]
    cfg = {"losses": [{"type": "kd"}, {"type": "rkd"}], "train": QUICK, "cache_teacher": True}
    res = fit_distillation(student, teacher, _data(16), cfg)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    assert torch.isfinite(torch.tensor(res.final["train_loss"]))


def test_two_phase_recipe_runs_both_phases(tmp_path: Path) -> None:
    student, teacher = _pair()
    cfg = {"losses": [{"type": "kd"}], "train": QUICK, "finetune": QUICK}
    res = fit_distillation(student, teacher, _data(16), cfg, eval_data=_data(8), out_dir=tmp_path)
    assert list(res.phases) == ["distill", "finetune"]
    assert "kd" not in res.phases["finetune"].final and "eval_acc" in res.final
    assert (tmp_path / "distill" / "last.pt").exists() and (
        tmp_path / "finetune" / "last.pt"
    ).exists()


def test_a_given_task_loss_is_used_in_both_phases() -> None:
    student, teacher = _pair()
    calls: list[int] = []

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(len(y))
        return 3.0 + 0 * out.sum()

    cfg = {"losses": [{"type": "kd"}], "hard_label_weight": 1.0, "train": QUICK,
           "finetune": QUICK}  # fmt: skip
    res = fit_distillation(student, teacher, _data(16), cfg, loss_fn=loss_fn)
    assert len(calls) == 4  # two steps in each phase
    assert res.phases["distill"].final["task_loss"] == pytest.approx(3.0)


def test_cache_with_mixup_is_refused() -> None:
    student, teacher = _pair()
    cfg = {"cache_teacher": True, "train": {**QUICK, "mixup_alpha": 0.2}}
    with pytest.raises(ConfigError, match="mixup"):
        distill(student, teacher, _data(8), cfg)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=240
    )


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    # 6 steps per epoch: step 9 is mid-way through the second epoch (checkpoint at epoch 1).
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _run(str(full)).returncode == 0
    proc = _run(str(killed), "--kill-at-step", "9")
    assert proc.returncode == -9, proc.stderr
    proc = _run(str(killed), "--resume")
    assert proc.returncode == 0, proc.stderr
    a = torch.load(full / "final.pt", weights_only=False)
    b = torch.load(killed / "final.pt", weights_only=False)
    for part in ("student", "adapter"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0, msg=k)


def test_teacher_that_rejects_the_input_names_the_input_and_the_teacher_module() -> None:
    seed_everything(0)
    student = create("resnet8", num_classes=10, in_channels=1)
    teacher = create("resnet14", num_classes=10, in_channels=3)
    pattern = (
        r"teacher 0 \(\w+\) does not run on the example inputs \(shape \(2, 1, 28, 28\), "
        r"torch\.float32\): module 'stem\.0' \(Conv2d\) rejected it \(RuntimeError: .*3 "
        r"channels.*same channels"
    )
    with pytest.raises(InputError, match=pattern):
        Distiller(student, [teacher], {"losses": [{"type": "kd"}]}, torch.randn(2, 1, 28, 28))
    assert _hooks(student) == _hooks(teacher) == 0
    # the teacher cache names its batch
    teacher = create("resnet14", num_classes=10, in_channels=1)
    d = Distiller(student, [teacher], {"losses": [{"type": "kd"}]}, torch.randn(2, 1, 28, 28))
    data = TensorDataset(torch.randn(8, 3, 28, 28), torch.zeros(8, dtype=torch.long))
    with pytest.raises(InputError, match=r"teacher cache batch 0 .*\(4, 3, 28, 28\).*'stem\.0'"):
        d.build_cache(data, batch_size=4, progress=False)
    d.close()
