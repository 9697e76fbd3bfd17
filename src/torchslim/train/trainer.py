"""The one trainer that fine-tuning, distillation and QAT all reuse."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from torchslim._tensors import (
    call_model,
    describe_nonfinite,
    first_nonfinite,
    first_tensor,
    model_args,
)
from torchslim.config import from_dict, to_dict
from torchslim.errors import CheckpointError, ConfigError, RunFolderError, TrainingDivergedError
from torchslim.train import checkpoint as ckpt_io
from torchslim.train import tasks
from torchslim.train.config import RESUMABLE_CHANGES, Precision, Task, TrainConfig
from torchslim.train.distributed import EpochSampler, all_reduce_sum, init_distributed
from torchslim.train.evaluate import (
    DetectionEvalResult,
    EvalResult,
    SegmentationEvalResult,
    correct_count,
    evaluate,
    split_batch,
)
from torchslim.train.run_folder import claim_run_folder
from torchslim.train.schedules import build_optimizer, lr_factor

log = logging.getLogger("torchslim.train")

CHECKPOINT_NAME = "last.pt"


@dataclass
class StepContext:
    """What an extra loss term sees at each training step (for detection, ``inputs`` and
    ``targets`` are the lists of images and target dicts, and ``outputs`` the model's losses)."""

    model: nn.Module
    inputs: Any
    targets: Any
    outputs: Any
    epoch: int
    step: int
    # A third element of each batch, when the data yields (inputs, targets, extra): e.g. the
    # sample indices that a teacher cache is keyed by.
    extra: Any = None


ExtraLoss = Callable[[StepContext], torch.Tensor | Mapping[str, torch.Tensor]]


class Callback:
    """Hooks into the training loop; subclass and override what you need.

    Changes made in ``on_epoch_end`` (e.g. zeroing pruned filters) are in that epoch's checkpoint.
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once, after resuming and before the first step."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Called before the first step of ``epoch`` (0-based)."""

    def on_step_end(self, trainer: Trainer, step: int, logs: Mapping[str, float]) -> None:
        """Called after optimizer step number ``step`` (1-based, counted over the whole run)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        """Called after ``epoch`` was trained and evaluated, before it is checkpointed."""


@dataclass(frozen=True)
class TrainResult:
    """History of per-epoch metrics and where the run's files are.

    ``metric`` is the history key of the task's score: ``eval_acc`` (classification),
    ``eval_map`` (detection, COCO mAP@0.5:0.95) or ``eval_miou`` (segmentation).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    out_dir: Path | None = None
    metric: str = EvalResult.key

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    @property
    def best_eval_acc(self) -> float | None:
        accs = [h["eval_acc"] for h in self.history if "eval_acc" in h]
        return max(accs) if accs else None

    @property
    def best_metric(self) -> float | None:
        """The best evaluated value of ``metric`` (higher is better), or None."""
        values = [h[self.metric] for h in self.history if self.metric in h]
        return max(values) if values else None


def as_dataset(data: Dataset | DataLoader) -> tuple[Dataset, Callable | None]:
    """The map-style dataset behind ``data`` and the DataLoader's collate function, if any."""
    if isinstance(data, DataLoader):
        return data.dataset, data.collate_fn
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(
            f"train/eval data must be a map-style Dataset or a DataLoader over one, got "
            f"{type(data).__name__}; the trainer owns the data order so it can shard and resume"
        )
    return data, None


def split_train_batch(batch: object) -> tuple[Any, Any, Any]:
    """``(inputs, targets, extra)`` of a training batch; an unlabelled batch (a mapping of
    keyword tensors, or a one-element tuple) has ``None`` targets."""
    if isinstance(batch, Mapping):
        return batch, None, None
    if isinstance(batch, (list, tuple)) and len(batch) == 1:
        return batch[0], None, None
    if isinstance(batch, (list, tuple)) and len(batch) == 3:
        return batch[0], batch[1], batch[2]
    return (*split_batch(batch), None)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else the CPU; any other name as given
    (``cuda:1`` stays device 1), refused when it names CUDA on a machine without it.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available; use 'cpu'")
    return device


def _loss_name(fn: object, index: int) -> str:
    name = getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{name}" if index == 0 else f"{name}_{index}"


class Trainer:
    """Train a classifier, detector or segmentation model with everything in
    :class:`TrainConfig`; checkpoint, resume, DDP.

    ``config.task`` (default ``auto``: read from the first batch) picks how batches are
    collated, how the task loss is computed and what evaluation reports - top-1 accuracy,
    COCO mAP or mIoU; see :mod:`torchslim.train.tasks`. ``loss_fn`` is the task loss:
    cross-entropy by default; for segmentation :func:`~torchslim.train.tasks.segmentation_loss`
    (cross-entropy, optionally Dice and Lovász terms); a torchvision detector computes its own
    losses unless one is given. A loss (or a detector) returning a dict of named terms has them
    summed, each one logged and averaged into the epoch's metrics.

    ``extra_losses`` are callables receiving a :class:`StepContext` and returning a tensor or a
    dict of named tensors that are added to the task loss (distillation, sparsity penalties...).
    Those that are ``nn.Module``s are trained too (their parameters join the optimizer) and
    saved in the checkpoint. ``task_weight`` scales the task loss in training (e.g. ``1 - alpha``
    under knowledge distillation); evaluation reports the unscaled loss. Training data may yield
    ``(inputs, targets, extra)``; ``extra`` reaches the extra losses as ``StepContext.extra``.

    Example:
        >>> from torchslim.data import get_dataset, stratified_subset
        >>> from torchslim.models import create
        >>> train = stratified_subset(get_dataset("fashion-mnist", train=True), per_class=20)
        >>> model = create("smallcnn", num_classes=10, in_channels=1)
        >>> result = Trainer(model, {"epochs": 1, "batch_size": 32}, train).fit()
        >>> len(result.history)
        1
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | Mapping[str, Any] | None,
        train_data: Dataset | DataLoader,
        eval_data: Dataset | DataLoader | None = None,
        *,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
        extra_losses: Sequence[ExtraLoss] = (),
        callbacks: Sequence[Callback] = (),
        out_dir: str | Path | None = None,
        num_classes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        task_weight: float = 1.0,
    ) -> None:
        self.config = cfg = from_dict(TrainConfig, config)
        self.task_weight = float(task_weight)
        self.dist = init_distributed(cfg.device)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.train_set, self.collate = as_dataset(train_data)
        self.eval_data = eval_data
        self.loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self._given_loss_fn = loss_fn
        self._segmentation_loss: nn.Module | None = None
        # The task of the batches, once the first one has been seen (or config.task names it).
        self.task: Task | None = None if cfg.task is Task.AUTO else cfg.task
        self._task_checked = False
        self.extra_losses = list(extra_losses)
        self.extra_modules = [m.to(self.device) for m in extra_losses if isinstance(m, nn.Module)]
        self.callbacks = list(callbacks)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.metadata = dict(metadata or {})

        per_rank = -(-len(self.train_set) // self.dist.world_size)
        if per_rank == 0:
            raise ConfigError("train_data is empty; nothing to train on")
        self.drop_last = per_rank >= cfg.batch_size
        steps = per_rank // cfg.batch_size if self.drop_last else 1
        self.steps_per_epoch = min(steps, cfg.max_steps_per_epoch or steps)

        self.optimizer = build_optimizer(
            [self.model, *self.extra_modules], cfg, self.dist.world_size
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg, self.steps_per_epoch)
        )
        use_scaler = cfg.precision is Precision.AMP and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.mix = self._mix_transform(num_classes)

        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self._sums: dict[str, float] = {}
        self._ddp: nn.Module | None = None

    # -- set-up helpers -------------------------------------------------------------------
    def _mix_transform(self, num_classes: int | None) -> Callable | None:
        cfg = self.config
        if cfg.mixup_alpha == 0 and cfg.cutmix_alpha == 0:
            return None
        from torchslim.data import mix_transform, targets_of

        if num_classes is None:
            num_classes = int(targets_of(self.train_set).max()) + 1
        return mix_transform(num_classes, cfg.mixup_alpha, cfg.cutmix_alpha)

    def _autocast(self) -> AbstractContextManager:
        precision = self.config.precision
        if precision is Precision.FP32:
            return nullcontext()
        fp16 = precision is Precision.AMP and self.device.type == "cuda"
        dtype = torch.float16 if fp16 else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool | str | Path = False, *, overwrite: bool = False) -> TrainResult:
        """Train for ``config.epochs`` epochs; ``resume=True`` continues from ``out_dir/last.pt``.

        ``out_dir`` is locked while the run writes there (a second run into it is refused,
        naming the holder), and a folder that already holds a run's checkpoint is refused
        unless ``resume`` continues it or ``overwrite=True`` replaces it.

        Example:
            >>> import tempfile
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
            >>> cfg = {"epochs": 2, "batch_size": 16, "progress": False}
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     first = Trainer(nn.Linear(4, 2), cfg, data, out_dir=tmp).fit()
            ...     again = Trainer(nn.Linear(4, 2), cfg, data, out_dir=tmp).fit(resume=True)
            >>> again.history == first.history  # the run had finished: nothing left to train
            True
        """
        with self._claim_out_dir(resuming=resume is not False, overwrite=overwrite):
            return self._fit(resume)

    @contextmanager
    def _claim_out_dir(self, *, resuming: bool, overwrite: bool) -> Iterator[None]:
        stack, error = ExitStack(), None
        if self.out_dir is not None and self.dist.is_main:
            try:
                stack.enter_context(
                    claim_run_folder(
                        self.out_dir, existing=self._existing_run, resume=resuming,
                        overwrite=overwrite,
                    )
                )  # fmt: skip
            except RunFolderError as exc:
                error = exc
        if self.dist.enabled:  # every rank stops when rank 0 could not claim the folder
            flag = torch.tensor([0.0 if error is None else 1.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and error is None:
                error = RunFolderError(f"rank 0 could not claim the run folder {self.out_dir}")
        if error is not None:
            raise error
        with stack:
            if overwrite and not resuming and self.out_dir is not None and self.dist.is_main:
                for name in (CHECKPOINT_NAME, "metrics.jsonl", "metrics.csv"):
                    (self.out_dir / name).unlink(missing_ok=True)
            yield

    def _existing_run(self) -> str | None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return None
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
        return f"its checkpoint {path.name}, written {stamp}"

    def _fit(self, resume: bool | str | Path) -> TrainResult:
        started = time.perf_counter()
        cfg = self.config
        if not self._maybe_restore(resume):
            ckpt_io.seed_everything(cfg.seed + self.dist.rank, cfg.deterministic)
            if cfg.zero_gamma:
                from torchslim.models import zero_init_last_bn

                if zero_init_last_bn(self.model) == 0:
                    log.warning("zero_gamma: found no residual block to zero-initialise")
        model = self._wrapped()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.epoch < cfg.epochs:
            for cb in self.callbacks:
                cb.on_epoch_start(self, self.epoch)
            metrics = self._train_epoch(model)
            self.epoch += 1
            self.step_in_epoch, self._sums = 0, {}
            if self.eval_data is not None and (
                self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs
            ):
                metrics.update(self.evaluate().metrics())
            metrics["time_s"] = round(time.perf_counter() - started, 3)
            self.history.append(metrics)
            for cb in self.callbacks:
                cb.on_epoch_end(self, self.epoch - 1, metrics)
            self._log_epoch(metrics)
            self._write_metrics()
            self.save_checkpoint()
        return TrainResult(
            list(self.history), time.perf_counter() - started, self.out_dir, self._metric_key()
        )

    def _metric_key(self) -> str:
        if self.task is not None:
            return _RESULT_KEYS[self.task]
        # A resumed run that had already finished trains no batch to read the task from.
        seen = {k for row in self.history for k in row}
        return next((k for k in _RESULT_KEYS.values() if k in seen), EvalResult.key)

    def evaluate(self, data: Dataset | DataLoader | None = None) -> Any:
        """Evaluate the model (default: on ``eval_data``) for the task: an ``EvalResult``,
        ``DetectionEvalResult`` or ``SegmentationEvalResult`` (see :func:`evaluate`)."""
        data = data if data is not None else self.eval_data
        if data is None:
            raise ConfigError("no eval data given to the trainer")
        task = self.task or self.config.task
        if task is Task.AUTO and not isinstance(data, DataLoader) and len(data):
            sample = data[0]  # evaluated before training: the task is read off a sample
            if isinstance(sample, (list, tuple)) and len(sample) >= 2:
                task = tasks.infer_task(sample[0], sample[1])
        # Classification evaluates in large batches; a detector's or segmenter's activations
        # at the training batch size are what is known to fit.
        classify = task in (Task.AUTO, Task.CLASSIFICATION)
        return evaluate(
            self.model,
            data,
            batch_size=max(256, self.config.batch_size) if classify else self.config.batch_size,
            device=self.device,
            loss_fn=self._task_loss_fn(task) if task is not Task.AUTO else self.loss_fn,
            channels_last=self.config.channels_last,
            task=task,
        )

    def _task_loss_fn(self, task: Task) -> Callable | None:
        """The loss of ``task``: the given ``loss_fn``, else the task's default (none for a
        detector, which returns its own losses)."""
        if self._given_loss_fn is not None or task is Task.CLASSIFICATION:
            return self.loss_fn
        if task is Task.DETECTION:
            return None
        if self._segmentation_loss is None:
            loss = tasks.segmentation_loss(label_smoothing=self.config.label_smoothing)
            self._segmentation_loss = loss.to(self.device)
        return self._segmentation_loss

    def _wrapped(self) -> nn.Module:
        if not self.dist.enabled:
            return self.model
        if self._ddp is None:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=ids)
        return self._ddp

    def _loader(self) -> DataLoader:
        cfg = self.config
        sampler = EpochSampler(
            len(self.train_set),
            seed=cfg.seed,
            epoch=self.epoch,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start=self.step_in_epoch * cfg.batch_size,
        )
        # Worker seeds derive from this generator, so augmentations repeat on a rerun.
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + self.epoch * 31 + self.dist.rank)
        return DataLoader(
            self.train_set,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            drop_last=self.drop_last,
            pin_memory=self.device.type == "cuda",
            generator=gen,
            # default_collate, or lists for detection samples (images differ in size)
            collate_fn=self.collate if self.collate is not None else tasks.collate,
        )

    def _train_epoch(self, model: nn.Module) -> dict[str, float]:
        cfg = self.config
        model.train()
        for m in self.extra_modules:
            m.train()
        show = cfg.progress and self.dist.is_main
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=None if show else True,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        try:
            for batch in self._loader():
                if self.step_in_epoch >= self.steps_per_epoch:
                    break
                logs = self._train_step(model, *split_train_batch(batch))
                bar.update(1)
                if self.global_step % cfg.log_every == 0 or self.step_in_epoch == 1:
                    bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{logs['lr']:.3g}")
                for cb in self.callbacks:
                    cb.on_step_end(self, self.global_step, logs)
                if (
                    cfg.checkpoint_every_steps
                    and self.global_step % cfg.checkpoint_every_steps == 0
                ) and self.step_in_epoch < self.steps_per_epoch:
                    self.save_checkpoint()
        finally:
            bar.close()
        self._average_buffers()
        names = sorted(self._sums)
        sums = dict(
            zip(names, all_reduce_sum([self._sums[k] for k in names], self.device), strict=True)
        )
        n = max(sums.get("n", 0.0), 1.0)
        metrics = {"epoch": self.epoch + 1, "step": self.global_step}
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics.update({k: v / n for k, v in sums.items() if k != "n"})
        return metrics

    def _average_buffers(self) -> None:
        # Each rank's BatchNorm statistics saw only its shard; average them so every rank
        # evaluates and saves the same model.
        if not self.dist.enabled:
            return
        for buf in self.model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf /= self.dist.world_size

    def _compute_loss(
        self, model: nn.Module, inputs: Any, targets: Any, extra: Any
    ) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        with self._autocast():
            parts: dict[str, torch.Tensor] = {}
            if self.task is Task.CLASSIFICATION:
                outputs = call_model(model, model_args(inputs))
                # the default loss reads logits: a Hugging Face output's (a given loss_fn gets
                # the output as it is)
                logits = outputs if self._given_loss_fn else first_tensor(outputs)
                task = self.task_weight * self.loss_fn(logits, targets)
            elif self.task is Task.UNLABELLED:  # the extra losses are the whole loss
                outputs = call_model(model, model_args(inputs))
                task = torch.zeros((), device=self.device)
            else:
                loss_fn = self._task_loss_fn(self.task)
                outputs, parts = tasks.task_forward(self.task, model, inputs, targets, loss_fn)
                task = self.task_weight * sum(parts.values())
            terms: dict[str, torch.Tensor] = {}
            ctx = StepContext(
                self.model, inputs, targets, outputs, self.epoch, self.global_step, extra
            )
            for i, fn in enumerate(self.extra_losses):
                out = fn(ctx)
                if isinstance(out, Mapping):
                    terms.update(out)
                else:
                    terms[_loss_name(fn, i)] = out
            total = task + sum(terms.values()) if terms else task
        if len(parts) > 1 or terms:  # the task's own parts are logged unscaled
            return total, outputs, {"task_loss": task, **(parts if len(parts) > 1 else {}), **terms}
        return total, outputs, {}

    def _resolve_task(self, inputs: Any, targets: Any) -> None:
        task = tasks.check_task(self.config.task, inputs, targets)
        if self.mix is not None and task is not Task.CLASSIFICATION:
            raise ConfigError(
                f"mixup_alpha/cutmix_alpha: mix classification labels, but this is a "
                f"{task.value} task; set them to 0"
            )
        if task is Task.UNLABELLED and not self.extra_losses:
            raise ConfigError(
                "the training data has no labels (inputs only), so there is no task loss; train "
                "it with a distillation loss (ts.distill) or give (input, target) items"
            )
        if task is Task.UNLABELLED and self.eval_data is not None:
            raise ConfigError(
                "eval_data: an unlabelled run has no task metric to evaluate; leave eval_data "
                "out and measure the model afterwards (e.g. train.sentence.embedding_fidelity)"
            )
        if task is Task.DETECTION and self.config.label_smoothing and self._given_loss_fn is None:
            log.warning("label_smoothing: a torchvision detector computes its own losses; ignored")
        self.task, self._task_checked = task, True

    def _train_step(
        self, model: nn.Module, inputs: Any, targets: Any, extra: Any = None
    ) -> dict[str, float]:
        cfg = self.config
        if not self._task_checked:
            self._resolve_task(inputs, targets)
        if isinstance(inputs, torch.Tensor) and isinstance(targets, torch.Tensor):
            inputs, targets = inputs.to(self.device), targets.to(self.device)
        else:  # a detector's lists, keyword inputs, no targets
            inputs = tasks.to_device(inputs, self.device)
            targets = tasks.to_device(targets, self.device)
        if cfg.channels_last and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.mix is not None:
            inputs, targets = self.mix(inputs, targets)
        total, outputs, terms = self._compute_loss(model, inputs, targets, extra)
        self._check_finite(total)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        self._sync_extra_grads()
        if cfg.grad_clip_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step_in_epoch += 1
        self.global_step += 1

        batch = float(len(targets) if targets is not None else len(first_tensor(inputs)))
        logs = {"loss": float(total.detach()), "lr": self.optimizer.param_groups[0]["lr"]}
        sums = self._sums
        sums["n"] = sums.get("n", 0.0) + batch
        sums["train_loss"] = sums.get("train_loss", 0.0) + logs["loss"] * batch
        if self.task is Task.CLASSIFICATION:
            hits = correct_count(first_tensor(outputs), targets)
            sums["train_acc"] = sums.get("train_acc", 0.0) + hits
        for name, value in terms.items():
            logs[name] = float(value.detach())
            sums[name] = sums.get(name, 0.0) + logs[name] * batch
        return logs

    def _check_finite(self, loss: torch.Tensor) -> None:
        ok = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if self.dist.enabled:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() == 1.0:
            return
        bad = self._nonfinite_tensor()
        weights = f"; the model was already non-finite: {bad}" if bad else ""
        raise TrainingDivergedError(
            f"loss became {float(loss.detach())} at step {self.global_step + 1} "
            f"(epoch {self.epoch + 1}, batch {self.step_in_epoch + 1}){weights}. The step was "
            f"not applied and {self._last_good()}. Lower the learning rate, set grad_clip_norm, "
            "or train in fp32."
        )

    def _nonfinite_tensor(self) -> str | None:
        """The first parameter or buffer (model order, then loss modules) holding NaN/inf."""
        named = list(self.model.state_dict().items())
        for i, m in enumerate(self.extra_modules):
            named += [(f"extra_losses[{i}].{k}", v) for k, v in m.state_dict().items()]
        bad = first_nonfinite(named)
        return None if bad is None else describe_nonfinite(bad, dict(named)[bad])

    def _last_good(self) -> str:
        """What the folder's checkpoint is worth, checked (readable, checksums, finite weights)
        rather than assumed."""
        where = self.checkpoint_path
        if where is None or not where.exists():
            return "no checkpoint was written yet"
        try:
            ckpt = ckpt_io.load_checkpoint(where)
        except CheckpointError as exc:
            return f"the checkpoint {where} is NOT usable: {exc}"
        return (
            f"the last good checkpoint {where} (step {ckpt['global_step']}; finite weights, "
            "checksums verified) is intact"
        )

    def _sync_extra_grads(self) -> None:
        if not self.dist.enabled:
            return
        for module in self.extra_modules:
            for p in module.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.dist.world_size

    # -- checkpoints and metrics ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit (except the RNG, see save)."""
        return {
            "format": ckpt_io.FORMAT,
            "model": self.model.state_dict(),
            "extra_modules": [m.state_dict() for m in self.extra_modules],
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_sums": dict(self._sums),
            "history": list(self.history),
            "config": to_dict(self.config),
            "world_size": self.dist.world_size,
            "metadata": self.metadata,
        }

    def save_checkpoint(self) -> Path | None:
        """Atomically write ``out_dir/last.pt`` (rank 0; all ranks' RNG states included)."""
        path = self.checkpoint_path
        if path is None:
            return None
        bad = self._nonfinite_tensor()
        if bad is not None:  # never write (or call good) a poisoned checkpoint
            raise TrainingDivergedError(
                f"after step {self.global_step} the model holds non-finite values, first "
                f"{bad}; this checkpoint was not written and {self._last_good()}. "
                "Lower the learning rate, set grad_clip_norm, or train in fp32."
            )
        rngs = [ckpt_io.rng_state()]
        if self.dist.enabled:
            rngs = [None] * self.dist.world_size
            dist.all_gather_object(rngs, ckpt_io.rng_state())
        if self.dist.is_main:
            ckpt_io.save_verified({**self.state_dict(), "rng": rngs}, path)
        if self.dist.enabled:
            dist.barrier()
        return path

    def _maybe_restore(self, resume: bool | str | Path) -> bool:
        if resume is False:
            return False
        path = self.checkpoint_path if resume is True else Path(resume)
        if path is None:
            raise ConfigError("resume=True needs out_dir (where last.pt lives)")
        if resume is True and not path.exists():
            log.info("no checkpoint at %s; starting a fresh run", path)
            return False
        ckpt = ckpt_io.load_checkpoint(path)
        self._check_compatible(ckpt, path)
        _load_model_state(self.model, ckpt["model"], path)
        for module, state in zip(self.extra_modules, ckpt["extra_modules"], strict=True):
            module.load_state_dict(state)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt["scaler"] is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch = ckpt["epoch"], ckpt["step_in_epoch"]
        self.global_step, self._sums = ckpt["global_step"], dict(ckpt["epoch_sums"])
        self.history = list(ckpt["history"])
        ckpt_io.set_rng_state(ckpt["rng"][self.dist.rank])
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch + 1, self.step_in_epoch)
        return True

    def _check_compatible(self, ckpt: Mapping[str, Any], path: Path) -> None:
        saved_meta = ckpt.get("metadata") or {}
        differ = [k for k in self.metadata if k in saved_meta and saved_meta[k] != self.metadata[k]]
        if differ:
            diffs = ", ".join(f"{k}: {saved_meta[k]!r} -> {self.metadata[k]!r}" for k in differ)
            raise CheckpointError(
                f"{path} is a run of a different model or data ({diffs}); resume it with its "
                "original settings, or train into another output folder"
            )
        # A field added since the checkpoint was written counts at its default there.
        saved, now = {**to_dict(TrainConfig()), **ckpt["config"]}, to_dict(self.config)
        changed = sorted(k for k in now if saved.get(k) != now[k] and k not in RESUMABLE_CHANGES)
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
            raise CheckpointError(
                f"{path} was written with a different config ({diffs}); resuming would not "
                "reproduce the run. Use the original settings or a new output folder."
            )
        if ckpt["world_size"] != self.dist.world_size:
            raise CheckpointError(
                f"{path} was written by {ckpt['world_size']} processes, this run has "
                f"{self.dist.world_size}; resume with the same --nproc_per_node"
            )
        if len(ckpt["extra_modules"]) != len(self.extra_modules):
            raise CheckpointError(f"{path} holds a different number of trainable loss modules")

    def _log_epoch(self, m: Mapping[str, float]) -> None:
        if not self.dist.is_main:
            return
        text = f"epoch {int(m['epoch'])}/{self.config.epochs}: train loss {m['train_loss']:.4f}"
        if "train_acc" in m:
            text += f" acc {100 * m['train_acc']:.2f}%"
        if "eval_acc" in m:
            text += f" | eval loss {m['eval_loss']:.4f} acc {100 * m['eval_acc']:.2f}%"
        elif "eval_map" in m:
            text += f" | eval mAP {100 * m['eval_map']:.2f} mAP@0.5 {100 * m['eval_map_50']:.2f}"
        elif "eval_miou" in m:
            text += f" | eval loss {m['eval_loss']:.4f} mIoU {100 * m['eval_miou']:.2f}%"
        log.info("%s | lr %.4g | %.1fs", text, m["lr"], m["time_s"])

    def _write_metrics(self) -> None:
        if self.out_dir is None or not self.dist.is_main or not self.history:
            return
        lines = "".join(json.dumps(row) + "\n" for row in self.history)
        ckpt_io.atomic_write_text(lines, self.out_dir / "metrics.jsonl")
        columns = list(dict.fromkeys(k for row in self.history for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="")
        writer.writeheader()
        for row in self.history:
            writer.writerow(
                {
                    k: (v if not isinstance(v, float) or math.isfinite(v) else "")
                    for k, v in row.items()
                }
            )
        ckpt_io.atomic_write_text(buf.getvalue(), self.out_dir / "metrics.csv")


_RESULT_KEYS = {
    Task.CLASSIFICATION: EvalResult.key,
    Task.DETECTION: DetectionEvalResult.key,
    Task.SEGMENTATION: SegmentationEvalResult.key,
    Task.UNLABELLED: EvalResult.key,  # never evaluated: no eval_data
}


def _load_model_state(model: nn.Module, state: Mapping[str, Any], path: Path) -> None:
    """``load_state_dict`` with the differences spelled out when the architectures differ."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(own[k].shape)} here"
        for k in own
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing from the checkpoint (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} it has that this model lacks (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} of different shape (e.g. {'; '.join(shapes[:3])})")
        raise CheckpointError(
            f"{path} holds a different architecture than this model: {', '.join(parts)}. "
            "Resume with the model the run was started with, or train into another folder"
        )
    model.load_state_dict(state)
