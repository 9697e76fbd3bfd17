from __future__ import annotations

import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from torchslim.cli import TRAIN_HELP, build_parser, main
from torchslim.train import TrainConfig
from torchslim.train.checkpoint import checksums

sys.path.insert(0, str(Path(__file__).parent / "train"))
from test_checkpoint import payload_file
from test_run_folder import hold_folder

TINY_TRAIN = ["--subset", "100", "--test-subset", "100", "--epochs", "1", "--batch-size", "50",
              "--no-progress"]  # fmt: skip


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHSLIM_DATA", str(tmp_path_factory.getbasetemp() / "data-cache"))


def test_every_train_config_field_has_help() -> None:
    assert set(TRAIN_HELP) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_prune_and_quantize_take_every_field_of_their_configs() -> None:
    from torchslim.cli import PRUNE_HELP, QUANT_FROM_STAGE, QUANT_HELP, _config_values
    from torchslim.prune import PruneConfig
    from torchslim.quant import QuantConfig

    assert set(PRUNE_HELP) == {f.name for f in dataclasses.fields(PruneConfig)}
    assert set(QUANT_HELP) | set(QUANT_FROM_STAGE) == {
        f.name for f in dataclasses.fields(QuantConfig)
    }
    argv = ["prune", "--model", "resnet8", "--out", "x.pt", "--ratios", "{layer1.*: 0.3}"]
    argv += ["--ignore", "fc", "--mode", "global", "--max-ratio", "0.7", "--prune-head-dims"]
    values = _config_values(build_parser().parse_args(argv), PruneConfig)
    assert values == {
        "mode": "global",
        "ratios": {"layer1.*": 0.3},
        "ignore": ("fc",),
        "max_ratio": 0.7,
        "prune_head_dims": True,
    }
    argv = ["quantize", "--model", "resnet8", "--out", "q.onnx", "--first-layer-bits", "8"]
    argv += ["--weight-mapping", "affine", "--no-fold-bn"]
    values = _config_values(build_parser().parse_args(argv), QuantConfig)
    assert values == {"first_layer_bits": 8, "weight_mapping": "affine", "fold_bn": False}


