"""A text recipe on a tiny randomly initialised BERT saved as a Hugging Face folder: ``hf:PATH``
is pruned (heads and FFN), distilled on unlabelled sentences, int8, exported, and every row
reports its embeddings' fidelity to the starting model in PyTorch and in ONNX Runtime."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from torchslim.cli import main
from torchslim.data import text_corpus
from torchslim.errors import ConfigError
from torchslim.models import create
from torchslim.pipeline import compress, load_model_file, parse_recipe
from torchslim.pipeline.stages import hf_model
from torchslim.pipeline.text import split_sentences

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

SEQ = 16


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32, 4 heads, FFN 64) and a word-level tokenizer of corpus words."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w for s in text_corpus(limit=300) for w in re.findall(r"[a-z]+", s.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words[:400]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=SEQ)  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def _recipe(model: str) -> dict:
    layers = ["encoder.layer.0", "encoder.layer.1"]
    qkv = [f"encoder.layer.1.attention.self.{p}" for p in ("query", "key", "value")]
    train = {"epochs": 1, "batch_size": 8, "optimizer": "adamw", "lr": 1e-3,
             "max_steps_per_epoch": 3, "progress": False}  # fmt: skip
    return {
        "model": {"name": model},
        "data": {"name": "text:python-docs", "seq": SEQ, "subset": 64, "test_subset": 24},
        "baseline": "float",
        "report": {"batch_sizes": [1, 4], "repeats": 2, "html": False},
        "stages": [
            {"name": "float", "type": "evaluate"},
            {"name": "pruned", "type": "prune", "ratio": 0.5, "importance": "taylor",
             "taylor_batches": 1, "round_to": 1},
            {"name": "distilled", "type": "distill", "teacher": "float", "train": train,
             "losses": [{"type": "hidden", "student": layers},
                        {"type": "attn_relation", "student": qkv,
                         "options": {"relation_heads": 2}},
                        {"type": "cosine"}]},
            {"name": "int8", "type": "quantize", "dynamic": True, "smooth": 0.75, "calib": 16},
            {"name": "export", "type": "export"},
        ],
    }  # fmt: skip


@pytest.fixture
def quick_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latency timed for its 2 repeats only (not at least half a second per figure)."""
    from torchslim.pipeline import runner

    monkeypatch.setattr(runner, "_MIN_TIMED_S", 0.0)


def test_an_hf_text_recipe_prunes_distills_quantizes_and_reports_fidelity(
    tiny_bert: Path, tmp_path: Path, quick_latency: None
) -> None:
    out = tmp_path / "run"
    result = compress(parse_recipe(_recipe(f"hf:{tiny_bert}")), out, progress=False)
    report = result.report
    rows = {r.stage: r for r in report.rows}
    assert list(rows) == ["float", "pruned", "distilled", "int8"] and report.metric == "cosine"
    base, pruned, distilled, q = rows.values()
    # the starting model against itself; its ONNX file in ONNX Runtime all but identical
    assert base.accuracy == pytest.approx(1.0, abs=1e-5) and base.ort_accuracy > 0.9999
    assert base.fidelity["top10_overlap"] == 1.0
    heads = [layer.attention.self.num_attention_heads for layer in
             result.models["pruned"].encoder.layer]  # fmt: skip
    ffn = [layer.intermediate.dense.out_features for layer in result.models["pruned"].encoder.layer]
    assert heads == [2, 2] and ffn == [32, 32] and pruned.params < base.params
    for row in (pruned, distilled, q):
        f = row.fidelity
        assert -1 <= f["cosine_min"] <= f["cosine_mean"] <= 1
        assert f["cosine_mean"] == pytest.approx(row.accuracy, abs=1e-6)
        assert f["ort_cosine_mean"] == pytest.approx(row.ort_accuracy, abs=1e-6)
        assert 0 <= f["ort_top10_overlap"] <= 1
        assert set(row.latency_ms) == {1, 4}
    # distillation moved the pruned weights; the int8 file is smaller and ORT agrees with it
    assert distilled.accuracy != pruned.accuracy
    assert q.int8 and q.onnx_bytes < distilled.onnx_bytes
    assert abs(q.ort_accuracy - q.accuracy) < 0.02
    assert (out / "int8.onnx").stat().st_size == q.onnx_bytes
    table = report.table()
    assert "cosine ORT" in table and "top-10 ORT" in table and "| 1.0000 |" in table
    assert "cosine: no labels" in (out / "report.md").read_text()
    saved = json.loads((out / "report.json").read_text())
    assert saved["metric"] == "cosine" and saved["rows"][2]["fidelity"] == distilled.fidelity
    # a pruned stage is a save_pretrained folder with its tokenizer: hf: reads it back
    folder = out / "stages" / "02-distilled" / "hf"
    assert (folder / "tokenizer.json").exists() or (folder / "vocab.txt").exists()
    back = load_model_file(folder)
    x = {"input_ids": torch.randint(5, 100, (2, SEQ))}
    expected = result.models["distilled"].eval()(**x).last_hidden_state
    torch.testing.assert_close(back(**x).last_hidden_state, expected)
    # ... and so does hf:FOLDER (heads pruned: torchslim's from_pretrained, not AutoModel's)
    with pytest.raises(ConfigError, match=r"torchslim\.pretrained\.from_pretrained"):
        create(f"hf:{folder}")
    torch.testing.assert_close(hf_model(f"hf:{folder}")(**x).last_hidden_state, expected)
    assert main(["analyze", "--model", f"hf:{folder}", "--input", f"2,{SEQ}"]) == 0
    # --resume recomputes nothing (the int8 row from the distilled folder, no training)
    again = compress(parse_recipe(_recipe(f"hf:{tiny_bert}")), out, resume=True, progress=False)
    assert [r.accuracy for r in again.report.rows] == [r.accuracy for r in report.rows]


