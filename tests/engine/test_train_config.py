"""Training config: YAML files, shipped names, --set overrides and their type checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from istd.engine.config import (
    TrainConfig,
    apply_override,
    config_from_dict,
    load_config,
    save_config,
)
from istd.errors import ConfigError


def test_defaults_follow_acm_dnanet_recipe_without_weight_decay() -> None:
    cfg = load_config(None)
    assert cfg.optim.name == "adagrad"
    assert cfg.optim.lr == 0.05
    assert cfg.optim.weight_decay == 0.0  # AdaGrad's L2 decay zeroes the SS2D projections
    assert cfg.loss.name == "softiou"
    assert cfg.augment.crop_size == 256
    assert cfg.train.best_metric == "iou"
    assert cfg.data.val_split != "test"


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optim": {"name": "adam", "lr": 1}, "data": {"limit": 4}}))
    cfg = load_config(
        path,
        ["optim.lr=0.001", "data.norm_mean=[0.4]", "data.norm_std=[0.2]", "train.threads=null"],
    )
    assert cfg.optim.name == "adam"
    assert cfg.optim.lr == 0.001 and isinstance(cfg.optim.lr, float)
    assert cfg.data.limit == 4
    assert cfg.data.norm_mean == [0.4]
    assert cfg.train.threads is None


def test_exponent_without_dot_is_a_float() -> None:
    # YAML 1.1 reads 1e-4 as a string; users type it that way on the command line.
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=fast"])


def test_int_promoted_to_float_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1\n")
    assert load_config(path).optim.lr == 1.0


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("optim.lrr=0.1", ["optim.lrr", "lr"]),
        ("nope.x=1", ["nope", "model"]),
        ("train.epochs=two", ["train.epochs", "int"]),
        ("train.epochs=true", ["train.epochs", "int"]),
        ("optim.name=sgd", ["optim.name", "adagrad"]),
        ("loss.name=focal", ["loss.name", "softiou"]),
        ("data.limit=1.5", ["data.limit"]),
        ("optim=3", ["optim", "section"]),
        ("optim.lr", ["key=value"]),
        ("data.norm_mean=[a]", ["data.norm_mean[0]", "float"]),
    ],
)
def test_bad_override_names_the_key(item: str, words: list[str]) -> None:
    cfg = TrainConfig()
    with pytest.raises(ConfigError) as info:
        apply_override(cfg, item)
    for word in words:
        assert word in str(info.value)


def test_unknown_yaml_key_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match="train.epocs"):
        load_config(path)


def test_range_checks() -> None:
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=0"])
    with pytest.raises(ConfigError, match="norm"):
        load_config(None, ["data.norm_mean=[0.5]"])
    with pytest.raises(ConfigError, match="schedule.warmup_epochs"):
        load_config(None, ["schedule.warmup_epochs=-1"])
    # a warm-up as long as the run is cut by the scheduler, not refused (smoke runs)
    assert load_config(None, ["train.epochs=1"]).schedule.warmup_epochs == 2


@pytest.mark.parametrize("value", ["0", "-1.0", ".nan"])
def test_grad_clip_must_be_positive_or_null(value: str) -> None:
    # clip_grad_norm_(..., 0.0) zeroes every gradient: training would silently stop learning.
    with pytest.raises(ConfigError, match="optim.grad_clip"):
        load_config(None, [f"optim.grad_clip={value}"])
    assert load_config(None, ["optim.grad_clip=1.5"]).optim.grad_clip == 1.5
    assert load_config(None, ["optim.grad_clip=null"]).optim.grad_clip is None


def test_best_window_must_be_at_least_one() -> None:
    with pytest.raises(ConfigError, match="train.best_window"):
        load_config(None, ["train.best_window=0"])
    assert load_config(None, ["train.best_window=5"]).train.best_window == 5


def test_best_metric_checked_against_the_evaluation_metrics() -> None:
    import numpy as np

    from istd.metrics.metrics import METRIC_NAMES, Metrics

    with pytest.raises(ConfigError, match="train.best_metric.*'bogus'.*iou.*niou"):
        load_config(None, ["train.best_metric=bogus"])
    m = Metrics()
    m.update(np.ones((4, 4), np.float32), np.ones((4, 4), bool))
    assert set(METRIC_NAMES) <= set(m.compute())  # every allowed name is produced
    for name in METRIC_NAMES:
        assert load_config(None, [f"train.best_metric={name}"]).train.best_metric == name


def test_unknown_config_name_lists_shipped() -> None:
    with pytest.raises(ConfigError, match="mim-istd_nuaa-sirst"):
        load_config("no-such-config")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/file.yaml")


def test_shipped_configs_load_and_round_trip() -> None:
    from istd.engine.config import shipped_configs

    names = shipped_configs()
    assert {"mim-istd_nuaa-sirst", "mim-istd_nudt-sirst"} <= set(names)
    for name in names:
        cfg = load_config(name)
        again = config_from_dict(yaml.safe_load(save_config(cfg)))
        assert again == cfg


def test_shipped_models_are_registered() -> None:
    from istd.engine.config import shipped_configs
    from istd.models import list_models

    for name in shipped_configs():
        assert load_config(name).model.name in list_models(), name


def test_shipped_splits_on_the_real_datasets(nuaa_sirst: Path, nudt_sirst: Path) -> None:
    from istd.engine.train_data import split_samples

    train, val = split_samples(load_config("mim-istd_nuaa-sirst", [f"data.root={nuaa_sirst}"]))
    assert (len(train), len(val)) == (256, 85)  # idx_427 train / val; test never touched
    train, val = split_samples(load_config("mim-istd_nudt-sirst", [f"data.root={nudt_sirst}"]))
    assert (len(train), len(val)) == (663 - 67, 67)  # 10 % of 50_50/train held out
    test_ids = set((nudt_sirst / "50_50" / "test.txt").read_text().split())
    assert not test_ids & {s.id for s in train + val}


def test_default_root_resolves_against_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nuaa_sirst: Path
) -> None:
    from istd.engine.train_data import split_samples

    checkout_data = (
        Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "NUAA-SIRST"
    )
    if not checkout_data.is_dir():
        pytest.skip(f"{checkout_data} absent: the shipped default root points there")
    monkeypatch.chdir(tmp_path)  # the shipped relative root does not exist from here
    train, _ = split_samples(load_config("mim-istd_nuaa-sirst"))
    assert len(train) == 256


def test_dotted_override_sets_one_model_override() -> None:
    cfg = load_config(
        "mim-istd_nuaa-sirst", ["model.overrides.scan=local", "model.overrides.inner=conv"]
    )
    assert cfg.model.overrides == {"scan": "local", "inner": "conv"}
    apply_override(cfg, "model.overrides.scan=grouped")
    assert cfg.model.overrides == {"scan": "grouped", "inner": "conv"}


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("model.overrides.in_chans=abc", ["model.overrides", "in_chans", "int", "'abc'"]),
        ("model.overrides.ffn=maybe", ["model.overrides", "ffn", "bool", "maybe"]),
        ("model.overrides.depths=[1, 1, 1]", ["model.overrides", "entries but depths has 3"]),
        ("model.overrides.colour=3", ["model.overrides", "colour", "known"]),
        ("model.overrides.device=meta", ["model.overrides.device", "--device"]),
        ("model.overrides.norm_mean=[0.5]", ["model.overrides.norm_mean", "data.norm_mean"]),
        ("model.name=mim-istd-xxl", ["model.name", "mim-istd-xxl", "known"]),
    ],
)
def test_bad_model_overrides_fail_when_the_config_loads(item: str, words: list[str]) -> None:
    # Before, the network was first built after the dataset statistics: a traceback late.
    with pytest.raises(ConfigError) as info:
        load_config(None, [item])
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_model_overrides_are_checked_against_the_named_variant() -> None:
    # mim-istd-test has two stages: two dims are right for it, wrong for mim-istd.
    cfg = load_config(None, ["model.name=mim-istd-test", "model.overrides.dims=[16, 32]"])
    assert cfg.model.overrides == {"dims": [16, 32]}
    with pytest.raises(ConfigError, match="dims"):
        load_config(None, ["model.overrides.dims=[16, 32]"])
    with pytest.raises(ConfigError, match="model.overrides"):
        load_config(None, ["model.name=tophat", "model.overrides.k=fast"])


@pytest.mark.parametrize("value", ["[0.0, 1.5]", "[1.5, 0.7]", "[0.7]", "[0.7, .inf]"])
def test_scale_range_must_be_two_increasing_positive_factors(value: str) -> None:
    with pytest.raises(ConfigError, match="augment.scale_range"):
        load_config(None, [f"augment.scale_range={value}"])


@pytest.mark.parametrize("key", ["optim.lr", "optim.weight_decay", "optim.grad_clip"])
@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_optimiser_values_must_be_finite(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(None, [f"{key}={value}"])


def test_fit_refuses_a_bad_model_override_before_reading_data(tmp_path: Path) -> None:
    from istd.engine.train import fit

    cfg = load_config(None, [f"data.root={tmp_path / 'no-data'}", "model.name=mim-istd-test"])
    with pytest.raises(ConfigError, match="in_chans"):  # not a DataError on the missing root
        fit(cfg, tmp_path / "run", overrides=["model.overrides.in_chans=abc"])
    assert not (tmp_path / "run").exists()
