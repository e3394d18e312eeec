"""Score a video's detections against per-frame boxes (`istd eval-video`).

Labels are CSV files `frame,x,y,w,h`, one row per decoded frame (0-based frame index), boxes in
MATLAB's convention (1-based top-left corner, continuous extent [x, x + w]), all four fields
empty when the frame has no target; this is the format of the Drone-detection-IR
`labels_csv/`. In 0-based pixel-centre coordinates a box spans [x - 1, x - 1 + w].

Rules:

- A labelled target counts as detected in a frame when the centroid of at least one predicted
  object lies inside its box grown by `margin` (2 px) on every side.
- Every predicted object whose centroid is not inside the grown box is a false object (in a
  frame without a label, every object is).
- Pd = detected labelled frames / labelled frames; false objects per frame = false objects /
  frames. The "track" figures repeat both counting only objects on confirmed tracks
  (`istd.engine.tracking`), which suppresses flickering false alarms.
- A confirmed track is a target track when most of its objects hit the box, else a false track.
- Several videos are summed (frames, hits, false objects) before dividing.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from istd.data.video import VIDEO_SUFFIXES, iter_video_frames
from istd.engine.predict import Predictor
from istd.engine.predict_inputs import atomic_text
from istd.engine.tracking import Tracker, TrackerConfig
from istd.errors import DataError

__all__ = [
    "VideoEvalReport",
    "VideoScore",
    "evaluate_video",
    "evaluate_videos",
    "pair_videos",
    "read_box_labels",
    "run_video_eval",
]

_HEADER = ["frame", "x", "y", "w", "h"]


def _field(value: str, path: Path, line: int) -> float:
    """One box field: empty is NaN (no target); anything else must be a finite number."""
    value = value.strip()
    if not value:
        return math.nan
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):  # also refuses a literal 'nan' / 'inf' / '1e400'
        raise DataError(f"{path}, line {line}: non-numeric or non-finite value {value!r}")
    return number


def read_box_labels(path: str | Path) -> np.ndarray:
    """Read a per-frame box CSV.

    Args:
        path: CSV with the header `frame,x,y,w,h`; every non-blank row has exactly these five
            fields, x, y, w, h all empty when the frame has no target (e.g. `3,,,,`).

    Returns:
        float64 (F, 4) array of MATLAB boxes x, y, w, h, one row per frame 0..F-1; NaN rows
        for frames without a target.

    Raises:
        DataError: missing or malformed file, a `slot,...` file that is not frame-aligned,
            a row without exactly five fields, a non-finite value, frames not numbered
            0..F-1, a partly filled row or a box of non-positive size.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        # utf-8-sig: a spreadsheet's byte-order mark would otherwise stick to 'frame'.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            lines = [(reader.line_num, row) for row in reader if row]  # blank lines skipped
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    header = [c.strip() for c in lines[0][1]] if lines else []
    if header and header[0] == "slot":
        raise DataError(
            f"{path}: labels are per annotation slot ('slot,...'), not per frame, so they cannot "
            "be aligned with the video's frames (see labels_csv/_summary.csv: UNALIGNED)"
        )
    if header != _HEADER:
        raise DataError(f"{path}: header must be {','.join(_HEADER)}, got {','.join(header)}")
    frames: list[int] = []
    rows: list[list[float]] = []
    for line, row in lines[1:]:
        # Exactly five fields: a short row ('0') is not "no target" (that is '0,,,,'), and a
        # trailing comma would shift the columns.
        if len(row) != len(_HEADER):
            raise DataError(
                f"{path}, line {line}: expected {len(_HEADER)} fields {','.join(_HEADER)}, "
                f"got {len(row)}"
            )
        try:
            frames.append(int(row[0]))
        except ValueError:
            raise DataError(f"{path}, line {line}: non-numeric frame {row[0]!r}") from None
        rows.append([_field(v, path, line) for v in row[1:]])
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 4)  # (F, 4)
    if frames != list(range(len(frames))):
        raise DataError(f"{path}: frames must be numbered 0, 1, 2, ... one row each")
    empty = np.isnan(boxes)
    partial = np.flatnonzero(empty.any(axis=1) & ~empty.all(axis=1))
    if partial.size:
        raise DataError(f"{path}: frame {frames[partial[0]]} has a partly empty box")
    sizes = boxes[~empty.any(axis=1), 2:]
    if (sizes <= 0).any():
        raise DataError(f"{path}: a box has a non-positive width or height")
    return boxes


