"""Training curves: a run's `log.csv` drawn as `curves.png` (loss and validation metrics by epoch).

`fit` redraws `curves.png` in the work dir after every validated epoch, so a long run can be
watched with an image viewer; `tools/release_weights.py` draws one for each released model card.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from istd._atomic import write_atomic
from istd.metrics._figures import _png

CURVES_FILE = "curves.png"
# Validation columns drawn, with their legend names.
_VAL_COLUMNS = {"val_iou": "IoU", "val_niou": "nIoU", "val_pd": "Pd"}


def training_curves_png(log: pd.DataFrame, best_epoch: int | None = None) -> bytes:
    """PNG of training loss (top) and validation IoU, nIoU and Pd (bottom) against epoch.

    Args:
        log: rows of `log.csv` (columns `epoch`, `loss`, and the `val_*` ones where validated).
        best_epoch: marked with a vertical line and its IoU, when given.
    """
    fig = Figure(figsize=(7.0, 5.6))
    loss_ax, val_ax = fig.subplots(2, 1, sharex=True)
    loss_ax.plot(log["epoch"], log["loss"], color="0.3", linewidth=1)
    loss_ax.set_ylabel("training loss")
    loss_ax.grid(True, alpha=0.3)
    columns = [c for c in _VAL_COLUMNS if c in log]  # none before the first validation
    validated = log.dropna(subset=columns) if columns else log.iloc[:0]
    for column in columns:
        val_ax.plot(validated["epoch"], validated[column], linewidth=1, label=_VAL_COLUMNS[column])
    if len(validated) == 0:
        val_ax.text(0.5, 0.5, "no validated epoch yet", transform=val_ax.transAxes,
                    ha="center", va="center", color="0.4")  # fmt: skip
    if best_epoch is not None and best_epoch in set(validated["epoch"]):
        iou = validated.loc[validated["epoch"] == best_epoch, "val_iou"].iloc[0]
        for ax in (loss_ax, val_ax):
            ax.axvline(best_epoch, color="tab:red", linestyle=":", linewidth=1)
        val_ax.annotate(f"best: epoch {best_epoch}, IoU {iou:.4f}", (best_epoch, iou),
                        textcoords="offset points", xytext=(4, -14), fontsize=8, color="tab:red")  # fmt: skip
    val_ax.set_ylim(0, 1.02)
    val_ax.set_xlabel("epoch")
    val_ax.set_ylabel("validation")
    val_ax.grid(True, alpha=0.3)
    if len(validated):
        val_ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def write_training_curves(
    work_dir: str | Path, log: pd.DataFrame, best_epoch: int | None = None
) -> Path:
    """Draw `log` (the rows of the run's log.csv) into `work_dir/curves.png`, atomically."""
    png = training_curves_png(log, best_epoch)
    return write_atomic(Path(work_dir) / CURVES_FILE, png, overwrite=True)
