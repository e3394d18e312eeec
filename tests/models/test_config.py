"""MiMConfig: validation and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from istd.errors import ConfigError
from istd.models import MiMConfig, build_model


def test_json_round_trip_keeps_every_field() -> None:
    config = MiMConfig(
        in_chans=3, scan="local", inner="conv", norm_mean=(0.1, 0.2, 0.3), norm_std=(1, 2, 3)
    )
    again = MiMConfig.from_json(config.to_json())
    assert again == config
    assert isinstance(again.depths, tuple)
    assert json.loads(config.to_json())["dims"] == [32, 64, 128, 256]


@pytest.mark.parametrize(
    ("overrides", "word"),
    [
        ({"scan": "zigzag"}, "scan"),
        ({"inner": "attention"}, "inner"),
        ({"scan_backend": "cuda"}, "scan_backend"),
        ({"dims": (32, 64, 128)}, "dims"),
        ({"dims": (32, 48, 96, 192)}, "double"),
        ({"inner_depths": (3, 1, 1, 1)}, "inner_depths"),
        ({"norm_std": (0.0,)}, "norm_std"),
        ({"norm_mean": (0.1, 0.2)}, "norm_mean"),
        ({"head_dropout": 1.5}, "head_dropout"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(overrides: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        MiMConfig(**overrides)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ConfigError, match="colour"):
        MiMConfig.from_dict({"colour": 3})
    with pytest.raises(ConfigError, match="colour"):
        build_model("mim-istd-test", colour=3)
    with pytest.raises(ConfigError, match="not valid JSON"):
        MiMConfig.from_json("{nope")


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="mim-istd"):
        build_model("mim-istd-xxl")
