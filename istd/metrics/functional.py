"""Named reductions of per-image statistics into IoU, nIoU, Pd, Fa, precision, recall and F1.

Each function takes counts (scalars or 1-D arrays over images, from `istd.metrics.stats`) and
applies one documented rule. Dataset-level ratios sum the counts first, then divide; nIoU
averages per-image ratios. A ratio whose denominator is zero returns `zero_division` (NaN by
default: the quantity is undefined, e.g. Pd on a set without targets).
See docs/metrics.md for the definitions.
"""

from __future__ import annotations

import numpy as np

NIOU_EMPTY = ("zero", "one", "skip")

ArrayLike = np.ndarray | int | float

# numpy >= 2.0 names it `trapezoid`; 1.26 (allowed by pyproject) only has `trapz`.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def _ratio(num: float, den: float, zero_division: float) -> float:
    return float(num) / float(den) if den > 0 else float(zero_division)


def iou(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, zero_division: float = float("nan")) -> float:
    """Dataset IoU ("mIoU" in papers): sum of intersections / sum of unions over all images."""
    tp_s, fp_s, fn_s = (float(np.sum(x)) for x in (tp, fp, fn))
    return _ratio(tp_s, tp_s + fp_s + fn_s, zero_division)


def per_image_iou(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, empty: str = "zero"
) -> np.ndarray:
    """IoU of each image; images where prediction and ground truth are both empty follow `empty`.

    Args:
        tp, fp, fn: (N,) per-image pixel counts.
        empty: `"zero"` (ACM's convention, the default), `"one"`, or `"skip"` (NaN, left out of
            the mean).

    Returns:
        float64 (N,) per-image IoU.

    Raises:
        ValueError: unknown `empty` policy.
    """
    if empty not in NIOU_EMPTY:
        raise ValueError(f"unknown niou_empty {empty!r}; expected one of {NIOU_EMPTY}")
    tp, fp, fn = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (tp, fp, fn))
    union = tp + fp + fn
    fill = {"zero": 0.0, "one": 1.0, "skip": np.nan}[empty]
    out = np.full(tp.shape, fill, dtype=np.float64)
    np.divide(tp, union, out=out, where=union > 0)
    return out


def niou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, empty: str = "zero") -> float:
    """nIoU: mean over images of per-image IoU (see `per_image_iou` for the empty policy)."""
    values = per_image_iou(tp, fp, fn, empty)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def pd(n_matched: ArrayLike, n_targets: ArrayLike, zero_division: float = float("nan")) -> float:
    """Probability of detection: matched targets / targets, summed over images."""
    return _ratio(np.sum(n_matched), np.sum(n_targets), zero_division)


def fa(fa_pixels: ArrayLike, n_pixels: ArrayLike, zero_division: float = float("nan")) -> float:
    """False-alarm rate: pixels of unmatched predicted objects / all pixels (a fraction)."""
    return _ratio(np.sum(fa_pixels), np.sum(n_pixels), zero_division)


def precision(tp: ArrayLike, fp: ArrayLike, zero_division: float = float("nan")) -> float:
    """tp / (tp + fp), counts summed first. Pixels or targets, depending on the counts given."""
    tp_s, fp_s = float(np.sum(tp)), float(np.sum(fp))
    return _ratio(tp_s, tp_s + fp_s, zero_division)


def recall(tp: ArrayLike, fn: ArrayLike, zero_division: float = float("nan")) -> float:
    """tp / (tp + fn), counts summed first."""
    tp_s, fn_s = float(np.sum(tp)), float(np.sum(fn))
    return _ratio(tp_s, tp_s + fn_s, zero_division)


def f1(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, zero_division: float = float("nan")) -> float:
    """2 tp / (2 tp + fp + fn), counts summed first (the harmonic mean of precision and recall)."""
    tp_s, fp_s, fn_s = (float(np.sum(x)) for x in (tp, fp, fn))
    return _ratio(2 * tp_s, 2 * tp_s + fp_s + fn_s, zero_division)


def roc_edges(n_bins: int, logit_range: float = 14.0) -> np.ndarray:
    """Lower edges (K,) of the ROC's probability bins: 0, then a sigmoid of an even logit grid.

    A trained network puts most background pixels below 1e-3 and most targets above 0.999, so
    equal steps in probability would lump them into the two end bins; equal steps in logit
    (from -`logit_range` to +`logit_range`) keep resolution where the scores are.
    """
    logits = np.linspace(-logit_range, logit_range, n_bins - 1)
    return np.concatenate([[0.0], 1.0 / (1.0 + np.exp(-logits))])  # (K,)


def roc_from_histograms(
    pos_hist: np.ndarray, neg_hist: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Pixel ROC from per-class histograms of probabilities.

    Args:
        pos_hist: (K,) counts of ground-truth foreground pixels per probability bin.
        neg_hist: (K,) counts of background pixels per bin.
        edges: (K,) increasing lower bin edges, edges[0] = 0 (see `roc_edges`).

    Returns:
        (thresholds (K + 1,), fpr (K + 1,), tpr (K + 1,)). Point k (k < K) counts pixels with
        probability >= edges[k]; point 0 is everything positive (fpr = tpr = 1), point K nothing
        positive (threshold reported as 1).
    """
    # Reverse cumulative sums: pixels in bin k or above are positive at threshold edges[k].
    tp = np.concatenate([np.cumsum(pos_hist[::-1])[::-1], [0]]).astype(np.float64)  # (K + 1,)
    fp = np.concatenate([np.cumsum(neg_hist[::-1])[::-1], [0]]).astype(np.float64)  # (K + 1,)
    tpr = tp / tp[0] if tp[0] > 0 else np.full_like(tp, np.nan)
    fpr = fp / fp[0] if fp[0] > 0 else np.full_like(fp, np.nan)
    thresholds = np.concatenate([edges, [1.0]])
    return thresholds, fpr, tpr


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under a monotone curve y(x) (NaN when a coordinate is undefined).

    Points are sorted by x, ties by y, so a vertical step (several y at one x) is walked upwards.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    order = np.lexsort((y, x))
    return float(_trapezoid(y[order], x[order]))


def pd_fa_area(fa_values: np.ndarray, pd_values: np.ndarray, fa_max: float) -> float:
    """Normalised area under the Pd-Fa curve for Fa in [0, fa_max], in [0, 1].

    The curve starts at (0, 0) (a threshold above every probability predicts nothing), is linear
    between measured points and, past the largest measured Fa, stays at the Pd reached there;
    points beyond `fa_max` are cut by interpolating at `fa_max`.
    """
    if fa_max <= 0:
        raise ValueError(f"fa_max must be > 0, got {fa_max}")
    fa_values = np.asarray(fa_values, dtype=np.float64)
    pd_values = np.asarray(pd_values, dtype=np.float64)
    if fa_values.size == 0 or np.isnan(pd_values).any():
        return float("nan")
    order = np.lexsort((pd_values, fa_values))
    xs = np.concatenate([[0.0], fa_values[order]])
    ys = np.concatenate([[0.0], pd_values[order]])
    # Keep the highest Pd reached so far: the curve is the best detection at each Fa budget.
    ys = np.maximum.accumulate(ys)
    grid = np.union1d(xs[xs <= fa_max], [fa_max])
    return float(_trapezoid(np.interp(grid, xs, ys), grid) / fa_max)
