"""Training runs side by side: each run's best validation epoch, its cost, and its curves.

`istd runs` reads what `istd train` leaves in a work dir (`log.csv`, `config.yaml`, `init.json`)
or what `tools/release_weights.py` copies into a weights folder (`log.csv`,
`train_config.yaml`), so runs of different recipes can be ranked on the metric each one
selected its `best/` by, without opening every `log.csv` by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from matplotlib.figure import Figure

from istd.data.io import write_bytes_atomic
from istd.engine.config import TrainConfig, config_from_saved
from istd.engine.selection import selection_scores
from istd.errors import DataError
from istd.metrics._figures import _png
from istd.metrics.report import markdown_table, prepare_out_dir

# Run files, in a work dir and in a released weights folder.
_LOG = "log.csv"
_CONFIGS = ("config.yaml", "train_config.yaml")
_INIT = "init.json"
_STAGES = "stages.json"  # a released fine-tune's earlier stages, oldest first
# Columns of the runs table (`runs.csv`), in order.
RUN_COLUMNS = (
    "run", "epochs", "planned", "hours", "best_epoch",
    "val_iou", "val_niou", "val_pd", "val_fa", "selected_by", "starts_from",
)  # fmt: skip


@dataclass(frozen=True)
class TrainingRun:
    """One run as its files describe it.

    Attributes:
        name: how the run is labelled (its folder's name, or its path where names repeat).
        log: the rows of `log.csv`, one per epoch (epoch 0: the starting weights validated).
        planned_epochs: `train.epochs` of its config; None without a config.
        best_metric: the validation metric its `best/` was chosen by (`train.best_metric`).
        best_mode: "max" or "min".
        best_window: validations averaged into each one's score (`train.best_window`).
        starts_from: 'NAME (epoch N)', the weights it was fine-tuned from, if any.
    """

    name: str
    log: pd.DataFrame
    planned_epochs: int | None
    best_metric: str
    best_mode: str
    starts_from: str | None
    best_window: int = 1

    @property
    def epochs_done(self) -> int:
        return int(self.log["epoch"].max()) if len(self.log) else 0

    @property
    def validated(self) -> pd.DataFrame:
        """The rows with validation metrics (empty before the first validation)."""
        column = f"val_{self.best_metric}"
        if column not in self.log:
            return self.log.iloc[:0]
        return self.log.dropna(subset=[column])

    def best_row(self) -> pd.Series | None:
        """The validated epoch that `best/` holds: the first best score by the run's own
        metric and window (`istd.engine.selection`)."""
        rows = self.validated
        if not len(rows):
            return None
        values = rows[f"val_{self.best_metric}"].tolist()
        scores = pd.Series(selection_scores(values, self.best_window), index=rows.index)
        return rows.loc[scores.idxmax() if self.best_mode == "max" else scores.idxmin()]

    def summary(self) -> dict[str, Any]:
        """One row of the runs table (`RUN_COLUMNS`); metrics are None before a validation."""
        best = self.best_row()
        window = f", mean of {self.best_window}" if self.best_window > 1 else ""
        hours = None
        if "wall_time_s" in self.log and self.log["wall_time_s"].notna().any():
            hours = float(self.log["wall_time_s"].max()) / 3600
        row: dict[str, Any] = {
            "run": self.name,
            "epochs": self.epochs_done,
            "planned": self.planned_epochs,
            "hours": hours,
            "best_epoch": None if best is None else int(best["epoch"]),
            "selected_by": f"{self.best_metric} ({self.best_mode}{window})",
            "starts_from": self.starts_from,
        }
        for column in ("val_iou", "val_niou", "val_pd", "val_fa"):
            value = None if best is None else best.get(column)
            row[column] = None if value is None or pd.isna(value) else float(value)
        return row


def _read_config(path: Path) -> TrainConfig:
    """The run's saved config, read as `istd train --resume` reads it (every key checked)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: unreadable config: {exc}") from None
    return config_from_saved(raw, str(path))


def _read_log(path: Path) -> pd.DataFrame:
    try:
        log = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: unreadable log: {exc}") from None
    if "epoch" not in log:
        raise DataError(f"{path}: no 'epoch' column; not a log.csv of istd train")
    numeric = log.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & log.notna()
    if bad.any().any():
        column = bad.any().idxmax()
        raise DataError(f"{path}: column {column!r} holds a value that is not a number")
    if numeric["epoch"].isna().any():
        raise DataError(f"{path}: a row without an epoch")
    return numeric.sort_values("epoch", kind="stable").reset_index(drop=True)


def _starting_point(folder: Path) -> str | None:
    """'NAME (epoch N)': the weights a fine-tuned run started from, from its init.json (a work
    dir) or the last of its stages.json (a released weights folder); None for a run from scratch.
    """
    for record_name in (_INIT, _STAGES):
        path = folder / record_name
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record_name == _STAGES:
                record = record[-1]
            name, epoch = Path(record["folder"]).name, record.get("epoch")
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise DataError(f"{path}: unreadable: {exc!r}") from None
        return name if epoch is None else f"{name} (epoch {epoch})"
    return None


def read_run(folder: str | Path, name: str | None = None) -> TrainingRun:
    """Read a work dir of `istd train` (or a released weights folder) as a `TrainingRun`.

    Raises:
        DataError: `folder` is not a folder, has no `log.csv`, or a file of it is malformed.
        ConfigError: its config has an unknown key or a value of the wrong type.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (a work dir of istd train or a weights folder)")
    if not (folder / _LOG).is_file():
        raise DataError(f"{folder}: no {_LOG}; not a work dir of istd train or a weights folder")
    log = _read_log(folder / _LOG)
    configs = [folder / name for name in _CONFIGS if (folder / name).is_file()]
    train = _read_config(configs[0]).train if configs else None
    return TrainingRun(
        name=name or folder.name,
        log=log,
        planned_epochs=None if train is None else train.epochs,
        best_metric="iou" if train is None else train.best_metric,
        best_mode="max" if train is None else train.best_mode,
        best_window=1 if train is None else train.best_window,
        starts_from=_starting_point(folder),
    )


def read_runs(folders: Sequence[str | Path]) -> list[TrainingRun]:
    """Read several runs; where folder names repeat, the runs are labelled by their paths."""
    if not folders:
        raise DataError("no run folders given")
    names = [Path(f).name for f in folders]
    return [read_run(f, name=str(f) if names.count(Path(f).name) > 1 else None) for f in folders]


def runs_table(runs: Sequence[TrainingRun]) -> pd.DataFrame:
    """One row per run (`RUN_COLUMNS`), in the order given."""
    return pd.DataFrame([run.summary() for run in runs], columns=list(RUN_COLUMNS))


def val_curves_png(runs: Sequence[TrainingRun]) -> bytes:
    """PNG of validation IoU (top) and Fa (bottom) against epoch, one line per run.

    Each run's best epoch is marked with a dot. The axes leave out the first epochs' extremes
    (IoU below the lowest decile less 0.05, Fa above twice the highest decile) so that the
    epochs where runs differ fill the plot; Fa is on a log scale.
    """
    fig = Figure(figsize=(10.0, 6.4))
    iou_ax, fa_ax = fig.subplots(2, 1, sharex=True)
    ious, fas = [], []
    for k, run in enumerate(runs):
        rows = run.log.dropna(subset=["val_iou"]) if "val_iou" in run.log else run.log.iloc[:0]
        if not len(rows):
            continue
        style = {"color": f"C{k % 10}", "linestyle": ("-", "--", ":")[k // 10 % 3]}
        iou_ax.plot(rows["epoch"], rows["val_iou"], linewidth=1, label=run.name, **style)
        ious.append(rows["val_iou"])
        best = run.best_row()
        if best is not None:
            iou_ax.plot(best["epoch"], best["val_iou"], "o", markersize=5, color=style["color"])
        if "val_fa" in rows:
            fa = rows["val_fa"].where(rows["val_fa"] > 0) * 1e6  # log scale: zero not drawn
            fa_ax.plot(rows["epoch"], fa, linewidth=1, **style)
            fas.append(fa.dropna())
            if best is not None and best["val_fa"] > 0:
                fa_ax.plot(best["epoch"], best["val_fa"] * 1e6, "o", markersize=5,
                           color=style["color"])  # fmt: skip
    if not ious:
        iou_ax.text(0.5, 0.5, "no validated epoch in any run", transform=iou_ax.transAxes,
                    ha="center", va="center", color="0.4")  # fmt: skip
    else:
        every_iou = pd.concat(ious)
        iou_ax.set_ylim(max(0.0, every_iou.quantile(0.1) - 0.05), min(1.0, every_iou.max() + 0.02))
        iou_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
        every_fa = pd.concat(fas) if fas else pd.Series(dtype=float)
        if len(every_fa):
            fa_ax.set_yscale("log")
            fa_ax.set_ylim(
                every_fa.min() / 1.5, max(every_fa.quantile(0.9) * 2, every_fa.min() * 2)
            )
    iou_ax.set_ylabel("validation IoU")
    fa_ax.set_ylabel("validation Fa (x 1e-6)")
    fa_ax.set_xlabel("epoch")
    for ax in (iou_ax, fa_ax):
        ax.grid(True, alpha=0.3, which="both")
    iou_ax.set_title("validation by epoch (dot: the epoch in best/)", fontsize=9)
    return _png(fig)


def printable_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The runs table as text: metrics to 4 places, Fa in 1e-6, hours to 2 places, n/a blanks."""

    def text(value: Any, fmt: str, scale: float = 1.0) -> str:
        return "n/a" if value is None or pd.isna(value) else format(value * scale, fmt)

    shown = pd.DataFrame({"run": table["run"]})
    done_planned = zip(table["epochs"], table["planned"], strict=True)
    shown["epochs"] = [f"{done}/{text(planned, '.0f')}" for done, planned in done_planned]
    shown["hours"] = [text(v, ".2f") for v in table["hours"]]
    shown["best epoch"] = [text(v, ".0f") for v in table["best_epoch"]]
    for column, header in (("val_iou", "IoU"), ("val_niou", "nIoU"), ("val_pd", "Pd")):
        shown[header] = [text(v, ".4f") for v in table[column]]
    shown["Fa x1e-6"] = [text(v, ".2f", 1e6) for v in table["val_fa"]]
    shown["selected by"] = table["selected_by"]
    shown["starts from"] = [v if isinstance(v, str) else "" for v in table["starts_from"]]
    return shown


def runs_markdown(table: pd.DataFrame, figure: str | None = "val_curves.png") -> str:
    """`runs.md`: the runs table in Markdown, and the curves figure under it."""
    lines = [
        "# Training runs",
        "",
        "Validation metrics of each run's best epoch (the checkpoint in `best/`, chosen by the "
        "metric in *selected by*; best epoch 0: no epoch beat the weights a fine-tune started "
        "from); hours: training and validation time summed over epochs.",
        "",
        markdown_table(printable_runs(table)),
    ]
    if figure:
        lines += ["", f"![validation IoU and Fa by epoch]({figure})"]
    return "\n".join(lines) + "\n"


def write_runs_report(
    out_dir: str | Path, runs: Sequence[TrainingRun], overwrite: bool = False
) -> list[Path]:
    """Write `runs.csv`, `val_curves.png` and `runs.md` into `out_dir`; return their paths.

    Raises:
        DataError: `out_dir` is a file, or a non-empty folder and `overwrite` is false.
    """
    out = prepare_out_dir(out_dir, overwrite)
    table = runs_table(runs)
    files = {
        "runs.csv": table.to_csv(index=False).encode("utf-8"),
        "val_curves.png": val_curves_png(runs),
        "runs.md": runs_markdown(table).encode("utf-8"),
    }
    return [
        write_bytes_atomic(out / name, data, overwrite=overwrite) for name, data in files.items()
    ]
