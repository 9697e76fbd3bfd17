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


def test_cli_reports_a_malformed_recipe_in_one_line_and_exits_2(
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
