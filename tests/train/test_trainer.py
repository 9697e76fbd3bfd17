from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchslim.errors import CheckpointError, ConfigError, TrainingDivergedError
from torchslim.train import Callback, StepContext, TrainConfig, Trainer, evaluate, seed_everything

HERE = Path(__file__).parent
SCRIPT = HERE / "tiny_run.py"
sys.path.insert(0, str(HERE))
from tiny_run import tiny_data, tiny_model  # noqa: E402


def _run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=240
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs")


def test_learns_a_separable_problem() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    data = TensorDataset(x, y)
    before = evaluate(model, data).accuracy
    result = Trainer(
        model, {"epochs": 8, "batch_size": 32, "lr": 0.1, "progress": False}, data, data
    ).fit()
    assert len(result.history) == 8
    assert result.final["eval_acc"] > 0.9 > before
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("ckpt_every", [0, 4])
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(
    tmp_path: Path, ckpt_every: int
) -> None:
    # 6 steps per epoch: step 9 is in the middle of the second epoch.
    full, killed = tmp_path / "full", tmp_path / "killed"
    common = ["--ckpt-every", str(ckpt_every)]
    assert _run(str(SCRIPT), str(full), *common).returncode == 0
    proc = _run(str(SCRIPT), str(killed), *common, "--kill-at-step", "9")
    assert proc.returncode == -9, proc.stderr
    assert not (killed / "final_rank0.pt").exists()
    saved = torch.load(killed / "last.pt", weights_only=False)
    assert (saved["epoch"], saved["step_in_epoch"]) == ((1, 2) if ckpt_every else (1, 0))
    proc = _run(str(SCRIPT), str(killed), *common, "--resume")
    assert proc.returncode == 0, proc.stderr
    _assert_same(_weights(full / "final_rank0.pt"), _weights(killed / "final_rank0.pt"))
    rows = lambda p: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k != "time_s"}
        for line in (p / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows(full) == rows(killed)


def test_torchrun_two_ranks_finish_with_identical_weights(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = _run(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = _weights(out / "final_rank0.pt"), _weights(out / "final_rank1.pt")
    _assert_same(r0, r1)
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["global_step"] == 9  # 96 samples / 2 ranks / 16
    assert len(ckpt["rng"]) == 2


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Boom(Callback):
    """Poisons the model after the first epoch so the next loss is NaN."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: object) -> None:
        if epoch == 0:
            trainer.poison = True

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if getattr(trainer, "poison", False):
            trainer.digest_before = _digest(trainer.checkpoint_path)
            with torch.no_grad():
                trainer.model[-1].weight.fill_(float("nan"))


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tmp_path: Path) -> None:
    boom = _Boom()
    trainer = Trainer(
        tiny_model(),
        {"epochs": 3, "batch_size": 16, "progress": False},
        tiny_data(),
        out_dir=tmp_path,
        callbacks=[boom],
    )
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit()
    message = str(info.value)
    assert "step 7" in message and "epoch 2" in message and "intact" in message
    assert _digest(tmp_path / "last.pt") == trainer.digest_before
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1


def test_resume_with_changed_config_is_refused(tmp_path: Path) -> None:
    cfg = {"epochs": 1, "batch_size": 16, "progress": False}
    Trainer(tiny_model(), cfg, tiny_data(), out_dir=tmp_path).fit()
    trainer = Trainer(tiny_model(), {**cfg, "lr": 0.3}, tiny_data(), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"lr: 0.1 -> 0.3"):
        trainer.fit(resume=True)


def test_metrics_files_and_callbacks(tmp_path: Path) -> None:
    seen: list[str] = []

    class Record(Callback):
        def on_fit_start(self, trainer: Trainer) -> None:
            seen.append("fit")

        def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: object) -> None:
            seen.append(f"end{epoch}")

    cfg = {"epochs": 2, "batch_size": 32, "progress": False, "eval_every": 2}
    Trainer(
        tiny_model(), cfg, tiny_data(), tiny_data(16), out_dir=tmp_path, callbacks=[Record()]
    ).fit()
    assert seen == ["fit", "end0", "end1"]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert "eval_acc" not in rows[0] and 0.0 <= rows[1]["eval_acc"] <= 1.0
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "train_acc", "eval_acc", "lr"} <= set(header)


class _L2Adapter(nn.Module):
    """A trainable extra loss: pulls a learned vector towards the logits' mean."""

    name = "adapter"

    def __init__(self) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.ones(3))

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return ((ctx.outputs.detach().mean(0) - self.v) ** 2).sum()


def test_extra_losses_are_added_trained_and_logged(tmp_path: Path) -> None:
    adapter = _L2Adapter()
    calls: list[int] = []

    def penalty(ctx: StepContext) -> dict[str, torch.Tensor]:
        calls.append(ctx.step)
        return {"l1": 1e-4 * sum(p.abs().sum() for p in ctx.model.parameters())}

    result = Trainer(
        tiny_model(),
        {"epochs": 1, "batch_size": 16, "progress": False, "weight_decay": 0.0},
        tiny_data(),
        extra_losses=[adapter, penalty],
    ).fit()
    assert calls == list(range(6))
    assert not torch.equal(adapter.v.detach(), torch.ones(3))
    assert {"adapter", "l1", "task_loss"} <= result.final.keys()
    final = result.final
    assert final["train_loss"] == pytest.approx(final["task_loss"] + final["adapter"] + final["l1"])


@pytest.mark.parametrize(
    "changes",
    [
        {"precision": "bf16"},
        {"optimizer": "adamw", "lr": 1e-3, "schedule": "step", "milestones": [1]},
        {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
        {"grad_clip_norm": 0.5, "nesterov": True, "channels_last": True},
        {"num_workers": 1},
    ],
)
def test_options_train_without_nan(changes: dict) -> None:
    cfg = {"epochs": 2, "batch_size": 16, "progress": False, **changes}
    result = Trainer(tiny_model(), cfg, DataLoader(tiny_data(), batch_size=4), tiny_data(16)).fit()
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)
    assert 0.0 <= result.final["eval_acc"] <= 1.0


def test_no_bias_decay_groups() -> None:
    trainer = Trainer(tiny_model(), {"progress": False, "weight_decay": 0.01}, tiny_data())
    decays = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    model = trainer.model
    assert decays[id(model[0].weight)] == 0.01 and decays[id(model[-1].weight)] == 0.01
    for p in (model[0].bias, model[1].weight, model[1].bias, model[-1].bias):
        assert decays[id(p)] == 0.0


def test_zero_gamma_option_uses_models_hook() -> None:
    from torchslim.models import create

    model = create("resnet8", num_classes=3, in_channels=1)
    trainer = Trainer(
        model,
        {"epochs": 1, "zero_gamma": True, "max_steps_per_epoch": 1, "lr": 1e-9, "progress": False},
        tiny_data(),
    )
    trainer.fit()
    last_bns = [m.bn2 for m in model.modules() if hasattr(m, "zero_init_last")]
    assert last_bns and all(bn.weight.abs().max() < 1e-6 for bn in last_bns)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"epoch": 3}, "did you mean 'epochs'"),
        ({"lr": -1.0}, "lr: must be > 0"),
        ({"schedule": "cosin"}, "did you mean 'cosine'"),
        ({"schedule": "step"}, "milestones"),
        ({"warmup_epochs": 20, "epochs": 2}, "warmup_epochs"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
    ],
)
def test_bad_config_is_a_clear_error(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Trainer(tiny_model(), config, tiny_data())


def test_config_round_trip() -> None:
    cfg = TrainConfig(optimizer="adamw", milestones=[2, 4], schedule="step")
    assert cfg.optimizer.value == "adamw" and cfg.milestones == (2, 4)


def test_task_weight_scales_the_training_loss_only() -> None:
    def one_step(weight: float) -> tuple[float, float]:
        seed_everything(0)
        cfg = {"epochs": 1, "batch_size": 16, "max_steps_per_epoch": 1, "progress": False}
        trainer = Trainer(tiny_model(), cfg, tiny_data(16), tiny_data(16), task_weight=weight)
        final = trainer.fit().final
        return final["train_loss"], final["eval_loss"]

    (full, _), (half, eval_loss) = one_step(1.0), one_step(0.5)
    assert half == pytest.approx(0.5 * full, rel=1e-6)
    assert eval_loss > 0.75 * full  # evaluation reports the unscaled cross-entropy


def test_third_batch_element_reaches_extra_losses_as_extra() -> None:
    x, y = tiny_data(16).tensors
    data = TensorDataset(x, y, torch.arange(16))
    seen: list[torch.Tensor] = []

    def record(ctx: StepContext) -> torch.Tensor:
        seen.append(ctx.extra)
        return ctx.outputs.sum() * 0

    cfg = {"epochs": 1, "batch_size": 8, "progress": False}
    Trainer(tiny_model(), cfg, data, extra_losses=[record]).fit()
    assert sorted(torch.cat(seen).tolist()) == list(range(16))


def test_evaluate_leaves_a_frozen_batchnorm_frozen() -> None:
    # Fine-tuning with frozen BatchNorm statistics: an evaluation in between must not unfreeze
    # them (model.train(was) after eval() would set the whole tree back to training).
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    model.train()
    model[2].eval()
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    evaluate(model, data)
    assert [m.training for m in model] == [True, True, False, True]


class _InfVarianceAt(Callback):
    """Sets a BatchNorm running variance to inf after step ``step``, as a huge lr does."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, step: int, logs: object) -> None:
        if step == self.step:
            trainer.model[1].running_var[2] = float("inf")


def test_a_poisoned_model_is_never_checkpointed_nor_called_good(tmp_path: Path) -> None:
    from torchslim.train import load_checkpoint

    cfg = {"epochs": 2, "batch_size": 16, "progress": False, "checkpoint_every_steps": 1}
    trainer = Trainer(
        tiny_model(), cfg, tiny_data(), out_dir=tmp_path, callbacks=[_InfVarianceAt(3)]
    )
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit()
    message = str(info.value)
    assert "after step 3" in message and "1.running_var (1 of 4 values NaN/inf" in message
    assert "not written" in message and "(step 2; finite weights" in message
    assert load_checkpoint(tmp_path / "last.pt")["global_step"] == 2


def test_a_huge_learning_rate_leaves_only_finite_checkpoints(tmp_path: Path) -> None:
    from torchslim.train import load_checkpoint

    cfg = {"epochs": 3, "batch_size": 16, "lr": 1e6, "warmup_epochs": 0, "progress": False,
           "checkpoint_every_steps": 1}  # fmt: skip
    seed_everything(0)
    with pytest.raises(TrainingDivergedError, match=r"non-finite|loss became") as info:
        Trainer(tiny_model(), cfg, tiny_data(), out_dir=tmp_path).fit()
    # what was kept loads (finite, checksums verified) and only that is called good
    step = load_checkpoint(tmp_path / "last.pt")["global_step"]
    assert f"(step {step}; finite weights, checksums verified) is intact" in str(info.value)


def test_resume_of_another_model_or_architecture_is_refused(tmp_path: Path) -> None:
    cfg = {"epochs": 1, "batch_size": 16, "progress": False}
    Trainer(tiny_model(), cfg, tiny_data(), out_dir=tmp_path, metadata={"model": "a"}).fit()
    trainer = Trainer(tiny_model(), cfg, tiny_data(), out_dir=tmp_path, metadata={"model": "b"})
    with pytest.raises(CheckpointError, match=r"different model or data \(model: 'a' -> 'b'\)"):
        trainer.fit(resume=True)
    wider = nn.Sequential(*tiny_model()[:-1], nn.Linear(16, 5))
    with pytest.raises(CheckpointError, match=r"different architecture.*6\.weight: \(3, 16\)"):
        Trainer(wider, cfg, tiny_data(), out_dir=tmp_path).fit(resume=True)


def test_resolve_device_keeps_the_index_and_refuses_what_is_not_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torchslim.train.trainer import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:1") == torch.device("cuda:1")  # the CLI used to make it "cuda"
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="'gpu' is not a device"):
        resolve_device("gpu")


@pytest.mark.filterwarnings("ignore::UserWarning")  # BERT's mask check reads values
def test_a_hugging_face_classifier_trains_and_evaluates_on_keyword_batches() -> None:
    pytest.importorskip("transformers")
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from hf_classifier import TokenDataset, tiny_classifier

    model, data = tiny_classifier(), TokenDataset()
    before = evaluate(model, data, batch_size=32)
    cfg = {"epochs": 3, "batch_size": 16, "lr": 1e-3, "optimizer": "adamw", "progress": False}
    result = Trainer(model, cfg, data, data).fit()
    after = evaluate(model, data, batch_size=32)
    assert after.samples == 96 and after.loss < before.loss
    assert result.final["eval_acc"] == pytest.approx(after.accuracy)
