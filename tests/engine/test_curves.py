"""`curves.png`: a run's log drawn by epoch, the best epoch marked."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from istd.engine.curves import training_curves_png, write_training_curves


def _log(epochs: int, val_every: int) -> pd.DataFrame:
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "loss": 1.0 / e}
        if e % val_every == 0:
            row.update(val_iou=e / (epochs + 1), val_niou=0.5, val_pd=0.9)
        rows.append(row)
    return pd.DataFrame(rows)


def _decode(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)  # (H, W, 3) BGR


def _red_pixels(png: bytes) -> int:
    bgr = _decode(png).astype(int)
    return int(((bgr[..., 2] > 180) & (bgr[..., 1] < 80) & (bgr[..., 0] < 80)).sum())


def test_best_epoch_is_marked_and_log_without_validation_draws(tmp_path: Path) -> None:
    log = _log(12, 3)
    plain, marked = training_curves_png(log), training_curves_png(log, best_epoch=9)
    assert plain.startswith(b"\x89PNG")
    assert _red_pixels(marked) > _red_pixels(plain) + 100  # the dotted line and its label
    assert training_curves_png(log, best_epoch=10) == plain  # not a validated epoch: no mark
    assert training_curves_png(_log(2, 5)).startswith(b"\x89PNG")  # nothing validated yet

    path = write_training_curves(tmp_path, log, best_epoch=9)
    assert path == tmp_path / "curves.png"
    assert np.array_equal(cv2.imread(str(path)), _decode(marked))
