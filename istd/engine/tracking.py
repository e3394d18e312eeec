"""A small multi-object tracker for point-like infrared targets.

Each track is a constant-velocity Kalman filter on the target's centroid (state x, y, vx, vy;
one frame per time step). Every frame, detections are assigned to the predicted track positions
by optimal assignment (`scipy.optimize.linear_sum_assignment`, the Hungarian method) on the
Euclidean distance, with pairs farther apart than a gate refused. This is the SORT recipe
(Bewley et al., "Simple Online and Realtime Tracking", ICIP 2016) reduced to centroids, since a
small target has no useful box shape.

Track life cycle (the rules `TrackerConfig` holds):

- **Birth:** a detection no track claims starts a *tentative* track.
- **Confirmation:** a tentative track becomes *confirmed* once it has been matched in
  `min_hits` frames; it then gets the next track id (0, 1, 2, ...). Detections on tentative
  tracks get the id -1, so a one-frame false alarm never receives an id.
- **Termination:** a track that goes `max_misses` consecutive frames without a match is
  deleted; a tentative track is deleted on its first miss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from istd.engine.detections import Detection
from istd.errors import ConfigError

__all__ = ["Track", "Tracker", "TrackerConfig"]


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker rules and noise levels.

    Attributes:
        gate: largest distance in pixels between a predicted track position and a detection
            that may be matched.
        min_hits: matched frames before a track is confirmed and receives an id.
        max_misses: consecutive unmatched frames after which a confirmed track ends.
        process_noise: standard deviation of the acceleration, pixels per frame squared.
        measurement_noise: standard deviation of a detected centroid, pixels.
    """

    gate: float = 12.0
    min_hits: int = 3
    max_misses: int = 5
    process_noise: float = 1.0
    measurement_noise: float = 1.0

    def __post_init__(self) -> None:
        if not self.gate > 0:
            raise ConfigError(f"tracker gate must be > 0 pixels, got {self.gate}")
        if self.min_hits < 1 or self.max_misses < 1:
            raise ConfigError(
                f"tracker min_hits and max_misses must be >= 1, got {self.min_hits}, {self.max_misses}"
            )
        if not (self.process_noise > 0 and self.measurement_noise > 0):
            raise ConfigError("tracker noise levels must be > 0")


# Constant-velocity model with a unit time step: x' = x + vx, vx' = vx.
_F = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
_H = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float64)


@dataclass
class Track:
    """One Kalman-filtered target: state (4,) = x, y, vx, vy and covariance (4, 4)."""

    state: np.ndarray
    covariance: np.ndarray
    hits: int = 1
    misses: int = 0
    track_id: int = -1

    @property
    def confirmed(self) -> bool:
        """Whether the track has an id."""
        return self.track_id >= 0

    @property
    def position(self) -> np.ndarray:
        """Current (x, y) estimate, shape (2,)."""
        return self.state[:2]


class Tracker:
    """Assign frame-by-frame detections to tracks; call `update` once per frame, in order.

    Args:
        config: the rules; `TrackerConfig()` when omitted.

    Example:
        >>> tracker = Tracker()
        >>> for detections in frames:           # list[Detection] per frame
        ...     ids = tracker.update(detections)  # one track id (or -1) per detection
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        q = self.config.process_noise**2
        # Discrete white-noise acceleration model for a unit time step.
        g = np.array([[0.5, 0], [0, 0.5], [1, 0], [0, 1]], dtype=np.float64)
        self._Q = g @ g.T * q
        self._R = np.eye(2) * self.config.measurement_noise**2
        self.tracks: list[Track] = []
        self._next_id = 0
        self.frame = -1

    def _new_track(self, xy: np.ndarray) -> Track:
        state = np.array([xy[0], xy[1], 0.0, 0.0])
        # Position known to the measurement noise; velocity unknown, a few pixels per frame.
        covariance = np.diag([self._R[0, 0], self._R[1, 1], 25.0, 25.0])
        return Track(state=state, covariance=covariance)

    def _predict(self) -> None:
        if not self.tracks:
            return
        # All tracks at once: x' = F x, P' = F P F^T + Q.
        states = np.stack([t.state for t in self.tracks]) @ _F.T  # (T, 4)
        covs = _F @ np.stack([t.covariance for t in self.tracks]) @ _F.T + self._Q  # (T, 4, 4)
        for track, state, cov in zip(self.tracks, states, covs, strict=True):
            track.state, track.covariance = state, cov

    def _correct(self, tracks: list[Track], points: np.ndarray) -> None:
        """Kalman update of `tracks` with their matched centroids `points` (M, 2), batched."""
        if not tracks:
            return
        states = np.stack([t.state for t in tracks])  # (M, 4)
        covs = np.stack([t.covariance for t in tracks])  # (M, 4, 4)
        # H selects (x, y), so H P H^T is P's top-left block and P H^T its first two columns.
        innovation_cov = covs[:, :2, :2] + self._R  # (M, 2, 2)
        gain = covs[:, :, :2] @ np.linalg.inv(innovation_cov)  # (M, 4, 2)
        states = states + (gain @ (points - states[:, :2])[:, :, None])[:, :, 0]  # (M, 4)
        covs = covs - gain @ covs[:, :2, :]  # (I - K H) P
        for track, state, cov in zip(tracks, states, covs, strict=True):
            track.state, track.covariance = state, cov

    def update(self, detections: list[Detection]) -> list[int]:
        """Advance one frame.

        Args:
            detections: the frame's detections (their centroids are used).

        Returns:
            For each detection, in order, the id of the confirmed track it belongs to, or -1.
        """
        self.frame += 1
        self._predict()
        points = np.array([[d.cx, d.cy] for d in detections], dtype=np.float64).reshape(-1, 2)
        assigned = [-1] * len(detections)  # detection -> index into self.tracks
        if self.tracks and len(points):
            predicted = np.stack([t.position for t in self.tracks])  # (T, 2)
            cost = np.linalg.norm(predicted[:, None, :] - points[None, :, :], axis=2)  # (T, N)
            # Pairs beyond the gate get a cost no real match can reach, then are dropped.
            big = self.config.gate * 1e3
            rows, cols = linear_sum_assignment(np.where(cost <= self.config.gate, cost, big))
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] <= self.config.gate:
                    assigned[c] = r
        matched_tracks = {r for r in assigned if r >= 0}
        pairs = [(r, c) for c, r in enumerate(assigned) if r >= 0]
        self._correct([self.tracks[r] for r, _ in pairs], points[[c for _, c in pairs]])
        for r, _ in pairs:
            track = self.tracks[r]
            track.hits += 1
            track.misses = 0
        survivors = []
        for r, track in enumerate(self.tracks):
            if r not in matched_tracks:
                track.misses += 1
                limit = self.config.max_misses if track.confirmed else 1
                if track.misses >= limit:
                    continue
            survivors.append(track)
        ids = [-1] * len(detections)
        for c, r in enumerate(assigned):
            if r >= 0:
                track = self.tracks[r]
                if not track.confirmed and track.hits >= self.config.min_hits:
                    track.track_id = self._next_id
                    self._next_id += 1
                ids[c] = track.track_id
        for c, r in enumerate(assigned):
            if r < 0:
                track = self._new_track(points[c])
                if self.config.min_hits <= 1:
                    track.track_id = self._next_id
                    self._next_id += 1
                    ids[c] = track.track_id
                survivors.append(track)
        self.tracks = survivors
        return ids
