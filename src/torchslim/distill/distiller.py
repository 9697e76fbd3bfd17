"""The distiller: distillation losses as an extra loss of the one trainer, and ``ts.distill``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from torchslim._tensors import first_tensor, model_args, token_mask
from torchslim.config import from_dict
from torchslim.distill.config import DistillConfig, LossSpec
from torchslim.distill.hooks import OUTPUT, FeatureHooks, check_names
from torchslim.distill.losses import DistillLoss, build_loss
from torchslim.errors import ConfigError
from torchslim.inputs import run_forward
from torchslim.train import Callback, StepContext, Trainer, TrainResult
from torchslim.train.evaluate import split_batch
from torchslim.train.tasks import collate
from torchslim.train.trainer import as_dataset, split_train_batch

log = logging.getLogger("torchslim.distill")

_TEACHER_HINT = (
    "Each teacher runs on the student's inputs: give teachers that take the same channels, "
    "size and dtype (or wrap one in a module that adapts the input)"
)


def _device(inputs: Any) -> torch.device:
    """Where a batch lives: a tensor, or a detector's list of images."""
    return first_tensor(inputs).device


class IndexedDataset(Dataset):
    """Items of ``base`` as ``(input, target, index)``, so a teacher cache can be looked up."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        inputs, target = split_batch(self.base[index])
        return inputs, target, index


@contextlib.contextmanager
def _frozen(models: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode and no gradients for the duration; training flags restored afterwards."""
    flags = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in zip(models, flags, strict=True):
            m.train(flag)


@dataclass(frozen=True)
class _Term:
    """Where one loss reads: its layers and the teachers it consults."""

    name: str
    weight: float
    student: list[str]
    teacher: list[str]
    teachers: list[int]


