"""`istd score`: the canonical metrics for any model's saved predictions.

Predictions and ground-truth masks are paired by file stem; the suffixes `_pixels0` (SIRST
masks), `_mask` and `_prob` are recognised and stripped. A prediction is either a binary mask
(only 0 and full scale) or a probability map scaled to the full range of its bit depth (8-bit:
value / 255, 16-bit: value / 65535). Files are read with `istd.data.io`.

Some datasets ship broken masks and their corrections beside them (NUAA-SIRST's Misc_111 mask
is 592x400 for a 325x220 image; `<root>/fixes/` holds the corrected one, see
`istd.data.layouts`). `fixes=` applies such a folder: a file there replaces the ground-truth
mask of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from istd.data.io import IMAGE_EXTENSIONS, decode_image, read_mask, to_grey
from istd.errors import DataError
from istd.metrics.metrics import Metrics

__all__ = ["SUFFIXES", "ScoreResult", "pair_key", "read_prediction", "score_folders"]

SUFFIXES = ("_pixels0", "_mask", "_prob")


def pair_key(path: Path) -> str:
    """The pairing key of a file: its stem without one recognised suffix."""
    stem = path.stem
    for suffix in SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _index(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        key = pair_key(path)
        if key in found:
            raise DataError(
                f"{path} and {found[key]} both claim image {key!r} in the {what} folder"
            )
        found[key] = path
    if not found:
        raise DataError(f"{folder}: no image files in the {what} folder")
    return found


def read_prediction(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a saved prediction.

    Args:
        path: a prediction file; a `_prob` stem is always read as a probability map.

    Returns:
        (H, W) bool for a binary mask (values 0 and full scale only, and no `_prob` suffix),
        else (H, W) float32 probabilities in [0, 1] (value / 255 or value / 65535).

    Raises:
        DataError: unreadable file, or a 0/1 mask (non-zero values never above 1), which would
            otherwise silently read as probabilities of at most 1/255.
    """
    raw = decode_image(path)
    prob = to_grey(raw)  # (H, W) float32 in [0, 1]
    top = float(prob.max()) * raw.full_scale
    if 0 < top <= 1.0 + 1e-6:
        raise DataError(
            f"{path}: values are only 0 and 1; save masks as 0/{int(raw.full_scale)} (or "
            "probabilities scaled to the full range)"
        )
    # A map holding only 0 and full scale is a mask (no threshold sweep is possible), unless
    # its name says probability: an all-empty probability map must keep the sweeps defined.
    if not Path(path).stem.endswith("_prob") and np.isin(prob, (0.0, 1.0)).all():
        return prob == 1.0
    return prob


@dataclass
class ScoreResult:
    """What `score_folders` found.

    Attributes:
        metrics: `Metrics.compute()`.
        per_image: `Metrics.per_image()`, in ground-truth order.
        unpaired: prediction files with no ground truth (ignored, listed for the user).
        curves: `Metrics.curves()` when every prediction was a probability map, else None.
        fixed: ground-truth files replaced by their corrected version from `fixes`.
    """

    metrics: dict[str, Any]
    per_image: list[dict[str, Any]]
    unpaired: list[Path]
    curves: dict[str, Any] | None
    fixed: list[Path] = field(default_factory=list)


def _size_mismatch(
    pred_path: Path, pred: np.ndarray, gt_path: Path, gt: np.ndarray, fixes: Path | None
) -> DataError:
    """The error for a prediction whose size differs from its ground truth. Either may be
    wrong: a dataset can ship a broken mask (with its fix in ``<root>/fixes/``)."""
    sizes = (
        f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} but ground truth "
        f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}"
    )
    beside = gt_path.parent.parent / "fixes"
    if fixes is None and (beside / gt_path.name).is_file():
        return DataError(
            f"{sizes}; the ground-truth mask is likely the broken one: the dataset ships a "
            f"corrected mask {beside / gt_path.name}; score with --fixes {beside}"
        )
    hint = "" if fixes is not None else " (or pass corrected ground-truth masks with --fixes DIR)"
    return DataError(f"{sizes}; save predictions at native resolution{hint}")


def score_folders(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    threshold: float = 0.5,
    matching: str = "first",
    niou_empty: str = "zero",
    on_step: Callable[[int, int], None] | None = None,
    fixes: str | os.PathLike[str] | None = None,
) -> ScoreResult:
    """Score every ground-truth mask in `gt_dir` against its prediction in `pred_dir`.

    Args:
        pred_dir: saved predictions (PNG, TIFF, BMP; 8 or 16 bits; masks or probability maps).
        gt_dir: ground-truth masks (target above half of full scale).
        threshold: probability threshold (a binary mask is used as it is).
        matching: `first` (BasicIRSTD) or `optimal` target matching.
        niou_empty: nIoU policy for images where prediction and ground truth are empty.
        on_step: called as on_step(done, total) after each image.
        fixes: a folder of corrected ground-truth masks (a dataset's ``fixes/``); a file there
            replaces the ground-truth file of the same name.

    Returns:
        The metrics, per-image records, unpaired prediction files and replaced masks.

    Raises:
        DataError: a missing or unreadable prediction (named), a size mismatch, a bad folder.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    fixes_dir = None if fixes is None else Path(fixes)
    if fixes_dir is not None and not fixes_dir.is_dir():
        raise DataError(f"{fixes_dir}: fixes folder not found")
    gts = _index(gt_dir, "ground-truth")
    preds = _index(pred_dir, "prediction")
    metrics = Metrics(threshold=threshold, matching=matching, niou_empty=niou_empty)
    fixed: list[Path] = []
    for done, (key, gt_path) in enumerate(gts.items(), start=1):
        pred_path = preds.get(key)
        if pred_path is None:
            tried = ", ".join(f"{key}{s}.png" for s in ("", *SUFFIXES))
            raise DataError(f"{pred_dir}: no prediction for {gt_path.name} (looked for {tried})")
        if fixes_dir is not None and (fixes_dir / gt_path.name).is_file():
            fixed.append(gt_path)
            gt_path = fixes_dir / gt_path.name
        pred = read_prediction(pred_path)
        gt = read_mask(gt_path)
        if pred.shape != gt.shape:
            raise _size_mismatch(pred_path, pred, gt_path, gt, fixes_dir)
        metrics.update(pred, gt, image_id=key)
        if on_step is not None:
            on_step(done, len(gts))
    unpaired = [p for k, p in preds.items() if k not in gts]
    curves = metrics.curves() if metrics.has_curves else None
    return ScoreResult(metrics.compute(), metrics.per_image(), unpaired, curves, fixed)
