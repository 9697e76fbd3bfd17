"""What each recipe stage does to its model, through the public API and the one trainer.

:data:`STAGE_TYPES` is the one registry of stage types: a new type is one function here and
one entry there (its own YAML keys, its method config, whether it yields a model); the recipe
parser, the runner, the CLI and the docs all read it.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from torchslim.auto.config import SearchConfig, SpaceKind
from torchslim.auto.evaluate import holdout_split
from torchslim.data import (
    calibration_loader,
    dataset_info,
    get_dataset,
    in_memory,
    stratified_subset,
)
from torchslim.data.coco import coco_dataset
from torchslim.data.info import DatasetInfo
from torchslim.distill.config import DistillConfig
from torchslim.errors import CheckpointError, ConfigError
from torchslim.export.onnx import is_quantized
from torchslim.models import create
from torchslim.models.hf import (
    create_hf,
    hf_source,
    hf_tokenizer,
    is_hf_name,
    saved_by_torchslim,
)
from torchslim.pipeline.spec import INITIAL, DataSpec, ModelSpec, Stage
from torchslim.pipeline.text import TextData, is_text_name
from torchslim.prune.hf import is_hf_model
from torchslim.prune.pruner import PruneConfig
from torchslim.prune.sparsity import SparsityConfig
from torchslim.quant.config import QuantConfig
from torchslim.quant.qat import QATConfig
from torchslim.serialize import load, save
from torchslim.train import TrainConfig, Trainer, load_checkpoint
from torchslim.train.config import Task
from torchslim.train.tasks import collate

if TYPE_CHECKING:
    from torchslim.pipeline.recipe import Recipe

log = logging.getLogger("torchslim.pipeline")


def load_run(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A model and its metadata from a ``torchslim train`` run folder or its checkpoint file.

    Example:
        >>> import tempfile
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
        >>> meta = {"model": "resnet8", "data": "fashion-mnist"}  # as `torchslim train` records
        >>> cfg = {"epochs": 1, "progress": False}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     trainer = Trainer(create("resnet8", num_classes=10, in_channels=1), cfg, data,
        ...                       out_dir=tmp, metadata=meta)
        ...     _ = trainer.fit()
        ...     model, meta = load_run(tmp)
        >>> meta["model"], torch.equal(model.fc.weight, trainer.model.fc.weight.cpu())
        ('resnet8', True)
    """
    path = Path(path)
    ckpt = load_checkpoint(path / "last.pt" if path.is_dir() else path)
    meta = dict(ckpt.get("metadata", {}))
    if "model" not in meta:
        raise ConfigError(f"{path}: the checkpoint does not record which model it holds")
    info = dataset_info(meta.get("data", "fashion-mnist"))
    model = create(meta["model"], num_classes=info.num_classes, in_channels=info.in_channels,
                   **meta.get("model_args", {}))  # fmt: skip
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1:2] or [str(exc)]
        raise CheckpointError(
            f"{path}: its weights do not fit the {meta['model']!r} model its metadata names "
            f"({first[0].strip()}); was the checkpoint edited, or the model's definition "
            "changed since?"
        ) from None
    return model, meta


def hf_model(name: str, **kwargs: Any) -> nn.Module:
    """The model of an ``hf:PATH_OR_NAME`` name: ``transformers``' ``AutoModel``, or, for a
    folder that ``torchslim.pretrained.save_pretrained`` wrote with pruned heads,
    ``torchslim.pretrained.from_pretrained``.

    Example: see :func:`torchslim.models.hf.create_hf`.
    """
    if saved_by_torchslim(name):
        from torchslim.pretrained import from_pretrained

        return from_pretrained(hf_source(name))
    return create_hf(name, **kwargs)


def load_model_file(path: str | Path) -> nn.Module:
    """A model from a run folder, a trainer checkpoint, a ``ts.save`` file or a stage result.

    Every one is read with ``torch.load(weights_only=True)``: no file can run code here.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = save(create("resnet8", num_classes=10, in_channels=1), f"{tmp}/model.pt")
        ...     model = load_model_file(f"{tmp}/model.pt")
        >>> type(model).__name__
        'CifarResNet'
    """
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():  # a save_pretrained folder
        from torchslim.pretrained import from_pretrained

        return from_pretrained(path)
    if path.is_dir() or path.name == "last.pt":
        return load_run(path)[0]
    if path.name.endswith(".module.pt"):
        raise CheckpointError(
            f"{path} is a pickled module (how torchslim before 0.2 kept quantized stage "
            "results); loading it could run arbitrary code, so torchslim no longer reads it. "
            "Use the stage's model.onnx, or the float model it was quantized from"
        )
    return load(path)


