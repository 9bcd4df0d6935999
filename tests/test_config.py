from dataclasses import dataclass

import pytest

from genzoo.core.config import build, parse_set
from genzoo.errors import ConfigError


@dataclass
class C:
    lr: float = 1e-3
    blocks: int = 5
    name: str = "x"
    clip: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    flag: bool = False

    def __post_init__(self):
        if self.blocks < 0:
            raise ValueError("blocks must be >= 0")


def test_strings_are_coerced_to_the_field_types():
    c = build(C, {"lr": "3e-4", "blocks": "7", "clip": "none", "betas": "0.5,0.99", "flag": "true"})
    assert c.lr == 3e-4 and c.blocks == 7 and c.clip is None and c.betas == (0.5, 0.99) and c.flag


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key 'lrr'; valid keys: lr, blocks"):
        build(C, {"lrr": 1})


@pytest.mark.parametrize("key,value,expected", [("blocks", "five", "expected an integer"),
                                                 ("lr", "fast", "expected a number"),
                                                 ("flag", "maybe", "expected true or false")])
def test_wrong_types_name_the_key_and_the_type(key, value, expected):
    with pytest.raises(ConfigError, match=f"bad value '{value}' for {key}: {expected}"):
        build(C, {key: value})


def test_post_init_validation_becomes_config_error():
    with pytest.raises(ConfigError, match="blocks must be >= 0"):
        build(C, {"blocks": -1})


def test_parse_set():
    assert parse_set(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["novalue"])
