"""The evaluate loop and run_evaluation reports, on synthetic folders and real NUAA-SIRST images."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from istd.data import IRSTDDataset
from istd.data.io import write_png_atomic
from istd.engine.evaluate import _label, evaluate, run_evaluation
from istd.errors import DataError, WeightsError
from istd.metrics import Metrics
from istd.metrics.report import prepare_out_dir


class BrightIsTarget(nn.Module):
    """Logits from intensity: exactly right on the synthetic set, whatever the image size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 1, H, W)
        return (x - 0.5) * 40.0


def _synthetic(root: Path, sizes=((24, 31), (17, 40), (32, 32))) -> Path:
    """images/ + masks/ folder: bright square targets on a dark background, odd sizes."""
    rng = np.random.default_rng(3)
    for k, (h, w) in enumerate(sizes):
        mask = np.zeros((h, w), bool)
        for _ in range(k + 1):
            r, c = rng.integers(1, h - 4), rng.integers(1, w - 4)
            mask[r : r + 2, c : c + 3] = True
        image = np.where(mask, 220, 20).astype(np.uint8)
        write_png_atomic(root / "images" / f"img{k}.png", image)
        write_png_atomic(root / "masks" / f"img{k}.png", mask)
    return root


def test_evaluate_native_resolution_and_restores_mode(tmp_path: Path) -> None:
    data = _synthetic(tmp_path / "ds")
    model = BrightIsTarget().train()
    loader = DataLoader(IRSTDDataset(data), batch_size=1)
    seen: list[tuple[str, tuple[int, int]]] = []
    result = evaluate(
        model, loader, Metrics(), "cpu", on_image=lambda i, im, p, g, r: seen.append((i, p.shape))
    )
    assert model.training  # restored
    assert result["iou"] == result["niou"] == result["pd"] == 1.0 and result["fa"] == 0.0
    assert result["n_targets"] == 6
    assert seen == [("img0", (24, 31)), ("img1", (17, 40)), ("img2", (32, 32))]


