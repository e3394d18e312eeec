"""What `istd predict` reads: input expansion, output names, sharding, overlays and atomic text files.

Inputs are image files, folders of images and videos (optionally recursive and filtered by a
glob), video files, frame folders read as one sequence, or `-` for paths listed on stdin. Every
input gets an output *key* (its file stem); when two inputs share a stem, each gets the stem plus
a short hash of its full path, so no output is written over another. A very long stem is cut
and given the hash too, so that output and temporary file names stay within the file system's
255-byte limit.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import cv2
import numpy as np

from istd._atomic import atomic_open
from istd.data.io import IMAGE_EXTENSIONS, exists_error
from istd.data.video import VIDEO_SUFFIXES
from istd.engine.detections import Detection
from istd.errors import ConfigError, DataError

__all__ = [
    "InputItem",
    "assign_keys",
    "atomic_text",
    "draw_overlay",
    "expand_inputs",
    "parse_shard",
    "select_shard",
]

InputKind = Literal["image", "video", "sequence", "missing"]


@dataclass
class InputItem:
    """One input of a prediction run.

    Attributes:
        path: the file or folder as the user named it.
        kind: `image`, `video`, `sequence` (a frame folder) or `missing` (reported as a failure).
        key: output file-name stem, unique within the run (set by `assign_keys`).
        explicit: named by the user (on the command line or stdin), not found in a folder.
    """

    path: Path
    kind: InputKind
    key: str = ""
    explicit: bool = False


def _kind_of_file(path: Path) -> InputKind:
    # Anything that is not a known video is read as an image, so a stray file gets a clear
    # "not an image" failure instead of being skipped silently.
    return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


def expand_inputs(
    paths: Iterable[str | Path],
    *,
    recursive: bool = False,
    glob: str = "*",
    sequence: bool = False,
    stdin: TextIO | None = None,
) -> list[InputItem]:
    """Turn the command-line inputs into a list of images, videos and frame sequences.

    Args:
        paths: files, folders, or `-` to read one path per line from `stdin`.
        recursive: search folders recursively.
        glob: file-name pattern inside folders (e.g. `*.png`).
        sequence: read each folder as one frame sequence (a video) instead of separate images.
        stdin: where `-` reads from.

    Returns:
        Items in the given order; folders contribute their image and video files sorted by
        path. A path that does not exist becomes a `missing` item; repeats are dropped (an item
        both named and found in a folder counts as named).

    Raises:
        DataError: `-` is given but no stdin stream.
    """
    items: list[InputItem] = []
    seen: dict[Path, InputItem] = {}

    def add(path: Path, kind: InputKind, explicit: bool) -> None:
        resolved = path.resolve()
        if resolved in seen:
            seen[resolved].explicit |= explicit
        else:
            seen[resolved] = InputItem(path=path, kind=kind, explicit=explicit)
            items.append(seen[resolved])

    for raw in paths:
        if str(raw) == "-":
            if stdin is None:
                raise DataError("input '-' needs a list of paths on stdin")
            listed = [line.strip() for line in stdin if line.strip()]
            for item in expand_inputs(listed, recursive=recursive, glob=glob, sequence=sequence):
                add(item.path, item.kind, item.explicit)
            continue
        path = Path(raw)
        if path.is_dir():
            if sequence:
                add(path, "sequence", True)
                continue
            found = path.rglob(glob) if recursive else path.glob(glob)
            media = IMAGE_EXTENSIONS | VIDEO_SUFFIXES
            for child in sorted(p for p in found if p.is_file() and p.suffix.lower() in media):
                add(child, _kind_of_file(child), False)
        elif path.is_file():
            add(path, _kind_of_file(path), True)
        else:
            add(path, "missing", True)
    return items


def _short_hash(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:8]


#: Longest key stem in UTF-8 bytes: with `-` + hash (9), the longest output suffix
#: (`_detections.csv`, 15) and a temporary name's extra 14, file names stay below 255 bytes.
MAX_STEM_BYTES = 200


def _stem(item: InputItem) -> str:
    # A frame folder is named by its folder; `.` or `..` has no name of its own until resolved.
    stem = (item.path.resolve().name or "sequence") if item.kind == "sequence" else item.path.stem
    encoded = stem.encode("utf-8", "surrogateescape")
    if len(encoded) <= MAX_STEM_BYTES:
        return stem
    # Cut at a character boundary and add the path's hash, which keeps cut stems unique.
    cut = encoded[: MAX_STEM_BYTES - 9].decode("utf-8", "ignore")
    return f"{cut}-{_short_hash(item.path)}"


def assign_keys(items: list[InputItem]) -> list[InputItem]:
    """Give each item its output stem: the file stem, or stem + `-` + 8 hex digits on a clash.

    A stem longer than `MAX_STEM_BYTES` is cut and always gets the hash. Keys depend only on the
    full input list, so every shard of a run agrees on them.
    """
    stems = [_stem(item) for item in items]
    counts = Counter(stems)
    for item, stem in zip(items, stems, strict=True):
        item.key = stem if counts[stem] == 1 else f"{stem}-{_short_hash(item.path)}"
    return items


def parse_shard(text: str) -> tuple[int, int]:
    """`"K/N"` -> (K, N) with 1 <= K <= N.

    Raises:
        ConfigError: malformed or out-of-range shard.
    """
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ConfigError(f"--shard must look like K/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def select_shard(items: list[InputItem], shard: tuple[int, int]) -> list[InputItem]:
    """The K-th of N interleaved slices (items K-1, K-1+N, ...), so slices get similar mixes."""
    k, n = shard
    return items[k - 1 :: n]


@contextlib.contextmanager
def atomic_text(path: Path, overwrite: bool = True) -> Iterator[TextIO]:
    """Open a text file for writing that appears under `path` only once it is complete.

    Raises:
        DataError: `path` exists and `overwrite` is false, or it cannot be written (e.g. its
            name is too long, or the disk is full).
    """
    try:
        with atomic_open(
            path, "w", overwrite=overwrite, on_exists=exists_error, newline="", encoding="utf-8"
        ) as handle:
            yield handle
    except OSError as exc:
        # As write_bytes_atomic does: one DataError naming the file instead of a raw OSError.
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None


def to_bgr8(frame: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1] -> uint8 (H, W, 3) grey BGR for drawing."""
    grey = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)  # (H, W) -> (H, W, 3)


