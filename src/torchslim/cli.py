"""The ``torchslim`` command line: demo, compress, train, eval, analyze, prune, quantize,
distill."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchslim.config import from_dict, parse_yaml, to_dict, with_source
from torchslim.errors import ConfigError, TorchslimError

log = logging.getLogger("torchslim")

# One line of help per TrainConfig field; the CLI options are generated from the dataclass so
# they cannot drift apart (a test checks that every field has its help).
TRAIN_HELP: dict[str, str] = {
    "epochs": "passes over the training data",
    "batch_size": "samples per step on each process",
    "optimizer": "sgd (momentum) or adamw",
    "lr": "peak learning rate (before linear scaling, see --lr-base-batch-size)",
    "lr_base_batch_size": "enable linear LR scaling: lr * batch_size * world_size / this",
    "momentum": "SGD momentum",
    "nesterov": "use Nesterov momentum with SGD",
    "weight_decay": "decoupled (AdamW) or L2 (SGD) weight decay",
    "no_bias_decay": "exclude biases and norm parameters from weight decay",
    "schedule": "learning-rate decay after warm-up: cosine, step or constant",
    "warmup_epochs": "linear warm-up length in epochs (fractions allowed)",
    "milestones": "epochs at which the step schedule multiplies the lr by --gamma",
    "gamma": "decay factor of the step schedule",
    "min_lr_ratio": "floor of the schedule as a fraction of the peak lr",
    "label_smoothing": "label smoothing of the cross-entropy, in [0, 1)",
    "mixup_alpha": "mixup Beta(alpha, alpha) parameter; 0 disables",
    "cutmix_alpha": "cutmix Beta(alpha, alpha) parameter; 0 disables",
    "zero_gamma": "zero-initialise the last BatchNorm scale of every residual block",
    "grad_clip_norm": "clip the global gradient norm to this value",
    "precision": "fp32; amp (bf16 autocast on CPU, fp16 + GradScaler on CUDA); or bf16",
    "seed": "seed of the weights, data order and augmentation",
    "deterministic": "ask PyTorch for deterministic kernels (slower on GPU)",
    "num_workers": "data-loading worker processes",
    "eval_every": "evaluate every N epochs (and always after the last)",
    "checkpoint_every_steps": "also checkpoint every N steps inside an epoch (0: epoch ends only)",
    "max_steps_per_epoch": "cap the steps of each epoch (quick runs)",
    "channels_last": "train in channels-last memory format (often faster for convolutions)",
    "device": "auto, cpu, cuda or cuda:N",
    "progress": "show a progress bar",
    "log_every": "refresh the progress-bar loss every N steps",
    "task": "classification, detection or segmentation (loss, batching, metric); auto reads it "
    "from the first batch",
}


PRUNE_HELP: dict[str, str] = {
    "ratio": "fraction of channels to remove from each group (uniform mode)",
    "importance": "channel importance: l1, l2, fpgm, bn_gamma, random, or taylor (needs data)",
    "mode": "how ratios are spread: uniform per group, or one global ranking",
    "ratios": "per-layer ratios by name glob, overriding ratio",
    "target_macs": "keep this fraction of the MACs (searches the ratio), e.g. 0.5",
    "target_latency": "keep this fraction of the model's ONNX Runtime latency on this CPU "
    "(per-layer look-up table, timed once and cached), e.g. 0.5",
    "latency_batch_size": "the batch size target_latency is measured at",
    "latency_threads": "ONNX Runtime threads for target_latency (default: PyTorch's)",
    "verify_latency": "measure the pruned model and correct the prediction up to this many "
    "times (0: trust the table)",
    "round_to": "keep channel counts at multiples of this (None: the CPU's vector width, 16 "
    "floats with AVX-512, 8 with AVX2/NEON, where its kernels run fastest)",
    "ignore": "module names/globs/types to leave untouched",
    "max_ratio": "never remove more than this fraction of one group",
    "prune_head_dims": "also prune the per-head width of attention (not only whole heads)",
    "taylor_batches": "batches of data the taylor importance averages over",
    "seed": "seed of the random importance and of ties",
    "strict": "raise on an op of unknown channel behaviour or a pruning that breaks the forward "
    "(default: keep those channels whole and prune the rest)",
}

QUANT_HELP: dict[str, str] = {
    "weight_bits": "weight bits, 2-8 (overrides --bits)",
    "act_bits": "activation bits, 2-8 (overrides --bits)",
    "per_channel": "per-output-channel weight scales",
    "weight_mapping": "weight range mapping",
    "act_mapping": "activation range mapping (overrides --observer)",
    "calibration": "how a saturating mapping picks its threshold (overrides --observer)",
    "percentile": "the percentile of the percentile calibration",
    "bias_correction": "correct the bias that weight rounding introduces",
    "fold_bn": "fold BatchNorm into the convolutions before quantizing",
    "skip": "module names/globs/types kept float",
    "auto_skip": "also keep the K layers with the worst SQNR float",
    "dynamic": "dynamic quantization of Linear layers (no calibration)",
    "embedding_bits": "bits of the nn.Embedding tables (0: float)",
    "embedding_scales": "int8 embedding scales per row (token) or per column (channel)",
    "smooth": "SmoothQuant migration strength alpha, 0-1 (0: off; needs calibration)",
    "smooth_layers": "the Linears SmoothQuant smooths: names/globs/types (default: all)",
    "token_scale_layers": "dynamic: Linears whose input range is taken per token (patterns)",
    "auto_token_scale": "dynamic: also take per-token input ranges in the K Linears where "
    "that gains the most output SQNR (needs calibration)",
    "act_placement": "static: int8 activations at every layer input and output (all), at "
    "layer inputs only (inputs: transformers), or auto (inputs when no conv is quantized)",
    "weight_only": "weights only, int4/int8 per group, activations float (ONNX MatMulNBits)",
    "group_size": "weight_only: input channels per scale (a power of two >= 16)",
    "algorithm": "weight_only: rtn (round to nearest) or gptq (needs calibration data)",
    "act_order": "gptq: quantize the most active input channels first",
    "accuracy_level": "weight_only: MatMulNBits compute (4: int8 inputs per group; 0: float)",
    "reduce_range": "7-bit weights for CPUs without VNNI (default: detected)",
    "first_layer_bits": "weight bits of the first quantized layer (default: weight_bits)",
    "last_layer_bits": "weight bits of the last quantized layer (default: weight_bits)",
    "layer_bits": "weight bits per layer by name glob, e.g. '{layer1.*: 4}' (mixed precision)",
    "layer_act_bits": "input activation bits per layer by name glob, e.g. '{fc: 4}'",
}
QUANT_FROM_STAGE = ("calib_batches",)  # the stage's `calib` (images) decides it


MODEL_HELP = (
    "model name: zoo (resnet20, mobilenetv1...), any torchvision model, timm:ARCH, "
    "hf:PATH_OR_NAME (a Hugging Face folder or Hub name), or package.module:callable for "
    "your own"
)
HF_SEQ = 128  # analyze: tokens per sentence of an hf: model's example (--input N,SEQ)
NUM_CLASSES_HELP = "outputs of --model (default: 1000 for classifiers, else the model's own)"


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a shape like 1,3,224,224, got {text!r}"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected positive sizes like 1,3,224,224, got {text!r}")
    return shape


def _parse_kv(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML; a ConfigError (one line, exit 2) when malformed."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--model-arg {text!r}: expected KEY=VALUE, e.g. width_mult=0.5")
    return key.strip(), parse_yaml(value, f"--model-arg {key.strip()}")


def _scalar_parser(annotation: Any) -> tuple[Any, str]:
    """An argparse ``type`` for a config field: int, float, str, or optional ones ("none")."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args and typing.get_origin(annotation) is not None else annotation
    optional = type(None) in typing.get_args(annotation)
    kind = base if base in (int, float) else str

    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None

    return parse, {int: "N", float: "X"}.get(kind, "NAME")


