"""`istd.engine.runs`: reading work dirs and weights folders, the runs table, the report files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from istd.engine.runs import (
    RUN_COLUMNS,
    printable_runs,
    read_run,
    read_runs,
    runs_table,
    val_curves_png,
    write_runs_report,
)
from istd.errors import DataError, IstdError

REPO = Path(__file__).resolve().parents[2]
HEAD = "epoch,step,loss,lr,val_iou,val_niou,val_pd,val_fa,images_per_s,epoch_s,wall_time_s\n"


def make_run(folder: Path, rows: list[str], train: str = "epochs: 4") -> Path:
    folder.mkdir(parents=True)
    (folder / "log.csv").write_text(HEAD + "".join(r + "\n" for r in rows))
    (folder / "config.yaml").write_text(f"model:\n  name: mim-istd\ntrain:\n  {train}\n")
    return folder


ROWS = [
    "1,2,0.9,0.01,,,,,5.0,10.0,10.0",
    "2,4,0.8,0.01,0.50,0.55,0.90,2e-05,5.0,12.0,22.0",
    "3,6,0.7,0.01,0.61,0.60,0.95,4e-05,5.0,11.0,33.0",
    "4,8,0.6,0.01,0.61,0.58,0.97,1e-05,5.0,12.0,45.0",  # ties epoch 3: best/ keeps the first
]


def test_summary_is_the_first_best_epoch_of_the_runs_metric(tmp_path: Path) -> None:
    row = read_run(make_run(tmp_path / "a", ROWS)).summary()
    assert set(row) == set(RUN_COLUMNS)
    assert row["run"] == "a" and row["epochs"] == 4 and row["planned"] == 4
    assert row["best_epoch"] == 3 and row["val_iou"] == 0.61 and row["val_fa"] == 4e-05
    assert row["hours"] == pytest.approx(45.0 / 3600)
    assert row["selected_by"] == "iou (max)" and row["starts_from"] is None
    # A run that selects on false alarms (lowest first) picks another epoch.
    fa = read_run(make_run(tmp_path / "b", ROWS, "best_metric: fa\n  best_mode: min"))
    assert fa.summary()["best_epoch"] == 4 and fa.summary()["selected_by"] == "fa (min)"


def test_summary_follows_the_runs_selection_window(tmp_path: Path) -> None:
    """With train.best_window 2, a validation is scored with the one before it."""
    rows = [*ROWS, "5,10,0.5,0.01,0.60,0.57,0.97,1e-05,5.0,12.0,57.0"]
    run = read_run(make_run(tmp_path / "w", rows, "epochs: 5\n  best_window: 2"))
    # Scores: 0.50, 0.555, 0.61, 0.605: epoch 4 ends the best pair (epoch 3 alone ties it).
    assert run.best_window == 2 and run.summary()["best_epoch"] == 4
    assert run.summary()["selected_by"] == "iou (max, mean of 2)"
    assert read_run(make_run(tmp_path / "one", rows, "epochs: 5")).summary()["best_epoch"] == 3


def test_run_without_validation_yet_and_a_fine_tune(tmp_path: Path) -> None:
    early = read_run(make_run(tmp_path / "early", ROWS[:1]))
    assert early.best_row() is None
    assert early.summary()["val_iou"] is None and early.summary()["best_epoch"] is None
    tuned = make_run(tmp_path / "tuned", ["0,0,,,0.4,0.4,0.8,3e-05,,0.0,5.0", *ROWS[:2]])
    (tuned / "init.json").write_text(json.dumps({"folder": "/some/where/base", "epoch": 7}))
    row = read_run(tuned).summary()
    assert row["starts_from"] == "base (epoch 7)" and row["best_epoch"] == 2
    shown = printable_runs(runs_table([read_run(tmp_path / "early"), read_run(tuned)]))
    assert list(shown["IoU"]) == ["n/a", "0.5000"]
    assert list(shown["epochs"]) == ["1/4", "2/4"]
    assert list(shown["Fa x1e-6"]) == ["n/a", "20.00"]


def test_released_fine_tune_starts_from_its_last_stage() -> None:
    """A weights folder has no init.json, but stages.json lists its earlier stages, oldest first."""
    x15 = read_run(REPO / "weights" / "mim-istd-nuaa-sirst-x1.5")
    assert x15.starts_from == "mim-istd-nuaa-sirst (epoch 21)"
    assert read_run(REPO / "weights" / "mim-istd-nuaa-sirst-h2").starts_from is None


def test_repeated_folder_names_are_labelled_by_path(tmp_path: Path) -> None:
    first, second = make_run(tmp_path / "x" / "run", ROWS), make_run(tmp_path / "y" / "run", ROWS)
    other = make_run(tmp_path / "other", ROWS)
    names = [run.name for run in read_runs([first, second, other])]
    assert names == [str(first), str(second), "other"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p.write_text("x"), "not a folder"),
        (lambda p: p.mkdir(), "no log.csv"),
        (lambda p: make_run(p, ["1,2,0.9,0.01,abc,,,,5.0,10.0,10.0"]), "'val_iou' holds a value"),
        (lambda p: (p.mkdir(), (p / "log.csv").write_text("a,b\n1,2\n")), "no 'epoch' column"),
        (lambda p: (p.mkdir(), (p / "log.csv").write_text("")), "unreadable log"),
        (
            lambda p: (make_run(p, ROWS), (p / "config.yaml").write_text("[1, 2")),
            "unreadable config",
        ),
        (lambda p: (make_run(p, ROWS), (p / "config.yaml").write_text("- 1\n")), "a mapping"),
        (lambda p: make_run(p, ROWS, "best_mode: up"), "best_mode"),
        (lambda p: make_run(p, ROWS, "epochs: four"), "train.epochs"),
        (
            lambda p: (make_run(p, ROWS), (p / "init.json").write_text("{}")),
            "init.json: unreadable",
        ),
        (
            lambda p: (make_run(p, ROWS), (p / "stages.json").write_text("[]")),
            "stages.json: unread",
        ),
    ],
)
def test_bad_runs_are_one_error_naming_the_file(tmp_path: Path, setup, message: str) -> None:
    folder = tmp_path / "run"
    setup(folder)
    with pytest.raises(IstdError, match=message) as info:
        read_run(folder)
    assert str(folder) in str(info.value)


def test_no_folders_is_an_error() -> None:
    with pytest.raises(DataError, match="no run folders"):
        read_runs([])


@pytest.mark.parametrize("name", ["mim-istd-nuaa-sirst", "mim-istd-nuaa-sirst-h2",
                                  "mim-istd-nuaa-sirst-x1.5", "mim-istd-nudt-sirst"])  # fmt: skip
def test_shipped_weights_best_epoch_is_the_one_they_hold(name: str) -> None:
    """The runs table names the epoch that training itself saved to best/ (config.json)."""
    folder = REPO / "weights" / name
    extra = json.loads((folder / "config.json").read_text())["extra"]
    row = read_run(folder).summary()
    assert row["best_epoch"] == extra["epoch"]
    assert row["val_iou"] == pytest.approx(extra["metrics"]["iou"], abs=1e-12)


def test_report_files_and_refusal_to_overwrite(tmp_path: Path) -> None:
    runs = read_runs([make_run(tmp_path / "a", ROWS), make_run(tmp_path / "b", ROWS[:1])])
    files = write_runs_report(tmp_path / "out", runs)
    assert sorted(f.name for f in files) == ["runs.csv", "runs.md", "val_curves.png"]
    table = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert list(table.columns) == list(RUN_COLUMNS) and list(table["run"]) == ["a", "b"]
    markdown = (tmp_path / "out" / "runs.md").read_text()
    assert "| a | 4/4 | 0.01 | 3 | 0.6100 | 0.6000 | 0.9500 | 40.00 | iou (max) |  |" in markdown
    assert "(val_curves.png)" in markdown
    assert (tmp_path / "out" / "val_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="not empty"):
        write_runs_report(tmp_path / "out", runs)
    write_runs_report(tmp_path / "out", runs[:1], overwrite=True)
    assert list(pd.read_csv(tmp_path / "out" / "runs.csv")["run"]) == ["a"]


def test_curves_without_any_validation_still_draw(tmp_path: Path) -> None:
    runs = [read_run(make_run(tmp_path / "a", ROWS[:1]))]
    assert val_curves_png(runs)[:4] == b"\x89PNG"
