"""Video frames through OpenCV, frame folders, and the atomic video writer."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from istd.data.video import (
    AtomicVideoWriter,
    TruncatedVideoError,
    frame_folder_paths,
    iter_frame_folder,
    iter_video_frames,
    video_info,
)
from istd.errors import DataError


def _write_clip(path: Path, frames: int = 12, size: tuple[int, int] = (64, 48)) -> None:
    with AtomicVideoWriter(path, 10.0, size) as writer:
        for t in range(frames):
            frame = np.full((size[1], size[0]), 40, np.uint8)
            cv2.circle(frame, (8 + 3 * t, 20), 3, 230, -1)
            writer.write(frame)


def test_write_then_read_streams_grey_frames(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp file left
    info = video_info(clip)
    assert (info.width, info.height) == (64, 48) and info.fps == pytest.approx(10.0)
    frames = list(iter_video_frames(clip))
    assert len(frames) == 12
    assert all(f.shape == (48, 64) and f.dtype == np.float32 for f in frames)
    # The bright disc moves 3 px per frame; lossy coding keeps its position.
    xs = [int(np.argmax(f[20])) for f in frames]
    assert abs(xs[-1] - xs[0] - 33) <= 2
    assert min(f.min() for f in frames) >= 0.0 and max(f.max() for f in frames) <= 1.0


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), AtomicVideoWriter(tmp_path / "x.mp4", 10, (32, 32)) as w:
        w.write(np.zeros((32, 32), np.uint8))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with (
        AtomicVideoWriter(tmp_path / "y.mp4", 10, (32, 32)) as w,
        pytest.raises(DataError, match="uint8"),
    ):
        w.write(np.zeros((16, 16), np.uint8))


@pytest.mark.parametrize("content", [b"", b"this is not a video at all" * 10])
def test_broken_videos_raise(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(DataError, match="bad.mp4"):
        list(iter_video_frames(bad))


def _collect(frames) -> tuple[list[np.ndarray], DataError | None]:
    """Consume a frame iterator; return its frames and the error it ended with, if any."""
    out: list[np.ndarray] = []
    try:
        for frame in frames:
            out.append(frame)
    except DataError as exc:
        return out, exc
    return out, None


def test_truncated_video_yields_what_decodes(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mkv"
    # Matroska keeps its index up front, so a cut file still gives its first frames.
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
    for t in range(20):
        writer.write(np.full((32, 32, 3), 10 * t, np.uint8))
    writer.release()
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    frames, error = _collect(iter_video_frames(cut))
    assert 0 < len(frames) < 20
    assert isinstance(error, TruncatedVideoError)
    assert str(error) == f"{cut}: decoded {len(frames)} of 20 frames (truncated or corrupt video)"


def test_truncated_mjpg_avi_is_reported(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(20):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    frames, error = _collect(iter_video_frames(clip))
    assert len(frames) == 20 and error is None  # the whole file: no complaint
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    frames, error = _collect(iter_video_frames(cut))
    assert 0 < len(frames) < 19
    assert isinstance(error, TruncatedVideoError) and "\n" not in str(error)
    assert str(error).startswith(f"{cut}: decoded {len(frames)} of 20 frames")


@pytest.mark.parametrize("size", [(1, 1), (33, 17), (2, 3)])
def test_writer_pads_odd_and_tiny_frames(tmp_path: Path, size: tuple[int, int]) -> None:
    width, height = size
    clip = tmp_path / "odd.mp4"
    frame = np.zeros((height, width), np.uint8)
    frame[-1, :] = frame[:, -1] = 255  # the last row and column are bright
    with AtomicVideoWriter(clip, 10.0, size) as writer:
        for _ in range(3):
            writer.write(frame)
    frames = list(iter_video_frames(clip))
    # The whole frame is kept: the video is the frame padded to even sizes of at least 2 x 2.
    padded = (max(2, height + height % 2), max(2, width + width % 2))
    assert len(frames) == 3 and all(f.shape == padded for f in frames)
    last = frames[0][:height, :width]
    assert last[-1, :].mean() > 0.7 and last[:, -1].mean() > 0.7
    assert [p.name for p in tmp_path.iterdir()] == ["odd.mp4"]


def test_frame_folder_natural_order(tmp_path: Path) -> None:
    for k in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"frame{k}.png"), np.full((6, 7), 20 * k, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in frame_folder_paths(tmp_path)] == [
        "frame1.png",
        "frame2.png",
        "frame10.png",
    ]
    frames = list(iter_frame_folder(tmp_path))
    assert [round(float(f[0, 0]) * 255) for f in frames] == [20, 40, 200]
    with pytest.raises(DataError, match="not found"):
        frame_folder_paths(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image"):
        frame_folder_paths(tmp_path / "empty")


def test_frame_folder_unicode_digit_names(tmp_path: Path) -> None:
    # "²" is a digit to str.isdigit but not to int(); it must not break the natural order.
    for name in ("f1²2.png", "f1²10.png", "f1²1.png"):
        cv2.imencode(".png", np.zeros((4, 5), np.uint8))[1].tofile(tmp_path / name)
    assert [p.name for p in frame_folder_paths(tmp_path)] == ["f1²1.png", "f1²2.png", "f1²10.png"]


def test_writer_refuses_frames_it_would_drop(tmp_path: Path) -> None:
    # OpenCV skips a frame whose channel count is not 3 with a log line only, which would leave
    # an empty video; the writer says so instead.
    with AtomicVideoWriter(tmp_path / "x.mp4", 10, (8, 6)) as writer:
        for shape in [(6, 8, 4), (6, 8, 1), (6, 8, 3, 1)]:
            with pytest.raises(DataError, match="frame must be"):
                writer.write(np.zeros(shape, np.uint8))
        writer.write(np.zeros((6, 8, 3), np.uint8))
    assert len(list(iter_video_frames(tmp_path / "x.mp4"))) == 1


@pytest.mark.parametrize("fps", [float("inf"), float("nan")])
def test_writer_with_non_finite_fps_uses_default(tmp_path: Path, fps: float) -> None:
    # An infinite rate made the mp4v encoder spin forever; like 0, it falls back to 30 fps.
    def write() -> None:
        with AtomicVideoWriter(tmp_path / "x.mp4", fps, (8, 6)) as writer:
            writer.write(np.zeros((6, 8), np.uint8))

    worker = threading.Thread(target=write, daemon=True)  # a regression hangs here, not CI
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the writer hangs"
    assert video_info(tmp_path / "x.mp4").fps == pytest.approx(30.0)


def test_real_drone_video_decodes(drone_ir: Path) -> None:
    video = drone_ir / "Video_IR" / "IR_DRONE_001.mp4"
    if not video.exists():
        video = sorted((drone_ir / "Video_IR").glob("*.mp4"))[0]
    info = video_info(video)
    assert (info.width, info.height) == (320, 256)
    first = next(iter(iter_video_frames(video)))
    assert first.shape == (256, 320) and 0 < first.mean() < 1
