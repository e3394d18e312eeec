"""Ensemble folders: members loaded from beside the folder, probabilities averaged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import istd
from istd.engine.evaluate import weights_sha256
from istd.errors import ConfigError, WeightsError
from istd.models import build_model, from_pretrained
from istd.models.ensemble import Ensemble, EnsembleMember


def _network(seed: int, **overrides):
    torch.manual_seed(seed)
    return build_model("mim-istd-test", scan_backend="reference", **overrides).eval()


def _write_ensemble(folder: Path, members: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ensemble.json").write_text(json.dumps({"members": members}))
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """weights/a, weights/b (another seed, input scale 1.5) and weights/ab naming both."""
    weights = tmp_path / "weights"
    _network(0).save_pretrained(weights / "a")
    _network(1, input_scale=1.5).save_pretrained(weights / "b")
    _write_ensemble(weights / "ab", ["a", "b"])
    return weights


def test_logits_are_those_of_the_members_mean_probability(root: Path) -> None:
    ensemble = from_pretrained(root / "ab")
    assert isinstance(ensemble, Ensemble) and ensemble.config.members == ("a", "b")
    a, b = from_pretrained(root / "a"), from_pretrained(root / "b")
    x = torch.rand(2, 1, 21, 30, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        mean = (torch.sigmoid(a(x)) + torch.sigmoid(b(x))) / 2
        prob = torch.sigmoid(ensemble(x))
        assert not torch.allclose(torch.sigmoid(a(x)), torch.sigmoid(b(x)), atol=1e-3)
    assert prob.shape == (2, 1, 21, 30)
    assert torch.allclose(prob, mean, atol=1e-5)


def test_predictor_and_weights_name_load_an_ensemble(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISTD_WEIGHTS_DIR", str(root))
    frame = np.random.default_rng(0).random((24, 40), dtype=np.float32)
    members = [istd.Predictor(weights=name, precision="float32")(frame).prob for name in ("a", "b")]
    result = istd.Predictor(weights="ab", precision="float32")(frame)
    assert np.allclose(result.prob, (members[0] + members[1]) / 2, atol=1e-5)
    assert result.mask.shape == (24, 40)
    with pytest.raises(ConfigError, match="'ab' is an ensemble; each member runs at its own"):
        istd.Predictor(weights="ab", input_scale=2.0)


def test_a_member_entry_can_name_another_input_scale(root: Path) -> None:
    """One network at two scales is an ensemble too: each entry runs at the scale it names."""
    _write_ensemble(root / "a2", ["a", {"name": "a", "input_scale": 2.0}])
    ensemble = from_pretrained(root / "a2")
    assert ensemble.config.members == ("a", "a@2")
    assert [m.config.input_scale for m in ensemble.members] == [1.0, 2.0]
    native, doubled = from_pretrained(root / "a"), from_pretrained(root / "a")
    doubled.set_input_scale(2.0)
    x = torch.rand(1, 1, 20, 28, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        mean = (torch.sigmoid(native(x)) + torch.sigmoid(doubled(x))) / 2
        assert not torch.allclose(torch.sigmoid(native(x)), torch.sigmoid(doubled(x)), atol=1e-3)
        assert torch.allclose(torch.sigmoid(ensemble(x)), mean, atol=1e-5)
    # The scale is part of what was evaluated: the fingerprint changes with it.
    before = weights_sha256(root / "a2")
    _write_ensemble(root / "a2", ["a", {"name": "a", "input_scale": 1.5}])
    assert weights_sha256(root / "a2") not in (before, None)


def test_member_labels_parse_back() -> None:
    assert EnsembleMember.parse("h2@1.25") == EnsembleMember("h2", 1.25)
    assert EnsembleMember.parse("h2") == EnsembleMember("h2")
    for member in (EnsembleMember("h2", 1.25), EnsembleMember("h2")):
        assert EnsembleMember.parse(str(member)) == member
    assert EnsembleMember("h2", 1.25).to_json() == {"name": "h2", "input_scale": 1.25}
    for bad in ("h2@", "h2@4.5", "h2@inf", "h2@1,5"):
        with pytest.raises(ConfigError, match="the scale after '@' must be in"):
            EnsembleMember.parse(bad)


def test_fingerprint_follows_the_members_weights(root: Path) -> None:
    before = weights_sha256(root / "ab")
    assert before is not None and before != weights_sha256(root / "a")
    _network(2).save_pretrained(root / "a", overwrite=True)
    assert weights_sha256(root / "ab") != before


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (["a"], "two or more"),
        ("a,b", "two or more"),
        (["a", "../weights/b"], "not a plain folder name"),
        (["a", "/tmp"], "not a plain folder name"),
        (["a", ".."], "not a plain folder name"),
        (["a", 3], "not a plain folder name"),
        (["a", "missing"], "member 'missing' not found"),
        (["a", "a"], "listed twice"),
        (["a", {"name": "a", "input_scale": 1}, {"name": "a", "input_scale": 1.0}], "listed twice"),
        (["a", {"name": "b", "input_scale": 9}], "must be a name or an object"),
        (["a", {"name": "b", "input_scale": True}], "must be a name or an object"),
        (["a", {"name": "b", "input_scale": "1.5"}], "must be a name or an object"),
        (["a", {"name": "b"}], "must be a name or an object"),
        (["a", {"name": "b", "input_scale": 1.5, "tta": True}], "must be a name or an object"),
        (["a", {"name": "../b", "input_scale": 1.5}], "not a plain folder name"),
        (["a", "bad"], "lists itself"),
        (["a", "ab"], "itself an ensemble"),
    ],
)
def test_bad_ensemble_files_are_refused_naming_the_file(
    root: Path, members: object, message: str
) -> None:
    folder = _write_ensemble(root / "bad", members)  # type: ignore[arg-type]
    with pytest.raises(WeightsError, match=message) as info:
        from_pretrained(folder)
    assert "ensemble.json" in str(info.value)


def test_unreadable_ensemble_file_is_refused(root: Path) -> None:
    folder = root / "broken"
    folder.mkdir()
    (folder / "ensemble.json").write_text("{members")
    with pytest.raises(WeightsError, match="not readable JSON"):
        from_pretrained(folder)


def test_members_must_take_the_same_channels(root: Path) -> None:
    _network(0, in_chans=3).save_pretrained(root / "rgb")
    with pytest.raises(WeightsError, match="different input channels"):
        from_pretrained(_write_ensemble(root / "mixed", ["a", "rgb"]))
