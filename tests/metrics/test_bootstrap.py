"""Paired bootstrap of metric differences: point values, intervals, noise, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from istd.metrics import Metrics
from istd.metrics.bootstrap import metric_intervals, paired_bootstrap


def _records(found: list[bool], seed: int = 0, extra_blob: int | None = None) -> tuple:
    """Per-image records of a model that finds the target of image k where found[k]; with
    `extra_blob`, it also fires a false alarm on that image."""
    rng = np.random.default_rng(seed)
    m = Metrics()
    for k, hit in enumerate(found):
        gt = np.zeros((32, 32), bool)
        r, c = rng.integers(4, 24, size=2)
        gt[r : r + 3 + k % 3, c : c + 3] = True
        pred = gt.copy() if hit else np.zeros_like(gt)
        if hit and k % 2:
            pred[r, c] = False  # imperfect segmentation, so nIoU differs from IoU
        if extra_blob == k:
            pred[0:2, 0:2] = True
        m.update(pred, gt, image_id=f"img{k}")
    return m.per_image(), m.compute()


def test_point_values_are_the_metrics_of_all_images() -> None:
    (a, ma), (b, mb) = _records([True] * 6 + [False] * 4), _records([True] * 9 + [False])
    table = paired_bootstrap(a, b, n_resamples=200).set_index("metric")
    for name in ("iou", "niou", "pd", "fa"):
        assert table.loc[name, "base"] == pytest.approx(ma[name])
        assert table.loc[name, "other"] == pytest.approx(mb[name])
        assert table.loc[name, "difference"] == pytest.approx(mb[name] - ma[name])


def test_identical_models_differ_by_nothing() -> None:
    a, _ = _records([True, False, True, True])
    table = paired_bootstrap(a, list(reversed(a)), n_resamples=300)  # order does not matter
    assert (table[["difference", "low", "high", "share_better"]].to_numpy() == 0).all()


def test_a_clear_gain_excludes_zero_and_one_image_does_not() -> None:
    n = 40
    weak, _ = _records([k % 2 == 0 for k in range(n)])  # finds half the targets
    strong, _ = _records([True] * n)
    table = paired_bootstrap(weak, strong).set_index("metric")
    assert table.loc["iou", "low"] > 0 and table.loc["pd", "low"] > 0
    assert table.loc["pd", "share_better"] > 0.99
    one_more, _ = _records([k % 2 == 0 or k == 1 for k in range(n)])  # one image better
    table = paired_bootstrap(weak, one_more).set_index("metric")
    assert table.loc["pd", "difference"] == pytest.approx(1 / n)
    assert table.loc["pd", "low"] <= 0 < table.loc["pd", "high"]
    # A false alarm counts against the model: Fa rises, and fewer draws favour it.
    noisy, _ = _records([k % 2 == 0 for k in range(n)], extra_blob=0)
    table = paired_bootstrap(weak, noisy).set_index("metric")
    assert table.loc["fa", "difference"] > 0 and table.loc["fa", "share_better"] == 0


def test_same_seed_same_table_and_bad_input_is_refused() -> None:
    a, _ = _records([True, False, True, True, False])
    b, _ = _records([True, True, True, False, False])
    assert paired_bootstrap(a, b, seed=3).equals(paired_bootstrap(a, b, seed=3))
    with pytest.raises(ValueError, match="other images"):
        paired_bootstrap(a, b[:-1])
    with pytest.raises(ValueError, match="listed twice"):
        paired_bootstrap(a, b + b[:1])
    with pytest.raises(ValueError, match="without"):
        paired_bootstrap(a, [{"image": "img0"}])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, b, level=1.5)


def test_intervals_of_one_model_hold_its_values_and_narrow_with_more_images() -> None:
    few, m_few = _records([True, False, True, True, False, True])
    table = metric_intervals(few).set_index("metric")
    for name in ("iou", "niou", "pd", "fa"):
        assert table.loc[name, "value"] == pytest.approx(m_few[name])
        assert table.loc[name, "low"] <= table.loc[name, "value"] <= table.loc[name, "high"]
    many, _ = _records([True, False, True, True, False, True] * 10)
    width = metric_intervals(many).set_index("metric").eval("high - low")
    assert width["pd"] < (table["high"] - table["low"])["pd"]
    perfect, _ = _records([True] * 8)
    assert metric_intervals(perfect).set_index("metric").loc["pd", ["low", "high"]].tolist() == [
        1.0,
        1.0,
    ]
