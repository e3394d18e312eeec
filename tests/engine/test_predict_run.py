"""`run_predict` / `predict_paths`: inputs of every kind, outputs, failures, resume and shards."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from istd.data.io import read_mask
from istd.data.video import AtomicVideoWriter, iter_video_frames
from istd.engine.predict import Predictor
from istd.engine.predict_inputs import (
    assign_keys,
    atomic_text,
    expand_inputs,
    parse_shard,
    select_shard,
)
from istd.engine.predict_run import CSV_COLUMNS, PredictOptions, predict_paths, run_predict
from istd.errors import ConfigError, DataError


class BrightSpot(nn.Module):
    """Pixels brighter than 0.5 are targets."""

    model_name = "bright-spot"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40 * (x[:, :1] - 0.5)


def _image(h: int, w: int, spots: list[tuple[int, int]]) -> np.ndarray:
    im = np.full((h, w), 30, np.uint8)
    for y, x in spots:
        im[y : y + 2, x : x + 2] = 220
    return im


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    cv2.imwrite(str(root / "a" / "frame.png"), _image(40, 60, [(5, 5), (20, 40)]))
    cv2.imwrite(str(root / "b" / "frame.png"), _image(40, 60, [(10, 10)]))  # same stem
    big = _image(90, 130, [(80, 120)]).astype(np.uint16) * 257  # 16-bit
    cv2.imwrite(str(root / "b" / "big16.png"), big)
    cv2.imwrite(str(root / "tiny.png"), np.full((1, 1), 255, np.uint8))
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    return root


def _run(items, out: Path, **opts) -> dict:
    predictor = Predictor(model=BrightSpot(), tile=64, overlap=8, batch_size=2)
    summary = run_predict(assign_keys(items), predictor, out, PredictOptions(**opts))
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["processed"] == summary.processed
    return on_disk


def test_folder_run_outputs_and_failures(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = expand_inputs([inputs], recursive=True)
    assert len(items) == 6
    summary = _run(items, out, save_prob=True, overlay=True)
    assert (
        summary["processed"] == 4 and summary["frames"] == 4 and summary["weights"] == "bright-spot"
    )
    assert summary["conv_dtype"] == "float32"  # bright-spot has no convolutions to switch
    assert summary["input_scale"] is None  # nor an input scale
    assert sorted(f["path"].rsplit("/", 1)[1] for f in summary["failures"]) == [
        "empty.png",
        "text.png",
    ]
    masks = sorted(p.name for p in out.glob("*_mask.png"))
    assert len(masks) == 4 and "tiny_mask.png" in masks and "big16_mask.png" in masks
    # The two frame.png files get distinct keys (stem + path hash): nothing overwritten.
    assert sum(m.startswith("frame-") for m in masks) == 2
    assert read_mask(out / "big16_mask.png").shape == (90, 130)  # tiled (tile 64), own size
    assert read_mask(out / "big16_mask.png")[80:82, 120:122].all()
    prob = cv2.imread(str(out / "big16_prob.png"), cv2.IMREAD_UNCHANGED)
    assert prob.dtype == np.uint16 and prob.max() > 60000
    assert cv2.imread(str(out / "tiny_overlay.png")).shape == (1, 1, 3)
    table = pd.read_csv(out / "detections.csv")
    assert list(table.columns) == CSV_COLUMNS
    assert len(table) == 2 + 1 + 1 + 1 and set(table["frame"]) == {0}
    row = table[table["source"].str.endswith("big16.png")].iloc[0]
    assert (row.x, row.y, row.w, row.h, row.area) == (120, 80, 2, 2, 4)
    assert row.cx == pytest.approx(120.5) and row.score > 0.99


def test_second_run_refused_then_resumed(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = expand_inputs([inputs], recursive=True)
    _run(items, out)
    with pytest.raises(DataError, match="--resume"):
        _run(expand_inputs([inputs], recursive=True), out)
    (out / "tiny_mask.png").unlink()  # as if the run had been killed before this image
    before = (out / "big16_mask.png").stat().st_mtime_ns
    summary = _run(expand_inputs([inputs], recursive=True), out, resume=True)
    assert summary["processed"] == 1 and summary["skipped"] == 3
    assert (out / "tiny_mask.png").exists()
    assert (out / "big16_mask.png").stat().st_mtime_ns == before
    assert len(pd.read_csv(out / "detections.csv")) == 5  # skipped images still listed


def test_outputs_never_replace_inputs(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "x.png"), _image(8, 8, [(1, 1)]))
    cv2.imwrite(str(tmp_path / "x_mask.png"), np.zeros((8, 8), np.uint8))  # a user's file
    original = (tmp_path / "x_mask.png").read_bytes()
    summary = _run(expand_inputs([tmp_path / "x.png", tmp_path / "x_mask.png"]), tmp_path)
    assert any("overwrite an input" in f["error"] for f in summary["failures"])
    assert (tmp_path / "x_mask.png").read_bytes() == original


def _clip(path: Path, frames: int = 15) -> None:
    with AtomicVideoWriter(path, 15.0, (64, 48)) as writer:
        for t in range(frames):
            frame = np.full((48, 64), 20, np.uint8)
            cv2.rectangle(frame, (5 + 2 * t, 10), (7 + 2 * t, 12), 255, -1)
            writer.write(frame)


def test_video_with_tracking_and_overlay(tmp_path: Path) -> None:
    _clip(tmp_path / "clip.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    summary = _run(expand_inputs([tmp_path]), out, overlay=True, track=True)
    assert summary["processed"] == 1 and summary["frames"] == 15
    assert [f["path"].rsplit("/", 1)[1] for f in summary["failures"]] == ["broken.mp4"]
    table = pd.read_csv(out / "clip_detections.csv")
    assert list(table.columns) == [*CSV_COLUMNS, "track_id"]
    assert sorted(table["frame"].unique()) == list(range(15))
    # One target: tentative for two frames, then track 0 to the end.
    assert list(table["track_id"]) == [-1, -1] + [0] * 13
    assert np.diff(table["cx"]).mean() == pytest.approx(2.0, abs=0.2)
    assert len(list(iter_video_frames(out / "clip_overlay.mp4"))) == 15
    assert len(pd.read_csv(out / "detections.csv")) == 0  # no images in this run


def test_frame_folder_as_sequence(tmp_path: Path) -> None:
    seq = tmp_path / "seq"
    seq.mkdir()
    for t in range(4):
        cv2.imwrite(str(seq / f"{t}.png"), _image(20, 30, [(5, 3 + 3 * t)]))
    out = tmp_path / "out"
    _run(expand_inputs([seq], sequence=True), out, track=True)
    table = pd.read_csv(out / "seq_detections.csv")
    assert list(table["frame"]) == [0, 1, 2, 3] and list(table["x"]) == [3, 6, 9, 12]


def test_stdin_and_shards(inputs: Path) -> None:
    listing = io.StringIO(
        f"{inputs / 'tiny.png'}\n\n{inputs / 'a'}\n{inputs / 'b' / 'big16.png'}\n"
    )
    items = assign_keys(expand_inputs(["-"], stdin=listing))
    assert [i.path.name for i in items] == ["tiny.png", "frame.png", "big16.png"]
    shards = [select_shard(items, (k, 2)) for k in (1, 2)]
    assert [len(s) for s in shards] == [2, 1]
    assert {i.key for s in shards for i in s} == {i.key for i in items}
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "x", "1/2/3"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    with pytest.raises(DataError, match="stdin"):
        expand_inputs(["-"])


def test_missing_input_reported(tmp_path: Path) -> None:
    summary = _run(expand_inputs([tmp_path / "nope.png"]), tmp_path / "out")
    assert summary["failures"][0]["error"].endswith("no such file or folder")


def test_video_memory_stays_flat(tmp_path: Path) -> None:
    """Peak Python/numpy memory does not grow with the video's length (frames are streamed)."""
    import tracemalloc

    peaks = []
    for frames in (30, 150):
        _clip(tmp_path / f"v{frames}.mp4", frames=frames)
        items = expand_inputs([tmp_path / f"v{frames}.mp4"])
        tracemalloc.start()
        _run(items, tmp_path / f"out{frames}", track=True, overlay=True)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 120 more frames of 64 x 48 float32 would add 1.5 MB if they were kept.
    assert peaks[1] < peaks[0] + 500_000, peaks


