"""Detection and segmentation on the generated Fashion-COCO set: train, prune to -50% MACs and
fine-tune, int8 in ONNX Runtime; accuracy, MACs, parameters, file bytes, batch-1 ORT latency.

Usage:
    python benchmarks/detection_fcoco.py --task seg --phase all [--epochs 16] [--images 600]
        [--val-images 150] [--size 128] [--out bench-out/fcoco]
        [--results benchmarks/results/detection_fcoco.jsonl]
    python benchmarks/detection_fcoco.py --task det --phase all ...

Phases (``--phase train|prune|int8|all``) save their models under ``--out/TASK/`` (``ts.save``)
and the next phase loads them, so each runs on its own; a killed training resumes from its
``last.pt`` when the same command runs again. Each phase appends its figures to ``--results``.

* ``seg``: torchvision's LR-ASPP MobileNetV3-Large (``weights=None``, 11 classes), trained from
  scratch on the class maps of ``ts.data.make_detection_set`` (``CocoSegmentationSet``), loss
  cross-entropy + 0.5 Dice; mIoU (macro, background included) by ``ts.train.evaluate``. The whole
  model (logits upsampled to the input) is one ONNX file; its int8 version is evaluated in ORT.
* ``det``: torchvision's SSDlite MobileNetV3-Large with its input transform fixed at ``--size``
  (not Faster R-CNN MobileNetV3-320-FPN: at 128 px its ROI heads cost 2.2 GMACs and a batch of 8
  took 6-28 s to train on one thread, against 0.4 s for SSDlite's 68 MMACs). COCO mAP@0.5:0.95
  and mAP@0.5 by ``ts.train.evaluate`` (torchmetrics, pycocotools). In ONNX Runtime the graph is
  the normalisation, the backbone and the SSD head (box regression and class logits per anchor);
  anchor generation, box decoding, score threshold and NMS run in PyTorch float on ORT's outputs
  (post-processing outside the graph), for the float and the int8 file alike. Latency is that of
  the ONNX part, batch 1.

MobileNetV3's BatchNorm momentum (0.01, 0.03 in SSDlite) is set to 0.1: trained from scratch for a
few epochs, the running statistics otherwise lag the weights. Pruning is
``ts.prune(model, example, {"target_macs": 0.5, "round_to": 8})`` (L1, uniform ratio searched
for half the MACs, channel counts kept at multiples of 8 for ORT's kernels); for the SSD it is
tried on the whole detector (example ``([image],)``), and where that fails or keeps over 0.6 of
the MACs, on the backbone + head (:class:`SSDGraph`), which hold all the SSD's parameters. (The
trained SSD: at 4cd4113 the tracer raised IndexError building its data-dependent-branch warning
- the shapes-only pass stops at ``aten._unique2`` in torchvision's batched NMS, the real pass
records no value read; at dee855d it prunes nothing, "target_macs 0.500 is out of reach".)
The fine-tune has its own epoch budget (``--ft-epochs``, default ``--epochs``). int8 is
``ts.quantize`` (defaults: per-channel symmetric weights, affine activations, percentile
calibration) on ``--calib`` training images, exported by ``ts.export_onnx`` as QDQ.
All training and timing run on one thread (``torch.set_num_threads(1)``, ORT intra-op 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import torchslim as ts
from torchslim.distill import fit_distillation
from torchslim.runtime import ort_session, round_robin_latency

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

TABLES = {"seg": "fcoco_segmentation", "det": "fcoco_detection"}
MODELS = {"seg": "LR-ASPP MobileNetV3-Large", "det": "SSDlite MobileNetV3-Large"}
CLAIMS = {
    "seg": "LR-ASPP MobileNetV3-Large on the generated Fashion-COCO class maps: −50% MACs + "
    "fine-tune and int8 in ONNX Runtime, mIoU and batch-1 latency (1 thread)",
    "det": "SSDlite MobileNetV3-Large on the generated Fashion-COCO boxes: −50% MACs + "
    "fine-tune and int8 in ONNX Runtime, COCO mAP and batch-1 latency (1 thread)",
}
ROW_FLOAT = "float (FP32)"
ROW_PRUNED0 = "pruned −50% MACs, before fine-tune"
ROW_PRUNED = "pruned −50% MACs + fine-tune"
ROW_INT8 = "int8 (ORT), of the float model"
ROW_PRUNED_INT8 = "int8 (ORT), of the pruned + fine-tuned model"
ROW_KD = "pruned −50% MACs + fine-tune distilled from the float model"
ROW_CONTROL = "float trained on for the fine-tune's epochs (equal-budget control)"
# The distillation of the fine-tune (phase kd): pixel-wise KD on a segmenter's logits; on the
# SSD, its head's class logits (KL) and box regression (weighted by the teacher's foreground).
KD_LOSSES = {
    "seg": [{"type": "kd", "options": {"temperature": 2.0, "alpha": 1.0}}],
    "det": [{"type": "det_head", "student": ["head.classification_head", "head.regression_head"]}],
}


# ----------------------------------------------------------------------------- models and data


def set_bn_momentum(model: nn.Module, momentum: float = 0.1) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
    return model


def build_model(task: str, size: int) -> nn.Module:
    from torchvision.models import detection, segmentation

    torch.manual_seed(0)
    if task == "seg":
        model = segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=11
        )
    else:
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        model = detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=11
        )
        # ssdlite320 fixes its input at 320 px; the generated images are --size px.
        model.transform = GeneralizedRCNNTransform(
            size, size, [0.5] * 3, [0.5] * 3, size_divisible=1, fixed_size=(size, size)
        )
    return set_bn_momentum(model)


def save_model(model: nn.Module, path: Path, task: str) -> None:
    """``ts.save``; the SSD's rebuild is named (its fixed-size input transform is a changed
    attribute that ``ts.save`` records)."""
    spec = None if task == "seg" else {"name": "ssdlite320_mobilenet_v3_large", "num_classes": 11}
    ts.save(model, path, spec=spec)


def datasets(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(train with flips, train without augmentation, val) for the task."""
    from torchvision.transforms import v2

    root = Path(args.out) / "data"
    train = ts.data.make_detection_set(root, "train", num_images=args.images, size=args.size,
                                       seed=args.seed)  # fmt: skip
    val = ts.data.make_detection_set(root, "val", num_images=args.val_images, size=args.size,
                                     seed=args.seed)  # fmt: skip
    flip = v2.RandomHorizontalFlip()
    if args.task == "seg":
        make: Callable[..., Any] = ts.data.CocoSegmentationSet
        return make(*train, flip), make(*train), make(*val)
    return (
        ts.data.CocoDetectionSet(*train, flip, masks=False),
        ts.data.CocoDetectionSet(*train, masks=False),
        ts.data.CocoDetectionSet(*val, masks=False),
    )


