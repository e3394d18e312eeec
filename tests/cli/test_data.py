"""Tests for `istd data check` (istd/cli/data.py) through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from istd.cli import app

runner = CliRunner()


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", array)[1].tobytes())


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A two-image folder dataset: one clean pair, one mask of the wrong size."""
    root = tmp_path / "tiny set"
    for name, mask_shape in (("a", (12, 16)), ("b", (12, 16))):
        image = np.full((12, 16), 50, np.uint8)
        mask = np.zeros(mask_shape, np.uint8)
        mask[3:5, 3:5] = 255
        _png(root / "images" / f"{name}.png", image)
        _png(root / "masks" / f"{name}.png", mask)
    return root


def test_clean_dataset_exit_0(tiny: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(tiny)])
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output
    assert "folder" in result.output  # the detected layout


def test_problem_exit_1_and_json(tiny: Path, tmp_path: Path) -> None:
    _png(tiny / "masks" / "b.png", np.zeros((5, 5), np.uint8))
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["data", "check", str(tiny), "--json", str(out)])
    assert result.exit_code == 1, result.output
    assert "size_mismatch" in result.output
    data = json.loads(out.read_text())
    assert data["images"] == 2 and data["targets"] == 1
    assert data["problems"] == [
        {
            "path": str(tiny / "masks" / "b.png"),
            "kind": "size_mismatch",
            "detail": "mask is 5x5, image b.png is 16x12",
        }
    ]
    again = runner.invoke(app, ["data", "check", str(tiny), "--json", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    forced = runner.invoke(app, ["data", "check", str(tiny), "--json", str(out), "--overwrite"])
    assert forced.exit_code == 1 and "report written" in forced.output


def test_bad_input_one_red_line(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    result = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "no masks folder" in result.output
    assert "Traceback" not in result.output


def test_layout_and_split_options(tiny: Path) -> None:
    (tiny / "trainval.txt").write_text("a\n")
    (tiny / "test.txt").write_text("b\r\n")
    result = runner.invoke(app, ["data", "check", str(tiny), "--split", "trainval"])
    assert result.exit_code == 0, result.output
    assert "isnet" in result.output
    wrong = runner.invoke(app, ["data", "check", str(tiny), "--layout", "dnanet"])
    assert wrong.exit_code == 1 and "layout 'dnanet' needs" in wrong.output
    unknown = runner.invoke(app, ["data", "check", str(tiny), "--layout", "coco"])
    assert unknown.exit_code == 2  # rejected by the option parser


def test_missing_path_rejected(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nope")])
    assert result.exit_code == 2


def test_help_lists_options() -> None:
    result = runner.invoke(app, ["data", "check", "--help"])
    assert result.exit_code == 0
    for option in ("--split", "--layout", "--fixes", "--json", "--overwrite"):
        assert option in result.output


def test_real_nuaa_sirst_cli(nuaa_sirst: Path, tmp_path: Path) -> None:
    out = tmp_path / "nuaa.json"
    result = runner.invoke(app, ["data", "check", str(nuaa_sirst), "--json", str(out)])
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    assert (data["images"], data["targets"]) == (427, 533)
    assert [(Path(p["path"]).name, p["kind"]) for p in data["problems"]] == [
        ("Misc_111_pixels0.png", "size_mismatch")
    ]
    fixed = runner.invoke(app, ["data", "check", str(nuaa_sirst), "--fixes"])
    assert fixed.exit_code == 0, fixed.output
    assert "Misc_111" in fixed.output  # listed under the fixes applied
