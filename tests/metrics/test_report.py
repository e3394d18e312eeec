"""Report pieces: overlays, strict JSON, table scaling, the Pd-Fa area, gallery names, the\ndefinitions text, non-UTF-8 ids and the figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from istd.metrics import Metrics
from istd.metrics._figures import _pd_fa_figure, _roc_figure
from istd.metrics.functional import auc, pd_fa_area
from istd.metrics.report import (
    EvalRun,
    GalleryItem,
    iou_losses,
    metrics_table,
    overlay,
    to_json,
    write_report,
)


def test_overlay_outlines_gt_green_and_prediction_red() -> None:
    image = np.full((9, 9), 0.5, np.float32)
    gt = np.zeros((9, 9), bool)
    pred = np.zeros((9, 9), bool)
    gt[2, 2] = True
    pred[6, 6] = True
    rgb = overlay(image, gt, pred)
    assert rgb.shape == (9, 9, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 2]) == (0, 220, 0)  # outside the 1-px target: outline, target visible
    assert tuple(rgb[2, 2]) == (127, 127, 127)
    assert tuple(rgb[5, 6]) == (255, 40, 40)


def test_json_is_strict() -> None:
    data = json.loads(to_json({"pd": float("nan"), "x": np.float32(0.5), "n": np.int64(3)}))
    assert data == {"pd": None, "x": 0.5, "n": 3}


def test_metrics_table_scales_as_printed() -> None:
    m = Metrics()
    gt = np.zeros((100, 100), bool)
    gt[5:7, 5:7] = True
    pred = gt.copy()
    pred[50, 50] = True
    m.update(pred, gt)
    row = metrics_table([EvalRun("m", m.compute())]).iloc[0]
    assert row["Fa (x1e-6)"] == 100.0  # 1 pixel in 10,000
    assert row["Pd (%)"] == 100.0 and row["IoU (%)"] == 80.0


def test_pd_fa_area() -> None:
    # Pd 1 from Fa = 0: area 1. Pd rising linearly to 1 at fa_max: area 1/2.
    assert pd_fa_area(np.array([0.0]), np.array([1.0]), 1e-4) == 1.0
    assert pd_fa_area(np.array([1e-4]), np.array([1.0]), 1e-4) == pytest.approx(0.5)
    # Beyond the last point the curve stays flat; points beyond fa_max are cut.
    assert pd_fa_area(np.array([5e-5]), np.array([1.0]), 1e-4) == pytest.approx(0.75)
    assert pd_fa_area(np.array([2e-4]), np.array([1.0]), 1e-4) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pd_fa_area(np.array([0.0]), np.array([1.0]), 0.0)
    assert auc(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.5


def _run(ids: list[str], widths: tuple[int, ...] = (), **settings) -> EvalRun:
    """A small run: one image per id (its records and gallery item), plus frames of `widths`."""
    m = Metrics(**settings)
    gt = np.zeros((8, 12), bool)
    gt[3:5, 4:6] = True
    for image_id in ids:
        m.update(gt.astype(np.float32) * 0.9, gt, image_id=image_id)
    items = [GalleryItem(i, overlay(np.zeros((8, 12)), gt, gt), f"{i}: caption") for i in ids]
    items += [GalleryItem(f"w{w}", np.zeros((4, w, 3), np.uint8), f"w{w}") for w in widths]
    curves = m.curves() if m.has_curves else None
    return EvalRun("m", m.compute(), curves, m.per_image(), {"split": "test"}, items)


def test_long_and_non_ascii_ids_get_short_unique_gallery_names(tmp_path: Path) -> None:
    ids = ["x" * 300, "x" * 301, "图" * 100, "img1"]
    files = write_report(tmp_path, _run(ids))
    gallery = sorted(p.name for p in files if p.parent.name == "gallery")
    assert len(set(gallery)) == 4 and "03_img1.png" in gallery  # short ids stay as they were
    assert max(len(name.encode()) for name in gallery) <= 100
    # Cut at a character boundary, and the full id's hash keeps cut ids apart.
    assert any(name.startswith("02_" + "图" * 26 + "-") for name in gallery)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.html").is_file()


def test_definitions_follow_the_run_settings(tmp_path: Path) -> None:
    write_report(tmp_path / "a", _run(["a"]))
    text = (tmp_path / "a" / "report.md").read_text()
    assert "in label order" in text and "score 0" in text
    write_report(tmp_path / "b", _run(["a"], matching="optimal", niou_empty="skip"))
    for name in ("report.md", "report.html"):
        text = (tmp_path / "b" / name).read_text()
        assert "label order" not in text and "one-to-one" in text
        assert "score 0" not in text and "are left out" in text


def test_surrogate_escaped_ids_are_shown_escaped(tmp_path: Path) -> None:
    write_report(tmp_path, _run(["caf\udce9"]))  # b'caf\xe9.png' as decoded by the OS
    assert (tmp_path / "per_image.csv").read_text().splitlines()[1].startswith("caf\\xe9,")
    assert "caf\\xe9: caption" in (tmp_path / "report.md").read_text()
    assert "caf\\xe9: caption" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "gallery" / "00_caf_.png").is_file()


def test_html_gallery_width_doubles_small_frames_up_to_1000_px(tmp_path: Path) -> None:
    write_report(tmp_path, _run([], widths=(100, 700, 1500)))
    widths = re.findall(
        r'class="g" alt="w\d+" src="[^"]+" width="(\d+)"', (tmp_path / "report.html").read_text()
    )
    assert widths == ["200", "1000", "1000"]


def test_roc_of_a_perfect_model_shows_its_points() -> None:
    m = Metrics()
    gt = np.zeros((20, 20), bool)
    gt[5:7, 5:7] = True
    m.update(gt.astype(np.float32), gt)  # perfect: every target pixel 1, background 0
    ax = _roc_figure({"m": m.curves()}, {"m": 1.0}).axes[0]
    (line,) = ax.lines
    x, y = line.get_xdata(), line.get_ydata()
    assert line.get_marker() == "o"
    assert np.isfinite(x).all() and (x > 0).all() and x.min() >= ax.get_xlim()[0]
    assert ((x == x.min()) & (y == 1.0)).any()  # the fpr = 0, tpr = 1 corner, at the left edge


def test_pd_fa_without_targets_says_so() -> None:
    m = Metrics()
    empty = np.zeros((20, 20), bool)
    m.update(np.full((20, 20), 0.1, np.float32), empty)
    ax = _pd_fa_figure({"m": m.curves()}).axes[0]
    assert any("no targets" in t.get_text() for t in ax.texts)
    gt = empty.copy()
    gt[3, 3] = True
    m.update(gt.astype(np.float32), gt)
    assert not _pd_fa_figure({"m": m.curves()}).axes[0].texts


def test_iou_losses_rank_images_by_pixels_outside_the_intersection(tmp_path: Path) -> None:
    m = Metrics()
    gt = np.zeros((20, 20), bool)
    gt[2:6, 2:6] = True  # 16 target pixels in every image
    missed, half, exact = np.zeros_like(gt), gt.copy(), gt.copy()
    half[2:4, 2:6] = False  # 8 of the 16 found
    for image_id, pred in (("exact", exact), ("missed", missed), ("half", half)):
        m.update(pred, gt, image_id=image_id)
    records = m.per_image()
    assert [(r["intersection"], r["union"]) for r in records] == [(16, 16), (0, 16), (8, 16)]
    assert sum(r["intersection"] for r in records) / sum(r["union"] for r in records) == (
        pytest.approx(m.compute()["iou"])
    )
    losses = iou_losses(records)
    assert list(losses["image"]) == ["missed", "half"]  # "exact" lost nothing
    assert list(losses["lost_pixels"]) == [16, 8]
    assert list(losses["lost_share"]) == pytest.approx([16 / 24, 8 / 24])
    assert list(losses["iou_if_fixed"]) == pytest.approx([40 / 48, 32 / 48])
    write_report(tmp_path, EvalRun("m", m.compute(), None, records, {"split": "test"}, []))
    text = (tmp_path / "report.md").read_text()
    assert "## Where the IoU is lost" in text and "| missed | 16 | 0 | 0 | 16 | 66.7 |" in text
    assert "<h2>Where the IoU is lost</h2>" in (tmp_path / "report.html").read_text()
    header = (tmp_path / "per_image.csv").read_text().splitlines()[0]
    assert header.endswith("target_pixels,predicted_pixels,intersection,union,iou")
