"""The evaluate loop and run_evaluation reports, on synthetic folders and real NUAA-SIRST images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from istd.data import IRSTDDataset
from istd.data.io import write_png_atomic
from istd.engine.evaluate import evaluate, run_evaluation
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
    summary = run_evaluation(["tophat"], data, out, gallery=2)
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
    summary = run_evaluation([str(weights), "tophat"], data, out, gallery=1)
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
    assert len(facts["weights_sha256"]) == 64
    cmp = pd.read_csv(out / "comparison.csv")
    assert list(cmp["model"]) == ["w", "tophat"]


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