@dataclass
class VideoScore:
    """Counts and figures for one video (or, summed, for several)."""

    video: str
    frames: int = 0
    labelled_frames: int = 0
    detected: int = 0
    false_objects: int = 0
    track_detected: int = 0
    track_false_objects: int = 0
    tracks: int = 0
    target_tracks: int = 0
    false_tracks: int = 0
    seconds: float = 0.0

    @property
    def pd(self) -> float:
        """Probability of detection over labelled frames (NaN when no frame is labelled)."""
        return self.detected / self.labelled_frames if self.labelled_frames else math.nan

    @property
    def false_per_frame(self) -> float:
        """False objects per frame."""
        return self.false_objects / self.frames if self.frames else math.nan

    @property
    def track_pd(self) -> float:
        """Pd counting only objects on confirmed tracks."""
        return self.track_detected / self.labelled_frames if self.labelled_frames else math.nan

    @property
    def track_false_per_frame(self) -> float:
        """False objects per frame, confirmed tracks only."""
        return self.track_false_objects / self.frames if self.frames else math.nan

    def to_dict(self) -> dict[str, object]:
        """Counts plus the derived figures (NaN becomes None for JSON)."""
        out: dict[str, object] = asdict(self)
        for name in ("pd", "false_per_frame", "track_pd", "track_false_per_frame"):
            value = getattr(self, name)
            out[name] = None if math.isnan(value) else round(value, 6)
        return out


