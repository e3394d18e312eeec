"""`istd score` and `istd eval` through the Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from istd.cli import app
from istd.data.io import write_png_atomic
from istd.metrics.score import score_folders

runner = CliRunner()


def _pairs(root: Path) -> tuple[Path, Path]:
    gt = np.zeros((10, 12), bool)
    gt[2:4, 2:4] = True
    prob = np.zeros((10, 12), np.uint8)
    prob[2:4, 2:4] = 230
    prob[8, 9] = 200  # one false-alarm pixel
    write_png_atomic(root / "gt" / "x_pixels0.png", gt)
    write_png_atomic(root / "pred" / "x_prob.png", prob)
    return root / "pred", root / "gt"


def test_score_prints_and_writes_json(tmp_path: Path) -> None:
    pred, gt = _pairs(tmp_path)
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "Pd" in result.output and "Fa" in result.output
    data = json.loads(out.read_text())
    expected = score_folders(pred, gt).metrics
    assert data == expected  # every compute() key, nothing undefined here
    assert data["pd"] == 1.0 and data["fa_pixels"] == 1
    again = runner.invoke(app, ["score", str(pred), str(gt), "--json", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    assert (
        runner.invoke(
            app, ["score", str(pred), str(gt), "--json", str(out), "--overwrite"]
        ).exit_code
        == 0
    )


def test_score_missing_prediction_is_one_error_line(tmp_path: Path) -> None:
    pred, gt = _pairs(tmp_path)
    (pred / "x_prob.png").unlink()
    write_png_atomic(pred / "other.png", np.zeros((10, 12), bool))
    result = runner.invoke(app, ["score", str(pred), str(gt)])
    assert result.exit_code == 1
    assert "x_pixels0.png" in result.output and "Traceback" not in result.output


def test_score_with_the_dataset_fixes(tmp_path: Path) -> None:
    pred, gt = _pairs(tmp_path)
    (gt / "x_pixels0.png").unlink()
    write_png_atomic(gt / "x_pixels0.png", np.zeros((30, 40), bool))  # a broken mask
    fixed = np.zeros((10, 12), bool)
    fixed[2:4, 2:4] = True
    write_png_atomic(tmp_path / "fixes" / "x_pixels0.png", fixed)
    broken = runner.invoke(app, ["score", str(pred), str(gt)])
    assert broken.exit_code == 1 and "Traceback" not in broken.output
    assert "broken one" in broken.output and "--fixes" in broken.output
    result = runner.invoke(app, ["score", str(pred), str(gt), "--fixes", str(tmp_path / "fixes")])
    assert result.exit_code == 0, result.output
    assert "1 ground-truth masks replaced" in result.output and "x_pixels0.png" in result.output


def test_eval_with_a_weight_free_model(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    mask = np.zeros((20, 26), bool)
    mask[5:7, 9:11] = True
    write_png_atomic(root / "images" / "a.png", np.where(mask, 230, 30).astype(np.uint8))
    write_png_atomic(root / "masks" / "a.png", mask)
    out = tmp_path / "rep"
    args = ["eval", "--model", "tophat", "--data", str(root), "--out", str(out), "--gallery", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file()
    assert "report.md" in result.output
    # images/ + masks/ only: no test split, so the default evaluates everything, and says so.
    assert "has no test split: evaluated all 1 images" in result.output
    assert "pass --split" in result.output
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    chosen = runner.invoke(app, [*args, "--split", "all", "--overwrite"])
    assert chosen.exit_code == 0 and "no test split" not in chosen.output


def test_eval_default_weights_missing_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ISTD_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    root = tmp_path / "ds"
    write_png_atomic(root / "images" / "a.png", np.zeros((8, 8), np.uint8))
    write_png_atomic(root / "masks" / "a.png", np.zeros((8, 8), bool))
    result = runner.invoke(app, ["eval", "--data", str(root), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "default weights" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_eval_compare_passes_every_source(tmp_path: Path, monkeypatch) -> None:
    import istd.engine.evaluate as ev

    seen = {}

    def fake(sources, data, out, **kw):
        seen.update(sources=sources, **kw)
        raise ev.DataError("stop here")

    monkeypatch.setattr(ev, "run_evaluation", fake)
    (tmp_path / "ds").mkdir()
    result = runner.invoke(
        app,
        ["eval", "--weights", "w1", "--compare", "tophat, mpcm", "--data", str(tmp_path / "ds"),
         "--out", str(tmp_path / "o"), "--matching", "optimal", "--threshold", "0.4"],
    )  # fmt: skip
    assert result.exit_code == 1 and "stop here" in result.output
    assert seen["sources"] == ["w1", "tophat", "mpcm"]
    assert seen["matching"] == "optimal" and seen["threshold"] == 0.4
    assert seen["precision"] == "float32"  # the comparable figures unless asked otherwise


def test_eval_compare_without_weights_starts_with_the_default(tmp_path: Path, monkeypatch) -> None:
    import istd.engine.evaluate as ev
    from istd.models import DEFAULT_WEIGHTS

    seen = {}

    def fake(sources, data, out, **kw):
        seen.update(sources=sources)
        raise ev.DataError("stop here")

    monkeypatch.setattr(ev, "run_evaluation", fake)
    (tmp_path / "ds").mkdir()
    args = [
        "eval",
        "--compare",
        "tophat",
        "--data",
        str(tmp_path / "ds"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert runner.invoke(app, args).exit_code == 1
    assert seen["sources"] == [DEFAULT_WEIGHTS, "tophat"]


def _refused(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # typer.Exit, no traceback
    assert "error:" in result.output
    for word in words:
        assert word in result.output, (word, result.output)


def test_eval_and_score_refuse_thresholds_outside_0_1_like_predict(tmp_path: Path) -> None:
    pred, gt = _pairs(tmp_path)
    root = tmp_path / "ds"
    write_png_atomic(root / "images" / "a.png", np.zeros((8, 8), np.uint8))
    write_png_atomic(root / "masks" / "a.png", np.zeros((8, 8), bool))
    out = tmp_path / "rep"
    for value in ("0", "1", "1.5", "-0.2", "nan"):
        score = runner.invoke(app, ["score", str(pred), str(gt), "--threshold", value])
        _refused(score, "threshold must lie in (0, 1)")
        args = ["eval", "--model", "tophat", "--data", str(root), "--out", str(out)]
        _refused(runner.invoke(app, [*args, "--threshold", value]), "threshold must lie in (0, 1)")
        assert not out.exists()  # refused before the report folder is made


def test_eval_input_scale_is_passed_on_and_checked(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_png_atomic(root / "images" / "a.png", np.zeros((8, 8), np.uint8))
    write_png_atomic(root / "masks" / "a.png", np.zeros((8, 8), bool))
    args = ["eval", "--model", "tophat", "--data", str(root), "--out", str(tmp_path / "o")]
    _refused(runner.invoke(app, [*args, "--input-scale", "1.5"]), "input scale 1.5", "tophat")
    assert not (tmp_path / "o").exists()


def test_eval_tta_is_recorded(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    mask = np.zeros((16, 16), bool)
    mask[4:6, 9:11] = True
    write_png_atomic(root / "images" / "a.png", (mask * 200 + 20).astype(np.uint8))
    write_png_atomic(root / "masks" / "a.png", mask)
    out = tmp_path / "o"
    args = ["eval", "--model", "tophat", "--data", str(root), "--out", str(out), "--tta"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "flip TTA" in result.output
    assert json.loads((out / "metrics.json").read_text())["facts"]["tta"] is True


def test_eval_refuses_a_negative_gallery(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    out = tmp_path / "o"
    args = ["eval", "--model", "tophat", "--data", str(tmp_path / "ds"), "--out", str(out)]
    _refused(runner.invoke(app, [*args, "--gallery", "-1"]), "--gallery", "-1")
    assert not out.exists()


def test_eval_compare_prints_the_differences_with_intervals(
    tmp_path: Path, nuaa_sirst: Path
) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(
        app,
        ["eval", "--model", "tophat", "--compare", "mpcm", "--data", str(nuaa_sirst),
         "--limit", "6", "--gallery", "0", "--out", str(out)],
        terminal_width=200,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "differences from tophat (paired bootstrap over images)" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│ mpcm")]
    assert len(rows) == 5  # the metrics table, then IoU, nIoU, Pd and Fa with intervals
    assert all(" to " in row for row in rows[1:])
    assert (out / "differences.csv").is_file()
