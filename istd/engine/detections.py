"""Detections: the connected objects of a thresholded probability map, one row per object.

Infrared small targets are a few pixels wide, so an object is reduced to its centroid, area,
bounding box and peak probability; these rows are what `istd predict` writes to its CSV files
and what the tracker (`istd.engine.tracking`) and the video evaluation consume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np
import pandas as pd

from istd.errors import DataError

__all__ = ["DETECTION_COLUMNS", "Detection", "detections_to_frame", "find_detections"]

#: Column order of every detections CSV (videos add `track_id` at the end).
DETECTION_COLUMNS = ["target_id", "cx", "cy", "area", "x", "y", "w", "h", "score"]


@dataclass(frozen=True)
class Detection:
    """One connected object in a mask; all coordinates are 0-based pixels.

    Attributes:
        target_id: index of the object in its frame, 0, 1, ... in raster order of first pixel.
        cx: centroid column (mean of the object's pixel x indices).
        cy: centroid row (mean of the object's pixel y indices).
        area: number of pixels.
        x: left column of the bounding box.
        y: top row of the bounding box.
        w: bounding-box width in pixels.
        h: bounding-box height in pixels.
        score: the maximum probability inside the object.
    """

    target_id: int
    cx: float
    cy: float
    area: int
    x: int
    y: int
    w: int
    h: int
    score: float


def find_detections(
    prob: np.ndarray, mask: np.ndarray | None = None, threshold: float = 0.5
) -> list[Detection]:
    """Split a mask into 8-connected objects and describe each one.

    Args:
        prob: probability map (H, W), float in [0, 1].
        mask: boolean mask (H, W); `prob > threshold` when omitted.
        threshold: used only when `mask` is omitted.

    Returns:
        One `Detection` per object, in raster order of each object's first pixel.

    Raises:
        DataError: `prob` is not 2-D, or `mask` has another shape.

    Example:
        >>> prob = np.zeros((8, 8), np.float32); prob[2:4, 5:7] = 0.9
        >>> find_detections(prob)[0].area
        4
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise DataError(f"probability map must be 2-D (H, W), got shape {prob.shape}")
    mask = prob > threshold if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != prob.shape:
        raise DataError(f"mask shape {mask.shape} differs from probability shape {prob.shape}")
    if not mask.any():
        return []
    # 8-connectivity: a diagonal step still belongs to the same point-like target.
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    # Peak probability per object; an unbuffered scatter-max over the object pixels is much
    # faster than scipy.ndimage.maximum when a frame holds hundreds of objects.
    inside = labels > 0
    pixel_labels = labels[inside]  # (P,) labels of the object pixels, in raster order
    peaks = np.full(count, -np.inf)
    np.maximum.at(peaks, pixel_labels, prob[inside].astype(np.float64))
    # OpenCV's block-based labelling does not number objects in raster order, so order them by
    # the raster index of their first pixel (the first occurrence of each label in P).
    _, first = np.unique(pixel_labels, return_index=True)  # (count - 1,) for labels 1, 2, ...
    order = 1 + np.argsort(first)
    detections = []
    for k, label in enumerate(order):
        x, y, w, h, area = (int(v) for v in stats[label])
        cx, cy = centroids[label]
        detections.append(
            Detection(
                target_id=k,
                cx=float(cx),
                cy=float(cy),
                area=area,
                x=x,
                y=y,
                w=w,
                h=h,
                score=float(peaks[label]),
            )
        )
    return detections


def detections_to_frame(detections: list[Detection]) -> pd.DataFrame:
    """Detections as a DataFrame with the columns `DETECTION_COLUMNS` (empty frames keep them)."""
    if not detections:
        return pd.DataFrame({f.name: pd.Series(dtype=_DTYPES[f.name]) for f in fields(Detection)})
    return pd.DataFrame([asdict(d) for d in detections], columns=DETECTION_COLUMNS)


_DTYPES = {
    "target_id": "int64",
    "cx": "float64",
    "cy": "float64",
    "area": "int64",
    "x": "int64",
    "y": "int64",
    "w": "int64",
    "h": "int64",
    "score": "float64",
}
