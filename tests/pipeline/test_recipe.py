from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from torchslim.cli import main
from torchslim.errors import ConfigError
from torchslim.pipeline import apply_overrides, load_recipe, parse_recipe
from torchslim.pipeline.demo import demo_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml")) + sorted((ROOT / "benchmarks").glob("*.yaml"))


def _raw() -> dict:
    return {
        "model": {"name": "smallcnn"},
        "stages": [
            {"type": "train", "name": "base", "train": {"epochs": 1}},
            {"type": "prune", "name": "pruned", "ratio": 0.5, "finetune": {"epochs": 1}},
            {"type": "quantize", "weight_bits": 8},
            {"type": "export"},
        ],
    }


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_parses(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ImageFolder recipes name a data path that the user supplies; stand one in
    raw = yaml.safe_load(path.read_text())
    if raw["data"]["name"].startswith("imagefolder:"):
        monkeypatch.chdir(path.parent)
        raw["data"]["name"] = "imagefolder:."
    recipe = parse_recipe(raw)
    assert recipe.stages and recipe.baseline_name is not None
    # the resolved form (what runs write to OUT/recipe.yaml) reads back to the same recipe
    assert parse_recipe(yaml.safe_load(recipe.to_yaml())) == recipe


def test_demo_recipe_and_its_quick_variant() -> None:
    full, quick = demo_recipe(), demo_recipe(quick=True)
    assert [s.name for s in full.stages] == [s.name for s in quick.stages]
    assert quick.data.subset < full.data.subset
    assert quick.stage("baseline").train.epochs < full.stage("baseline").train.epochs
    assert full.stage("pruned").config.target_macs == 0.5
    assert full.stage("distilled").teacher == "teacher"


def test_a_distill_stage_takes_one_teacher_or_several(tmp_path: Path) -> None:
    raw = _raw()
    raw["stages"].append({"type": "distill", "teacher": ["base", "pruned"],
                          "teacher_weights": [0.7, 0.3]})  # fmt: skip
    stage = parse_recipe(raw).stages[-1]
    assert stage.teachers == ("base", "pruned") and stage.config.teacher_weights == (0.7, 0.3)
    assert stage.to_dict()["teacher"] == ["base", "pruned"]
    assert parse_recipe(yaml.safe_load(parse_recipe(raw).to_yaml())) == parse_recipe(raw)
    raw["stages"][-1]["teacher"] = ["base", "nope.pt"]
    with pytest.raises(ConfigError, match=r"stages\.4\.teacher: 'nope\.pt' is neither"):
        parse_recipe(raw)
    raw["stages"][-1]["teacher"] = ["base", 3]
    with pytest.raises(ConfigError, match=r"stages.4.teacher: expected stage names or files"):
        parse_recipe(raw)


def test_stage_fields_are_the_method_configs() -> None:
    r = parse_recipe(_raw())
    assert [s.name for s in r.stages] == ["base", "pruned", "quantize", "export"]
    assert r.stage("pruned").config.ratio == 0.5 and r.stage("pruned").finetune.epochs == 1
    assert r.stage("quantize").config.weight_bits == 8
    assert r.baseline_name == "base"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["stages"][1].update(ratoi=0.4),
         "stages.1.ratoi: unknown key for a prune stage (did you mean 'ratio'?)"),
        (lambda r: r["stages"][1].update(ratio="half"),
         "stages.1.ratio: expected a number, got 'half'"),
        (lambda r: r["stages"][0].update(type="trian"),
         "stages.0.type: 'trian' is not one of"),
        (lambda r: r["stages"][2].update(input="prunde"),
         "stages.2.input: no earlier stage named 'prunde' (did you mean 'pruned'?)"),
        (lambda r: r["stages"][0]["train"].update(epoch=3),
         "stages.0.train.epoch: unknown key (did you mean 'epochs'?)"),
        (lambda r: r.update(data={"name": "imagefolder:/no/such/folder"}),
         "data.name: /no/such/folder does not exist"),
        (lambda r: r.update(stagse=[]), "stagse: unknown key (did you mean 'stages'?)"),
        (lambda r: r["stages"].append({"type": "distill", "teacher": "nope.pt"}),
         "stages.4.teacher: 'nope.pt' is neither an earlier stage nor an existing file"),
        (lambda r: r["stages"][1].update(name="base"),
         "stages.1.name: 'base' is already the name of an earlier stage"),
    ],
)  # fmt: skip
def test_malformed_recipes_name_the_key_path(edit, message: str) -> None:
    raw = _raw()
    edit(raw)
    with pytest.raises(ConfigError) as info:
        parse_recipe(raw)
    assert message in str(info.value)


