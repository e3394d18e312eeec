"""Frames from video files and frame folders, and an atomic video writer.

Videos are decoded by OpenCV (`cv2.VideoCapture`, FFmpeg backend) one frame at a time, so a
long video never sits in memory. Infrared videos are greyscale; colour-coded frames are reduced
to luminance, as `istd.data.io.read_image` does for images.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from istd._atomic import AtomicFile
from istd.data.io import IMAGE_EXTENSIONS, read_image
from istd.errors import DataError

__all__ = [
    "VIDEO_SUFFIXES",
    "AtomicVideoWriter",
    "TruncatedVideoError",
    "VideoInfo",
    "frame_folder_paths",
    "iter_frame_folder",
    "iter_video_frames",
    "to_unit_grey",
    "video_info",
]

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv"})


class TruncatedVideoError(DataError):
    """A video ended well before the frame count its container reports; the frames before the
    damage were yielded."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container reports; `frames` is an estimate for some codecs (0 when unknown)."""

    width: int
    height: int
    fps: float
    frames: int


def to_unit_grey(frame: np.ndarray) -> np.ndarray:
    """Decoded frame (H, W) or (H, W, 3|4) BGR[A], 8- or 16-bit -> float32 (H, W) in [0, 1]."""
    if frame.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        frame = cv2.cvtColor(frame, code)  # (H, W, C) -> (H, W)
    scale = 65535.0 if frame.dtype == np.uint16 else 255.0
    return frame.astype(np.float32) / np.float32(scale)


def _open(path: Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DataError(f"{path}: OpenCV cannot open this file as a video")
    return capture


def video_info(path: str | Path) -> VideoInfo:
    """Size, frame rate and reported frame count of a video.

    Raises:
        DataError: the file is missing, empty or not a video OpenCV can open.
    """
    capture = _open(Path(path))
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 0.0
        return VideoInfo(
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=fps if np.isfinite(fps) and fps > 0 else 0.0,
            frames=max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
        )
    finally:
        capture.release()


def iter_video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video frame by frame.

    Args:
        path: a video file OpenCV can read (mp4, avi, mkv, ...).

    Yields:
        float32 frames (H, W) in [0, 1], in decoding order; decoding stops at the first frame
        that cannot be read, so a truncated file yields the frames before the damage.

    Raises:
        DataError: the file cannot be opened, or not a single frame decodes.
        TruncatedVideoError: after the last decodable frame, when clearly fewer frames decoded
            than the container reports (a cut or damaged file).

    Example:
        >>> for frame in iter_video_frames("data/samples/drone_clip.mp4"):
        ...     print(frame.shape)  # (256, 320)
    """
    path = Path(path)
    capture = _open(path)
    reported = float(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    reported = int(reported) if np.isfinite(reported) else 0
    count = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            count += 1
            yield to_unit_grey(frame)
    finally:
        capture.release()
    if count == 0:
        raise DataError(f"{path}: no decodable frame in this video")
    # Some containers only estimate their frame count (from duration x fps), so a shortfall of
    # one frame or 2 % is tolerated; an unknown count (0 or negative) is not checked.
    if reported > 0 and reported - count > max(1, int(0.02 * reported)):
        raise TruncatedVideoError(
            f"{path}: decoded {count} of {reported} frames (truncated or corrupt video)"
        )


def frame_folder_paths(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, in natural order (frame2 before frame10).

    Raises:
        DataError: the folder is missing or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: frame folder not found")
    paths = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not paths:
        raise DataError(
            f"{folder}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder"
        )
    return sorted(paths, key=_natural_key)


def _natural_key(path: Path) -> list[object]:
    # Numbers compare as numbers so that frame_10 follows frame_9 whatever the zero padding
    # (isdecimal, not isdigit: "²" is a digit that int() refuses).
    return [int(t) if t.isdecimal() else t.lower() for t in re.split(r"(\d+)", path.name)]


def iter_frame_folder(folder: str | Path) -> Iterator[np.ndarray]:
    """Read a folder of frames as one sequence (natural file-name order).

    Yields:
        float32 frames (H, W) in [0, 1].

    Raises:
        DataError: the folder holds no images, a frame cannot be read, or frame sizes differ.
    """
    shape: tuple[int, ...] | None = None
    for path in frame_folder_paths(folder):
        frame = read_image(path)
        if shape is not None and frame.shape != shape:
            raise DataError(
                f"{path}: frame size {frame.shape} differs from the first frame's {shape}"
            )
        shape = frame.shape
        yield frame


class AtomicVideoWriter:
    """Write an mp4 (codec `mp4v`) to a temporary file, moved into place only on success.

    A killed run therefore never leaves a truncated video under the final name. The codec needs
    even sizes of at least 2 x 2 (it drops an odd last row or column, and refuses 1 x 1), so
    frames are padded on the right and bottom by repeating their edge: the video holds the whole
    frame, up to one pixel larger in each direction.

    Args:
        path: final file name (its folder must exist).
        fps: frame rate of the output.
        size: (width, height) of every frame.

    Example:
        >>> with AtomicVideoWriter("out.mp4", 30.0, (320, 256)) as writer:
        ...     writer.write(bgr_frame)  # (256, 320, 3) uint8
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        width, height = self.size
        self._coded_size = (max(2, width + width % 2), max(2, height + height % 2))
        # The temporary name keeps the extension: OpenCV picks the container from it.
        self._target = AtomicFile(self.path, overwrite=True, suffix=self.path.suffix or ".mp4")
        self._tmp = self._target.tmp
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        # An infinite rate makes the encoder spin forever; NaN, 0 and negatives mean "unknown".
        fps = float(fps) if math.isfinite(fps) and fps > 0 else 30.0
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, fps, self._coded_size)
        if not self._writer.isOpened():
            self._target.discard()
            raise DataError(f"{self.path}: OpenCV cannot open a video writer (codec mp4v)")

    def write(self, frame: np.ndarray) -> None:
        """Append one frame: (H, W, 3) uint8 BGR, or (H, W) uint8 grey."""
        # OpenCV would skip any other channel count with a log line only.
        if frame.dtype != np.uint8 or frame.shape not in (
            (self.size[1], self.size[0]),
            (self.size[1], self.size[0], 3),
        ):
            raise DataError(
                f"{self.path}: frame must be uint8 (H, W) or (H, W, 3) of size "
                f"{self.size[1]}x{self.size[0]}, got {frame.dtype} {frame.shape}"
            )
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)  # (H, W) -> (H, W, 3)
        pad_x, pad_y = self._coded_size[0] - self.size[0], self._coded_size[1] - self.size[1]
        if pad_x or pad_y:
            # (H, W, 3) -> (H + pad_y, W + pad_x, 3), the edge pixels repeated
            frame = cv2.copyMakeBorder(frame, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
        self._writer.write(frame)

    def close(self) -> None:
        """Finish the file, flush it to disk and move it to its final name."""
        self._writer.release()
        self._target.commit()

    def abort(self) -> None:
        """Drop the partial file."""
        self._writer.release()
        self._target.discard()

    def __enter__(self) -> AtomicVideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