HF_FOLDER = "hf"  # a stage's Hugging Face model: a save_pretrained folder (and its tokenizer)


def save_stage_model(model: nn.Module, folder: Path, tokenizer: Any = None) -> Path | None:
    """Write a stage result with ``ts.save`` (rebuilt from shapes), or a Hugging Face model
    as a ``save_pretrained`` folder (``hf/``, pruned shapes recorded by
    :func:`torchslim.pretrained.save_pretrained`, with ``tokenizer`` beside it: a folder
    ``hf:`` reads back). Quantized models, which neither rebuilds, are not stored (a pickled
    module would be code to run on load): their deployable form is the stage's
    ``model.onnx``, and ``--resume`` recomputes them from their input. Returns the file or
    folder written, if any."""
    for old in folder.glob("model*.pt"):
        old.unlink()
    shutil.rmtree(folder / HF_FOLDER, ignore_errors=True)
    if is_quantized(model):
        return None
    if is_hf_model(model):
        from torchslim.pretrained import save_pretrained

        out = save_pretrained(model, folder / HF_FOLDER)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        return out
    return save(model, folder / "model.pt")


def stage_model_file(folder: Path) -> Path | None:
    for name in ("model.pt", HF_FOLDER):
        if (folder / name).exists():
            return folder / name
    return None