def draw_overlay(
    frame: np.ndarray,
    mask: np.ndarray,
    detections: list[Detection],
    track_ids: list[int] | None = None,
) -> np.ndarray:
    """Outline the predicted targets on a frame.

    Each object's mask outline is drawn in red and a box 3 px outside its bounding box in green
    (a target of a few pixels would hide under its own outline); track ids, when given and
    confirmed, are written beside the box.

    Args:
        frame: float32 (H, W) in [0, 1].
        mask: bool (H, W).
        detections: the objects of `mask`.
        track_ids: one id per detection (-1: not on a confirmed track).

    Returns:
        uint8 (H, W, 3) BGR image.
    """
    canvas = to_bgr8(frame)
    height, width = mask.shape
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, (0, 0, 255), 1)
    for k, det in enumerate(detections):
        x0, y0 = max(det.x - 3, 0), max(det.y - 3, 0)
        x1, y1 = min(det.x + det.w + 2, width - 1), min(det.y + det.h + 2, height - 1)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 255, 0), 1)
        if track_ids is not None and track_ids[k] >= 0:
            cv2.putText(
                canvas,
                str(track_ids[k]),
                (x0, max(y0 - 2, 8)),
                cv2.FONT_HERSHEY_PLAIN,
                0.8,
                (0, 255, 255),
                1,
                cv2.LINE_AA,
            )
    return canvas
