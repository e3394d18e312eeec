"""Bootstrap over images: how far a split's metrics could move, and whether a difference
between two models is larger than that.

A split of 85 images moves IoU by about a hundredth when a few images are swapped for others, so
a model that is 0.004 better on val may well be worse on test. Resampling the images with
replacement gives an interval for each metric (`metric_intervals`) and, with the same draws for
two models, for each metric's difference (`paired_bootstrap`, with the share of draws in which
the second model is better). Intervals are percentile intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["BOOTSTRAP_METRICS", "metric_intervals", "paired_bootstrap"]

# (metric, higher is better)
BOOTSTRAP_METRICS = (("iou", True), ("niou", True), ("pd", True), ("fa", False))
_NEEDED = ("image", "height", "width", "targets", "detected", "false_alarm_pixels",
           "intersection", "union", "iou")  # fmt: skip


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _metrics(table: pd.DataFrame, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric on each draw: `draws` (R, N) holds row numbers of `table`."""

    def summed(column: str) -> np.ndarray:
        return table[column].to_numpy(dtype=np.float64)[draws].sum(axis=1)

    pixels = (table["height"] * table["width"]).to_numpy(dtype=np.float64)[draws].sum(axis=1)
    per_image_iou = table["iou"].to_numpy(dtype=np.float64)[draws]
    counted = (~np.isnan(per_image_iou)).sum(axis=1)  # NaN: an empty image left out of nIoU
    return {
        "iou": _ratio(summed("intersection"), summed("union")),
        "niou": _ratio(np.nansum(per_image_iou, axis=1), counted.astype(np.float64)),
        "pd": _ratio(summed("detected"), summed("targets")),
        "fa": _ratio(summed("false_alarm_pixels"), pixels),
    }


def _table(records: Sequence[dict[str, Any]], which: str) -> pd.DataFrame:
    table = pd.DataFrame(list(records))
    missing = [c for c in _NEEDED if c not in table.columns]
    if missing or table.empty:
        raise ValueError(f"{which}: per-image records without {missing or 'any images'}")
    if table["image"].duplicated().any():
        raise ValueError(f"{which}: an image is listed twice")
    return table.set_index("image")


def _draws(n: int, n_resamples: int, level: float, seed: int) -> np.ndarray:
    if not 0.0 < level < 1.0 or n_resamples < 1:
        raise ValueError(f"level {level} must lie in (0, 1) and n_resamples {n_resamples} be >= 1")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not values.size:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def metric_intervals(
    records: Sequence[dict[str, Any]], n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """IoU, nIoU, Pd and Fa of one model on all images, with their bootstrap intervals.

    Args:
        records: per-image records (`Metrics.per_image()`, or a report's per_image.csv rows).
        n_resamples, level, seed: as for `paired_bootstrap`.

    Returns:
        One row per metric: `value`, `low`, `high`.

    Raises:
        ValueError: records without the counts needed, or a level outside (0, 1).
    """
    table = _table(records, "records").reset_index()
    draws = _draws(len(table), n_resamples, level, seed)
    full = _metrics(table, np.arange(len(table))[None, :])
    boot = _metrics(table, draws)
    rows = []
    for name, _ in BOOTSTRAP_METRICS:
        low, high = _interval(boot[name], level)
        rows.append({"metric": name, "value": float(full[name][0]), "low": low, "high": high})
    return pd.DataFrame(rows)


def paired_bootstrap(
    base: Sequence[dict[str, Any]],
    other: Sequence[dict[str, Any]],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Differences `other - base` of IoU, nIoU, Pd and Fa over the same images, with intervals.

    Args:
        base, other: per-image records of two models on one split (`Metrics.per_image()`).
        n_resamples: bootstrap draws of the images.
        level: the interval's coverage (0.95: the 2.5 and 97.5 percentiles).
        seed: the draws' seed; the same seed gives the same table.

    Returns:
        One row per metric: `base`, `other`, `difference` (on all images), `low` and `high`
        (the interval of the difference), `share_better` (draws where `other` is better:
        higher IoU, nIoU and Pd, lower Fa).

    Raises:
        ValueError: records of different images, records without the counts needed, or a
            level outside (0, 1).
    """
    a, b = _table(base, "base"), _table(other, "other")
    if set(a.index) != set(b.index):
        only = sorted(set(a.index) ^ set(b.index))
        raise ValueError(f"the two models were scored on other images (e.g. {only[:3]})")
    a, b = a.reset_index(), b.loc[a.index].reset_index()  # b in a's image order
    n = len(a)
    draws = _draws(n, n_resamples, level, seed)
    everything = np.arange(n)[None, :]
    full_a, full_b = _metrics(a, everything), _metrics(b, everything)
    boot_a, boot_b = _metrics(a, draws), _metrics(b, draws)
    rows = []
    for name, higher_is_better in BOOTSTRAP_METRICS:
        diff = boot_b[name] - boot_a[name]
        low, high = _interval(diff, level)
        diff = diff[~np.isnan(diff)]
        better = diff > 0 if higher_is_better else diff < 0
        rows.append({
            "metric": name,
            "base": float(full_a[name][0]),
            "other": float(full_b[name][0]),
            "difference": float(full_b[name][0] - full_a[name][0]),
            "low": low,
            "high": high,
            "share_better": float(better.mean()) if diff.size else float("nan"),
        })  # fmt: skip
    return pd.DataFrame(rows)
