"""`score_folders` (behind `istd score`): pairing by stem, bit depths, and equality with Metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from istd.data.io import write_png_atomic
from istd.errors import DataError
from istd.metrics import Metrics
from istd.metrics.score import pair_key, read_prediction, score_folders


def _gt(h: int = 12, w: int = 15) -> np.ndarray:
    gt = np.zeros((h, w), bool)
    gt[2:4, 3:5] = True
    gt[8, 10] = True
    return gt


def test_pair_key_strips_one_known_suffix() -> None:
    assert pair_key(Path("Misc_1_pixels0.png")) == "Misc_1"
    assert pair_key(Path("a_mask.png")) == "a"
    assert pair_key(Path("a_prob.tif")) == "a"
    assert pair_key(Path("_mask.png")) == "_mask"  # nothing would be left
    assert pair_key(Path("a_other.png")) == "a_other"


def test_8_and_16_bit_probability_maps(tmp_path: Path) -> None:
    prob = np.linspace(0, 1, 12 * 15).reshape(12, 15)
    write_png_atomic(tmp_path / "p8_prob.png", np.round(prob * 255).astype(np.uint8))
    write_png_atomic(tmp_path / "p16_prob.png", np.round(prob * 65535).astype(np.uint16))
    p8, p16 = read_prediction(tmp_path / "p8_prob.png"), read_prediction(tmp_path / "p16_prob.png")
    assert p8.dtype == p16.dtype == np.float32
    np.testing.assert_allclose(p8, prob, atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(p16, prob, atol=0.5 / 65535 + 1e-6)
    write_png_atomic(tmp_path / "m.png", _gt())
    assert read_prediction(tmp_path / "m.png").dtype == np.bool_
    write_png_atomic(tmp_path / "z_prob.png", np.zeros((4, 4), np.uint8))
    assert read_prediction(tmp_path / "z_prob.png").dtype == np.float32  # named a probability map
    write_png_atomic(tmp_path / "ones.png", _gt().astype(np.uint8))  # 0/1 values
    with pytest.raises(DataError, match="ones.png"):
        read_prediction(tmp_path / "ones.png")


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    gt_a, gt_b = _gt(), _gt(9, 20)
    write_png_atomic(gt_dir / "a_pixels0.png", gt_a)
    write_png_atomic(gt_dir / "b.png", gt_b)
    pa = np.zeros(gt_a.shape, np.uint16)
    pa[2:4, 3:5] = 60000
    pa[10, 1] = 40000  # a false alarm
    write_png_atomic(pred_dir / "a_prob.png", pa)
    write_png_atomic(pred_dir / "b_mask.png", gt_b)
    write_png_atomic(pred_dir / "c_mask.png", gt_b)  # no ground truth: reported, ignored
    (gt_dir / "notes.txt").write_text("not an image")
    return pred_dir, gt_dir


def test_score_folders_pairs_suffixes(tmp_path: Path) -> None:
    pred_dir, gt_dir = _folders(tmp_path)
    res = score_folders(pred_dir, gt_dir)
    assert [r["image"] for r in res.per_image] == ["a", "b"]
    assert [p.name for p in res.unpaired] == ["c_mask.png"]
    m = res.metrics
    assert m["n_images"] == 2 and m["n_targets"] == 4 and m["n_matched"] == 3
    assert m["fa_pixels"] == 1 and m["n_pixels"] == 12 * 15 + 9 * 20
    assert res.curves is None  # b is a binary mask: no sweep


def test_missing_unreadable_and_mismatched_predictions_are_named(tmp_path: Path) -> None:
    pred_dir, gt_dir = _folders(tmp_path)
    (pred_dir / "b_mask.png").unlink()
    with pytest.raises(DataError, match="b.png"):
        score_folders(pred_dir, gt_dir)
    (pred_dir / "b_mask.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="b_mask.png"):
        score_folders(pred_dir, gt_dir)
    (pred_dir / "b_mask.png").unlink()
    write_png_atomic(pred_dir / "b_mask.png", np.zeros((20, 9), bool))
    with pytest.raises(DataError, match="native resolution"):
        score_folders(pred_dir, gt_dir)
    write_png_atomic(pred_dir / "b.png", np.zeros((9, 20), bool))
    with pytest.raises(DataError, match="both claim"):
        score_folders(pred_dir, gt_dir)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    images=st.lists(
        st.tuples(
            arrays(np.uint16, (10, 13), elements=st.integers(0, 65535)),
            arrays(np.bool_, (10, 13), elements=st.booleans()),
        ),
        min_size=1,
        max_size=3,
    ),
    threshold=st.sampled_from([0.3, 0.5, 0.7]),
)
def test_score_equals_metrics_on_the_same_files(tmp_path_factory, images, threshold) -> None:
    root = tmp_path_factory.mktemp("score")
    m = Metrics(threshold=threshold)
    for k, (prob16, gt) in enumerate(images):
        write_png_atomic(root / "pred" / f"img{k}_prob.png", prob16)
        write_png_atomic(root / "gt" / f"img{k}.png", gt)
        m.update(prob16.astype(np.float32) / 65535, gt, image_id=f"img{k}")
    res = score_folders(root / "pred", root / "gt", threshold=threshold)
    expected = m.compute()
    for key, value in expected.items():
        assert res.metrics[key] == pytest.approx(value, nan_ok=True), key


def test_score_real_masks_against_themselves(nuaa_sirst: Path, tmp_path: Path) -> None:
    # Ground-truth folder as shipped (with XML files beside the masks): a perfect score.
    pred = tmp_path / "pred"
    from istd.data.io import read_mask

    gt_dir = tmp_path / "gt"
    for k in range(1, 6):
        src = nuaa_sirst / "masks" / f"Misc_{k}_pixels0.png"
        write_png_atomic(gt_dir / src.name, read_mask(src))
        write_png_atomic(pred / f"Misc_{k}_mask.png", read_mask(src))
    res = score_folders(pred, gt_dir)
    assert res.metrics["iou"] == res.metrics["pd"] == 1.0 and res.metrics["fa"] == 0.0


def _broken_dataset(root: Path) -> tuple[Path, Path]:
    """A dataset whose mask of `b` has the wrong size, corrected in fixes/ (like Misc_111)."""
    write_png_atomic(root / "masks" / "a_pixels0.png", _gt())
    write_png_atomic(root / "masks" / "b_pixels0.png", _gt(20, 30))  # broken: image is 12 x 15
    write_png_atomic(root / "fixes" / "b_pixels0.png", _gt())
    for key in ("a", "b"):
        write_png_atomic(root / "pred" / f"{key}.png", _gt())
    return root / "pred", root / "masks"


def test_broken_ground_truth_is_blamed_and_fixes_apply(tmp_path: Path) -> None:
    pred_dir, gt_dir = _broken_dataset(tmp_path)
    with pytest.raises(DataError, match=r"ground-truth mask is likely the broken one") as info:
        score_folders(pred_dir, gt_dir)
    assert f"--fixes {tmp_path / 'fixes'}" in str(info.value)
    res = score_folders(pred_dir, gt_dir, fixes=tmp_path / "fixes")
    assert res.fixed == [gt_dir / "b_pixels0.png"]
    assert res.metrics["n_images"] == 2 and res.metrics["iou"] == 1.0
    with pytest.raises(DataError, match="fixes folder not found"):
        score_folders(pred_dir, gt_dir, fixes=tmp_path / "nope")


def test_real_nuaa_sirst_masks_folder_with_its_fixes(nuaa_sirst: Path, tmp_path: Path) -> None:
    # Perfect predictions at the images' sizes, scored against NUAA-SIRST/masks as shipped.
    from istd.data.io import read_mask

    pred = tmp_path / "pred"
    for mask in sorted((nuaa_sirst / "masks").glob("*_pixels0.png")):
        fix = nuaa_sirst / "fixes" / mask.name
        write_png_atomic(pred / mask.name, read_mask(fix if fix.is_file() else mask))
    with pytest.raises(DataError, match=r"Misc_111.*likely the broken one.*--fixes"):
        score_folders(pred, nuaa_sirst / "masks")
    res = score_folders(pred, nuaa_sirst / "masks", fixes=nuaa_sirst / "fixes")
    assert res.metrics["n_images"] == 427 and res.metrics["iou"] == 1.0
    assert [p.name for p in res.fixed] == ["Misc_111_pixels0.png"]