def test_evaluate_rejects_wrong_output_shape() -> None:
    class Shrinks(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[..., :-1]

    batch = [(torch.zeros(1, 1, 5, 6), torch.zeros(1, 1, 5, 6), ["x"])]
    with pytest.raises(DataError, match="model output"):
        evaluate(Shrinks(), batch, Metrics(), "cpu")


def test_run_evaluation_writes_the_report(tmp_path: Path) -> None:
    data = _synthetic(tmp_path / "ds")
    out = tmp_path / "report"
    summary = run_evaluation(["tophat"], data, out, gallery=2, precision="auto")
    names = {p.relative_to(out).as_posix() for p in summary.files}
    for name in (
        "report.md",
        "report.html",
        "metrics.json",
        "per_image.csv",
        "pd_fa.png",
        "roc.png",
    ):
        assert name in names
    assert len([n for n in names if n.startswith("gallery/")]) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "iou",
        "niou",
        "pd",
        "fa",
        "precision",
        "recall",
        "f1",
        "n_images",
        "n_targets",
        "n_pixels",
    ):
        assert key in metrics
    facts = metrics["facts"]
    assert facts["ids"] == ["img0", "img1", "img2"] and len(facts["ids_sha256"]) == 64
    assert facts["weights_sha256"] is None and facts["model"] == "tophat"
    assert facts["threshold"] == 0.5 and "torch" in facts["versions"]
    assert facts["conv_dtype"] == "float32"  # auto, but tophat has no convolutions to switch
    table = pd.read_csv(out / "per_image.csv")
    assert list(table["image"]) == ["img0", "img1", "img2"]
    assert int(table["targets"].sum()) == metrics["n_targets"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="gallery' not in html  # self-contained
    # A second run refuses the non-empty folder, then overwrites on request.
    with pytest.raises(DataError, match="--overwrite"):
        run_evaluation(["tophat"], data, out)
    run_evaluation(["tophat"], data, out, overwrite=True)


def test_run_evaluation_with_saved_weights_and_compare(tmp_path: Path) -> None:
    from istd.models import build_model, save_pretrained

    data = _synthetic(tmp_path / "ds")
    weights = save_pretrained(build_model("mim-istd-test"), tmp_path / "w")
    out = tmp_path / "cmp"
    # the same folder named twice (another spelling of its path) and a model twice: once each
    again = str(tmp_path / "ds" / ".." / "w")
    summary = run_evaluation([str(weights), "tophat", again, "tophat"], data, out, gallery=1)
    assert [r.label for r in summary.runs] == ["w", "tophat"]
    for name in (
        "comparison.md",
        "comparison.csv",
        "pd_fa_compare.png",
        "w/report.md",
        "tophat/metrics.json",
    ):
        assert (out / name).is_file(), name
    facts = json.loads((out / "w" / "metrics.json").read_text())["facts"]
    assert len(facts["weights_sha256"]) == 64 and facts["conv_dtype"] == "float32"
    cmp = pd.read_csv(out / "comparison.csv")
    assert list(cmp["model"]) == ["w", "tophat"]
    diffs = pd.read_csv(out / "differences.csv")  # tophat against w, paired bootstrap
    assert list(diffs["model"]) == ["tophat"] * 4 and list(diffs["metric"]) == [
        "iou", "niou", "pd", "fa"
    ]  # fmt: skip
    assert "## Differences against w" in (out / "comparison.md").read_text()


def test_input_scale_reaches_the_networks_and_the_report(tmp_path: Path) -> None:
    from istd.errors import ConfigError
    from istd.models import build_model, save_pretrained

    data = _synthetic(tmp_path / "ds")
    weights = str(save_pretrained(build_model("mim-istd-test"), tmp_path / "w"))
    own = run_evaluation([weights], data, tmp_path / "own", gallery=0)
    assert own.runs[0].facts["input_scale"] == 1.0  # the weights' own
    both = run_evaluation([weights, "tophat"], data, tmp_path / "x2", gallery=0, input_scale=2.0)
    facts = {r.label: r.facts for r in both.runs}
    assert facts["w"]["input_scale"] == 2.0 and facts["tophat"]["input_scale"] is None
    assert both.runs[0].metrics["roc_auc"] != own.runs[0].metrics["roc_auc"]
    with pytest.raises(ConfigError, match="input scale 2.0"):
        run_evaluation(["tophat"], data, tmp_path / "never", input_scale=2.0)
    with pytest.raises(ConfigError, match="input_scale"):
        run_evaluation([weights], data, tmp_path / "never", input_scale=10.0)
    assert not (tmp_path / "never").exists()


def test_tta_is_applied_and_recorded(tmp_path: Path) -> None:
    from istd.models import build_model, save_pretrained

    data = _synthetic(tmp_path / "ds")
    torch.manual_seed(0)
    weights = str(save_pretrained(build_model("mim-istd-test"), tmp_path / "w"))
    plain = run_evaluation([weights], data, tmp_path / "plain", gallery=0)
    flipped = run_evaluation([weights], data, tmp_path / "tta", gallery=0, tta=True)
    assert plain.runs[0].facts["tta"] is False and flipped.runs[0].facts["tta"] is True
    assert json.loads((tmp_path / "tta" / "metrics.json").read_text())["facts"]["tta"] is True
    assert flipped.runs[0].metrics["roc_auc"] != plain.runs[0].metrics["roc_auc"]


def test_bad_sources_fail_before_writing(tmp_path: Path) -> None:
    data = _synthetic(tmp_path / "ds")
    out = tmp_path / "never"
    with pytest.raises(WeightsError):
        run_evaluation([str(tmp_path / "missing-weights")], data, out)
    assert not out.exists()


def test_prepare_out_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        prepare_out_dir(tmp_path / "f", overwrite=True)


def test_real_nuaa_sirst_test_split(nuaa_sirst: Path, tmp_path: Path) -> None:
    summary = run_evaluation(
        ["tophat"], nuaa_sirst, tmp_path / "r", split="test", limit=4, gallery=1
    )
    run = summary.runs[0]
    assert run.facts["split"] == "test" and run.metrics["n_images"] == 4
    assert run.metrics["n_targets"] >= 4 and 0.0 <= run.metrics["iou"] <= 1.0
    assert run.curves is not None and len(run.curves["pd_fa"]["pd"]) > 5


def test_empty_split_is_named_and_leaves_no_folder(tmp_path: Path) -> None:
    data = _synthetic(tmp_path / "ds")
    (data / "trainval.txt").write_text("img0\nimg1\nimg2\n")
    (data / "test.txt").write_text("\n")  # a split file listing nothing
    out = tmp_path / "never"
    with pytest.raises(DataError, match="split 'test' holds no samples"):
        run_evaluation(["tophat"], data, out, split="test")
    assert not out.exists()


def test_on_image_gets_the_record_ids_without_loader_ids() -> None:
    # A loader of (images, masks) only, two batches of two: the hook's ids must be the records'
    # running indices, not the index within the batch.
    images = torch.zeros(2, 1, 5, 6)
    images[:, :, 2, 3] = 1.0
    metrics, seen = Metrics(), []
    evaluate(
        BrightIsTarget(),
        [(images, images.clone())] * 2,
        metrics,
        "cpu",
        on_image=lambda i, im, p, g, r: seen.append((i, r["image"])),
    )
    assert seen == [("0", "0"), ("1", "1"), ("2", "2"), ("3", "3")]
    assert [r["image"] for r in metrics.per_image()] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("source", ["..", ".", "", "sub/..", "/", "..."])
def test_labels_are_safe_folder_names(source: str) -> None:
    label = _label(source, set())
    assert label and label.strip(".") and "/" not in label and "\\" not in label


def test_dot_dot_source_runs_in_its_own_sub_folder(tmp_path: Path, monkeypatch) -> None:
    from istd.models import build_model, save_pretrained

    data = _synthetic(tmp_path / "ds")
    save_pretrained(build_model("mim-istd-test"), tmp_path / "w")
    (tmp_path / "w" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "w" / "sub")
    out = tmp_path / "runs" / "cmp"
    summary = run_evaluation(["..", "tophat"], data, out, gallery=0)
    assert [r.label for r in summary.runs] == ["w", "tophat"]  # '..' named by its folder
    assert (out / "w" / "report.md").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["cmp"]  # nothing beside --out


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system taking any bytes")
def test_non_utf8_file_names(tmp_path: Path) -> None:
    data = _synthetic(tmp_path / "ds", sizes=((24, 31),))
    for sub in ("images", "masks"):  # img0.png -> b'caf\xe9.png' (Latin-1, not UTF-8)
        os.rename(data / sub / "img0.png", os.fsdecode(os.fsencode(data / sub) + b"/caf\xe9.png"))
    out = tmp_path / "r"
    summary = run_evaluation(["tophat"], data, out, gallery=1)
    facts = summary.runs[0].facts
    assert facts["ids"] == ["caf\udce9"]
    assert facts["ids_sha256"] == hashlib.sha256(b"caf\xe9\n").hexdigest()  # the name's bytes
    assert (out / "per_image.csv").read_text().splitlines()[1].startswith("caf\\xe9,")
    assert "caf\\xe9" in (out / "report.md").read_text()
    assert "caf\\xe9" in (out / "report.html").read_text()