def test_the_cli_model_option_overrides_the_recipe(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], quick_latency: None
) -> None:
    raw = _recipe("hf:sentence-transformers/all-MiniLM-L6-v2")  # not reachable offline
    raw["stages"] = [raw["stages"][0], {"name": "int8", "type": "quantize", "dynamic": True}]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    argv = ["-q", "compress", str(path), "--model", f"hf:{tiny_bert}", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| float (baseline) | evaluate | 1.0000 |" in printed and "int8" in printed
    assert yaml.safe_load((out / "recipe.yaml").read_text())["model"]["name"] == f"hf:{tiny_bert}"
    # analyze takes hf: too, its example N sentences of SEQ tokens
    assert main(["analyze", "--model", f"hf:{tiny_bert}", "--input", f"2,{SEQ}"]) == 0
    assert "total:" in capsys.readouterr().out


def test_a_missing_hf_model_and_text_misuse_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match=r"model\.name: hf:.*no-such-model: no folder"):
        parse_recipe(_recipe(f"hf:{missing}"))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe("hf:org/model")))
    argv = ["compress", str(path), "--model", f"hf:{missing}", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "no folder" in capsys.readouterr().err

    with pytest.raises(ConfigError, match=r"no folder .*no-such-model.*save_pretrained"):
        create(f"hf:{missing}")
    # text has no labels: no train stage, no fine-tune; hf: models take text data
    with pytest.raises(ConfigError, match=r"stages\.1\.type: a train stage does not take text"):
        parse_recipe({**_recipe("hf:org/m"), "stages": [{"type": "evaluate"}, {"type": "train"}]})
    with pytest.raises(ConfigError, match=r"model\.name: hf:org/m is a Hugging Face model"):
        parse_recipe({"model": {"name": "hf:org/m"}, "stages": [{"type": "evaluate"}]})


def test_training_sentences_are_never_evaluation_sentences(tmp_path: Path) -> None:
    from torchslim.pipeline.spec import DataSpec

    train, evaluation = split_sentences(DataSpec(name="text:python-docs"))
    assert evaluation == text_corpus()[800:] and train == text_corpus()[:800]
    extra = tmp_path / "train.txt"
    extra.write_text("\n".join(["A new sentence.", text_corpus()[5], "", "Another one."]))
    train, evaluation = split_sentences(DataSpec(name="text:python-docs", train_text=str(extra)))
    assert train == ["A new sentence.", "Another one."] and len(evaluation) == 1000
    assert DataSpec(name="text:python-docs").task.value == "unlabelled"
    with pytest.raises(ConfigError, match="train_text: goes with text data"):
        DataSpec(train_text=str(extra))


def test_a_prune_stage_reconstructs_the_layers_that_lost_inputs(
    tiny_bert: Path, tmp_path: Path, quick_latency: None
) -> None:
    raw = _recipe(f"hf:{tiny_bert}")
    pruned = {**raw["stages"][1], "importance": "l1"}
    refit = {**pruned, "name": "refit", "input": "float", "reconstruct": 32}
    raw["stages"] = [raw["stages"][0], pruned, refit]
    raw["report"]["latency"] = False
    rows = {r.stage: r for r in compress(parse_recipe(raw), tmp_path / "run",
                                         progress=False).report.rows}  # fmt: skip
    refit = rows["refit"].reconstruct
    # each layer's attention output and FFN output: fit on 32 training sentences
    assert sorted(refit) == [f"encoder.layer.{i}.{n}.dense" for i in (0, 1)
                             for n in ("attention.output", "output")]  # fmt: skip
    assert all(after < before for before, after in refit.values())
    assert rows["pruned"].reconstruct == {}
    assert rows["refit"].accuracy > rows["pruned"].accuracy  # closer to the starting model
    with pytest.raises(ConfigError, match="reconstruct: expected an integer"):
        parse_recipe({**raw, "stages": [{**pruned, "reconstruct": "all"}]})
    with pytest.raises(ConfigError, match="reconstruct: a number of training samples"):
        parse_recipe({**raw, "stages": [{**pruned, "reconstruct": -1}]})