def test_real_sample_frames(tmp_path: Path) -> None:
    """The repository's sample infrared frames run end to end with a weight-free detector."""
    samples = Path(__file__).resolve().parents[2] / "data" / "samples"
    pngs = sorted(samples.glob("*.png"))
    if not pngs:
        pytest.skip("data/samples has no frames")
    predictor = Predictor(model="tophat")
    summary = run_predict(
        assign_keys(expand_inputs(pngs)), predictor, tmp_path, PredictOptions(overlay=True)
    )
    assert summary.processed == len(pngs) and not summary.failures
    assert read_mask(tmp_path / f"{pngs[0].stem}_mask.png").shape == (256, 320)


def test_clash_error_names_both_paths(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "x.png"), _image(8, 8, [(1, 1)]))
    cv2.imwrite(str(tmp_path / "x_mask.png"), np.zeros((8, 8), np.uint8))
    summary = _run(expand_inputs([tmp_path / "x.png", tmp_path / "x_mask.png"]), tmp_path)
    (failure,) = summary["failures"]
    assert failure["error"].startswith(f"{tmp_path / 'x.png'}: ")
    assert str(tmp_path / "x_mask.png") in failure["error"]


def test_named_inputs_inside_out_are_processed(tmp_path: Path) -> None:
    out, other = tmp_path / "c", tmp_path / "b"
    out.mkdir()
    other.mkdir()
    cv2.imwrite(str(out / "x.png"), _image(16, 16, [(3, 3)]))
    cv2.imwrite(str(other / "x.png"), _image(16, 16, [(8, 8)]))
    summary = predict_paths([str(out / "x.png"), str(other / "x.png")], out, model="tophat")
    assert summary.processed == 2 and not summary.failures
    assert len(list(out.glob("x-*_mask.png"))) == 2


