"""Report pieces: overlays, strict JSON, table scaling and the Pd-Fa area."""

from __future__ import annotations

import json

import numpy as np
import pytest

from istd.metrics import Metrics
from istd.metrics.functional import auc, pd_fa_area
from istd.metrics.report import EvalRun, metrics_table, overlay, to_json


def test_overlay_outlines_gt_green_and_prediction_red() -> None:
    image = np.full((9, 9), 0.5, np.float32)
    gt = np.zeros((9, 9), bool)
    pred = np.zeros((9, 9), bool)
    gt[2, 2] = True
    pred[6, 6] = True
    rgb = overlay(image, gt, pred)
    assert rgb.shape == (9, 9, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 2]) == (0, 220, 0)  # outside the 1-px target: outline, target visible
    assert tuple(rgb[2, 2]) == (127, 127, 127)
    assert tuple(rgb[5, 6]) == (255, 40, 40)


def test_json_is_strict() -> None:
    data = json.loads(to_json({"pd": float("nan"), "x": np.float32(0.5), "n": np.int64(3)}))
    assert data == {"pd": None, "x": 0.5, "n": 3}


def test_metrics_table_scales_as_printed() -> None:
    m = Metrics()
    gt = np.zeros((100, 100), bool)
    gt[5:7, 5:7] = True
    pred = gt.copy()
    pred[50, 50] = True
    m.update(pred, gt)
    row = metrics_table([EvalRun("m", m.compute())]).iloc[0]
    assert row["Fa (x1e-6)"] == 100.0  # 1 pixel in 10,000
    assert row["Pd (%)"] == 100.0 and row["IoU (%)"] == 80.0


def test_pd_fa_area() -> None:
    # Pd 1 from Fa = 0: area 1. Pd rising linearly to 1 at fa_max: area 1/2.
    assert pd_fa_area(np.array([0.0]), np.array([1.0]), 1e-4) == 1.0
    assert pd_fa_area(np.array([1e-4]), np.array([1.0]), 1e-4) == pytest.approx(0.5)
    # Beyond the last point the curve stays flat; points beyond fa_max are cut.
    assert pd_fa_area(np.array([5e-5]), np.array([1.0]), 1e-4) == pytest.approx(0.75)
    assert pd_fa_area(np.array([2e-4]), np.array([1.0]), 1e-4) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pd_fa_area(np.array([0.0]), np.array([1.0]), 0.0)
    assert auc(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.5
