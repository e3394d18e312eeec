"""Rebuild the sample frames and clip in this folder from the shared Drone-detection-IR videos.

Usage: python data/samples/make_samples.py [DATASET_ROOT]   (default ../shared/datasets/...)

The frames are decoded exactly as `istd` decodes videos (OpenCV, luminance) and stored as 8-bit
grey PNG; the clip is re-encoded with OpenCV's mp4v codec; its labels are the matching rows of
the dataset's `labels_csv/` file.
"""

from __future__ import annotations

import shutil
import sys
from itertools import islice
from pathlib import Path

import numpy as np

from istd.data.io import write_png_atomic
from istd.data.video import AtomicVideoWriter, iter_video_frames, video_info
from istd.engine.predict_inputs import atomic_text

HERE = Path(__file__).resolve().parent
# (video, frame index): small, distant targets of each class.
FRAMES = [
    ("IR_DRONE_152", 100),
    ("IR_DRONE_059", 150),
    ("IR_AIRPLANE_027", 100),
    ("IR_BIRD_073", 100),
    ("IR_HELICOPTER_049", 100),
]
CLIP, CLIP_FRAMES = "IR_DRONE_059", 90  # 3 s at 30 fps


def _to_u8(frame: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)


def main(root: Path) -> None:
    videos = root / "Video_IR"
    for name, index in FRAMES:
        frame = next(islice(iter_video_frames(videos / f"{name}.mp4"), index, None))
        write_png_atomic(HERE / f"{name}_f{index:03d}.png", _to_u8(frame), overwrite=True)
    info = video_info(videos / f"{CLIP}.mp4")
    with AtomicVideoWriter(
        HERE / f"{CLIP}_clip.mp4", info.fps, (info.width, info.height)
    ) as writer:
        for frame in islice(iter_video_frames(videos / f"{CLIP}.mp4"), CLIP_FRAMES):
            writer.write(_to_u8(frame))
    rows = (root / "labels_csv" / f"{CLIP}.csv").read_text().splitlines()
    with atomic_text(HERE / f"{CLIP}_clip.csv") as handle:
        handle.write("\n".join(rows[: CLIP_FRAMES + 1]) + "\n")
    shutil.copyfile(root / "LICENSE", HERE / "LICENSE")


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "Drone-detection-IR"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
