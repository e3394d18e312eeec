"""`istd predict` and `istd eval-video` through the CLI (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from istd.cli import app
from istd.data.video import AtomicVideoWriter
from istd.models import build_model, save_pretrained

runner = CliRunner()


def _images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(3):
        im = (rng.random((48, 64)) * 60).astype(np.uint8)
        im[10 + k : 13 + k, 20:23] = 250
        cv2.imwrite(str(folder / f"img{k}.png"), im)
    return folder


def test_help_lists_options() -> None:
    result = runner.invoke(app, ["predict", "--help"])
    assert result.exit_code == 0
    for option in (
        "--out",
        "--weights",
        "--model",
        "--threshold",
        "--save-prob",
        "--overlay",
        "--track",
        "--tile",
        "--batch",
        "--device",
        "--precision",
        "--shard",
        "--recursive",
        "--glob",
        "--sequence",
        "--resume",
    ):
        assert option in result.output


def test_folder_with_weight_free_detector(tmp_path: Path) -> None:
    src = _images(tmp_path / "in")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # truncated PNG
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["predict", str(src), "--out", str(out), "--model", "tophat", "--overlay"]
    )
    assert result.exit_code == 1, result.output  # one input failed
    assert "broken.png" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["processed"] == 3
        and len(summary["failures"]) == 1
        and summary["weights"] == "tophat"
    )
    assert len(list(out.glob("*_mask.png"))) == 3 and len(list(out.glob("*_overlay.png"))) == 3
    table = pd.read_csv(out / "detections.csv")
    assert set(table["source"].map(lambda s: Path(s).name)) <= {"img0.png", "img1.png", "img2.png"}
    # Re-running into the same folder is refused; --resume finds everything done.
    again = runner.invoke(
        app, ["predict", str(src / "img0.png"), "--out", str(out), "--model", "tophat"]
    )
    assert again.exit_code == 1 and "--resume" in again.output
    resumed = runner.invoke(
        app,
        [
            "predict",
            str(src / "img0.png"),
            "--out",
            str(out),
            "--model",
            "tophat",
            "--overlay",
            "--resume",
        ],
    )
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "summary.json").read_text())["skipped"] == 1


def test_trained_weights_folder_and_stdin(tmp_path: Path) -> None:
    src = _images(tmp_path / "in")
    weights = save_pretrained(build_model("mim-istd-test"), tmp_path / "w")
    listing = f"{src / 'img0.png'}\n{src / 'img2.png'}\n"
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "predict", "-", "--out", str(out), "--weights", str(weights), "--save-prob",
            "--precision", "float32",
        ],
        input=listing,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*_prob.png")) == ["img0_prob.png", "img2_prob.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weights"] == "w" and summary["conv_dtype"] == "float32"
    assert summary["input_scale"] == 1.0
    scaled = runner.invoke(
        app,
        ["predict", str(src / "img0.png"), "--out", str(tmp_path / "x2"), "--weights",
         str(weights), "--input-scale", "2"],
    )  # fmt: skip
    assert scaled.exit_code == 0, scaled.output
    assert json.loads((tmp_path / "x2" / "summary.json").read_text())["input_scale"] == 2.0
    assert summary["tta"] is False
    flipped = runner.invoke(
        app,
        ["predict", str(src / "img0.png"), "--out", str(tmp_path / "tta"), "--weights",
         str(weights), "--tta"],
    )  # fmt: skip
    assert flipped.exit_code == 0, flipped.output
    assert "flip TTA" in flipped.output
    assert json.loads((tmp_path / "tta" / "summary.json").read_text())["tta"] is True
    refused = runner.invoke(
        app, ["predict", str(src), "--out", str(tmp_path / "no"), "--input-scale", "9"]
    )
    assert refused.exit_code == 1 and "input_scale" in refused.output
    assert not (tmp_path / "no").exists()


def test_unknown_precision_is_one_line(tmp_path: Path) -> None:
    src = _images(tmp_path / "in")
    result = runner.invoke(
        app, ["predict", str(src), "--out", str(tmp_path / "out"), "--precision", "half"]
    )
    assert result.exit_code != 0 and "'half' is not one of" in result.output
    assert not (tmp_path / "out").exists()


def test_missing_default_weights_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISTD_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    src = _images(tmp_path / "in")
    result = runner.invoke(app, ["predict", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "default weights" in result.output and "Traceback" not in result.output


def test_bad_shard_and_no_inputs(tmp_path: Path) -> None:
    src = _images(tmp_path / "in")
    result = runner.invoke(
        app,
        ["predict", str(src), "--out", str(tmp_path / "o"), "--model", "tophat", "--shard", "3/2"],
    )
    assert result.exit_code == 1 and "--shard" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app, ["predict", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--model", "tophat"]
    )
    assert result.exit_code == 1 and "no images or videos" in result.output


def test_shards_split_the_work(tmp_path: Path) -> None:
    src = _images(tmp_path / "in")
    out = tmp_path / "out"
    for k in (1, 2):
        result = runner.invoke(
            app, ["predict", str(src), "--out", str(out), "--model", "tophat", "--shard", f"{k}/2"]
        )
        assert result.exit_code == 0, result.output
    processed = [
        json.loads((out / f"summary.{k}-of-2.json").read_text())["processed"] for k in (1, 2)
    ]
    assert processed == [2, 1] and len(list(out.glob("*_mask.png"))) == 3


def _clip(path: Path) -> None:
    with AtomicVideoWriter(path, 10.0, (64, 48)) as writer:
        for t in range(8):
            frame = np.full((48, 64), 20, np.uint8)
            frame[20:23, 5 + 3 * t : 8 + 3 * t] = 255
            writer.write(frame)


def test_video_and_eval_video(tmp_path: Path) -> None:
    _clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "clip.mp4"),
            "--out",
            str(out),
            "--model",
            "tophat",
            "--track",
            "--overlay",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "clip_overlay.mp4").stat().st_size > 0
    assert "track_id" in pd.read_csv(out / "clip_detections.csv").columns
    labels = tmp_path / "clip.csv"
    labels.write_text("frame,x,y,w,h\n" + "".join(f"{t},{6 + 3 * t},21,3,3\n" for t in range(8)))
    report = tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "eval-video",
            str(tmp_path / "clip.mp4"),
            "--labels",
            str(labels),
            "--model",
            "tophat",
            "--json",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    total = json.loads(report.read_text())["total"]
    assert total["frames"] == 8 and total["labelled_frames"] == 8 and 0 <= total["pd"] <= 1
    slot = tmp_path / "slot.csv"
    slot.write_text("slot,x,y,w,h\n0,1,1,2,2\n")
    result = runner.invoke(
        app, ["eval-video", str(tmp_path / "clip.mp4"), "--labels", str(slot), "--model", "tophat"]
    )
    assert result.exit_code == 1 and "UNALIGNED" in result.output


def test_out_inside_input_folder_is_not_read_back(tmp_path: Path) -> None:
    src = _images(tmp_path / "in")
    out = src / "pred"
    args = ["predict", str(src), "--out", str(out), "--model", "tophat", "--recursive"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 3 and summary["skipped"] == 3


def test_first_run_compile_is_announced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import istd.ops

    src = _images(tmp_path / "in")
    weights = save_pretrained(build_model("mim-istd-test"), tmp_path / "w")
    monkeypatch.setattr(istd.ops, "cpu_kernels_cached", lambda: False)
    args = ["predict", str(src), "--weights", str(weights)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "compiling the CPU kernels" in result.output
    tophat = runner.invoke(
        app, ["predict", str(src), "--model", "tophat", "--out", str(tmp_path / "b")]
    )
    assert tophat.exit_code == 0 and "compiling" not in tophat.output


def test_inputs_inside_out_are_not_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _images(tmp_path / "c")
    _images(tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    named = ["predict", "c/img0.png", "b/img0.png", "--out", "c", "--model", "tophat"]
    result = runner.invoke(app, named)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["processed"] == 2
    scanned = ["predict", "c", "--out", "c", "--model", "tophat", "--resume"]
    result = runner.invoke(app, scanned)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    # The earlier run's img0-<hash>_mask.png files are not read back as inputs.
    assert summary["inputs"] == 3 and summary["processed"] == 3 and not summary["failures"]
    (tmp_path / "top.png").write_bytes((tmp_path / "b" / "img1.png").read_bytes())
    for extra in ([], ["--resume"]):
        result = runner.invoke(app, ["predict", ".", "--out", ".", "--model", "tophat", *extra])
        assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["inputs"] == 1 and summary["skipped"] == 1
    assert (tmp_path / "top_mask.png").exists()


def test_first_run_note_follows_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import istd.ops

    src = _images(tmp_path / "in")
    weights = save_pretrained(build_model("tophat"), tmp_path / "w")  # not MiM-ISTD
    monkeypatch.setattr(istd.ops, "cpu_kernels_cached", lambda: False)
    args = ["predict", str(src), "--weights", str(weights), "--out", str(tmp_path / "a")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "compiling" not in result.output