def _yaml_value(text: str) -> Any:
    try:
        return parse_yaml(text, "value")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_config_options(
    parser: argparse.ArgumentParser, cls: type, helps: dict[str, str], skip: tuple[str, ...] = ()
) -> None:
    """One option per field of the config dataclass ``cls`` (``--round-to`` for ``round_to``),
    so the command line and recipes cannot drift apart; unset options keep the config's own
    defaults. ``helps`` has one line per field (a test checks that none is missing)."""
    group = parser.add_argument_group(f"{cls.__name__} (the fields a recipe stage takes)")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.default is not dataclasses.MISSING:
            default = f.default.value if hasattr(f.default, "value") else f.default
        else:
            default = f.default_factory()  # type: ignore[misc]
        text = f"{helps[f.name]} (default: {default})"
        hint, origin = hints[f.name], typing.get_origin(hints[f.name])
        choices = (
            [m.value for m in hint]
            if isinstance(hint, type) and issubclass(hint, enum.Enum)
            else None
        )
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif origin in (tuple, list):
            item = (typing.get_args(hint) or (str,))[0]
            group.add_argument(flag, type=item if item in (int, float) else str, nargs="*",
                               default=None, help=text)  # fmt: skip
        elif origin is dict:
            group.add_argument(flag, type=_yaml_value, default=None, metavar="YAML",
                               help=f"{text}; YAML, e.g. '{{layer1.*: 0.3}}'")  # fmt: skip
        elif choices is not None:  # checked by the config (a did-you-mean), not by argparse
            metavar = "{" + ",".join(choices) + "}"
            group.add_argument(flag, default=None, metavar=metavar, help=text)
        else:
            parse, metavar = _scalar_parser(hint)
            group.add_argument(flag, type=parse, default=None, metavar=metavar, help=text)