def test_scanned_output_folder_skips_only_own_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cv2.imwrite(str(tmp_path / "x.png"), _image(16, 16, [(3, 3)]))
    monkeypatch.chdir(tmp_path)
    options = PredictOptions(overlay=True, save_prob=True)
    summary = predict_paths(["."], ".", model="tophat", options=options)
    assert summary.inputs == 1 and summary.processed == 1
    assert (tmp_path / "x_mask.png").exists() and (tmp_path / "x_overlay.png").exists()
    # A killed run's overlay video temp file (.mp4) is not an input either.
    (tmp_path / ".v_overlay.mp4.abcd1234.mp4").write_bytes(b"")
    resumed = predict_paths(["."], ".", model="tophat", options=replace(options, resume=True))
    assert resumed.inputs == 1 and resumed.skipped == 1 and not resumed.failures
    # A user's file that only looks like an output, named explicitly, is read.
    named = predict_paths(["x_mask.png"], ".", model="tophat", options=PredictOptions(resume=True))
    assert named.processed == 1 and (tmp_path / "x_mask_mask.png").exists()


class FailsOnWidth13(BrightSpot):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 13:
            raise RuntimeError("out of memory\nsecond line")
        return super().forward(x)


def test_one_input_error_does_not_stop_the_run(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "bad.png"), _image(8, 13, [(1, 1)]))
    cv2.imwrite(str(tmp_path / "good.png"), _image(8, 8, [(1, 1)]))
    predictor = Predictor(model=FailsOnWidth13(), batch_size=1)
    out = tmp_path / "out"
    summary = run_predict(assign_keys(expand_inputs([tmp_path])), predictor, out)
    assert summary.processed == 1
    assert summary.failures == [
        {"path": str(tmp_path / "bad.png"), "error": f"{tmp_path / 'bad.png'}: out of memory"}
    ]
    assert json.loads((out / "summary.json").read_text())["processed"] == 1


def test_atomic_text_reports_unwritable_file(tmp_path: Path) -> None:
    path = tmp_path / ("n" * 250 + ".csv")  # the temporary name adds 14 characters
    with pytest.raises(DataError, match="cannot write"), atomic_text(path) as handle:
        handle.write("x")
    assert list(tmp_path.iterdir()) == []


def test_very_long_file_name(tmp_path: Path) -> None:
    long = tmp_path / ("é" + "x" * 248 + ".png")  # 250 characters, 251 bytes of stem
    cv2.imencode(".png", _image(16, 16, [(3, 3)]))[1].tofile(str(long))
    cv2.imwrite(str(tmp_path / "short.png"), _image(16, 16, [(8, 8)]))
    out = tmp_path / "out"
    summary = _run(expand_inputs([tmp_path]), out, save_prob=True, overlay=True)
    assert summary["processed"] == 2 and not summary["failures"]
    (mask,) = (p for p in out.glob("*_mask.png") if p.name != "short_mask.png")
    assert mask.name.startswith("éxxx") and len(mask.name.encode()) <= 220
    key = mask.name.removesuffix("_mask.png")
    assert key == assign_keys(expand_inputs([long]))[0].key  # shards agree on it
    assert len(pd.read_csv(out / "detections.csv")) == 2