class Distiller(nn.Module, Callback):
    """The distillation terms of one run, as a trainer extra loss (and callback).

    The student's layers are read with forward hooks during the trainer's own forward pass; the
    teachers run in eval mode without gradients (or their outputs come from a cache built once
    before the first epoch). Teachers are not submodules: they are neither trained nor saved in
    checkpoints; the loss modules' trainable parts (FitNets adapters) are.

    Example:
        >>> from torchslim.models import create
        >>> s = create("resnet8", num_classes=10, in_channels=1)
        >>> t = create("resnet20", num_classes=10, in_channels=1)
        >>> d = Distiller(s, [t], {"losses": [{"type": "kd"}]}, torch.randn(2, 1, 28, 28))
        >>> round(d.hard_label_weight, 3)
        0.1
        >>> d.close()
    """

    def __init__(
        self,
        student: nn.Module,
        teachers: Sequence[nn.Module],
        config: DistillConfig | Mapping[str, Any],
        example_inputs: Any,
    ) -> None:
        nn.Module.__init__(self)
        self.config = cfg = from_dict(DistillConfig, config)
        if not teachers:
            raise ConfigError("teacher: give at least one teacher model")
        self._teachers = list(teachers)  # a plain list: not registered, not trained, not saved
        self._student = [student]
        weights = cfg.teacher_weights or (1.0,) * len(teachers)
        if len(weights) != len(teachers):
            raise ConfigError(
                f"teacher_weights: {len(weights)} weights for {len(teachers)} teachers"
            )
        self.losses = nn.ModuleList()
        self._terms: list[_Term] = []
        for spec in cfg.losses:
            loss, term = self._make_term(spec, weights)
            self.losses.append(loss)
            self._terms.append(term)
        self.hard_label_weight = self._hard_label_weight()
        self._reads_output = any(OUTPUT in t.student + t.teacher for t in self._terms)
        self._student_hooks = FeatureHooks(student, self._student_layers())
        self._teacher_hooks = [
            FeatureHooks(t, self._teacher_layers(i)) for i, t in enumerate(self._teachers)
        ]
        self._cache: list[list[torch.Tensor]] | None = None
        try:
            self._build(example_inputs)
        except BaseException:
            self.close()  # leave no hooks behind on the user's models
            raise

    # -- set-up -----------------------------------------------------------------------------
    def _make_term(self, spec: LossSpec, weights: Sequence[float]) -> tuple[DistillLoss, _Term]:
        loss = build_loss(spec.type, dict(spec.options))
        layers = spec.student or loss.default_layers
        if not layers:
            raise ConfigError(
                f"losses: {spec.type} compares intermediate layers; give student (and teacher) "
                "module names, e.g. student: [layer2]"
            )
        if loss.response and len(layers) != 1:
            raise ConfigError(f"losses: {spec.type} reads one layer (the logits), got {layers}")
        if not loss.response and not 0 <= spec.teacher_index < len(self._teachers):
            raise ConfigError(
                f"losses: {spec.type}: teacher_index {spec.teacher_index} but there are "
                f"{len(self._teachers)} teacher(s)"
            )
        teacher_layers = spec.teacher or layers
        if len(teacher_layers) != len(layers):
            raise ConfigError(f"losses: {spec.type}: student and teacher layer counts differ")
        reads = list(range(len(self._teachers))) if loss.response else [spec.teacher_index]
        check_names(self._student[0], layers, f"losses: {spec.type}: student")
        for t in reads:
            check_names(self._teachers[t], teacher_layers, f"losses: {spec.type}: teacher")
        loss.set_teacher_weights(weights)
        term = _Term(spec.type, spec.weight, list(layers), list(teacher_layers), reads)
        return loss, term

    def _student_layers(self) -> list[str]:
        names = [n for term in self._terms for n in term.student]
        return [n for n in dict.fromkeys(names) if n != OUTPUT]

    def _teacher_layers(self, index: int) -> list[str]:
        names = [n for term in self._terms if index in term.teachers for n in term.teacher]
        return [n for n in dict.fromkeys(names) if n != OUTPUT]

    def _hard_label_weight(self) -> float:
        if self.config.hard_label_weight is not None:
            return self.config.hard_label_weight
        alphas = [
            a for a in (getattr(loss, "alpha", None) for loss in self.losses) if a is not None
        ]
        return 1.0 - max(alphas) if alphas else 1.0

    def _build(self, example_inputs: Any) -> None:
        student = self._student[0]
        with _frozen([student]):
            out = run_forward(student, model_args(example_inputs), "the example inputs",
                              who=f"the student ({type(student).__name__})")  # fmt: skip
            student_feats = self._student_features(out)
        teacher_feats = self._run_teachers(example_inputs, "the example inputs")
        for loss, s, t in zip(self.losses, student_feats, teacher_feats, strict=True):
            loss.build(s, t)
        self._student_hooks.clear()

    # -- per step ---------------------------------------------------------------------------
    def _student_features(self, outputs: Any) -> list[list[torch.Tensor]]:
        hooks = self._student_hooks
        got = dict(zip(hooks.names, hooks.features(), strict=True))
        if self._reads_output:
            got[OUTPUT] = first_tensor(outputs)
        return [[got[n] for n in term.student] for term in self._terms]

    def _run_teachers(self, inputs: Any, what: str) -> list[list[torch.Tensor]]:
        """Per loss, the prepared teacher tensors (response losses: one tensor per teacher).

        ``what`` names ``inputs`` (e.g. the step's batch) in the
        :class:`~torchslim.errors.InputError` raised if a teacher does not run on them.
        """
        needed = sorted({t for term in self._terms for t in term.teachers})
        feats: dict[int, dict[str, torch.Tensor]] = {}
        with _frozen([self._teachers[i] for i in needed]):
            for i in needed:
                teacher, hooks = self._teachers[i], self._teacher_hooks[i]
                hooks.clear()
                out = run_forward(teacher.to(_device(inputs)), model_args(inputs), what,
                                  who=f"teacher {i} ({type(teacher).__name__})",
                                  hint=_TEACHER_HINT)  # fmt: skip
                feats[i] = dict(zip(hooks.names, hooks.features(), strict=True))
                if self._reads_output:  # a detector's output holds no logits to read
                    feats[i][OUTPUT] = first_tensor(out)
                hooks.clear()
        prepared = []
        for loss, term in zip(self.losses, self._terms, strict=True):
            if loss.response:
                prepared.append([feats[i][term.teacher[0]] for i in term.teachers])
            else:
                own = feats[term.teachers[0]]
                prepared.append(loss.prepare_teacher([own[n] for n in term.teacher]))
        return prepared

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """The weighted distillation terms of one training step, by loss name."""
        student = self._student_features(ctx.outputs)
        self._student_hooks.clear()
        if self._cache is not None and ctx.extra is not None:
            teacher = self._cached(ctx.extra, _device(ctx.inputs))
        else:
            teacher = self._run_teachers(
                ctx.inputs, f"the training batch of epoch {ctx.epoch}, step {ctx.step}"
            )
        terms: dict[str, torch.Tensor] = {}
        mask = token_mask(ctx.inputs)
        for loss, term, s, t in zip(self.losses, self._terms, student, teacher, strict=True):
            name = term.name if term.name not in terms else f"{term.name}_{len(terms)}"
            loss.token_mask = mask
            try:
                terms[name] = term.weight * loss(s, t)
            finally:
                loss.token_mask = None
        return terms

    # -- teacher cache ----------------------------------------------------------------------
    def build_cache(self, data: Dataset, batch_size: int = 256, progress: bool = True) -> None:
        """Run the teachers once over ``data`` (in order) and keep what every loss reads.

        The global random state is left untouched, so a resumed run that rebuilds the cache
        continues exactly like an uninterrupted one.
        """
        device = next(self._student[0].parameters()).device
        chunks: list[list[list[torch.Tensor]]] = []
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            bar = tqdm(loader, desc="teacher cache", disable=None if progress else True)
            for index, batch in enumerate(bar):
                inputs = split_batch(batch[:2] if len(batch) == 3 else batch)[0].to(device)
                first = index * batch_size
                what = f"teacher cache batch {index} (samples {first}-{first + len(inputs) - 1})"
                per_loss = self._run_teachers(inputs, what)
                chunks.append([[t.detach().cpu() for t in ts] for ts in per_loss])
        self._cache = [
            [torch.cat([c[k][j] for c in chunks]) for j in range(len(chunks[0][k]))]
            for k in range(len(self.losses))
        ]
        mib = sum(t.numel() * t.element_size() for ts in self._cache for t in ts) / 2**20
        log.info("teacher cache: %d samples, %.1f MiB", len(data), mib)  # type: ignore[arg-type]

    def _cached(self, index: torch.Tensor, device: torch.device) -> list[list[torch.Tensor]]:
        assert self._cache is not None
        idx = torch.as_tensor(index, dtype=torch.long).cpu()
        return [[t[idx].to(device) for t in ts] for ts in self._cache]

    def on_fit_start(self, trainer: Trainer) -> None:
        if (
            self.config.cache_teacher
            and self._cache is None
            and trainer.epoch < trainer.config.epochs
        ):
            data = getattr(trainer.train_set, "base", trainer.train_set)
            self.build_cache(data, progress=trainer.config.progress)

    def close(self) -> None:
        """Remove every hook from the student and the teachers (and drop the cache)."""
        self._student_hooks.remove()
        for hooks in self._teacher_hooks:
            hooks.remove()
        self._cache = None


