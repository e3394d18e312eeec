"""The weights shipped in weights/ load from safetensors + JSON and segment real frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from istd.data import read_image
from istd.engine.evaluate import weights_sha256
from istd.engine.predict import Predictor
from istd.models import DEFAULT_WEIGHTS, from_pretrained
from istd.models.ensemble import ENSEMBLE_FILE, Ensemble
from istd.models.hub import read_config, weights_dir

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


@pytest.fixture(scope="module")
def default_dir() -> Path:
    path = weights_dir() / DEFAULT_WEIGHTS
    if not path.is_dir():
        pytest.skip(f"no default weights at {path} yet")
    return path


def test_default_weights_carry_training_facts(default_dir: Path) -> None:
    config = read_config(default_dir)
    assert config["model"] == "mim-istd"
    assert config["config"]["norm_std"][0] > 0  # measured on the training split, not defaults
    extra = config["extra"]
    assert extra["split"].startswith("validation") and "test" not in extra["split_sha256"]
    assert 0.0 <= extra["metrics"]["iou"] <= 1.0


def test_default_predictor_segments_a_sample_frame(default_dir: Path) -> None:
    frame = read_image(SAMPLES / "IR_DRONE_059_f150.png")  # (256, 320)
    result = Predictor()(frame)
    assert result.prob.shape == frame.shape and result.mask.shape == frame.shape
    assert float(result.prob.min()) >= 0.0 and float(result.prob.max()) <= 1.0
    # a real IR frame is mostly sky: a sane model marks only a small part of it as target
    assert result.mask.mean() < 0.01


def test_every_shipped_ensemble_was_evaluated_with_the_members_it_loads() -> None:
    folders = sorted(p.parent for p in weights_dir().glob(f"*/{ENSEMBLE_FILE}"))
    if not folders:
        pytest.skip(f"no ensemble folder in {weights_dir()}")
    for folder in folders:
        model = from_pretrained(folder)
        assert isinstance(model, Ensemble) and len(model.members) >= 2
        for name in ("metrics.json", "metrics_val.json"):
            facts = json.loads((folder / name).read_text(encoding="utf-8"))["facts"]
            # a member released again without releasing the ensemble would change this
            assert facts["weights_sha256"] == weights_sha256(folder), f"{folder.name}/{name}"