def _config_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (options left unset are left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def _add_train_config_options(parser: argparse.ArgumentParser) -> None:
    from torchslim.train import TrainConfig

    _add_config_options(parser, TrainConfig, TRAIN_HELP)


def _train_config(args: argparse.Namespace) -> Any:
    from torchslim.train import TrainConfig

    values = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        loaded = parse_yaml(path.read_text(), str(path)) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of TrainConfig fields")
        values.update(loaded)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name)
        if value is not None:
            values[f.name] = value
    try:
        return from_dict(TrainConfig, values)
    except ConfigError as exc:
        raise with_source(exc, args.config or "options") from None


def _data_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--data",
        default="fashion-mnist" if not required else None,
        required=required,
        help="dataset: fashion-mnist (embedded), mnist, cifar10, or a folder / imagefolder:PATH",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        help="where the dataset lives (default: $TORCHSLIM_DATA or ~/.cache/torchslim/data)",
    )
    parser.add_argument("--test-subset", type=int, default=0, metavar="N",
                        help="evaluate on a class-balanced subset of N samples of the test "
                        "set (eval: of --split; a quick check; default: all of it)")  # fmt: skip


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra model constructor argument, e.g. width_mult=0.5 (repeatable)",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that train a zoo model on a dataset."""
    p.add_argument(
        "--subset", type=int, default=0, help="train on a stratified subset of N samples"
    )
    p.add_argument(
        "--augment",
        default=None,
        help="comma-separated augmentations, or none (default: per dataset)",
    )
    _add_model_arg(p)
    p.add_argument(
        "--config", default=None, help="YAML file of TrainConfig fields (flags override it)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    _add_overwrite(p)


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out already holds (default: refuse)")  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    from torchslim.train import seed_everything
    from torchslim.train.distributed import current

    config = _train_config(args)
    seed_everything(config.seed)
    ctx, stage = _one_stage(args, args.data, "train", model=_model_spec(args.model, args),
                            train=config)  # fmt: skip
    out = Path(args.out or f"runs/{args.model}-{ctx.info.name}")
    model = ctx.fresh(stage.model)  # an unknown name fails before anything is logged
    log.info("training %s on %s: %d samples, %s", args.model, args.data, len(ctx.train_set), out)
    _run_alone(ctx, stage, model, out)
    result = ctx.results[stage.name]
    if current().is_main:
        print(
            f"done: {len(result.history)} epochs, test top-1 "
            f"{100 * result.final.get('eval_acc', 0):.2f}%, wall {result.wall_time_s:.0f}s "
            f"(this process), checkpoint {out / 'last.pt'}"
        )
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from torchslim.distill import LossSpec
    from torchslim.train import evaluate, seed_everything

    runs = {t: _load_run(Path(t)) for t in args.teacher}
    data = args.data or runs[args.teacher[0]][1].get("data", "fashion-mnist")
    config = _train_config(args)
    seed_everything(config.seed)
    finetune = None
    if args.finetune_epochs:
        lr = args.finetune_lr if args.finetune_lr is not None else config.lr / 10
        finetune = config.replace(epochs=args.finetune_epochs, lr=lr, warmup_epochs=0.0)
    dcfg = {
        "losses": [LossSpec.parse(text) for text in args.loss] or [LossSpec()],
        "teacher_weights": args.teacher_weight,
        "hard_label_weight": args.hard_label_weight,
        "cache_teacher": args.cache_teacher,
        "train": config,
        "finetune": finetune,
    }
    ctx, stage = _one_stage(args, data, "distill", model=_model_spec(args.student, args),
                            teacher=tuple(args.teacher), config=dcfg)  # fmt: skip
    ctx.models.update({path: model for path, (model, _) in runs.items()})
    student = ctx.fresh(stage.model)
    for path, (teacher, _) in runs.items():
        log.info("teacher %s: test %s", path, evaluate(teacher, ctx.test_set))
    out = Path(args.out or f"runs/{args.student}-distill-{ctx.info.name}")
    _run_alone(ctx, stage, student, out)
    res = ctx.results[stage.name]
    last = "finetune" if finetune is not None else "distill"
    print(
        f"done: student {args.student} test top-1 {100 * res.final.get('eval_acc', 0):.2f}%, "
        f"checkpoint {out / last / 'last.pt'}"
    )
    return 0


def _model_spec(name: str, args: argparse.Namespace) -> Any:
    from torchslim.pipeline.spec import ModelSpec

    return ModelSpec(name, args=dict(args.model_arg))


def _run_alone(ctx: Any, stage: Any, model: Any, out: Path) -> None:
    """Run the one stage of a sub-command's recipe on ``model``, its trainer writing into
    ``out`` itself (not into a stage sub-folder as in a recipe run)."""
    from torchslim.pipeline.stages import STAGE_TYPES

    ctx.one_stage = True
    STAGE_TYPES[stage.type].run(ctx, stage, model, out)


def cmd_eval(args: argparse.Namespace) -> int:
    from torchslim.data import dataset_info, get_dataset, stratified_subset
    from torchslim.train import evaluate
    from torchslim.train.trainer import resolve_device

    model, meta = _load_run(Path(args.checkpoint))
    data = args.data or meta.get("data", "fashion-mnist")
    dataset = get_dataset(data, train=args.split == "train", root=args.data_root)
    if args.test_subset:
        per_class = max(1, args.test_subset // dataset_info(data).num_classes)
        dataset = stratified_subset(dataset, per_class=per_class)
    device = resolve_device(args.device)
    result = evaluate(model.to(device), dataset, batch_size=args.batch_size, progress=True)
    print(f"{meta['model']} on {data} ({args.split}): {result}")
    return 0


def _hf_example(model_name: str, shape: tuple[int, ...] | None) -> dict[str, Any]:
    """Keyword inputs for an ``hf:`` model: N sentences of the embedded corpus, tokenized by
    the model's tokenizer and padded to SEQ tokens (``--input N,SEQ``, default 1,128)."""
    from torchslim.data import text_corpus
    from torchslim.models.hf import hf_tokenizer
    from torchslim.pipeline.text import TextData

    shape = shape or (1, HF_SEQ)
    if len(shape) != 2:
        raise ConfigError(f"--input: an hf: model takes sentences, N,SEQ (e.g. 1,128), got "
                          f"{','.join(map(str, shape))}")  # fmt: skip
    text = TextData(hf_tokenizer(model_name), [], text_corpus(), seq=shape[1])
    return text.example_batch(shape[0])


def cmd_analyze(args: argparse.Namespace) -> int:
    import torch

    from torchslim.analysis import analyze
    from torchslim.models import create
    from torchslim.models.hf import is_hf_name
    from torchslim.runtime import measure_latency

    x: Any
    if is_hf_name(args.model):
        from torchslim.pipeline.stages import hf_model

        model = hf_model(args.model, **dict(args.model_arg))
        x = _hf_example(args.model, args.input)
    else:
        shape = args.input or (1, 3, 224, 224)
        in_channels = shape[1] if len(shape) > 1 else 3
        model = create(args.model, num_classes=args.num_classes, in_channels=in_channels,
                       **dict(args.model_arg))  # fmt: skip
        x = torch.randn(*shape)
    stats = analyze(model, x)
    print(stats)
    if args.bits:
        for bits in args.bits:
            print(f"weights at {bits} bits: {stats.bytes_at(bits) / 2**20:.2f} MiB")
    if args.latency:
        for backend in ("torch", "ort"):
            print(measure_latency(model, x, backend=backend, threads=args.threads))
    if args.json:
        Path(args.json).write_text(json.dumps(stats.to_dict(), indent=2))
        print(f"wrote {args.json}")
    return 0


def _load_run(path: Path) -> tuple[Any, dict[str, Any]]:
    """A model and its metadata from a `torchslim train` run folder or checkpoint file."""
    from torchslim.pipeline import load_run

    return load_run(path)


def _model_and_data(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The model of ``--checkpoint RUN`` (and its dataset) or a fresh ``--model NAME``."""
    if args.checkpoint:
        model, meta = _load_run(Path(args.checkpoint))
        return model, args.data or meta.get("data", "fashion-mnist")
    if not args.model:
        raise ConfigError("give --model NAME or --checkpoint RUN")
    from torchslim.models import create
    from torchslim.models.hf import is_hf_name

    if is_hf_name(args.model):
        raise ConfigError(f"--model {args.model}: {args.command} takes image models; compress "
                          "a Hugging Face model with a text recipe: torchslim compress "
                          f"recipes/minilm.yaml --model {args.model}")  # fmt: skip

    in_ch = args.input[1] if args.input and len(args.input) > 1 else 3
    return create(args.model, num_classes=args.num_classes, in_channels=in_ch), args.data


def cmd_prune(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    import torchslim as ts
    from torchslim.data import dataset_info
    from torchslim.pipeline.stages import STAGE_TYPES
    from torchslim.prune import PruneConfig
    from torchslim.serialize import save
    from torchslim.train import TrainConfig, evaluate

    model, data = _model_and_data(args)
    shape = args.input
    if data and args.input_default:
        info = dataset_info(data)
        shape = (1, info.in_channels, info.image_size, info.image_size)
    config = _config_values(args, PruneConfig)
    finetune = None
    if args.finetune_epochs:
        if not data:
            raise ConfigError("--finetune-epochs needs --data (or a --checkpoint that names it)")
        finetune = TrainConfig(epochs=args.finetune_epochs, lr=args.lr, batch_size=args.batch_size,
                               progress=not args.quiet)  # fmt: skip
    # The recipe's prune stage on a one-stage recipe (pruning, then the optional fine-tune on
    # the recipe's data), with this command's example input.
    ctx, stage = _one_stage(args, data, "prune", config=config, finetune=finetune)
    ctx.example = torch.randn(*shape)
    test = ctx.test_set if data else None
    before = evaluate(model, test, batch_size=256).accuracy if test is not None else None
    stage_log = logging.getLogger("torchslim.pipeline")
    level, stage_log.level = stage_log.level, logging.WARNING  # the report is printed below
    try:
        with tempfile.TemporaryDirectory() as folder:  # the fine-tune's checkpoints
            model, _ = STAGE_TYPES["prune"].run(ctx, stage, model, Path(folder))
    finally:
        stage_log.setLevel(level)
    print(ts.report(model, "prune"))
    if test is not None:
        after = evaluate(model, test, batch_size=256).accuracy
        print(f"test top-1: {100 * before:.2f}% before pruning, {100 * after:.2f}% after")
    out = save(model, args.out, metadata={"pruned": to_dict(stage.config), "data": data})
    print(f"wrote {out} (load with torchslim.load)")
    return 0


def _one_stage(args: argparse.Namespace, data: str | None, kind: str, **keys: Any) -> Any:
    """A context and a stage of a one-stage recipe for ``kind`` (its keys and method config as
    a recipe would hold them), so a sub-command runs the recipe's own stage function."""
    from torchslim.pipeline.recipe import Recipe
    from torchslim.pipeline.spec import DataSpec, ModelSpec, Stage
    from torchslim.pipeline.stages import STAGE_TYPES, Context

    method = STAGE_TYPES[kind].config
    if method is not None and "config" in keys:
        keys["config"] = from_dict(method, keys["config"])
    stage = Stage(type=kind, name=kind, **keys)
    if stage.model is not None:
        spec = stage.model
    else:
        spec = ModelSpec(checkpoint=args.checkpoint) if args.checkpoint else ModelSpec(args.model)
    augment = getattr(args, "augment", None)  # train, distill: --augment, --subset
    if augment is not None:
        augment = () if augment == "none" else tuple(augment.split(","))
    train = keys.get("train") or getattr(keys.get("config"), "train", None)
    dataspec = DataSpec(name=data or "fashion-mnist", root=args.data_root, augment=augment,
                        subset=getattr(args, "subset", 0),
                        test_subset=getattr(args, "test_subset", 0),
                        seed=train.seed if train is not None else 0)  # fmt: skip
    recipe = Recipe(model=spec, stages=(stage,), data=dataspec)
    ctx = Context(recipe, progress=not args.quiet, resume=getattr(args, "resume", False),
                  overwrite=getattr(args, "overwrite", False))  # fmt: skip
    return ctx, stage


_OBSERVERS = {
    "affine": {"act_mapping": "affine"},
    "symmetric": {"act_mapping": "symmetric"},
    "percentile": {"act_mapping": "saturating", "calibration": "percentile"},
    "kl": {"act_mapping": "saturating", "calibration": "kl"},
    "mse": {"act_mapping": "saturating", "calibration": "mse"},
}


def cmd_quantize(args: argparse.Namespace) -> int:
    import torch

    import torchslim as ts
    from torchslim.data import dataset_info
    from torchslim.export import evaluate_onnx
    from torchslim.pipeline.stages import STAGE_TYPES
    from torchslim.quant import QuantConfig

    model, data = _model_and_data(args)
    model.eval()
    shape = args.input
    if shape is None:
        if not data:
            raise ConfigError("give --input N,C,H,W or --data (the example input's shape)")
        info = dataset_info(data)
        shape = (1, info.in_channels, info.image_size, info.image_size)
    presets = {"weight_bits": args.bits, "act_bits": args.bits, **_OBSERVERS[args.observer]}
    config: dict[str, Any] = {**presets, **_config_values(args, QuantConfig)}
    if not args.dynamic and not data:
        raise ConfigError("static quantization calibrates on data: give --data (or --dynamic)")
    # The recipe's quantize stage, run on a one-stage recipe: CLI and recipes calibrate alike.
    ctx, stage = _one_stage(args, data, "quantize", calib=args.calib, config=config)
    qmodel, _ = STAGE_TYPES["quantize"].run(ctx, stage, model, Path(args.out).parent)
    if ts.report(qmodel) is not None:
        print(ts.report(qmodel))
    example = ctx.example if data else torch.randn(*shape)
    report = ts.export_onnx(qmodel, example, args.out)
    print(report)
    if data and not args.no_eval:
        test = ctx.test_set  # --test-subset honoured
        fp32 = Path(args.out).with_suffix(".fp32.onnx")
        ts.export_onnx(model, example, fp32, check=False)
        base, acc = evaluate_onnx(fp32, test), evaluate_onnx(report.path, test)
        print(f"test top-1 in ONNX Runtime: {100 * base:.2f}% FP32 ({fp32.stat().st_size:,} "
              f"bytes), {100 * acc:.2f}% int8 ({report.file_bytes:,} bytes, "
              f"{report.file_bytes / fp32.stat().st_size:.2f}x)")  # fmt: skip
    return 0


def _run_recipe(args: argparse.Namespace, recipe: Any, out: Path, render: Any) -> int:
    """Run ``recipe`` into ``out`` and print ``render(report)`` and where the files went."""
    from torchslim.pipeline import compress

    result = compress(
        recipe, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet
    )
    print(render(result.report))
    print(f"report: {out / 'report.md'}, {out / 'report.html'}, {out / 'report.json'}")
    return 0


def _recipe_overrides(args: argparse.Namespace) -> tuple[str, ...]:
    """``--model NAME`` (the recipe's starting model replaced) then the ``--set`` overrides."""
    model = (f"model={json.dumps({'name': args.model})}",) if args.model else ()
    return (*model, *args.set)


def cmd_compress(args: argparse.Namespace) -> int:
    from torchslim.pipeline import load_recipe

    recipe = load_recipe(args.recipe, _recipe_overrides(args))
    return _run_recipe(args, recipe, Path(args.out or f"runs/{Path(args.recipe).stem}"), str)


def cmd_search(args: argparse.Namespace) -> int:
    from torchslim.pipeline import load_recipe

    recipe = load_recipe(args.recipe, _recipe_overrides(args))
    names = [s.name for s in recipe.stages if s.type == "search"]
    if not names:
        raise ConfigError(f"{args.recipe}: no stage of type 'search'; use torchslim compress")
    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    workers = tuple(f"stages.{n}.workers={args.workers}" for n in names)
    recipe = load_recipe(args.recipe, (*_recipe_overrides(args), *workers))
    return _run_recipe(args, recipe, Path(args.out or f"runs/{Path(args.recipe).stem}"), str)


def cmd_demo(args: argparse.Namespace) -> int:
    from torchslim.pipeline import demo

    recipe = demo.demo_recipe(quick=args.quick, overrides=tuple(args.set))
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))
    return _run_recipe(args, recipe, out, demo.summary)


def _add_recipe_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="NAME",
                   help="start from this model instead of the recipe's (its model: section): "
                        "e.g. hf:PATH for a Hugging Face folder; " + MODEL_HELP)  # fmt: skip