@dataclass(frozen=True)
class DistillResult:
    """The trained student and each phase's training history ("distill", "finetune")."""

    student: nn.Module
    phases: dict[str, TrainResult] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's metrics of the last phase."""
        return list(self.phases.values())[-1].final if self.phases else {}


def fit_distillation(
    student: nn.Module,
    teacher: nn.Module | Sequence[nn.Module],
    train_data: Dataset | DataLoader,
    config: DistillConfig | Mapping[str, Any] | None = None,
    *,
    eval_data: Dataset | DataLoader | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    metadata: Mapping[str, Any] | None = None,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
) -> DistillResult:
    """Distil ``teacher`` (one model or several) into ``student`` with the one trainer; then,
    if ``config.finetune`` is set, fine-tune on hard labels (the two-phase recipe).

    With ``out_dir`` each phase checkpoints to ``out_dir/distill`` and ``out_dir/finetune``;
    ``resume=True`` continues an interrupted run (a finished phase is not repeated);
    ``overwrite=True`` replaces a run those folders already hold (refused otherwise).
    ``loss_fn`` is the hard-label (task) loss of both phases, as for
    :class:`~torchslim.train.Trainer` (default: the task's own). Hooks are removed from every
    model afterwards, also after an error.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from torchslim.models import create
        >>> data = TensorDataset(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
        >>> student = create("smallcnn", num_classes=10, in_channels=1, widths=(4, 8, 16))
        >>> teacher = create("resnet8", num_classes=10, in_channels=1)
        >>> quick = {"epochs": 1, "batch_size": 16, "progress": False}
        >>> res = fit_distillation(student, teacher, data, {"train": quick, "finetune": quick},
        ...                        eval_data=data)
        >>> list(res.phases), "eval_acc" in res.final
        (['distill', 'finetune'], True)
    """
    cfg = from_dict(DistillConfig, config)
    teachers = [teacher] if isinstance(teacher, nn.Module) else list(teacher)
    dataset, collate_fn = as_dataset(train_data)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ConfigError("train_data is empty; nothing to distil on")
    # two samples, so that shape probes see a real batch dimension (a detector: a list)
    samples = [dataset[i] for i in (0, min(1, len(dataset) - 1))]
    example, targets, _ = split_train_batch((collate_fn or collate)(samples))
    if cfg.cache_teacher and targets is None:
        raise ConfigError(
            "cache_teacher: the training data has no labels (inputs only), which the teacher "
            "cache does not index; turn the cache off"
        )
    out = Path(out_dir) if out_dir is not None else None
    distiller = Distiller(student, teachers, cfg, example)
    phases: dict[str, TrainResult] = {}
    try:
        trainer = Trainer(
            student,
            cfg.train,
            IndexedDataset(dataset) if cfg.cache_teacher else train_data,
            eval_data,
            loss_fn=loss_fn,
            extra_losses=[distiller],
            callbacks=[distiller, *callbacks],
            out_dir=out / "distill" if out is not None else None,
            metadata={**(metadata or {}), "phase": "distill"},
            task_weight=distiller.hard_label_weight,
        )
        phases["distill"] = trainer.fit(resume=resume, overwrite=overwrite)
    finally:
        distiller.close()
    if cfg.finetune is not None:
        trainer = Trainer(
            student,
            cfg.finetune,
            train_data,
            eval_data,
            loss_fn=loss_fn,
            callbacks=callbacks,
            out_dir=out / "finetune" if out is not None else None,
            metadata={**(metadata or {}), "phase": "finetune"},
        )
        phases["finetune"] = trainer.fit(resume=resume, overwrite=overwrite)
    return DistillResult(student, phases)


def distill(
    student: nn.Module,
    teacher: nn.Module | Sequence[nn.Module],
    train_data: Dataset | DataLoader,
    config: DistillConfig | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Train ``student`` to imitate ``teacher`` (or several teachers); returns the student.

    ``config`` is a :class:`DistillConfig` or a dict of its fields; ``kwargs`` go to
    :func:`fit_distillation` (``eval_data``, ``out_dir``, ``resume``...).

    Example:
        >>> import torchslim as ts
        >>> from torchslim.data import get_dataset, stratified_subset
        >>> data = stratified_subset(get_dataset("fashion-mnist", train=True), per_class=8)
        >>> teacher = ts.models.create("smallcnn", num_classes=10, in_channels=1)
        >>> student = ts.models.create("mlp", num_classes=10, hidden=(32,), in_channels=1)
        >>> cfg = {"losses": [{"type": "kd", "options": {"temperature": 4.0}}],
        ...        "train": {"epochs": 1, "batch_size": 16, "progress": False}}
        >>> ts.distill(student, teacher, data, cfg) is student
        True
    """
    return fit_distillation(student, teacher, train_data, config, **kwargs).student
