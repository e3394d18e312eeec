"""MiMConfig: validation and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from istd.errors import ConfigError
from istd.models import MiMConfig, build_model


def test_json_round_trip_keeps_every_field() -> None:
    config = MiMConfig(
        in_chans=3,
        scan="local",
        inner="conv",
        norm_mean=(0.1, 0.2, 0.3),
        norm_std=(1, 2, 3),
        input_scale=1.5,
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
        ({"input_scale": 0.0}, "input_scale"),
        ({"input_scale": 8.0}, "input_scale"),
        ({"input_scale": float("inf")}, "input_scale"),
        ({"input_scale": "1.5"}, "input_scale"),
        ({"head_stride": 0}, "head_stride"),
        ({"head_stride": 8}, "head_stride"),
        ({"head_stride": 2.0}, "head_stride"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(overrides: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        MiMConfig(**overrides)


def test_config_json_without_input_scale_runs_at_native_size() -> None:
    # config.json files written before the field existed (the first shipped weights)
    data = MiMConfig().to_dict()
    del data["input_scale"]
    assert MiMConfig.from_dict(data).input_scale == 1.0


def test_config_json_without_head_stride_keeps_the_papers_head() -> None:
    data = MiMConfig(head_stride=2).to_dict()
    assert MiMConfig.from_dict(data).head_stride == 2
    del data["head_stride"]  # config.json files written before the field existed
    assert MiMConfig.from_dict(data).head_stride == 4


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


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"in_chans": "3"}, ["in_chans", "int", "'3'"]),
        ({"in_chans": 1.5}, ["in_chans", "int", "1.5"]),
        ({"in_chans": True}, ["in_chans", "int", "True"]),
        ({"d_state": None}, ["d_state", "int", "None"]),
        ({"local_window": 0}, ["local_window", ">= 1", "0"]),
        ({"ffn": "no"}, ["ffn", "bool", "'no'"]),
        ({"ffn": 1}, ["ffn", "bool", "1"]),
        ({"scan": 3}, ["scan", "cross", "3"]),
        ({"inner": ["mamba"]}, ["inner", "mamba", "['mamba']"]),
        ({"depths": "22"}, ["depths", "sequence of ints", "'22'"]),
        ({"dims": (8, 16.0)}, ["dims", "sequence of ints", "16.0"]),
        ({"inner_depths": (1, True)}, ["inner_depths", "sequence of ints"]),
        ({"norm_mean": ("0.5",)}, ["norm_mean", "finite numbers", "'0.5'"]),
        ({"norm_std": (float("nan"),)}, ["norm_std", "finite numbers", "nan"]),
        ({"norm_std": (float("inf"),)}, ["norm_std", "finite numbers", "inf"]),
        ({"head_dropout": "0.1"}, ["head_dropout", "number", "'0.1'"]),
        ({"head_dropout": float("nan")}, ["head_dropout", "nan"]),
    ],
)
def test_wrong_types_raise_config_error_naming_field_type_and_value(
    overrides: dict, words: list[str]
) -> None:
    for make in (
        lambda: build_model("mim-istd-test", **overrides),
        lambda: MiMConfig().replace(**overrides),
        lambda: MiMConfig.from_dict(overrides),
    ):
        with pytest.raises(ConfigError) as info:
            make()
        for word in words:
            assert word in str(info.value), (word, str(info.value))


def test_numbers_from_json_are_accepted() -> None:
    # JSON has no tuples and writes 0.0 as 0: lists and ints stand for tuples and floats.
    config = MiMConfig.from_dict({"depths": [2, 2, 2, 2], "norm_std": [1], "head_dropout": 0})
    assert config.depths == (2, 2, 2, 2) and config.norm_std == (1,)


def test_unknown_fields_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="colour.*known: .*in_chans"):
        MiMConfig.from_dict({"colour": 3})