def example_inputs(task: str, size: int) -> Any:
    x = torch.rand(1, 3, size, size)
    return x if task == "seg" else ([x[0]],)


def train_config(args: argparse.Namespace, epochs: int) -> dict[str, Any]:
    return {
        "epochs": epochs,
        "batch_size": args.batch_size,
        "optimizer": "adamw",
        "lr": args.lr,
        "weight_decay": 1e-4,
        "warmup_epochs": 1 if epochs > 2 else 0,
        "seed": args.seed,
        "eval_every": args.eval_every,
        "device": "cpu",
        "progress": False,
    }


def fit(
    model: nn.Module,
    args: argparse.Namespace,
    epochs: int,
    folder: Path,
    teacher: nn.Module | None = None,
) -> Any:
    """Train ``model`` ``epochs`` epochs into ``folder`` (resumed if it holds a run); with a
    ``teacher``, distilled from it (:data:`KD_LOSSES`, the task loss at full weight)."""
    train, _, val = datasets(args)
    loss_fn = ts.train.segmentation_loss(dice=0.5) if args.task == "seg" else None
    resume = (folder / "last.pt").exists() or (folder / "distill" / "last.pt").exists()
    if teacher is not None:
        cfg = {"losses": KD_LOSSES[args.task], "hard_label_weight": 1.0,
               "train": train_config(args, epochs)}  # fmt: skip
        done = fit_distillation(model, teacher, train, cfg, eval_data=val, out_dir=folder,
                                resume=resume, loss_fn=loss_fn)  # fmt: skip
        result = done.phases["distill"]
    else:
        trainer = ts.train.Trainer(model, train_config(args, epochs), train, val,
                                   loss_fn=loss_fn, out_dir=folder)  # fmt: skip
        result = trainer.fit(resume=resume)
    for h in result.history:
        print({k: round(v, 4) for k, v in h.items()}, flush=True)
    return result


def evaluate(model: nn.Module, args: argparse.Namespace) -> dict[str, float]:
    """The task's score in percent: {"miou"} or {"map", "map_50"}."""
    _, _, val = datasets(args)
    res = ts.train.evaluate(model, val, batch_size=16, device="cpu")
    if args.task == "seg":
        return {"miou": 100 * res.miou, "pixel_acc": 100 * res.pixel_accuracy}
    return {"map": 100 * res.map, "map_50": 100 * res.map_50}


