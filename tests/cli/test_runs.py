"""`istd runs` through the Typer app, on the repository's own runs (docs/runs, weights/)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from istd.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def test_runs_prints_the_table_and_writes_the_report(tmp_path: Path) -> None:
    shipped = REPO / "weights" / "mim-istd-nuaa-sirst-h2"
    tuned = REPO / "docs" / "runs" / "mim-istd-nuaa-sirst-x1.5-paste"
    out = tmp_path / "out"
    argv = ["runs", str(shipped), str(tuned), "--out", str(out)]
    result = runner.invoke(app, argv, env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    assert "selected by iou (max)" in result.output
    # h2: 300 epochs, best/ from epoch 188 (val IoU 0.7333), as its model card says.
    assert "300/300" in result.output and "188" in result.output and "0.7333" in result.output
    assert "mim-istd-nuaa-sirst-x1.5-paste was fine-tuned from mim-istd-nuaa-sirst" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["runs.csv", "runs.md", "val_curves.png"]
    again = runner.invoke(app, ["runs", str(shipped), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_runs_names_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 1
    assert "no log.csv" in result.output and "Traceback" not in result.output