@pytest.mark.parametrize(
    "command", ["train", "eval", "analyze", "prune", "quantize", "distill", "search"]
)
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
    args += [
        "--test-subset",
        "100",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "done: 1 epochs, test top-1" in printed
    assert (out / "last.pt").exists() and (out / "metrics.csv").exists()
    assert main(["eval", "--checkpoint", str(out), "--test-subset", "100"]) == 0
    printed = capsys.readouterr().out
    assert "smallcnn on fashion-mnist (test): top-1" in printed and "(100 samples)" in printed


def test_train_then_distill_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    teacher, out = tmp_path / "teacher", tmp_path / "student"
    common = ["--subset", "100", "--test-subset", "100", "--epochs", "1", "--batch-size", "50"]
    common += ["--no-progress"]
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


@pytest.mark.parametrize("command", ["train", "distill", "prune", "quantize"])
def test_sub_commands_run_the_recipe_stage_functions(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLI and recipes cannot drift: each sub-command runs its recipe stage's own function on a
    one-stage recipe (the call is intercepted here, so nothing trains)."""
    from torchslim.pipeline import stages

    calls = []

    def record(ctx: Any, stage: Any, model: Any, folder: Path) -> None:
        calls.append((ctx, stage, folder))
        raise SystemExit(0)

    kind = stages.STAGE_TYPES[command]
    monkeypatch.setitem(stages.STAGE_TYPES, command, dataclasses.replace(kind, run=record))
    teacher = tmp_path / "teacher.pt"
    if command == "distill":  # a teacher run folder to load
        from torchslim.models import create
        from torchslim.train.checkpoint import save_verified

        meta = {"model": "smallcnn", "data": "fashion-mnist"}
        state = create("smallcnn", num_classes=10, in_channels=1).state_dict()
        save_verified({"model": state, "metadata": meta, "format": "torchslim.train/2"}, teacher)
    argv = {
        "train": ["train", "--model", "smallcnn", "--subset", "100", "--augment", "none",
                  "--epochs", "2", "--seed", "3"],
        "distill": ["distill", "--teacher", str(teacher), "--student", "mlp",
                    "--teacher-weight", "1.0", "--epochs", "2"],
        "prune": ["prune", "--model", "resnet8", "--input", "1,3,32,32", "--ratio", "0.25"],
        "quantize": ["quantize", "--model", "resnet8", "--data", "fashion-mnist",
                     "--calib", "64", "--bits", "8"],
    }[command]  # fmt: skip
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "out")])
    ((ctx, stage, folder),) = calls
    assert stage.type == command and ctx.recipe.stages == (stage,)
    if command == "train":
        assert stage.train.epochs == 2 and ctx.recipe.data.subset == 100
        assert ctx.recipe.data.seed == 3 and ctx.recipe.data.augment == ()
        assert folder == tmp_path / "out" and ctx.one_stage
        assert ctx.metadata(stage)["model"] == "smallcnn"
    if command == "distill":
        assert stage.teachers == (str(teacher),) and stage.config.train.epochs == 2
        assert ctx.teacher(str(teacher)) is ctx.models[str(teacher)]
    if command == "prune":
        assert stage.config.ratio == 0.25
    if command == "quantize":
        assert stage.calib == 64 and stage.config.weight_bits == 8


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
        (["demo", "--set", "stages.0.ratio=[1,"], "--set stages.0.ratio: not valid YAML"),
        (["train", "--model", "smallcnn", "--config", "/nonexistent.yaml"], "no such file"),
        (
            ["train", "--model", "mlp", "--model-arg", "hidden=[16,"],
            "--model-arg hidden: not valid",
        ),
        (["train", "--model", "mlp", "--model-arg", "hidden"], "expected KEY=VALUE"),
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
    assert main(["train", "--model", "smallcnn", *TINY_TRAIN, "--out", str(run)]) == 0
    out = tmp_path / "p.pt"
    argv = ["prune", "--checkpoint", str(run), "--target-macs", "0.5", "--out", str(out)]
    argv += ["--test-subset", "100"]
    assert main(argv) == 0
    assert "after" in capsys.readouterr().out and out.exists()


def test_quantize_command_writes_int8_onnx_and_compares_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import onnx

    run = tmp_path / "run"
    assert main(["train", "--model", "smallcnn", *TINY_TRAIN, "--out", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "q.onnx"
    argv = ["quantize", "--checkpoint", str(run), "--calib", "64", "--observer", "kl",
            "--per-channel", "--bits", "8", "--test-subset", "100", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "model output SQNR" in text and "int8 QDQ" in text
    assert "test top-1 in ONNX Runtime" in text and "int8 (" in text
    kinds = {t.data_type for t in onnx.load(str(out)).graph.initializer}
    assert onnx.TensorProto.INT8 in kinds


def test_bad_train_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("lr: [0.1\nepochs: 2\n")
    assert main(["train", "--model", "smallcnn", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{config}: line" in err and "not valid YAML" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--checkpoint", "{f}"],
        ["prune", "--checkpoint", "{f}", "--out", "{d}/p.pt"],
        ["quantize", "--checkpoint", "{f}", "--out", "{d}/q.onnx"],
        ["distill", "--teacher", "{f}", "--student", "mlp", "--out", "{d}/s"],
        ["train", "--model", "smallcnn", "--out", "{d}", "--resume", *TINY_TRAIN],
        ["compress", "{d}/recipe.yaml", "--out", "{d}/run"],
    ],
    ids=lambda a: a[0],
)
def test_a_pickled_payload_never_runs(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, marker = payload_file(tmp_path)
    recipe = f"model: {{checkpoint: {path}}}\nstages: [{{type: evaluate}}]\n"
    (tmp_path / "recipe.yaml").write_text(recipe)
    assert main([a.format(f=path, d=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "posix.system" in err and "arbitrary code" in err
    assert not marker.exists()


def test_eval_refuses_non_finite_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", "--model", "smallcnn", *TINY_TRAIN, "--out", str(run)]) == 0
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["model"]["fc.weight"][0, 0] = float("nan")
    ckpt["checksums"] = checksums(ckpt)
    torch.save(ckpt, run / "last.pt")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run)]) == 2
    assert "non-finite weights: fc.weight (1 of" in capsys.readouterr().err


def test_one_run_per_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train = ["train", "--model", "smallcnn", *TINY_TRAIN, "--out", str(run)]
    holder = hold_folder(run)
    try:
        assert main(train) == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert main(train) == 0
    first = (run / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(train) == 2  # a plain rerun would replace the finished run
    assert "--resume" in capsys.readouterr().err and (run / "last.pt").read_bytes() == first
    # resuming it with another model is refused, naming the difference
    other = ["train", "--model", "mlp", *TINY_TRAIN, "--out", str(run), "--resume"]
    assert main(other) == 2
    assert "model: 'smallcnn' -> 'mlp'" in capsys.readouterr().err
    assert main([*train, "--overwrite", "--seed", "3"]) == 0
    assert (run / "last.pt").read_bytes() != first


def test_search_runs_a_recipe_with_workers_and_needs_a_search_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("optuna")
    plain = tmp_path / "plain.yaml"
    plain.write_text("model: {name: resnet8}\nstages:\n  - {name: t, type: train}\n")
    assert main(["search", str(plain)]) == 2
    assert "no stage of type 'search'" in capsys.readouterr().err
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name: resnet8}\n"
        "data: {name: fashion-mnist, subset: 60, test_subset: 30}\n"
        "report: {batch_sizes: [1], repeats: 2, html: false}\n"
        "stages:\n"
        "  - {name: s, type: search, macs: 0.5, trials: 3, eval_images: 16, bn_images: 16}\n"
    )
    assert main(["-q", "search", str(recipe), "--workers", "2", "--out", str(tmp_path / "o")]) == 0
    assert "| search |" in capsys.readouterr().out


def test_hf_models_go_to_text_recipes_not_image_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["prune", "--model", f"hf:{tmp_path}", "--ratio", "0.5", "--out", "x.pt"]
    assert main(argv) == 2
    assert "compress a Hugging Face model with a text recipe" in capsys.readouterr().err
    args = build_parser().parse_args(["compress", "r.yaml", "--model", "hf:org/m", "--set", "a=1"])
    from torchslim.cli import _recipe_overrides

    assert _recipe_overrides(args) == ('model={"name": "hf:org/m"}', "a=1")
