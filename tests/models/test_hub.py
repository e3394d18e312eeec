"""save_pretrained / from_pretrained: safetensors + JSON, atomic, validated, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from istd.errors import WeightsError
from istd.models import DEFAULT_WEIGHTS, build_model, from_pretrained, save_pretrained


def _toy(**kw):
    torch.manual_seed(0)
    return build_model("mim-istd-test", scan_backend="reference", **kw)


def test_round_trip_gives_equal_output(tmp_path: Path) -> None:
    model = _toy(scan="grouped", norm_mean=(0.3,), norm_std=(0.2,))
    folder = save_pretrained(
        model, tmp_path / "w", extra={"dataset": "NUAA-SIRST", "metrics": {"IoU": 0.5}}
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["model"] == "mim-istd-test" and meta["extra"]["metrics"]["IoU"] == 0.5
    assert meta["config"]["norm_mean"] == [0.3]
    loaded = from_pretrained(folder)
    assert not loaded.training and loaded.config == model.config
    assert loaded.pretrained_extra["dataset"] == "NUAA-SIRST"
    x = torch.rand(1, 1, 21, 18)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert "IoU" in (folder / "README.md").read_text()


def test_method_form_and_no_silent_overwrite(tmp_path: Path) -> None:
    model = _toy()
    model.save_pretrained(tmp_path)
    with pytest.raises(WeightsError, match="refusing to overwrite"):
        model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, overwrite=True)
    assert not list(tmp_path.glob(".*tmp")), "temp files left behind"


def test_named_weights_resolve_under_weights_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISTD_WEIGHTS_DIR", str(tmp_path))
    save_pretrained(_toy(), tmp_path / "toy-weights")
    assert from_pretrained("toy-weights").model_name == "mim-istd-test"


def test_installed_wheel_finds_its_weights_under_the_data_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a non-editable install: the package sits in site-packages, with no weights/ beside it,
    # and the wheel's data-files put the weights under <prefix>/share/istd/weights
    import sysconfig

    import istd
    from istd.models import weights_dir
    from istd.models.hub import INSTALLED_WEIGHTS

    monkeypatch.delenv("ISTD_WEIGHTS_DIR", raising=False)
    package = tmp_path / "lib" / "site-packages" / "istd"
    package.mkdir(parents=True)
    monkeypatch.setattr(istd, "__file__", str(package / "__init__.py"))
    data = tmp_path / "prefix"
    monkeypatch.setattr(sysconfig, "get_path", lambda name, scheme=None: str(data))
    assert weights_dir() == tmp_path / "lib" / "site-packages" / "weights"  # nothing installed
    installed = data.joinpath(*INSTALLED_WEIGHTS)
    save_pretrained(_toy(), installed / "toy-weights")
    assert weights_dir() == installed
    assert from_pretrained("toy-weights").model_name == "mim-istd-test"


def test_every_shipped_weights_folder_is_in_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    repo = Path(__file__).resolve().parents[2]
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    data_files = config["tool"]["setuptools"]["data-files"]
    folders = sorted(p.parent.name for p in (repo / "weights").glob("*/config.json"))
    assert folders, "no shipped weights found"
    for name in folders:
        assert data_files.get(f"share/istd/weights/{name}") == [f"weights/{name}/*"], name
    assert data_files.get("share/istd/weights") == ["weights/README.md"]


def test_missing_default_weights_say_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISTD_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="istd train"):
        from_pretrained(DEFAULT_WEIGHTS)
    with pytest.raises(WeightsError, match="needs trained weights"):
        from_pretrained("mim-istd")
    with pytest.raises(WeightsError, match="no weights folder"):
        from_pretrained("no-such-weights")
    with pytest.raises(WeightsError, match="no weights folder"):
        from_pretrained("../no-such-folder")


def test_weight_free_models_load_by_name() -> None:
    model = from_pretrained("tophat")
    assert model.requires_weights is False


def _saved(tmp_path: Path) -> Path:
    return save_pretrained(_toy(), tmp_path / "w")


def test_unknown_model_name_in_config(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    meta["model"] = "resnet-9000"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=r"config\.json.*unknown model"):
        from_pretrained(folder)


@pytest.mark.parametrize(
    "text", ["{broken", "[]", '{"config": {}}', '{"model": "mim-istd-test", "config": {"dims": 3}}']
)
def test_malformed_config_names_the_file(tmp_path: Path, text: str) -> None:
    folder = _saved(tmp_path)
    (folder / "config.json").write_text(text)
    with pytest.raises(WeightsError, match="config.json"):
        from_pretrained(folder)


def test_shape_mismatch_names_the_file(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["word_dims"] = [2, 2]  # weights were saved with (4, 4)
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=r"model\.safetensors does not fit.*shape mismatch"):
        from_pretrained(folder)


def test_corrupt_or_missing_weights(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x80\x04 definitely not safetensors")
    with pytest.raises(WeightsError, match="model.safetensors"):
        from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="not found"):
        from_pretrained(folder)


def _strict_json(text: str) -> object:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_undefined_metrics_are_written_as_null(tmp_path: Path) -> None:
    # A model that predicts nothing has NaN target precision; bare NaN is not JSON.
    nan, inf = float("nan"), float("inf")
    extra = {"metrics": {"iou": 0.0, "target_precision": nan}, "curve": [1.0, inf, {"x": -inf}]}
    folder = save_pretrained(_toy(), tmp_path / "w", extra=extra)
    meta = _strict_json((folder / "config.json").read_text())
    assert meta["extra"] == {
        "metrics": {"iou": 0.0, "target_precision": None},
        "curve": [1.0, None, {"x": None}],
    }
    assert "| target_precision | n/a |" in (folder / "README.md").read_text()
    assert extra["metrics"]["target_precision"] != extra["metrics"]["target_precision"]  # intact
    assert from_pretrained(folder).pretrained_extra["metrics"]["target_precision"] is None


def test_old_config_with_bare_nan_still_loads(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    meta["extra"] = {"metrics": {"target_precision": float("nan")}}
    (folder / "config.json").write_text(json.dumps(meta))  # as written before: bare NaN
    extra = from_pretrained(folder).pretrained_extra
    assert extra["metrics"]["target_precision"] != extra["metrics"]["target_precision"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"in_chans": "1"}, ["in_chans", "int", "'1'"]),
        ({"in_chans": 1.5}, ["in_chans", "int", "1.5"]),
        ({"ffn": "no"}, ["ffn", "bool"]),
        ({"norm_std": [None]}, ["norm_std", "finite numbers"]),
        ({"device": "meta"}, ["device", "config fields only"]),
        ({"dtype": "float16"}, ["dtype", "config fields only"]),
    ],
)
def test_config_json_with_wrong_types_or_call_arguments_is_refused(
    tmp_path: Path, change: dict, words: list[str]
) -> None:
    # device/dtype are from_pretrained's arguments: "meta" in the file gave a model with no
    # weights loaded.
    folder = save_pretrained(_toy(), tmp_path / "w")
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(change)
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="config.json: invalid config") as info:
        from_pretrained(folder)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_save_onto_an_existing_file_names_it(tmp_path: Path) -> None:
    target = tmp_path / "weights"
    target.write_text("not a folder")
    with pytest.raises(WeightsError, match=f"{target}.*not a folder"):
        save_pretrained(_toy(), target)
    with pytest.raises(WeightsError, match="cannot create"):
        save_pretrained(_toy(), target / "inside")
    assert target.read_text() == "not a folder"


def test_negligible_weights_are_zeroed_on_load_without_changing_the_output(
    tmp_path: Path,
) -> None:
    """Layers left at ~1e-33 by training multiply into subnormals; loading zeroes them."""
    model = _toy().eval()
    with torch.no_grad():
        dead = model.stages[-1][0].mixer.in_proj.weight
        dead.mul_(1e-33)  # a dead layer, as weight decay under AdaGrad left them
        alive = model.stem.shared[0].weight.clone()
    folder = save_pretrained(model, tmp_path / "w")
    loaded = from_pretrained(folder)
    assert torch.count_nonzero(loaded.stages[-1][0].mixer.in_proj.weight) == 0
    assert torch.equal(loaded.stem.shared[0].weight, alive)
    x = torch.rand(2, 1, 32, 40)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)