@dataclass
class Context:
    """The data and models shared by the stages of one run."""

    recipe: Recipe
    resume: bool = False
    progress: bool = True
    models: dict[str, nn.Module] = field(default_factory=dict)
    out_dir: Path | None = None  # the run's folder (export stages write there by default)
    previous: str = INITIAL  # the stage whose result the next stage starts from by default
    # A CLI sub-command runs one stage: its trainer writes straight into the stage folder
    # (``--out``), and ``overwrite`` replaces a run that folder already holds.
    one_stage: bool = False
    overwrite: bool = False
    results: dict[str, Any] = field(default_factory=dict)  # stage -> its training's result

    @property
    def task(self) -> Task:
        return self.recipe.data.task

    @cached_property
    def text(self) -> TextData | None:
        """The sentences of a text recipe (``data: {name: text:...}``), else None."""
        if not is_text_name(self.recipe.data.name):
            return None
        return TextData.from_spec(self.recipe.data, self.tokenizer)

    @cached_property
    def tokenizer(self) -> Any:
        """The tokenizer of the recipe's ``hf:`` model, or of its ``save_pretrained`` folder."""
        spec = self.recipe.model
        if spec.name is not None and is_hf_name(spec.name):
            return hf_tokenizer(spec.name)
        if spec.checkpoint is not None and (Path(spec.checkpoint) / "config.json").is_file():
            return hf_tokenizer(spec.checkpoint)
        raise ConfigError(
            f"data: {self.recipe.data.name} is text, which needs a tokenizer: name the model "
            "hf:PATH_OR_NAME (or a save_pretrained folder with its tokenizer as checkpoint)"
        )

    @cached_property
    def reference(self) -> torch.Tensor:
        """A text recipe's reference: the starting model's embeddings of the evaluation
        sentences, which every stage's model is compared with."""
        assert self.text is not None  # only text recipes measure fidelity
        if INITIAL not in self.models:
            self.models[INITIAL] = self.fresh(self.recipe.model)
        return self.text.embed(self.models[INITIAL])

    @cached_property
    def info(self) -> Any:
        d = self.recipe.data
        if is_text_name(d.name):
            raise ConfigError(f"data: {d.name} is text; this needs an image dataset")
        if self.task is Task.CLASSIFICATION:
            return dataset_info(d.name)
        data = self._coco("train")
        side = int(data[0][0].shape[-1])
        return DatasetInfo(
            d.name,
            data.num_classes,
            3,
            side,
            (0.0,) * 3,
            (1.0,) * 3,
            tuple(data.classes.get(i, "") for i in range(data.num_classes)),
        )

    def _coco(self, split: str) -> Dataset:
        d = self.recipe.data
        return coco_dataset(d.name, split, self.task.value, root=d.root)

    @staticmethod
    def _first(data: Dataset, n: int) -> Dataset:
        return Subset(data, range(min(n, len(data)))) if n else data  # type: ignore[arg-type]

    @cached_property
    def train_set(self) -> Dataset | DataLoader:
        d: DataSpec = self.recipe.data
        if self.text is not None:
            return self.text.loader()
        if self.task is not Task.CLASSIFICATION:
            return self._first(self._coco("train"), d.subset)
        augment = list(d.augment) if d.augment is not None else None
        train = get_dataset(d.name, train=True, root=d.root, augment=augment)
        if d.subset:
            per_class = max(1, d.subset // self.info.num_classes)
            train = stratified_subset(train, per_class=per_class, seed=d.seed)
        return train

    @cached_property
    def test_set(self) -> Dataset | None:
        """The evaluation data (None for text: measured by :meth:`fidelity` instead)."""
        d = self.recipe.data
        if self.text is not None:
            return None
        if self.task is not Task.CLASSIFICATION:
            return self._first(self._coco("val"), d.test_subset)
        test = get_dataset(d.name, train=False, root=d.root)
        if d.test_subset:
            per_class = max(1, d.test_subset // self.info.num_classes)
            test = stratified_subset(test, per_class=per_class, seed=d.seed)
        return test

    def calib(self, samples: int) -> Any:
        d = self.recipe.data
        if self.text is not None:
            return self.text.calib(samples)
        if self.task is not Task.CLASSIFICATION:
            return DataLoader(self._first(self._coco("train"), samples),
                              batch_size=min(16, samples), collate_fn=collate)  # fmt: skip
        plain = get_dataset(d.name, train=True, root=d.root, augment=[])
        return calibration_loader(plain, samples, batch_size=min(64, samples), seed=d.seed)

    @cached_property
    def example(self) -> Any:
        """Eight test images: the export's example input (a real-data parity check); for a
        detector, a one-tuple of a list of one image (it takes a list; its ONNX file one); for
        text, eight evaluation sentences as keyword tensors."""
        if self.text is not None:
            return self.text.example
        if self.task is Task.DETECTION:
            return ([self.test_set[0][0]],)
        return torch.stack([self.test_set[i][0] for i in range(min(8, len(self.test_set)))])

    def example_batch(self, batch_size: int) -> Any:
        """Random inputs shaped like the example, ``batch_size`` images (latency); for text,
        ``batch_size`` evaluation sentences padded to ``seq`` tokens."""
        if self.text is not None:
            return self.text.example_batch(batch_size)
        if self.task is Task.DETECTION:
            return ([torch.rand_like(self.example[0][0])],)  # its ONNX file takes one image
        return torch.randn(batch_size, *self.example.shape[1:])

    @property
    def example_one(self) -> Any:
        """The example's first sample (what pruning and the MACs count trace)."""
        x = self.example
        return {k: v[:1] for k, v in x.items()} if isinstance(x, dict) else x[:1]

    def fidelity(self, model: Any) -> Any:
        """A text recipe's metric of ``model`` (or an ONNX Runtime
        :class:`~torchslim.export.OnnxModule`): its embeddings against the starting
        model's (:class:`~torchslim.train.sentence.EmbeddingFidelity`)."""
        assert self.text is not None
        return self.text.fidelity(self.reference, model)

    def fresh(self, spec: ModelSpec) -> nn.Module:
        if spec.checkpoint is not None:
            return load_model_file(spec.checkpoint)
        if is_hf_name(spec.name):
            if not is_text_name(self.recipe.data.name):
                raise ConfigError(f"model {spec.name}: a Hugging Face model goes with text data "
                                  "(data: {name: text:python-docs}), not "
                                  f"{self.recipe.data.name}")  # fmt: skip
            return hf_model(spec.name, **spec.args)
        torch.manual_seed(self.recipe.data.seed)
        in_channels = {} if self.task is not Task.CLASSIFICATION else {
            "in_channels": self.info.in_channels}  # fmt: skip
        return create(spec.name, num_classes=self.info.num_classes, **in_channels, **spec.args)

    def input_of(self, stage: Stage, previous: str) -> nn.Module:
        name = stage.input or previous
        if name == INITIAL and INITIAL not in self.models:
            self.models[INITIAL] = self.fresh(self.recipe.model)
        if name not in self.models:
            raise ConfigError(f"stage {stage.name}: its input {name!r} has no model")
        return copy.deepcopy(self.models[name])

    def teacher(self, ref: str) -> nn.Module:
        model = self.models[ref] if ref in self.models else load_model_file(ref)
        return model.eval()

    def folder(self, stage_folder: Path, part: str) -> Path:
        """Where a stage's trainer writes: ``stage_folder/part``, or the folder itself when a
        CLI sub-command runs the stage alone."""
        return stage_folder if self.one_stage else stage_folder / part

    def metadata(self, stage: Stage) -> dict[str, Any]:
        """What a checkpoint records so that :func:`load_run` (``eval``, ``prune``,
        ``quantize --checkpoint``) can rebuild the model a train/distill stage built fresh."""
        spec = stage.model
        if spec is None and (stage.input or self.previous) == INITIAL:
            spec = self.recipe.model  # the stage trains the recipe's starting model
        if spec is None or spec.name is None or is_hf_name(spec.name):
            return {}  # a pruned, loaded or Hugging Face model: not a zoo name
        return {
            "model": spec.name,
            "model_args": dict(spec.args),
            "data": self.recipe.data.name,
            "num_classes": self.info.num_classes,
            "in_channels": self.info.in_channels,
        }

    def fit(self, stage: Stage, model: nn.Module, config: TrainConfig | None,
            folder: Path) -> None:  # fmt: skip
        """Train ``model`` on the recipe's data into ``folder`` (resumed or replaced as the run
        says); the result is kept in :attr:`results` under the stage's name."""
        if self.text is not None:
            raise ConfigError(f"stage {stage.name}: text has no labels to train on; a text "
                              "recipe trains by distillation (a distill stage)")  # fmt: skip
        cfg = config if config is not None else TrainConfig()
        if not self.progress:
            cfg = cfg.replace(progress=False)
        trainer = Trainer(model, cfg, self.train_set, self.test_set, out_dir=folder,
                          metadata=self.metadata(stage))  # fmt: skip
        self.results[stage.name] = trainer.fit(resume=self.resume, overwrite=self.overwrite)


# Each stage function gets (context, stage, input model, stage folder) and returns its model and
# extra report fields.
StageFn = Callable[[Context, Stage, nn.Module, Path], tuple[nn.Module, dict[str, Any]]]


def _train(ctx: Context, stage: Stage, model: nn.Module, folder: Path) -> tuple[nn.Module, dict]:
    ctx.fit(stage, model, stage.train, ctx.folder(folder, "train"))
    return model, {}


def _distill(ctx: Context, stage: Stage, model: nn.Module,
             folder: Path) -> tuple[nn.Module, dict]:  # fmt: skip
    from torchslim.distill import fit_distillation

    teachers = [ctx.teacher(ref) for ref in stage.teachers]
    cfg = stage.config
    if not ctx.progress:
        cfg = _quiet(cfg)
    ctx.results[stage.name] = fit_distillation(
        model, teachers, ctx.train_set, cfg, eval_data=ctx.test_set, out_dir=folder,
        resume=ctx.resume, overwrite=ctx.overwrite, metadata=ctx.metadata(stage),
    )  # fmt: skip
    return model, {}


def _quiet(cfg: Any) -> Any:
    finetune = cfg.finetune.replace(progress=False) if cfg.finetune is not None else None
    return replace(cfg, train=cfg.train.replace(progress=False), finetune=finetune)


def _prune(ctx: Context, stage: Stage, model: nn.Module, folder: Path) -> tuple[nn.Module, dict]:
    from torchslim.prune import prune
    from torchslim.reports import report as report_of

    config, extra = stage.config, {}
    if stage.sensitivity is not None:
        config, extra["sensitivity"] = _sensitivity_ratios(ctx, stage, model)
    scoring: dict[str, Any] = {}
    if ctx.text is not None and config.importance == "taylor":  # label-free: SimCSE's loss
        from torchslim.train.sentence import contrastive_loss

        scoring = {"data": ctx.text.scoring(config.taylor_batches), "loss_fn": contrastive_loss}
    original = copy.deepcopy(model).eval() if stage.reconstruct else None
    prune(model, ctx.example_one, config, **scoring)
    report = report_of(model, "prune")
    log.info("%s", report)
    if original is not None:
        extra["reconstruct"] = _reconstruct(ctx, stage, model, original)
    channels = {r.name: [r.channels_before, r.channels_after] for r in report.layers
                if r.channels_before}  # fmt: skip
    if stage.finetune is not None:
        ctx.fit(stage, model, stage.finetune, ctx.folder(folder, "finetune"))
    return model, {"channels": channels, **extra}


def _search(ctx: Context, stage: Stage, model: nn.Module, folder: Path) -> tuple[nn.Module, dict]:
    """Per-layer ratios searched under the stage's budgets (``ts.search``: candidates scored
    on held-out *training* images, never the test set), the model pruned to the best, then the
    stage's fine-tune. The study lives in the stage folder; a rerun continues it."""
    from torchslim.auto.study import search

    d = ctx.recipe.data
    if ctx.task is not Task.CLASSIFICATION:
        raise ConfigError(f"stage {stage.name!r}: search scores classifiers (top-1) for now")
    bits = stage.config.space is not SpaceKind.PRUNE
    if bits and stage.finetune is not None:
        raise ConfigError(
            f"stage {stage.name!r}: a {stage.config.space.value} search returns a "
            "post-training-quantized model, which is not fine-tuned; drop finetune: (train "
            "before the search)"
        )
    plain = get_dataset(d.name, train=True, root=d.root, augment=[])
    result = search(model, ctx.example_one, stage.config, data=plain,
                    out_dir=ctx.folder(folder, "search"), resume=True,
                    progress=ctx.progress)  # fmt: skip
    log.info("%s", result)
    pruned = result.model
    if stage.finetune is not None:
        ctx.fit(stage, pruned, stage.finetune, ctx.folder(folder, "finetune"))
    cost = ("bytes_ratio" if bits else "latency_ratio" if stage.config.latency is not None
            else "macs_ratio")  # fmt: skip
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    trajectory = [[t.number, t.value, t.user_attrs[cost]] for t in done]
    found = {"ratios": result.ratios, "score": result.score, "macs_ratio": result.macs_ratio,
             "latency_ratio": result.latency_ratio, "bits": result.bits,
             "act_bits": result.act_bits,
             "bytes_ratio": result.bytes_ratio, "cost": cost,
             "trials": trajectory, "final_score": result.final_score,
             "finalists": result.study.user_attrs.get("final_scores")}  # fmt: skip
    return pruned, {"channels": result.channels, "search": found}


SENSITIVITY_IMAGES = 2000  # held-out training images that score a sensitivity analysis


def _reconstruct(ctx: Context, stage: Stage, model: nn.Module,
                 original: nn.Module) -> dict[str, list[float]]:  # fmt: skip
    """The prune stage's least-squares refit on ``stage.reconstruct`` training samples (the
    calibration ones); per refit layer, its relative output error before and after."""
    from torchslim.prune.refit import reconstruct

    # a classifier's calibration batches are (images, labels): the refit runs the images
    batches = [b[0] if isinstance(b, list | tuple) and ctx.text is None else b
               for b in ctx.calib(stage.reconstruct)]  # fmt: skip
    result = reconstruct(model, original, batches, batches=len(batches), progress=ctx.progress)
    log.info("%s", result)
    return {n: [result.error_before[n], result.error_after[n]] for n in result.layers}


def _sensitivity_ratios(ctx: Context, stage: Stage, model: nn.Module) -> tuple[Any, dict]:
    """PaddleSlim's recipe: prune each group alone, evaluate, pick per-group ratios that meet
    ``target_macs`` with the least predicted accuracy loss. Each pruning is scored on held-out
    *training* images (2,000, never the test set, which is for the report)."""
    from torchslim.prune.sensitivity import ratios_for_target, sensitivity
    from torchslim.train import evaluate

    spec, cfg = stage.sensitivity, stage.config
    d = ctx.recipe.data
    plain = get_dataset(d.name, train=True, root=d.root, augment=[])
    held_out = in_memory(holdout_split(plain, SENSITIVITY_IMAGES, 0, d.seed)[0])
    result = sensitivity(
        model,
        ctx.example_one,
        lambda m: evaluate(m, held_out, batch_size=256).metric,
        spec,
        progress=ctx.progress,
    )
    log.info("%s", result)
    ratios = ratios_for_target(result, cfg.target_macs)
    curves = {g.name: {str(p.ratio): p.metric for p in g.points if p.metric is not None}
              for g in result.groups}  # fmt: skip
    return replace(cfg, ratio=0.0, ratios=ratios, target_macs=None), curves


def _sparsify(ctx: Context, stage: Stage, model: nn.Module,
              folder: Path) -> tuple[nn.Module, dict]:  # fmt: skip
    from torchslim.prune import sparsify

    sparsify(model, stage.config)
    if stage.finetune is not None:
        ctx.fit(stage, model, stage.finetune, ctx.folder(folder, "finetune"))
    return model, {}


def _quantize(ctx: Context, stage: Stage, model: nn.Module,
              folder: Path) -> tuple[nn.Module, dict]:  # fmt: skip
    from torchslim.quant import quantize

    model.eval()
    cfg = stage.config
    if cfg.dynamic and not (cfg.smooth or cfg.auto_skip or cfg.auto_token_scale):  # no calib
        return quantize(model, None, cfg, progress=ctx.progress), {}
    calib = ctx.calib(stage.calib)  # every one of the stage's `calib` images is used
    config = replace(stage.config, calib_batches=len(calib))
    return quantize(model, calib, config, progress=ctx.progress), {}


def _qat(ctx: Context, stage: Stage, model: nn.Module, folder: Path) -> tuple[nn.Module, dict]:
    from torchslim.quant import convert, prepare_qat

    calib = ctx.calib(stage.calib)
    q = prepare_qat(model, replace(stage.config, calib_batches=len(calib)), calib_data=calib)
    ctx.fit(stage, q, stage.train, ctx.folder(folder, "train"))
    return convert(q), {}


def _evaluate(ctx: Context, stage: Stage, model: nn.Module,
              folder: Path) -> tuple[nn.Module, dict]:  # fmt: skip
    return model, {}


def _export(ctx: Context, stage: Stage, model: nn.Module,
            folder: Path) -> tuple[nn.Module, dict]:  # fmt: skip
    from torchslim.export import export_onnx

    out = ctx.out_dir if ctx.out_dir is not None else folder.parent.parent
    path = Path(stage.path) if stage.path else out / f"{stage.input or ctx.previous}.onnx"
    log.info("%s", export_onnx(model, ctx.example, path))
    return model, {"file": str(path)}


@dataclass(frozen=True)
class StageType:
    """A kind of recipe stage: its function, its own YAML keys besides ``type``/``name``/
    ``input``, the method config whose fields sit flattened beside them, and whether it yields
    a model (measured in the report and usable as a later stage's input) or, like ``export``,
    writes a file (its function returns ``{"file": path}`` as its extra)."""

    run: StageFn
    keys: frozenset[str] = frozenset()
    config: type | None = None
    makes_model: bool = True


STAGE_TYPES: dict[str, StageType] = {
    "train": StageType(_train, frozenset({"model", "train"})),
    "distill": StageType(_distill, frozenset({"model", "teacher"}), DistillConfig),
    "prune": StageType(_prune, frozenset({"finetune", "sensitivity", "reconstruct"}), PruneConfig),
    "search": StageType(_search, frozenset({"finetune"}), SearchConfig),
    "sparsify": StageType(_sparsify, frozenset({"finetune"}), SparsityConfig),
    "quantize": StageType(_quantize, frozenset({"calib"}), QuantConfig),
    "qat": StageType(_qat, frozenset({"calib", "train"}), QATConfig),
    "export": StageType(_export, frozenset({"path"}), makes_model=False),
    "evaluate": StageType(_evaluate),
}


def stage_input(ctx: Context, stage: Stage, previous: str) -> nn.Module:
    """The model a stage starts from: a fresh one (``model:``) or a copy of its input's."""
    if stage.model is not None:
        return ctx.fresh(stage.model)
    return ctx.input_of(stage, previous)


__all__ = [
    "STAGE_TYPES",
    "Context",
    "StageType",
    "load_model_file",
    "load_run",
    "save_stage_model",
    "stage_input",
]
