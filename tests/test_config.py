from __future__ import annotations

import dataclasses
import enum

import pytest

from torchslim.config import did_you_mean, from_dict, to_dict
from torchslim.errors import ConfigError, ConfigProblems


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Inner:
    k: int = 1


@dataclasses.dataclass(frozen=True)
class Cfg:
    ratio: float = 0.5
    round_to: int | None = None
    color: Color = Color.RED
    names: tuple[str, ...] = ()
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_from_dict_coerces_and_nests() -> None:
    cfg = from_dict(Cfg, {"ratio": 1, "color": "blue", "names": ["a", "b"], "inner": {"k": 3}})
    assert cfg == Cfg(ratio=1.0, color=Color.BLUE, names=("a", "b"), inner=Inner(3))
    assert isinstance(cfg.ratio, float)
    assert to_dict(cfg) == {
        "ratio": 1.0,
        "round_to": None,
        "color": "blue",
        "names": ["a", "b"],
        "inner": {"k": 3},
    }


def test_instance_and_none_pass_through() -> None:
    cfg = Cfg(ratio=0.1)
    assert from_dict(Cfg, cfg) is cfg
    assert from_dict(Cfg, None) == Cfg()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ratoi": 0.4}, "ratoi: unknown key (did you mean 'ratio'?)"),
        ({"ratio": "half"}, "ratio: expected a number"),
        ({"round_to": 2.5}, "round_to: expected an integer"),
        ({"color": "bleu"}, "did you mean 'blue'"),
        ({"names": "abc"}, "names: expected a list"),
        ({"inner": {"kk": 1}}, "inner.kk: unknown key (did you mean 'k'?)"),
        ({"ratio": True}, "ratio: expected a number"),
        ({"ratio": "half"}, "got 'half' (write a plain number such as 0.5 or 1e-3)"),
        ({"ratio": "inf"}, "ratio: expected a finite number, got 'inf'"),
        ({"ratio": " nan "}, "ratio: expected a finite number"),
        ({"ratio": float("nan")}, "ratio: expected a finite number"),
        ({"round_to": "1e3"}, "round_to: expected an integer, got '1e3' (write 1000)"),
        ({"round_to": 1000.0}, "round_to: expected an integer, got 1000.0 (write 1000)"),
    ],
)
def test_bad_input_names_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Cfg, data)
    assert message in str(info.value)


@pytest.mark.parametrize(("text", "value"), [("1e-3", 1e-3), ("5E-4", 5e-4), (" 2.5 ", 2.5)])
def test_numeric_strings_are_numbers_for_float_fields(text: str, value: float) -> None:
    # PyYAML reads `lr: 1e-3` (no dot, YAML 1.1) as the string "1e-3"
    cfg = from_dict(Cfg, {"ratio": text})
    assert cfg.ratio == value and isinstance(cfg.ratio, float)


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    inner: Inner | None = None
    items: tuple[Inner, ...] = ()


def test_every_problem_is_reported_with_its_key_path() -> None:
    data = {
        "weigths": {},
        "weights": {"a": "1e-3", "b": "x"},
        "inner": {"kk": 1, "k": "2"},
        "items": [{"k": 1}, {"k": 0.5}, {"j": 1}],
    }
    with pytest.raises(ConfigProblems) as info:
        from_dict(Outer, data)
    assert info.value.problems == (
        "weigths: unknown key (did you mean 'weights'?)",
        "weights.b: expected a number, got 'x' (write a plain number such as 0.5 or 1e-3)",
        "inner.kk: unknown key (did you mean 'k'?)",
        "inner.k: expected an integer, got '2' (write 2)",
        "items[1].k: expected an integer, got 0.5",
        "items[2].j: unknown key",
        "name: missing",
    )
    assert str(info.value).splitlines()[0] == "7 problems in Outer:"
    assert isinstance(info.value, ConfigError)
    assert from_dict(Outer, {"name": "x", "weights": {"a": "1e-3"}}).weights == {"a": 1e-3}


def test_non_mapping_rejected() -> None:
    with pytest.raises(ConfigError, match="expected a Cfg or a dict"):
        from_dict(Cfg, [1, 2])


def test_did_you_mean_empty_when_nothing_close() -> None:
    assert did_you_mean("zzzz", ["ratio"]) == ""
