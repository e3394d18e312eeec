"""Tracker: constant-velocity Kalman filter, gated optimal assignment, track life cycle."""

from __future__ import annotations

import pytest

from istd.engine.detections import Detection
from istd.engine.tracking import Tracker, TrackerConfig
from istd.errors import ConfigError


def _det(x: float, y: float) -> Detection:
    return Detection(target_id=0, cx=x, cy=y, area=4, x=int(x), y=int(y), w=2, h=2, score=0.9)


def test_two_crossing_free_targets_keep_their_ids() -> None:
    tracker = Tracker(TrackerConfig(min_hits=3, max_misses=3))
    seen: dict[int, list[float]] = {}
    for t in range(20):
        a, b = _det(10 + 2 * t, 50), _det(100 - 1.5 * t, 20 + t)
        # Detections arrive in alternating order: ids must follow positions, not list order.
        dets = [a, b] if t % 2 else [b, a]
        ids = tracker.update(dets)
        if t < 2:
            assert ids == [-1, -1]  # tentative until min_hits frames
        else:
            for d, i in zip(dets, ids, strict=True):
                seen.setdefault(i, []).append(d.cx)
    assert set(seen) == {0, 1}
    # Each id stays with one target: x either strictly increases or strictly decreases.
    for xs in seen.values():
        steps = [b - a for a, b in zip(xs, xs[1:], strict=False)]
        assert all(s > 0 for s in steps) or all(s < 0 for s in steps)


def test_gap_bridged_then_terminated() -> None:
    tracker = Tracker(TrackerConfig(min_hits=2, max_misses=3))
    for t in range(5):
        ids = tracker.update([_det(10 + t, 10)])
    assert ids == [0]
    tracker.update([])
    tracker.update([])  # two misses < 3: track coasts at constant velocity
    assert tracker.update([_det(17, 10)]) == [0]
    for _ in range(3):
        tracker.update([])
    assert tracker.tracks == []
    # A reappearance later is a new, tentative track, then id 1.
    assert tracker.update([_det(30, 10)]) == [-1]
    assert tracker.update([_det(30, 10)]) == [1]


def test_gate_refuses_far_detection() -> None:
    tracker = Tracker(TrackerConfig(gate=5.0, min_hits=1))
    assert tracker.update([_det(0, 0)]) == [0]
    assert tracker.update([_det(50, 50)]) == [1]  # too far: a new track


def test_single_frame_false_alarms_get_no_id() -> None:
    tracker = Tracker()
    for t in range(10):
        assert tracker.update([_det(10 + 30 * (t % 3), 5 + 20 * (t % 4))]) == [-1]


def test_bad_config() -> None:
    with pytest.raises(ConfigError):
        TrackerConfig(gate=0)
    with pytest.raises(ConfigError):
        TrackerConfig(min_hits=0)