def _inside(cx: np.ndarray, cy: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    # MATLAB box -> 0-based pixel-centre extent [x - 1, x - 1 + w], grown by the margin.
    x, y, w, h = box
    return (
        (cx >= x - 1 - margin)
        & (cx <= x - 1 + w + margin)
        & (cy >= y - 1 - margin)
        & (cy <= y - 1 + h + margin)
    )


def evaluate_video(
    video: str | Path,
    labels: str | Path,
    predictor: Predictor,
    *,
    tracker: TrackerConfig | None = None,
    margin: float = 2.0,
    on_frames: Callable[[int], None] | None = None,
) -> VideoScore:
    """Predict every frame of a video and score it against its box labels.

    Args:
        video: video file.
        labels: its `frame,x,y,w,h` CSV.
        predictor: the model wrapper.
        tracker: tracker rules for the track figures.
        margin: pixels by which each box is grown.
        on_frames: called with the number of frames just scored.

    Returns:
        The video's counts and figures.

    Raises:
        DataError: bad labels, an unreadable video, or a frame count that differs from the labels.
    """
    boxes = read_box_labels(labels)  # (F, 4), read first so bad labels fail before any work
    video = Path(video)
    score = VideoScore(video=video.stem)
    track = Tracker(tracker)
    track_hits: dict[int, list[bool]] = {}
    start = time.perf_counter()
    batch: list[np.ndarray] = []

    def consume() -> None:
        for pred in predictor.predict_batch(batch):
            t = score.frames
            if t >= len(boxes):
                raise DataError(f"{video}: more frames than the {len(boxes)} rows of {labels}")
            ids = np.array(track.update(pred.detections), dtype=np.int64)
            cx = np.array([d.cx for d in pred.detections])
            cy = np.array([d.cy for d in pred.detections])
            labelled = not np.isnan(boxes[t]).any()
            hit = _inside(cx, cy, boxes[t], margin) if labelled else np.zeros(len(cx), bool)
            on_track = ids >= 0
            score.frames += 1
            score.labelled_frames += int(labelled)
            score.detected += int(hit.any())
            score.track_detected += int((hit & on_track).any())
            score.false_objects += int((~hit).sum())
            score.track_false_objects += int((~hit & on_track).sum())
            for i, h in zip(ids[on_track], hit[on_track], strict=True):
                track_hits.setdefault(int(i), []).append(bool(h))
        if on_frames:
            on_frames(len(batch))
        batch.clear()

    for frame in iter_video_frames(video):
        batch.append(frame)
        if len(batch) == predictor.batch_size:
            consume()
    if batch:
        consume()
    if score.frames != len(boxes):
        raise DataError(
            f"{video}: {score.frames} frames decoded but {labels} has {len(boxes)} rows"
        )
    score.tracks = len(track_hits)
    score.target_tracks = sum(2 * sum(h) > len(h) for h in track_hits.values())
    score.false_tracks = score.tracks - score.target_tracks
    score.seconds = round(time.perf_counter() - start, 3)
    return score


@dataclass
class VideoEvalReport:
    """Scores of several videos, their sum, and the videos that could not be scored."""

    videos: list[VideoScore]
    total: VideoScore
    failures: list[dict[str, str]] = field(default_factory=list)
    weights: str = ""
    threshold: float = 0.5
    conv_dtype: str = "float32"  # the dense convolutions' dtype (`istd.models.precision`)
    input_scale: float | None = None  # the network's (`MiMConfig.input_scale`); None: no network
    tta: bool = False  # probabilities averaged over flips (`istd.models.tta`)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "weights": self.weights,
            "threshold": self.threshold,
            "conv_dtype": self.conv_dtype,
            "input_scale": self.input_scale,
            "tta": self.tta,
            "total": self.total.to_dict(),
            "videos": [v.to_dict() for v in self.videos],
            "failures": self.failures,
        }

    def to_markdown(self) -> str:
        """A Markdown table, one row per video and a total row."""
        lines = [
            "| video | frames | labelled | Pd | false / frame | track Pd | track false / frame | tracks (target / false) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]

        def fmt(v: float, digits: int = 3) -> str:
            return "n/a" if math.isnan(v) else f"{v:.{digits}f}"

        for s in [*self.videos, self.total]:
            name = f"**{s.video}**" if s is self.total else s.video
            lines.append(
                f"| {name} | {s.frames} | {s.labelled_frames} | {fmt(s.pd)} | {fmt(s.false_per_frame, 2)} "
                f"| {fmt(s.track_pd)} | {fmt(s.track_false_per_frame, 2)} | {s.target_tracks} / {s.false_tracks} |"
            )
        return "\n".join(lines) + "\n"


def pair_videos(videos: list[str | Path], labels: str | Path) -> list[tuple[Path, Path]]:
    """Match videos (files or folders of videos) with label files.

    With a labels folder, video `NAME.ext` is paired with `labels/NAME.csv`; a single labels
    file needs a single video.

    Raises:
        DataError: no videos, or one labels file for several videos.
    """
    files: list[Path] = []
    for v in map(Path, videos):
        if v.is_dir():
            files.extend(sorted(p for p in v.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES))
        else:
            files.append(v)
    if not files:
        raise DataError(f"no video files in {', '.join(map(str, videos))}")
    labels = Path(labels)
    if labels.is_dir():
        return [(f, labels / f"{f.stem}.csv") for f in files]
    if len(files) > 1:
        raise DataError(f"{len(files)} videos but one labels file {labels}; pass a labels folder")
    return [(files[0], labels)]


def evaluate_videos(
    pairs: list[tuple[Path, Path]],
    predictor: Predictor,
    *,
    tracker: TrackerConfig | None = None,
    margin: float = 2.0,
    on_video: Callable[[Path], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_failure: Callable[[Path, str], None] | None = None,
) -> VideoEvalReport:
    """Score several (video, labels) pairs; a video that cannot be scored is a failure, not a stop."""
    scores: list[VideoScore] = []
    failures: list[dict[str, str]] = []
    for video, labels in pairs:
        if on_video:
            on_video(video)
        try:
            scores.append(
                evaluate_video(
                    video, labels, predictor, tracker=tracker, margin=margin, on_frames=on_frames
                )
            )
        except DataError as exc:
            failures.append({"path": str(video), "error": str(exc)})
            if on_failure:
                on_failure(video, str(exc))
    total = VideoScore(video="total")
    for s in scores:
        for name in ("frames", "labelled_frames", "detected", "false_objects", "track_detected"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
        for name in ("track_false_objects", "tracks", "target_tracks", "false_tracks", "seconds"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
    total.seconds = round(total.seconds, 3)
    return VideoEvalReport(
        videos=scores,
        total=total,
        failures=failures,
        weights=predictor.weights_id,
        threshold=predictor.threshold,
        conv_dtype=str(predictor.conv_dtype).removeprefix("torch."),
        input_scale=predictor.input_scale,
        tta=predictor.tta,
    )


def run_video_eval(
    videos: list[str | Path],
    labels: str | Path,
    *,
    weights: str | Path | None = None,
    model: str | None = None,
    device: str = "cpu",
    threshold: float = 0.5,
    batch_size: int = 8,
    precision: str = "auto",
    input_scale: float | None = None,
    tta: bool = False,
    margin: float = 2.0,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    overwrite: bool = False,
    on_start: Callable[[list[tuple[Path, Path]]], None] | None = None,
    on_video: Callable[[Path], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_failure: Callable[[Path, str], None] | None = None,
) -> VideoEvalReport:
    """Everything `istd eval-video` does: pair videos with labels, predict, score, write reports.

    Args:
        videos: video files or folders of videos.
        labels: a labels CSV (one video) or a folder of `<video stem>.csv`.
        weights: weights folder or name (default weights when neither this nor `model`).
        model: a weight-free detector name instead.
        device: torch device.
        threshold: probability threshold.
        batch_size: frames per forward pass.
        precision: dense-convolution precision (`istd.Predictor`).
        input_scale: the network's input scale; None: the weights' own (`istd.Predictor`).
        tta: average over each frame's flips (`istd.Predictor`).
        margin: pixels by which label boxes are grown.
        json_path: write the report as JSON here.
        markdown_path: write the Markdown table here.
        overwrite: replace existing report files.
        on_start: called with the (video, labels) pairs before any work.
        on_video: called when a video starts.
        on_frames: called with the number of frames just scored.
        on_failure: called with a video and its one-line error.

    Returns:
        The report.

    Raises:
        DataError: no videos, or a report file exists and `overwrite` is false.
    """
    targets = [Path(p) for p in (json_path, markdown_path) if p is not None]
    for path in targets:
        if path.exists() and not overwrite:
            raise DataError(f"{path}: already exists; pass --overwrite to replace it")
    pairs = pair_videos(videos, labels)
    predictor = Predictor(
        weights=weights,
        model=model,
        device=device,
        threshold=threshold,
        batch_size=batch_size,
        precision=precision,
        input_scale=input_scale,
        tta=tta,
    )
    if on_start:
        on_start(pairs)
    report = evaluate_videos(
        pairs,
        predictor,
        margin=margin,
        on_video=on_video,
        on_frames=on_frames,
        on_failure=on_failure,
    )
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_text(Path(json_path)) as handle:
            json.dump(report.to_dict(), handle, indent=2)
            handle.write("\n")
    if markdown_path is not None:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_text(Path(markdown_path)) as handle:
            handle.write(report.to_markdown())
    return report
