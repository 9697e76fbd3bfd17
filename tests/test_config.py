from __future__ import annotations

import dataclasses
import enum

import pytest

from torchslim.config import did_you_mean, from_dict, to_dict
from torchslim.errors import ConfigError


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
    ],
)
def test_bad_input_names_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Cfg, data)
    assert message in str(info.value)


def test_non_mapping_rejected() -> None:
    with pytest.raises(ConfigError, match="expected a Cfg or a dict"):
        from_dict(Cfg, [1, 2])


def test_did_you_mean_empty_when_nothing_close() -> None:
    assert did_you_mean("zzzz", ["ratio"]) == ""