# ----------------------------------------------------------------------------- ONNX parts


class SSDGraph(nn.Module):
    """The part of an SSD that goes to ONNX: normalisation, backbone and head, on a batch of
    ``size`` x ``size`` images in [0, 1]; returns (box regression, class logits) per anchor."""

    def __init__(self, ssd: nn.Module) -> None:
        super().__init__()
        self.backbone = ssd.backbone
        self.head = ssd.head
        self.register_buffer("mean", torch.tensor(ssd.transform.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(ssd.transform.image_std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = list(self.backbone((x - self.mean) / self.std).values())
        out = self.head(features)
        return out["bbox_regression"], out["cls_logits"]


class OrtSegmenter(nn.Module):
    """An ONNX segmentation file run by ONNX Runtime, called like torchvision's model."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.session = ort_session(path, threads=1)
        self.name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": torch.from_numpy(self.session.run(None, {self.name: x.numpy()})[0])}


class OrtDetector(nn.Module):
    """An SSD whose backbone + head run in ONNX Runtime (:class:`SSDGraph` exported) and whose
    anchors, box decoding and NMS run in PyTorch float: post-processing outside the graph."""

    def __init__(self, ssd: nn.Module, path: Path, size: int) -> None:
        super().__init__()
        from torchvision.models.detection.image_list import ImageList

        self.ssd = ssd.eval()
        self.session = ort_session(path, threads=1)
        self.name = self.session.get_inputs()[0].name
        self.size = size
        with torch.no_grad():  # feature-map shapes for the anchor generator
            x = torch.zeros(1, 3, size, size)
            feats = list(ssd.backbone(x).values())
        self.shapes = [f.shape for f in feats]
        self.image_list = ImageList

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        batch = torch.stack(images)
        box, cls = self.session.run(None, {self.name: batch.numpy()})
        sizes = [(self.size, self.size)] * len(images)
        image_list = self.image_list(batch, sizes)
        feats = [torch.empty(len(images), *s[1:]) for s in self.shapes]
        anchors = self.ssd.anchor_generator(image_list, feats)
        heads = {"bbox_regression": torch.from_numpy(box), "cls_logits": torch.from_numpy(cls)}
        return self.ssd.postprocess_detections(heads, anchors, sizes)


def calibration(args: argparse.Namespace) -> list[torch.Tensor]:
    """``--calib`` training images (no augmentation), in batches of 8 image tensors."""
    _, plain, _ = datasets(args)
    g = torch.Generator().manual_seed(args.seed)
    index = torch.randperm(len(plain), generator=g)[: args.calib].tolist()
    images = [plain[i][0] for i in index]
    return [torch.stack(images[i : i + 8]) for i in range(0, len(images), 8)]


def onnx_part(model: nn.Module, task: str) -> nn.Module:
    return model.eval() if task == "seg" else SSDGraph(model).eval()


def evaluate_ort(path: Path, model: nn.Module, args: argparse.Namespace) -> dict[str, float]:
    ort_model = OrtSegmenter(path) if args.task == "seg" else OrtDetector(model, path, args.size)
    return evaluate(ort_model, args)


# ----------------------------------------------------------------------------- the phases


def folder(args: argparse.Namespace) -> Path:
    path = Path(args.out) / args.task
    path.mkdir(parents=True, exist_ok=True)
    return path


def results(args: argparse.Namespace) -> Results:
    settings = {
        "train images": args.images,
        "val images": args.val_images,
        "size px": args.size,
        "epochs": args.epochs,
        "fine-tune epochs": args.ft_epochs,
        "batch": args.batch_size,
        "optimizer": f"AdamW lr {args.lr:g}, wd 1e-4, cosine, 1 warmup epoch",
        "calibration images": args.calib,
        "pruned channels multiple of": args.round_to,
        "threads": 1,
        "seed": args.seed,
    }
    return Results(args.results, table=TABLES[args.task], area="detection",
                   claim=CLAIMS[args.task], row_header=["model"], model=MODELS[args.task],
                   settings=settings, threads=1)  # fmt: skip


def score_rows(
    res: Results,
    task: str,
    row: str,
    scores: dict[str, float],
    where: str,
    base: dict[str, float] | None = None,
    target: float | None = None,
) -> None:
    """The task's score(s) of one row, and its change against ``base``."""
    names = {"miou": "mIoU", "map": "mAP@0.5:0.95", "map_50": "mAP@0.5"}
    main = "miou" if task == "seg" else "map"
    for key, label in names.items():
        if key not in scores:
            continue
        res.add(row, f"{label} ({where})", round(scores[key], 3), "%", 2)
        if base is not None and key in base:
            extra: dict[str, Any] = {}
            if key == main and target is not None:
                extra["target"] = {"text": f"≥ −{target:g} points", "op": ">=",
                                   "value": -target}  # fmt: skip
            res.add(row, f"{label} change vs float ({where})",
                    round(scores[key] - base[key], 3), "pt", 2, **extra)  # fmt: skip


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1))


def phase_train(args: argparse.Namespace) -> None:
    out = folder(args)
    if (out / "float.pt").exists():
        print(f"{out / 'float.pt'} exists: training skipped", flush=True)
        return
    start = time.perf_counter()
    model = build_model(args.task, args.size)
    result = fit(model, args, args.epochs, out / "train")
    wall = time.perf_counter() - start
    model.eval()
    scores = evaluate(model, args)
    stats = ts.analyze(model, example_inputs(args.task, args.size))
    save_model(model, out / "float.pt", args.task)
    info = {"scores": scores, "macs": stats.macs, "params": stats.params, "train_s": wall,
            "train_wall_s": result.wall_time_s}  # fmt: skip
    save_json(out / "float.json", info)
    print(f"float: {scores}, {stats.macs / 1e6:.1f} MMACs, {stats.params:,} params, "
          f"{wall:.0f} s", flush=True)  # fmt: skip
    res = results(args)
    score_rows(res, args.task, ROW_FLOAT, scores, "PyTorch")
    res.add(ROW_FLOAT, "MACs", stats.macs, "MACs", 0)
    res.add(ROW_FLOAT, "params", stats.params, "params", 0)
    res.add(ROW_FLOAT, "training wall time", round(wall, 1), "s", 0)


def phase_prune(args: argparse.Namespace) -> None:
    out = folder(args)
    base = json.loads((out / "float.json").read_text())
    if not (out / "pruned0.pt").exists():
        model = ts.load(out / "float.pt").eval()
        start = time.perf_counter()
        config = {"target_macs": 0.5, "round_to": args.round_to}
        how = "ts.prune of the whole model"
        example = example_inputs(args.task, args.size)
        try:
            ts.prune(model, example, config)
            ratio = ts.analyze(model, example).macs / base["macs"]
            failed = None if ratio < 0.6 else f"it kept {ratio:.3f} of the MACs"
        except Exception as exc:
            if args.task == "seg":
                raise
            failed = f"{type(exc).__name__}: {exc}"
        if failed is not None and args.task == "det":
            # The SSD's parameters are all in its backbone and head (SSDGraph); anchors, box
            # decoding and NMS have none, so pruning SSDGraph prunes the same layers.
            how = (f"ts.prune of the whole SSD failed ({failed}); pruned its backbone + head "
                   "(SSDGraph, the same layers) instead")  # fmt: skip
            print(how, flush=True)
            model = ts.load(out / "float.pt").eval()
            ts.prune(SSDGraph(model).eval(), torch.rand(1, 3, args.size, args.size), config)
        prune_s = time.perf_counter() - start
        scores0 = evaluate(model, args)
        save_model(model, out / "pruned0.pt", args.task)
        save_json(out / "pruned0.json", {"scores": scores0, "prune_s": prune_s, "how": how})
        res = results(args)
        score_rows(res, args.task, ROW_PRUNED0, scores0, "PyTorch", base["scores"])
        res.add(ROW_PRUNED0, "pruning wall time", round(prune_s, 1), "s", 1, note=how)
        print(f"pruned, before fine-tune: {scores0} ({prune_s:.1f} s)", flush=True)
    if (out / "pruned.pt").exists():
        print(f"{out / 'pruned.pt'} exists: fine-tune skipped", flush=True)
        return
    model, scores, wall = train_on(out / "pruned0.pt", args, out / "finetune")
    stats = ts.analyze(model, example_inputs(args.task, args.size))
    save_model(model, out / "pruned.pt", args.task)
    save_json(out / "pruned.json", {"scores": scores, "macs": stats.macs,
                                    "params": stats.params, "finetune_s": wall})  # fmt: skip
    print(f"pruned + fine-tune: {scores}, {stats.macs / 1e6:.1f} MMACs "
          f"({stats.macs / base['macs']:.3f}), {stats.params:,} params, {wall:.0f} s",
          flush=True)  # fmt: skip
    res = results(args)
    score_rows(res, args.task, ROW_PRUNED, scores, "PyTorch", base["scores"], 2.0)
    res.add(ROW_PRUNED, "MACs", stats.macs, "MACs", 0)
    res.add(ROW_PRUNED, "MACs ratio", round(stats.macs / base["macs"], 4), "ratio", 3)
    res.add(ROW_PRUNED, "params", stats.params, "params", 0)
    res.add(ROW_PRUNED, "params ratio", round(stats.params / base["params"], 4), "ratio", 3)
    res.add(ROW_PRUNED, "fine-tune wall time", round(wall, 1), "s", 0)


def train_on(
    start_from: Path, args: argparse.Namespace, run: Path, teacher: nn.Module | None = None
) -> tuple[nn.Module, Any, float]:
    """The saved model trained ``--ft-epochs`` more epochs into ``run`` (distilled from
    ``teacher`` if given): (model in eval mode, its scores, training wall time)."""
    model = set_bn_momentum(ts.load(start_from))
    start = time.perf_counter()
    fit(model, args, args.ft_epochs, run, teacher)
    wall = time.perf_counter() - start
    model.eval()
    return model, evaluate(model, args), wall


def phase_control(args: argparse.Namespace) -> None:
    """The float model trained on with the fine-tune's budget: the pruned model has seen
    ``--epochs`` + ``--ft-epochs`` epochs in all; this is the unpruned model of equal training."""
    out = folder(args)
    if (out / "control.json").exists():  # trained already: its figures are recorded again
        done = json.loads((out / "control.json").read_text())
        scores, wall = done["scores"], done["train_s"]
    else:
        model, scores, wall = train_on(out / "float.pt", args, out / "control")
        save_model(model, out / "control.pt", args.task)
        save_json(out / "control.json", {"scores": scores, "train_s": wall})
    print(f"control: {scores}, {wall:.0f} s", flush=True)
    res = results(args)
    score_rows(res, args.task, ROW_CONTROL, scores, "PyTorch")
    res.add(ROW_CONTROL, "training wall time", round(wall, 1), "s", 0)
    for name in ("pruned", "pruned-kd"):
        compare_with_control(res, args, name)


def compare_with_control(res: Results, args: argparse.Namespace, name: str) -> None:
    """The change of the model saved as ``name`` (pruned, pruned-kd) against the equal-budget
    control, when both have run."""
    out, task = folder(args), args.task
    if not ((out / f"{name}.json").exists() and (out / "control.json").exists()):
        return
    scores = json.loads((out / f"{name}.json").read_text())["scores"]
    control = json.loads((out / "control.json").read_text())["scores"]
    main, label = ("miou", "mIoU") if task == "seg" else ("map", "mAP@0.5:0.95")
    target = {"text": "≥ −2 points", "op": ">=", "value": -2.0}
    row = ROW_PRUNED if name == "pruned" else ROW_KD
    res.add(row, f"{label} change vs equal-budget control (PyTorch)",
            round(scores[main] - control[main], 3), "pt", 2, target=target)  # fmt: skip


def phase_kd(args: argparse.Namespace) -> None:
    """The pruned model (before fine-tune) fine-tuned ``--ft-epochs`` epochs distilled from
    the float model it was pruned from (:data:`KD_LOSSES`): the same budget as the plain
    fine-tune, plus the teacher's forward passes."""
    out = folder(args)
    base = json.loads((out / "float.json").read_text())
    if (out / "pruned-kd.json").exists():
        done = json.loads((out / "pruned-kd.json").read_text())
        scores, wall = done["scores"], done["finetune_s"]
    else:
        teacher = ts.load(out / "float.pt").eval()
        model, scores, wall = train_on(out / "pruned0.pt", args, out / "finetune-kd", teacher)
        save_model(model, out / "pruned-kd.pt", args.task)
        save_json(out / "pruned-kd.json", {"scores": scores, "finetune_s": wall})
    print(f"pruned + distilled fine-tune: {scores}, {wall:.0f} s", flush=True)
    res = results(args)
    score_rows(res, args.task, ROW_KD, scores, "PyTorch", base["scores"])
    res.add(ROW_KD, "fine-tune wall time", round(wall, 1), "s", 0)
    compare_with_control(res, args, "pruned-kd")


def phase_int8(args: argparse.Namespace) -> None:
    out = folder(args)
    res = results(args)
    calib = calibration(args)
    x1 = torch.rand(1, 3, args.size, args.size)
    files: dict[str, Path] = {}
    scores: dict[str, dict[str, float]] = {}
    models = {ROW_FLOAT: ts.load(out / "float.pt").eval()}
    if (out / "pruned.pt").exists():
        models[ROW_PRUNED] = ts.load(out / "pruned.pt").eval()
    int8_rows = {ROW_FLOAT: ROW_INT8, ROW_PRUNED: ROW_PRUNED_INT8}
    for row, model in models.items():
        part = onnx_part(model, args.task)
        name = "float" if row == ROW_FLOAT else "pruned"
        rep = ts.export_onnx(part, x1, out / f"{name}.onnx")
        files[row] = rep.path
        scores[row] = evaluate_ort(rep.path, model, args)
        print(f"{row}: ORT {scores[row]}, {rep}", flush=True)
        start = time.perf_counter()
        try:
            q = ts.quantize(part, calib, {}, progress=False)
            qrep = ts.export_onnx(q, x1, out / f"{name}-int8.onnx")
        except Exception as exc:  # recorded, not hidden: the figure is the error
            msg = f"{type(exc).__name__}: {exc}"
            print(f"{int8_rows[row]}: FAILED {msg}", flush=True)
            res.add(int8_rows[row], "error", msg[:500], "text")
            continue
        quant_s = time.perf_counter() - start
        files[int8_rows[row]] = qrep.path
        scores[int8_rows[row]] = evaluate_ort(qrep.path, model, args)
        print(f"{int8_rows[row]}: ORT {scores[int8_rows[row]]}, {qrep} ({quant_s:.0f} s)",
              flush=True)  # fmt: skip
        res.add(int8_rows[row], "quantize + export wall time", round(quant_s, 1), "s", 1)
    base = scores[ROW_FLOAT]
    for row, s in scores.items():
        target = {ROW_PRUNED: 2.0, ROW_INT8: 2.0 if args.task == "seg" else 1.0,
                  ROW_PRUNED_INT8: 2.0}.get(row)  # fmt: skip
        score_rows(res, args.task, row, s, "ORT", None if row == ROW_FLOAT else base, target)
        res.add(row, "ONNX file bytes", files[row].stat().st_size, "bytes", 0)
    main = "miou" if args.task == "seg" else "map"
    label = "mIoU" if args.task == "seg" else "mAP@0.5:0.95"
    for row, int8_row in int8_rows.items():  # what int8 alone costs: against its own float file
        if row in scores and int8_row in scores:
            res.add(int8_row, f"{label} change vs its float model (ORT)",
                    round(scores[int8_row][main] - scores[row][main], 3), "pt", 2)  # fmt: skip
    ms = round_robin_latency({k: str(v) for k, v in files.items()}, [x1], rounds=5,
                             repeats=20, threads=1, min_seconds=1.0)  # fmt: skip
    what = "whole model" if args.task == "seg" else "backbone + head, post-processing excluded"
    for row in files:
        res.add(row, "ORT latency, batch 1", round(ms[row][0], 3), "ms", 2, note=what)
        res.add(row, "latency ratio vs float ORT", round(ms[row][0] / ms[ROW_FLOAT][0], 4),
                "ratio", 3)  # fmt: skip
        print(f"{row}: {ms[row][0]:.2f} ms ({ms[row][0] / ms[ROW_FLOAT][0]:.3f} of float)")


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--task", choices=["seg", "det"], required=True)
    phases = ["train", "prune", "int8", "control", "kd", "all"]
    help_ = "all: train, prune, int8 (control and kd run alone)"
    parser.add_argument("--phase", choices=phases, default="all", help=help_)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--ft-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument("--images", type=int, default=600, help="generated training images")
    parser.add_argument("--val-images", type=int, default=150)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--round-to", type=int, default=8, help="pruned channel multiple")
    parser.add_argument("--calib", type=int, default=128, help="calibration images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench-out/fcoco")
    add_results_option(parser, "detection_fcoco")
    args = parser.parse_args()
    args.ft_epochs = args.ft_epochs if args.ft_epochs is not None else args.epochs
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    phases = ["train", "prune", "int8"] if args.phase == "all" else [args.phase]
    for phase in phases:
        start = time.perf_counter()
        run = {"train": phase_train, "prune": phase_prune, "int8": phase_int8,
               "control": phase_control, "kd": phase_kd}[phase]  # fmt: skip
        run(args)
        print(f"phase {phase}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