def test_exponent_without_a_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; a practitioner means 0.001
    path = tmp_path / "r.yaml"
    path.write_text("model: {name: smallcnn}\n"
                    "stages:\n- {type: train, train: {epochs: 1, lr: 1e-3, weight_decay: 5E-5}}\n"
                    "- {type: prune, ratio: 2.5e-1}\n")  # fmt: skip
    recipe = load_recipe(path)
    assert recipe.stages[0].train.lr == 0.001 and recipe.stages[0].train.weight_decay == 5e-5
    assert recipe.stages[1].config.ratio == 0.25
    assert load_recipe(path, ["stages.0.train.lr=2e-3"]).stages[0].train.lr == 0.002


def test_every_problem_of_a_recipe_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("stages: [{type: prune, ratoi: 0.5}]\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value).splitlines() == [
        f"2 problems in {path}:",
        "  model: missing (give model: {name: resnet20}, or model: {checkpoint: RUN_FOLDER})",
        "  stages.0.ratoi: unknown key for a prune stage (did you mean 'ratio'?)",
    ]
    raw = _raw()
    raw.update(data={"subset": "all", "seeed": 1}, report={"threads": 2.5}, baselne="base")
    raw["stages"][0]["train"].update(epoch=3, lr="fast")
    raw["stages"][1].update(name="base", ratio=2)  # the failed train stage's name still counts
    raw["stages"][2].update(weight_bits="8", calib="all")
    raw["stages"][3].update(input="nowhere")  # references wait until the stages parse
    with pytest.raises(ConfigError) as info:
        parse_recipe(raw)
    assert info.value.problems == (
        "baselne: unknown key (did you mean 'baseline'?)",
        "data.subset: expected an integer, got 'all'",
        "data.seeed: unknown key (did you mean 'seed'?)",
        "report.threads: expected an integer, got 2.5",
        "stages.0.train.epoch: unknown key (did you mean 'epochs'?)",
        "stages.0.train.lr: expected a number, got 'fast' (write a plain number such as 0.5 or "
        "1e-3)",
        "stages.1.name: 'base' is already the name of an earlier stage",
        "stages.1: ratio: must be in [0, 1), got 2.0",
        "stages.2.calib: expected an integer, got 'all'",
        "stages.2.weight_bits: expected an integer, got '8' (write 8)",
    )


def test_every_reference_problem_is_reported() -> None:
    raw = _raw()
    raw["stages"][2]["input"] = "prunde"
    raw["stages"].append({"type": "distill", "teacher": "nope.pt"})
    raw.update(baseline="bsae", data={"name": "imagefolder:/no/such/folder"})
    with pytest.raises(ConfigError) as info:
        parse_recipe(raw)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "stages.2.input", "stages.4.teacher", "baseline", "data.name"]  # fmt: skip


def test_overrides_by_index_and_by_stage_name() -> None:
    raw = apply_overrides(_raw(), ["stages.1.ratio=0.4", "stages.base.train.epochs=3",
                                   "data.subset=100"])  # fmt: skip
    r = parse_recipe(raw)
    assert r.stage("pruned").config.ratio == 0.4
    assert r.stage("base").train.epochs == 3 and r.data.subset == 100
    with pytest.raises(ConfigError, match="did you mean 'pruned'"):
        apply_overrides(_raw(), ["stages.prunde.ratio=0.4"])
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        apply_overrides(_raw(), ["stages.1.ratio"])


def test_cli_reports_a_malformed_recipe_one_problem_a_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _raw()
    raw["stages"][1]["ratoi"] = 0.4
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["compress", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"torchslim compress: error: {path}: stages.1.ratoi: unknown key for a prune "
                   "stage (did you mean 'ratio'?)"]  # fmt: skip
    assert not (tmp_path / "out").exists()
    raw["stages"][0]["train"]["epoch"] = 1
    path.write_text(yaml.safe_dump(raw))
    assert main(["compress", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"torchslim compress: error: 2 problems in {path}:",
        "  stages.0.train.epoch: unknown key (did you mean 'epochs'?)",
        "  stages.1.ratoi: unknown key for a prune stage (did you mean 'ratio'?)",
    ]
    path.write_text("stages: [\n")
    assert main(["compress", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_load_recipe_applies_overrides_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_raw()))
    assert load_recipe(path, ["stages.pruned.ratio=0.25"]).stage("pruned").config.ratio == 0.25
    with pytest.raises(ConfigError, match=r"r\.yaml: stages\.1\.ratio: expected a number"):
        load_recipe(path, ["stages.1.ratio=[1]"])


def test_the_readme_recipe_example_parses() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    recipe = parse_recipe(yaml.safe_load(block))
    assert [s.type for s in recipe.stages] == ["train", "prune", "quantize", "export"]