def test_sequence_folder_given_as_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seq = tmp_path / "seq"
    seq.mkdir()
    cv2.imwrite(str(seq / "0.png"), _image(8, 8, [(1, 1)]))
    monkeypatch.chdir(seq)
    (item,) = assign_keys(expand_inputs(["."], sequence=True))
    assert item.key == "seq"


def _mjpg_clip(path: Path, frames: int = 20) -> None:
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for t in range(frames):
        frame = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)  # noise: large JPEG frames
        frame[20:23, 5 + 2 * t : 8 + 2 * t] = 255
        writer.write(frame)
    writer.release()


def test_truncated_video_fails_but_keeps_decoded_frames(tmp_path: Path) -> None:
    _mjpg_clip(tmp_path / "full.avi")
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    summary = _run(expand_inputs([tmp_path / "cut.avi"]), out, overlay=True)
    (failure,) = summary["failures"]
    decoded = len(list(iter_video_frames(out / "cut_overlay.mp4")))
    assert failure["error"] == (
        f"{tmp_path / 'cut.avi'}: decoded {decoded} of 20 frames (truncated or corrupt video)"
    )
    assert summary["processed"] == 0 and summary["frames"] == decoded and 0 < decoded < 19
    table = pd.read_csv(out / "cut_detections.csv")
    assert list(table["frame"]) == list(range(decoded))
    assert _run(expand_inputs([tmp_path / "full.avi"]), tmp_path / "o2")["processed"] == 1


@pytest.mark.parametrize(("height", "width"), [(1, 1), (17, 33)])
def test_overlay_video_of_tiny_and_odd_frames(tmp_path: Path, height: int, width: int) -> None:
    seq = tmp_path / "seq"
    seq.mkdir()
    for t in range(3):
        cv2.imwrite(str(seq / f"{t}.png"), np.full((height, width), 255, np.uint8))
    out = tmp_path / "out"
    summary = _run(expand_inputs([seq], sequence=True), out, overlay=True)
    assert summary["processed"] == 1 and not summary["failures"]
    frames = list(iter_video_frames(out / "seq_overlay.mp4"))
    # The whole frame, padded to even sizes of at least 2 x 2.
    assert frames[0].shape == (max(2, height + height % 2), max(2, width + width % 2))
    assert len(pd.read_csv(out / "seq_detections.csv")) == 3


def test_overlay_failure_keeps_detections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import istd.engine.predict_run as predict_run

    def broken_writer(path: Path, fps: float, size: tuple[int, int]) -> None:
        raise DataError(f"{path}: OpenCV cannot open a video writer (codec mp4v)")

    monkeypatch.setattr(predict_run, "AtomicVideoWriter", broken_writer)
    _clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    summary = _run(expand_inputs([tmp_path / "clip.mp4"]), out, overlay=True)
    (failure,) = summary["failures"]
    assert failure["error"].startswith(f"{tmp_path / 'clip.mp4'}: {out / 'clip_overlay.mp4'}: ")
    assert sorted(pd.read_csv(out / "clip_detections.csv")["frame"]) == list(range(15))
    assert not (out / "clip_overlay.mp4").exists()
    # A resumed run redoes the incomplete video.
    monkeypatch.undo()
    resumed = _run(expand_inputs([tmp_path / "clip.mp4"]), out, overlay=True, resume=True)
    assert resumed["processed"] == 1 and (out / "clip_overlay.mp4").exists()


def test_resume_removes_stale_temporary_files(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _clip(inputs / "clip.mp4")
    _run(expand_inputs([inputs]), out, overlay=True)
    stale = [
        out / ".tiny_mask.png.abcd_123.tmp",
        out / ".tiny_overlay.png.k2j4h5g6.tmp",
        out / ".istd-parts" / ".tiny.csv.zzzzzzzz.tmp",
        out / ".clip_overlay.mp4.q1w2e3r4.mp4",
        out / ".clip_detections.csv.q1w2e3r4.tmp",
        out / ".summary.json.a1b2c3d4.tmp",
        out / ".detections.csv.a1b2c3d4.tmp",
    ]
    kept = [out / ".notes.txt.abcd1234.tmp", out / ".other_mask.png.abcd1234.tmp"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    _run(expand_inputs([inputs]), out, overlay=True, resume=True)
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)  # not outputs of this run's inputs
