"""Detections: connected objects, centroids, boxes and peak scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from istd.engine.detections import DETECTION_COLUMNS, detections_to_frame, find_detections
from istd.errors import DataError


def test_two_objects_described() -> None:
    prob = np.zeros((20, 30), np.float32)
    prob[2:4, 5:8] = 0.8  # 2 x 3 block
    prob[3, 6] = 0.95
    prob[10, 20] = 0.7
    prob[11, 21] = 0.6  # diagonal neighbour: same object under 8-connectivity
    dets = find_detections(prob, threshold=0.5)
    assert len(dets) == 2
    a, b = dets
    assert (a.x, a.y, a.w, a.h, a.area) == (5, 2, 3, 2, 6)
    assert a.cx == pytest.approx(6.0) and a.cy == pytest.approx(2.5)
    assert a.score == pytest.approx(0.95)
    assert (b.x, b.y, b.w, b.h, b.area) == (20, 10, 2, 2, 2)
    assert b.cx == pytest.approx(20.5) and b.score == pytest.approx(0.7)
    assert [d.target_id for d in dets] == [0, 1]


def test_explicit_mask_and_empty() -> None:
    prob = np.full((5, 5), 0.2, np.float32)
    assert find_detections(prob) == []
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = True
    (det,) = find_detections(prob, mask)
    assert det.score == pytest.approx(0.2) and det.area == 1


def test_one_pixel_image() -> None:
    (det,) = find_detections(np.ones((1, 1), np.float32))
    assert (det.cx, det.cy, det.w, det.h) == (0.0, 0.0, 1, 1)


def test_bad_shapes() -> None:
    with pytest.raises(DataError, match="2-D"):
        find_detections(np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="differs"):
        find_detections(np.zeros((2, 2)), np.zeros((3, 2), bool))


def test_frame_columns() -> None:
    empty = detections_to_frame([])
    assert list(empty.columns) == DETECTION_COLUMNS and len(empty) == 0
    prob = np.zeros((4, 4), np.float32)
    prob[1, 1] = 1.0
    frame = detections_to_frame(find_detections(prob))
    assert list(frame.columns) == DETECTION_COLUMNS and frame.loc[0, "area"] == 1


def test_target_ids_follow_raster_order_of_first_pixel() -> None:
    # OpenCV labels 2 x 2 blocks: the pixel at (x=0, y=1) got label 1 before the one at (10, 0).
    prob = np.zeros((4, 12), np.float32)
    prob[0, 10] = 0.9
    prob[1, 0] = 0.8
    first, second = find_detections(prob)
    assert (first.target_id, first.x, first.y) == (0, 10, 0)
    assert (second.target_id, second.x, second.y) == (1, 0, 1)
    # Many objects: the same order as scipy's labelling, which numbers objects in raster order.
    rng = np.random.default_rng(0)
    prob = (rng.random((64, 64)) > 0.8).astype(np.float32)
    labels, count = ndimage.label(prob > 0.5, structure=np.ones((3, 3)))
    dets = find_detections(prob)
    assert len(dets) == count > 20
    for d in dets:
        ys, xs = np.nonzero(labels == d.target_id + 1)
        assert (d.area, d.x, d.y) == (len(ys), xs.min(), ys.min())
        assert (d.cx, d.cy) == pytest.approx((xs.mean(), ys.mean()))
