from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from torchslim.cli import TRAIN_HELP, build_parser, main
from torchslim.train import TrainConfig


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHSLIM_DATA", str(tmp_path_factory.getbasetemp() / "data-cache"))


def test_every_train_config_field_has_help() -> None:
    assert set(TRAIN_HELP) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("command", ["train", "eval", "analyze", "prune", "quantize", "distill"])
def test_help_explains_every_option(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    sub = next(
        a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"
    ).choices[command]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings} has no help"
        for flag in action.option_strings:
            assert flag in text


def test_train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", "smallcnn", "--data", "fashion-mnist", "--subset", "200"]
    args += ["--epochs", "1", "--batch-size", "50", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "done: 1 epochs, test top-1" in printed
    assert (out / "last.pt").exists() and (out / "metrics.csv").exists()
    assert main(["eval", "--checkpoint", str(out)]) == 0
    assert "smallcnn on fashion-mnist (test): top-1" in capsys.readouterr().out


def test_train_then_distill_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    teacher, out = tmp_path / "teacher", tmp_path / "student"
    common = ["--subset", "100", "--epochs", "1", "--batch-size", "50", "--no-progress"]
    assert main(["train", "--model", "smallcnn", *common, "--out", str(teacher)]) == 0
    args = ["distill", "--teacher", str(teacher), "--student", "mlp", "--model-arg", "hidden=[16]"]
    args += ["--loss", "kd:T=4,alpha=0.8", "--loss", "sp:student=net.2,teacher=features"]
    args += ["--cache-teacher", "--augment", "none", "--finetune-epochs", "1", *common]
    args += ["--out", str(out)]
    assert main(args) == 0
    assert "done: student mlp test top-1" in capsys.readouterr().out
    ckpt = torch.load(out / "distill" / "last.pt", weights_only=False)
    assert {"kd", "sp"} <= set(ckpt["history"][-1])
    assert main(["eval", "--checkpoint", str(out / "finetune")]) == 0
    assert "mlp on fashion-mnist (test): top-1" in capsys.readouterr().out


def test_analyze_prints_table_and_totals(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    js = tmp_path / "s.json"
    assert (
        main(
            [
                "analyze",
                "--model",
                "resnet20",
                "--input",
                "1,1,28,28",
                "--num-classes",
                "10",
                "--bits",
                "8",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "conv1" in text.lower() or "layer" in text.lower()
    assert "weights at 8 bits" in text and js.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "resnet2"], "did you mean"),
        (["train", "--model", "smallcnn", "--schedule", "cosin"], "did you mean 'cosine'"),
        (["train", "--model", "smallcnn", "--data", "nosuchdata"], "nosuchdata"),
        (["eval", "--checkpoint", "/nonexistent/run"], "no checkpoint at"),
        (["prune", "--model", "resnet8", "--importance", "l7", "--out", "x.pt"], "importance"),
        (["prune", "--out", "x.pt"], "--model"),
        (["distill", "--teacher", "/nonexistent/run", "--student", "mlp"], "no checkpoint at"),
        (["quantize", "--model", "resnet8", "--out", "x.onnx"], "--input"),
        (["quantize", "--model", "resnet8", "--input", "1,1,8,8", "--out", "x.onnx"], "--data"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_prune_command_writes_a_loadable_smaller_model(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    import torchslim as ts

    out = tmp_path / "pruned.pt"
    argv = ["prune", "--model", "resnet8", "--input", "1,1,28,28", "--num-classes", "10"]
    assert main([*argv, "--ratio", "0.5", "--importance", "fpgm", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "total: params" in text and "wrote" in text
    model = ts.load(out)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    full = ts.models.create("resnet8", num_classes=10, in_channels=1)
    assert sum(p.numel() for p in model.parameters()) < 0.5 * sum(
        p.numel() for p in full.parameters()
    )


def test_prune_command_target_macs_from_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    args = ["train", "--model", "smallcnn", "--subset", "100", "--epochs", "1", "--batch-size"]
    assert main([*args, "50", "--no-progress", "--out", str(run)]) == 0
    out = tmp_path / "p.pt"
    argv = ["prune", "--checkpoint", str(run), "--target-macs", "0.5", "--out", str(out)]
    assert main(argv) == 0
    assert "after" in capsys.readouterr().out and out.exists()


def test_quantize_command_writes_int8_onnx_and_compares_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import onnx

    run = tmp_path / "run"
    args = ["train", "--model", "smallcnn", "--subset", "200", "--epochs", "1", "--batch-size"]
    assert main([*args, "50", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "q.onnx"
    argv = ["quantize", "--checkpoint", str(run), "--calib", "64", "--observer", "kl",
            "--per-channel", "--bits", "8", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "model output SQNR" in text and "int8 QDQ" in text
    assert "test top-1 in ONNX Runtime" in text and "int8 (" in text
    kinds = {t.data_type for t in onnx.load(str(out)).graph.initializer}
    assert onnx.TensorProto.INT8 in kinds
