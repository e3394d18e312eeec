"""Video evaluation against per-frame MATLAB boxes: label parsing, the 2 px rule, counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from istd.data.video import AtomicVideoWriter
from istd.engine.predict import Predictor
from istd.engine.video_eval import (
    _inside,
    evaluate_video,
    evaluate_videos,
    pair_videos,
    read_box_labels,
    run_video_eval,
)
from istd.errors import DataError


class BrightSpot(nn.Module):
    model_name = "bright-spot"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40 * (x[:, :1] - 0.5)


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_labels(tmp_path: Path) -> None:
    boxes = read_box_labels(_csv(tmp_path / "a.csv", "frame,x,y,w,h\n0,1.5,2,3,4\n1,,,,\n"))
    assert (
        boxes.shape == (2, 4) and boxes[0].tolist() == [1.5, 2, 3, 4] and np.isnan(boxes[1]).all()
    )
    # CRLF line ends, a byte-order mark, a blank line and padded fields are accepted.
    text = "\ufeffframe,x,y,w,h\r\n0, 1,2,3,4\r\n\r\n1,,,,\r\n"
    boxes = read_box_labels(_csv(tmp_path / "b.csv", text))
    assert boxes.shape == (2, 4) and boxes[0].tolist() == [1, 2, 3, 4] and np.isnan(boxes[1]).all()


@pytest.mark.parametrize(
    "text, match",
    [
        ("slot,x,y,w,h\n0,1,1,2,2\n", "UNALIGNED"),
        ("f,x,y,w,h\n0,1,1,2,2\n", "header"),
        ("frame,x,y,w,h\n1,1,1,2,2\n", "numbered"),
        ("frame,x,y,w,h\n0,1,1,,\n", "partly"),
        ("frame,x,y,w,h\n0,1,1,0,2\n", "non-positive"),
        ("frame,x,y,w,h\n0,a,1,2,2\n", "non-numeric"),
        ("frame,x,y,w,h\n0,inf,1,2,2\n", "line 2: non-numeric or non-finite value 'inf'"),
        ("frame,x,y,w,h\n0,1,1,1e400,2\n", "line 2: .*non-finite value '1e400'"),
        ("frame,x,y,w,h\n0,nan,nan,nan,nan\n", "line 2: .*non-finite"),  # no target is '0,,,,'
        ("frame,x,y,w,h\n0,,,,\n1\n", "line 3: expected 5 fields frame,x,y,w,h, got 1"),
        ("frame,x,y,w,h\n0,1,1,2,2,\n", "line 2: expected 5 fields .* got 6"),  # trailing comma
    ],
)
def test_bad_labels(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_box_labels(_csv(tmp_path / "bad.csv", text))


def test_two_pixel_rule_in_matlab_coordinates() -> None:
    # MATLAB box x=11, y=21, w=4, h=2 covers 0-based centres [10, 14] x [20, 22]; grown by 2 px.
    box = np.array([11.0, 21.0, 4.0, 2.0])
    cx = np.array([8.0, 7.9, 16.0, 16.1, 12.0, 12.0])
    cy = np.array([21.0, 21.0, 21.0, 21.0, 17.9, 24.0])
    assert _inside(cx, cy, box, 2.0).tolist() == [True, False, True, False, False, True]


def _clip(path: Path, frames: int) -> None:
    # A 3 x 3 target moving right 2 px per frame; a second, static blob appears in frames 6..7.
    with AtomicVideoWriter(path, 10.0, (64, 48)) as writer:
        for t in range(frames):
            frame = np.full((48, 64), 20, np.uint8)
            frame[20:23, 5 + 2 * t : 8 + 2 * t] = 255
            if t in (6, 7):
                frame[40:43, 50:53] = 255
            writer.write(frame)


def _labels(path: Path, frames: int, unlabelled: set[int]) -> Path:
    rows = ["frame,x,y,w,h"]
    for t in range(frames):
        # 1-based box exactly on the target: columns 5+2t .. 7+2t (0-based) -> x = 6 + 2t.
        rows.append(f"{t},,,," if t in unlabelled else f"{t},{6 + 2 * t},21,3,3")
    return _csv(path, "\n".join(rows) + "\n")


def test_counts_on_synthetic_clip(tmp_path: Path) -> None:
    _clip(tmp_path / "clip.mp4", 10)
    labels = _labels(tmp_path / "clip.csv", 10, unlabelled={9})
    predictor = Predictor(model=BrightSpot(), batch_size=4)
    score = evaluate_video(tmp_path / "clip.mp4", labels, predictor)
    assert (score.frames, score.labelled_frames, score.detected) == (10, 9, 9)
    # False objects: the static blob twice, and the target in unlabelled frame 9.
    assert score.false_objects == 3
    assert score.pd == 1.0 and score.false_per_frame == pytest.approx(0.3)
    # Tracks: the target is confirmed from its 3rd frame; the 2-frame blob never is.
    assert score.track_detected == 7 and score.track_false_objects == 1
    assert (score.tracks, score.target_tracks, score.false_tracks) == (1, 1, 0)
    assert score.to_dict()["track_pd"] == pytest.approx(7 / 9, abs=1e-6)


def test_frame_count_mismatch_and_batch_of_videos(tmp_path: Path) -> None:
    _clip(tmp_path / "clip.mp4", 10)
    _labels(tmp_path / "labels.csv", 12, unlabelled=set())
    predictor = Predictor(model=BrightSpot())
    with pytest.raises(DataError, match="10 frames decoded"):
        evaluate_video(tmp_path / "clip.mp4", tmp_path / "labels.csv", predictor)
    videos, labels = tmp_path / "videos", tmp_path / "labels"
    videos.mkdir()
    labels.mkdir()
    _clip(videos / "a.mp4", 10)
    _labels(labels / "a.csv", 10, unlabelled=set())
    _clip(videos / "b.mp4", 10)  # no labels for b
    report = evaluate_videos(pair_videos([videos], labels), predictor)
    assert [s.video for s in report.videos] == ["a"] and report.total.frames == 10
    assert "b.csv" in report.failures[0]["error"]
    assert "| **total** | 10 | 10 | 1.000 |" in report.to_markdown()
    with pytest.raises(DataError, match="labels folder"):
        pair_videos([videos], labels / "a.csv")


def test_run_writes_reports_once(tmp_path: Path) -> None:
    _clip(tmp_path / "clip.mp4", 10)
    labels = _labels(tmp_path / "clip.csv", 10, unlabelled=set(range(10)))
    report = run_video_eval(
        [tmp_path / "clip.mp4"],
        labels,
        model="tophat",
        tta=True,
        json_path=tmp_path / "r.json",
        markdown_path=tmp_path / "r.md",
    )
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["total"]["pd"] is None and math.isnan(report.total.pd)  # no labelled frame
    assert data["conv_dtype"] == "float32"  # tophat has no convolutions to switch
    assert data["input_scale"] is None and data["tta"] is True
    assert data["weights"] == "tophat" and (tmp_path / "r.md").read_text().startswith("| video |")
    with pytest.raises(DataError, match="already exists"):
        run_video_eval(
            [tmp_path / "clip.mp4"], labels, model="tophat", json_path=tmp_path / "r.json"
        )


def test_real_labels(drone_ir: Path) -> None:
    with pytest.raises(DataError, match="UNALIGNED"):
        read_box_labels(drone_ir / "labels_csv" / "IR_DRONE_104.csv")
    bird = read_box_labels(drone_ir / "labels_csv" / "IR_BIRD_007.csv")
    assert len(bird) > 0 and np.isnan(bird).all()
    drone = read_box_labels(drone_ir / "labels_csv" / "IR_DRONE_015.csv")
    assert len(drone) == 316 and not np.isnan(drone).any()