def _add_recipe_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a recipe value: stages.2.ratio=0.4 or "
                        "stages.pruned.ratio=0.4 (repeatable)")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="skip finished stages and continue the interrupted one")  # fmt: skip
    _add_overwrite(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``torchslim`` command (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="torchslim",
        description="Make PyTorch models smaller and faster, and measure it.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only print results and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the built-in recipe on the embedded Fashion-MNIST")
    p.description = (
        "Baseline; distilled from a larger teacher; distilled + int8; pruned to -50% MACs + "
        "fine-tune; pruned + int8 - PaddleSlim's MobileNetV1 table in miniature, measured in "
        "ONNX Runtime (full run about 10 minutes on 2 CPU cores, --quick about 2)."
    )
    p.add_argument("--quick", action="store_true", help="smaller data and fewer epochs")
    p.add_argument("--out", default=None, help="output folder (default: runs/demo[-quick])")
    _add_recipe_run_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("compress", help="run a YAML recipe of stages")
    p.description = (
        "Run the stages of RECIPE (train, distill, prune, sparsify, quantize, qat, export, "
        "evaluate) in order; each checkpoints under OUT/stages, and the report (Markdown, JSON, "
        "HTML) is rewritten after every stage."
    )
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--out", default=None, help="output folder (default: runs/RECIPE-NAME)")
    _add_recipe_model_option(p)
    _add_recipe_run_options(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("search", help="run a recipe whose search stages use N workers")
    p.description = (
        "Run RECIPE like `compress`, its `search` stages with --workers processes sharing one "
        "Optuna study (the stage folder's search.db, or the stage's storage URL: start this "
        "command with --resume on other machines to add their workers)."
    )
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--out", default=None, help="output folder (default: runs/RECIPE-NAME)")
    _add_recipe_model_option(p)
    _add_recipe_run_options(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("train", help="train a model from the zoo on a dataset")
    p.description = "Train a zoo or torchvision model; checkpoints and metrics go to --out."
    p.add_argument("--model", required=True, help=MODEL_HELP)
    _data_options(p, required=False)
    _add_run_options(p)
    p.add_argument("--out", default=None, help="output folder (default: runs/MODEL-DATA)")
    _add_train_config_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train a student from one or more teacher checkpoints")
    p.description = (
        "Knowledge distillation: the student learns from --teacher runs with the --loss terms "
        "(kd, l2_logit, fitnet, at, fsp, rkd, sp); checkpoints go to OUT/distill (and "
        "OUT/finetune with --finetune-epochs)."
    )
    p.add_argument("--teacher", action="append", required=True,
                   help="a `torchslim train` run folder or last.pt (repeatable)")  # fmt: skip
    p.add_argument("--student", required=True, help="zoo or torchvision name of the student")
    p.add_argument("--loss", action="append", default=[], metavar="TYPE[:K=V,...]",
                   help="a distillation term, e.g. kd:T=4,alpha=0.9 or "
                        "fitnet:student=layer2,teacher=layer2,weight=0.5 (repeatable; "
                        "default kd)")  # fmt: skip
    p.add_argument("--teacher-weight", type=float, action="append", default=[],
                   help="weight of each teacher's soft targets (default: equal)")  # fmt: skip
    p.add_argument("--hard-label-weight", type=float, default=None,
                   help="label cross-entropy weight (default: 1 - alpha of kd)")  # fmt: skip
    p.add_argument("--cache-teacher", action="store_true",
                   help="reuse teacher outputs each epoch (exact with --augment none)")  # fmt: skip
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="then fine-tune on hard labels N epochs (two-phase)")  # fmt: skip
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="learning rate of the fine-tune phase (default: --lr / 10)")  # fmt: skip
    _data_options(p, required=False)
    p.set_defaults(data=None)
    _add_run_options(p)
    p.add_argument("--out", default=None, help="output folder (default: runs/STUDENT-distill-DATA)")
    _add_train_config_options(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("eval", help="evaluate a trained checkpoint")
    p.description = "Top-1 accuracy and loss of a checkpoint written by `torchslim train`."
    p.add_argument("--checkpoint", required=True, help="a run folder or its last.pt")
    _data_options(p, required=False)
    p.set_defaults(data=None)
    p.add_argument("--split", choices=["test", "train"], default="test", help="which split")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("analyze", help="parameters, MACs and size per layer")
    p.description = "Print a per-layer table (params, MACs, shapes) and totals for a model."
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument(
        "--input",
        type=_parse_shape,
        default=None,
        help="example input shape N,C,H,W (default: 1,3,224,224); for an hf: model N,SEQ: N "
        "sentences padded to SEQ tokens (default: 1,128)",
    )
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs")
    _add_model_arg(p)
    p.add_argument(
        "--bits",
        type=int,
        nargs="*",
        default=[],
        help="also print weight bytes at these bit widths",
    )
    p.add_argument(
        "--latency", action="store_true", help="also measure CPU latency (PyTorch and ONNX Runtime)"
    )
    p.add_argument("--threads", type=int, default=None, help="threads for --latency")
    p.add_argument("--json", default=None, help="write the statistics to this JSON file")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("prune", help="remove channels for real (structured pruning)")
    p.description = (
        "Prune a zoo/torchvision model or a trained run, print the per-layer report, optionally "
        "fine-tune, and save the smaller model (torchslim.load reads it back)."
    )
    p.add_argument("--model", default=None, help=MODEL_HELP + " (fresh weights)")
    p.add_argument("--checkpoint", default=None, help="a `torchslim train` run folder or last.pt")
    _data_options(p, required=False)
    p.set_defaults(data=None)
    from torchslim.prune import PruneConfig
    from torchslim.quant import QuantConfig

    _add_config_options(p, PruneConfig, PRUNE_HELP)
    p.add_argument(
        "--input",
        type=_parse_shape,
        default=None,
        help="example input N,C,H,W (default: from the dataset, else 1,3,224,224)",
    )
    p.add_argument("--num-classes", type=int, default=None, help=NUM_CLASSES_HELP)
    p.add_argument(
        "--finetune-epochs", type=int, default=0, help="fine-tune this many epochs on --data"
    )
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    p.add_argument("--batch-size", type=int, default=128, help="fine-tuning batch size")
    p.add_argument("--out", required=True, help="file to write the pruned model to")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("quantize", help="int8 post-training quantization to an ONNX file")
    p.description = (
        "Quantize a zoo/torchvision model or a trained run (calibrating on --data), print the "
        "per-layer SQNR report, write QDQ int8 ONNX, check it in ONNX Runtime and compare "
        "test accuracy with the FP32 export."
    )
    p.add_argument("--model", default=None, help=MODEL_HELP + " (fresh weights)")
    p.add_argument("--checkpoint", default=None, help="a `torchslim train` run folder or last.pt")
    _data_options(p, required=False)
    p.set_defaults(data=None)
    p.add_argument("--calib", type=int, default=512, help="calibration images (training split)")
    p.add_argument("--observer", choices=list(_OBSERVERS), default="affine",
                   help="activation range: affine min/max, symmetric abs-max, or saturating "
                        "percentile / kl / mse")  # fmt: skip
    p.add_argument("--bits", type=int, default=8, help="weight and activation bits (2-8)")
    _add_config_options(p, QuantConfig, QUANT_HELP, skip=QUANT_FROM_STAGE)
    p.add_argument("--input", type=_parse_shape, default=None,
                   help="example input N,C,H,W (default: from --data)")  # fmt: skip
    p.add_argument("--num-classes", type=int, default=None, help=NUM_CLASSES_HELP)
    p.add_argument("--no-eval", action="store_true", help="skip the test-set comparison")
    p.add_argument("--out", required=True, help="the int8 ONNX file to write")
    p.set_defaults(func=cmd_quantize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchslim`` console script; returns the exit code.

    Example:
        >>> main(["analyze", "--model", "resnet8", "--input", "1,3,32,32"])  # doctest: +ELLIPSIS
        layer ...
        total: 142.39 K params (142,392), 12.56 MMACs (12,564,992), 0.55 MiB
        0
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "func", None) is cmd_prune:
        args.input_default = args.input is None
        args.input = args.input or (1, 3, 224, 224)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", force=True
    )
    try:
        if hasattr(args, "model_arg"):
            args.model_arg = [_parse_kv(text) for text in args.model_arg]
        return args.func(args)
    except TorchslimError as exc:
        print(f"torchslim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
