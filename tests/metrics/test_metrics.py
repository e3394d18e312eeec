"""Metrics against hand-made golden cases, hypothesis properties and a second implementation.

The second implementation (`simple_image`, `simple_metrics`) is deliberately plain: Python loops
over skimage regionprops, one image at a time, sharing no code with `istd.metrics`. It follows
the issue's definitions word for word.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import label, regionprops

from istd.errors import DataError
from istd.metrics import Metrics


def simple_image(pred: np.ndarray, gt: np.ndarray, distance: float = 3.0, optimal: bool = False):
    """Return (inter, union, n_targets, n_matched, fa_pixels) for one image."""
    inter = int(np.logical_and(pred, gt).sum())
    union = int(np.logical_or(pred, gt).sum())
    targets = regionprops(label(gt.astype(np.uint8), connectivity=2))
    objects = regionprops(label(pred.astype(np.uint8), connectivity=2))
    if not optimal:
        remaining = list(objects)
        matched_objects = []
        for t in targets:
            for k, o in enumerate(remaining):
                d = math.dist(t.centroid, o.centroid)
                if d < distance:
                    matched_objects.append(o)
                    del remaining[k]
                    break
        fa_pixels = sum(int(o.area) for o in remaining)
        return inter, union, len(targets), len(matched_objects), fa_pixels
    # Brute force over all one-to-one assignments: most matches, then least total distance.
    best = (0, 0.0, ())
    n_t, n_o = len(targets), len(objects)
    for k in range(min(n_t, n_o), 0, -1):
        for ts in itertools.combinations(range(n_t), k):
            for os_ in itertools.permutations(range(n_o), k):
                ds = [
                    math.dist(targets[t].centroid, objects[o].centroid)
                    for t, o in zip(ts, os_, strict=True)
                ]
                if all(d < distance for d in ds):
                    cand = (k, -sum(ds), os_)
                    if cand[0] > best[0] or (cand[0] == best[0] and cand[1] > best[1]):
                        best = cand
        if best[0]:
            break
    used = set(best[2])
    fa_pixels = sum(int(o.area) for i, o in enumerate(objects) if i not in used)
    return inter, union, len(targets), best[0], fa_pixels


def simple_metrics(pairs, threshold: float = 0.5, optimal: bool = False) -> dict[str, float]:
    """IoU, nIoU (empty images score 0), Pd, Fa over a list of (pred, gt) images."""
    inter_sum = union_sum = targets = matched = fa_pixels = pixels = 0
    nious = []
    for pred, gt in pairs:
        if pred.dtype != bool:
            pred = pred > threshold
        i, u, t, m, f = simple_image(pred, gt, optimal=optimal)
        inter_sum += i
        union_sum += u
        targets += t
        matched += m
        fa_pixels += f
        pixels += gt.shape[0] * gt.shape[1]
        nious.append(i / u if u else 0.0)
    return {
        "iou": inter_sum / union_sum if union_sum else float("nan"),
        "niou": sum(nious) / len(nious),
        "pd": matched / targets if targets else float("nan"),
        "fa": fa_pixels / pixels,
        "n_matched": matched,
        "fa_pixels": fa_pixels,
    }


# --------------------------------------------------------------------------- golden cases


def _blank(h: int = 32, w: int = 32) -> np.ndarray:
    return np.zeros((h, w), dtype=bool)


def _run(pred: np.ndarray, gt: np.ndarray, **kw) -> dict:
    m = Metrics(**kw)
    m.update(pred, gt)
    return m.compute()


def test_two_false_blobs_with_the_matched_area_count_fully() -> None:
    # The widely copied Fa removes false blobs whose *area* equals a matched one's: it would
    # report 0 here. Both 3x3 false blobs count: 18 pixels.
    gt, pred = _blank(), _blank()
    gt[4:7, 4:7] = True
    pred[4:7, 4:7] = True
    pred[20:23, 4:7] = True
    pred[20:23, 20:23] = True
    out = _run(pred, gt)
    assert out["pd"] == 1.0
    assert out["fa_pixels"] == 18
    assert out["fa"] == pytest.approx(18 / (32 * 32))
    assert out["n_objects"] == 3 and out["target_precision"] == pytest.approx(1 / 3)


def test_two_targets_merged_into_one_blob_detect_one() -> None:
    gt, pred = _blank(), _blank()
    gt[10, 10] = gt[10, 13] = True  # two 1-px targets, 3 px apart (not 8-connected)
    pred[10, 10:14] = True  # one blob covering both, centroid (10, 11.5): 1.5 px from each
    out = _run(pred, gt)
    assert out["n_targets"] == 2 and out["n_matched"] == 1
    assert out["pd"] == 0.5
    assert out["fa_pixels"] == 0  # the blob matched, so none of its pixels is a false alarm
    assert out["iou"] == 0.5


def test_distance_is_strict_2_9_matches_3_0_does_not() -> None:
    # Predicted blob: row 10 cols 10..15 plus rows 9 and 11 at cols 11, 12: centroid (10, 12.1).
    pred = _blank()
    pred[10, 10:16] = True
    pred[[9, 9, 11, 11], [11, 12, 11, 12]] = True
    gt = _blank()
    gt[8, 10] = True  # offset (2, 2.1): distance 2.9
    assert _run(pred, gt)["pd"] == 1.0
    pred3, gt3 = _blank(), _blank()
    pred3[10, 13] = True
    gt3[10, 10] = True  # distance exactly 3.0
    out = _run(pred3, gt3)
    assert out["pd"] == 0.0 and out["fa_pixels"] == 1
    assert _run(pred3, gt3, distance=3.01)["pd"] == 1.0


def test_empty_ground_truth_images() -> None:
    empty = _blank()
    blob = _blank()
    blob[3:5, 3:5] = True
    m = Metrics()
    m.update(empty, empty)  # nothing anywhere
    m.update(blob, empty)  # a false alarm on a target-free image
    out = m.compute()
    assert out["n_targets"] == 0 and np.isnan(out["pd"])
    assert out["fa_pixels"] == 4 and out["n_empty"] == 1
    assert out["niou"] == 0.0  # both images score 0 (the empty one by the "zero" policy)
    for policy, expected in (("one", 0.5), ("skip", 0.0)):
        m2 = Metrics(niou_empty=policy)
        m2.update(empty, empty)
        m2.update(blob, empty)
        assert m2.compute()["niou"] == expected
    only_empty = Metrics(niou_empty="skip")
    only_empty.update(empty, empty)
    assert np.isnan(only_empty.compute()["niou"])


def test_non_square_images_keep_rows_and_columns_apart() -> None:
    gt, pred = _blank(5, 40), _blank(5, 40)
    gt[1, 30] = True
    pred[1, 32] = True  # 2 px along the row: matched
    pred[4, 2] = True  # a false alarm
    out = _run(pred, gt)
    assert out["pd"] == 1.0 and out["fa_pixels"] == 1 and out["n_pixels"] == 200
    # Transposed, the same geometry still matches: centroids are (row, col) consistently.
    out_t = _run(pred.T.copy(), gt.T.copy())
    assert out_t["pd"] == 1.0 and out_t["fa_pixels"] == 1


def test_several_targets_per_image() -> None:
    gt, pred = _blank(40, 48), _blank(40, 48)
    for r, c in ((5, 5), (5, 30), (25, 10), (30, 40)):
        gt[r : r + 2, c : c + 2] = True
    pred[5:7, 5:7] = True  # exact
    pred[6:8, 31:33] = True  # shifted by (1, 1): matched
    pred[25:27, 15:17] = True  # 5 px away: missed target, and a false alarm of 4 px
    pred[35:38, 2:5] = True  # false alarm of 9 px
    out = _run(pred, gt)
    assert out["n_targets"] == 4 and out["n_matched"] == 2 and out["pd"] == 0.5
    assert out["fa_pixels"] == 13
    assert out["iou"] == pytest.approx(5 / (16 + 21 - 5))


def test_first_versus_optimal_matching() -> None:
    # Object A lies within range of both targets; object B only of the second target... and
    # the first target, in label order, greedily takes A: first-match detects 1, optimal 2.
    gt, pred = _blank(), _blank()
    gt[10, 10] = True  # target 1
    gt[10, 14] = True  # target 2
    pred[10, 12] = True  # object A: 2 px from both
    pred[10, 16] = True  # object B: 2 px from target 2 only
    # Objects are labelled in raster order: A (col 12) before B (col 16).
    first = _run(pred, gt)
    optimal = _run(pred, gt, matching="optimal")
    assert first["n_matched"] == 2  # t1 -> A, t2 -> B (B still free)
    assert optimal["n_matched"] == 2
    gt2 = _blank()
    gt2[10, 14] = True  # target 1 in raster order
    gt2[12, 11] = True  # target 2: only A is in range (dist to A 2.24, to B 5.83)
    assert _run(pred, gt2)["n_matched"] == 1  # t1 takes A (first in label order), t2 misses
    assert _run(pred, gt2, matching="optimal")["n_matched"] == 2  # t1 -> B, t2 -> A


def test_unknown_options_raise_value_error() -> None:
    with pytest.raises(ValueError, match="niou_empty"):
        Metrics(niou_empty="nan")
    with pytest.raises(ValueError, match="matching"):
        Metrics(matching="hungarian")


def test_bad_inputs_raise_data_error() -> None:
    m = Metrics()
    with pytest.raises(DataError, match="shape"):
        m.update(np.zeros((4, 5), np.float32), _blank(5, 4))
    with pytest.raises(DataError, match="probabilities"):
        m.update(np.full((4, 4), 2.0, np.float32), _blank(4, 4))
    with pytest.raises(DataError, match="dtype"):
        m.update(np.zeros((4, 4), np.uint8), _blank(4, 4))
    with pytest.raises(DataError, match="2-D"):
        m.update(np.zeros((1, 4, 4), np.float32), _blank(4, 4))


def test_probabilities_threshold_strictly_and_accept_tensors() -> None:
    gt = _blank(8, 8)
    gt[2:4, 2:4] = True
    prob = np.zeros((8, 8), np.float32)
    prob[2:4, 2:4] = 0.5  # exactly the threshold: not foreground
    assert _run(prob, gt)["n_matched"] == 0
    prob[2:4, 2:4] = 0.51
    m = Metrics()
    m.update(torch.from_numpy(prob), torch.from_numpy(gt))
    assert m.compute()["iou"] == 1.0


def test_reset_forgets_everything() -> None:
    gt = _blank(8, 8)
    gt[1, 1] = True
    m = Metrics()
    m.update(gt, gt)
    m.reset()
    assert m.compute()["n_images"] == 0 and m.per_image() == []


def test_curves_and_areas() -> None:
    gt = _blank(16, 16)
    gt[4:6, 4:6] = True
    prob = np.zeros((16, 16), np.float32)
    prob[4:6, 4:6] = 0.995  # above every sweep threshold (the highest is 0.99)
    prob[12, 12] = 0.25  # a weak false alarm, present only at thresholds below 0.25
    m = Metrics()
    m.update(prob, gt)
    cur = m.curves()
    thr = np.array(cur["pd_fa"]["thresholds"])
    fa = np.array(cur["pd_fa"]["fa"])
    assert np.all(np.array(cur["pd_fa"]["pd"]) == 1.0)
    assert np.all(fa[thr < 0.25] == 1 / 256) and np.all(fa[thr >= 0.25] == 0.0)
    out = m.compute()
    assert out["pd_fa_auc"] == 1.0  # Pd = 1 at Fa = 0
    assert out["roc_auc"] == pytest.approx(1.0)  # every target pixel outranks every background one
    # A bool mask carries no probabilities: no sweeps.
    m.update(gt, gt)
    assert np.isnan(m.compute()["roc_auc"])
    with pytest.raises(DataError, match="sweep"):
        m.curves()


def test_roc_auc_equals_rank_statistic() -> None:
    rng = np.random.default_rng(0)
    gt = rng.random((32, 32)) < 0.2
    m = Metrics()
    # Probabilities at bin midpoints, so binning loses no order information.
    mids = ((m.roc_edges + np.append(m.roc_edges[1:], 1.0)) / 2).astype(np.float32)  # (K,)
    ranks = rng.integers(0, 1000, (32, 32))
    ranks[gt] = np.minimum(ranks[gt] + 200, 999)  # targets tend to score higher
    prob = mids[ranks]
    m.update(prob, gt)
    pos, neg = prob[gt].astype(np.float64), prob[~gt].astype(np.float64)
    # AUC = P(pos > neg) + 0.5 P(pos == neg), the Mann-Whitney statistic.
    wins = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert m.compute()["roc_auc"] == pytest.approx(wins, abs=1e-9)


# --------------------------------------------------------------------------- properties

masks = arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.booleans())


@settings(max_examples=40, deadline=None)
@given(gt=masks)
def test_perfect_prediction(gt: np.ndarray) -> None:
    gt[0, 0] = True  # at least one target, so every ratio is defined
    out = _run(gt.copy(), gt)
    assert out["iou"] == out["niou"] == out["pd"] == 1.0
    assert out["fa"] == 0.0 and out["fa_pixels"] == 0


@settings(max_examples=40, deadline=None)
@given(
    gt=arrays(np.bool_, (16, 16), elements=st.booleans()),
    pred=arrays(np.bool_, (16, 16), elements=st.booleans()),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    matching=st.sampled_from(["first", "optimal"]),
)
def test_far_blob_adds_exactly_its_area(gt, pred, h, w, matching) -> None:
    big_gt, big_pred = _blank(40, 40), _blank(40, 40)
    big_gt[:16, :16], big_pred[:16, :16] = gt, pred
    before = _run(big_pred, big_gt, matching=matching)
    big_pred[30 : 30 + h, 30 : 30 + w] = True  # > 10 px from anything else
    after = _run(big_pred, big_gt, matching=matching)
    assert after["fa_pixels"] - before["fa_pixels"] == h * w
    assert after["fa"] - before["fa"] == pytest.approx(h * w / 1600)
    assert after["pd"] == before["pd"] or (np.isnan(after["pd"]) and np.isnan(before["pd"]))


@settings(max_examples=60, deadline=None)
@given(
    images=st.lists(
        st.tuples(
            arrays(np.float32, (12, 17), elements=st.floats(0, 1, width=32)),
            arrays(np.bool_, (12, 17), elements=st.booleans()),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_matches_simple_implementation(images) -> None:
    m = Metrics()
    for prob, gt in images:
        m.update(prob, gt)
    out, ref = m.compute(), simple_metrics(images)
    for key in ("iou", "niou", "pd", "fa", "n_matched", "fa_pixels"):
        assert out[key] == pytest.approx(ref[key], nan_ok=True), key


@settings(max_examples=60, deadline=None)
@given(
    pred=arrays(np.bool_, (10, 10), elements=st.booleans()),
    gt=arrays(np.bool_, (10, 10), elements=st.booleans()),
)
def test_optimal_matches_brute_force(pred, gt) -> None:
    # Keep the brute force small: few components on each side.
    if (
        len(regionprops(label(pred, connectivity=2))) > 5
        or len(regionprops(label(gt, connectivity=2))) > 5
    ):
        return
    out = _run(pred, gt, matching="optimal")
    ref = simple_metrics([(pred, gt)], optimal=True)
    assert out["n_matched"] == ref["n_matched"]
    assert out["fa_pixels"] == ref["fa_pixels"]


def test_matches_simple_implementation_on_real_masks(nuaa_sirst) -> None:
    # Real masks against morphologically perturbed copies: realistic shapes and distances.
    import cv2
    from scipy.ndimage import binary_dilation, binary_erosion

    m = Metrics()
    pairs = []
    for k in range(1, 21):
        gt = (
            cv2.imread(str(nuaa_sirst / "masks" / f"Misc_{k}_pixels0.png"), cv2.IMREAD_GRAYSCALE)
            > 127
        )
        pred = binary_dilation(gt) if k % 2 else binary_erosion(gt)
        pred = np.roll(pred, k % 4, axis=1)
        pred[k, : k + 1] = True  # a thin false-alarm line
        pairs.append((pred, gt))
        m.update(pred, gt)
    out, ref = m.compute(), simple_metrics(pairs)
    for key in ("iou", "niou", "pd", "fa", "n_matched", "fa_pixels"):
        assert out[key] == pytest.approx(ref[key]), key
