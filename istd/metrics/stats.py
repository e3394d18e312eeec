"""Per-image statistics: pixel counts and target matching on connected components.

Statistics are computed once per image and reduced later (see `istd.metrics.functional`), the
`get_stats` / reduction split of segmentation_models_pytorch's metrics. Target matching follows
BasicIRSTD's `PD_FA` (after its false-alarm fix): targets and predicted objects are the
8-connected components of the masks (`skimage.measure.label(connectivity=2)`), compared by
centroid distance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.measure import label, regionprops

MATCHINGS = ("first", "optimal")


@dataclass(frozen=True)
class Components:
    """Connected components of one binary mask.

    Attributes:
        labels: int32 (H, W) label image; 0 is background, component k has label k + 1.
        centroids: float64 (K, 2) centroids as (row, col), in label order.
        areas: int64 (K,) pixel counts, in label order.
    """

    labels: np.ndarray
    centroids: np.ndarray
    areas: np.ndarray

    def __len__(self) -> int:
        return int(self.areas.shape[0])


@dataclass(frozen=True)
class ImageStats:
    """Counts for one image; every metric is a reduction of these.

    Attributes:
        tp, fp, fn, tn: pixel confusion counts of the binarised prediction.
        n_pixels: H * W.
        n_targets: ground-truth components.
        n_objects: predicted components.
        n_matched: targets matched to a predicted object (equal to matched objects: 1-to-1).
        fa_pixels: pixels of predicted objects that matched no target.
        height, width: image size.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    n_pixels: int
    n_targets: int
    n_objects: int
    n_matched: int
    fa_pixels: int
    height: int
    width: int

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (JSON / pandas friendly)."""
        return asdict(self)


def connected_components(mask: np.ndarray) -> Components:
    """8-connected components of a bool (H, W) mask, with centroids and areas in label order."""
    labels, n = label(mask, connectivity=2, return_num=True)  # (H, W), labels 1..n
    labels = labels.astype(np.int32)
    # Centroids as regionprops defines them (mean row, mean col of the component's pixels), but
    # with one bincount instead of a Python loop over regions: a noisy low-threshold prediction
    # can have thousands of components. Integer sums are exact, so the values are identical.
    # Foreground pixels only: sweeps call this at many thresholds, and masks are sparse.
    rows, cols = np.nonzero(labels)  # (F,), (F,)
    ids = labels[rows, cols]  # (F,) labels 1..n
    areas = np.bincount(ids, minlength=n + 1)[1:].astype(np.int64)  # (K,)
    sum_r = np.bincount(ids, weights=rows, minlength=n + 1)[1:]
    sum_c = np.bincount(ids, weights=cols, minlength=n + 1)[1:]
    centroids = np.stack([sum_r, sum_c], axis=1) / np.maximum(areas, 1)[:, None]  # (K, 2)
    return Components(labels=labels, centroids=centroids.reshape(-1, 2), areas=areas)


def regionprops_components(mask: np.ndarray) -> Components:
    """`connected_components` through `skimage.measure.regionprops`: slower, kept as a check."""
    labels = label(mask, connectivity=2).astype(np.int32)  # (H, W)
    props = regionprops(labels)  # sorted by label, the order matching relies on
    centroids = np.array([p.centroid for p in props], dtype=np.float64).reshape(-1, 2)  # (K, 2)
    areas = np.array([p.area for p in props], dtype=np.int64)  # (K,)
    return Components(labels=labels, centroids=centroids, areas=areas)


def match_targets(
    targets: np.ndarray, objects: np.ndarray, distance: float = 3.0, matching: str = "first"
) -> list[tuple[int, int]]:
    """Match targets to predicted objects by centroid distance (strictly less than `distance`).

    Args:
        targets: (T, 2) target centroids (row, col), in label order.
        objects: (P, 2) predicted-object centroids, in label order.
        distance: a pair matches only when the centroid distance is < `distance` pixels.
        matching: `"first"`: for each target in label order, the first still-unmatched object in
            label order within range is taken (BasicIRSTD). `"optimal"`: a one-to-one assignment
            of in-range pairs that maximises the number of matches and, among those, minimises
            the total distance (`scipy.optimize.linear_sum_assignment`).

    Returns:
        (target index, object index) pairs, one-to-one.

    Raises:
        ValueError: unknown `matching`.
    """
    if matching not in MATCHINGS:
        raise ValueError(f"unknown matching {matching!r}; expected one of {MATCHINGS}")
    if len(targets) == 0 or len(objects) == 0:
        return []
    dist = np.linalg.norm(targets[:, None, :] - objects[None, :, :], axis=-1)  # (T, P)
    in_range = dist < distance
    if matching == "first":
        taken = np.zeros(len(objects), dtype=bool)
        pairs: list[tuple[int, int]] = []
        for t in range(len(targets)):
            free = np.flatnonzero(in_range[t] & ~taken)
            if free.size:
                taken[free[0]] = True
                pairs.append((t, int(free[0])))
        return pairs
    # Out-of-range pairs get a cost larger than any sum of in-range distances, so the solver
    # first maximises the number of in-range matches, then minimises their total distance.
    big = distance * (min(dist.shape) + 1)
    cost = np.where(in_range, dist, big)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if in_range[r, c]]


def target_counts(
    pred: np.ndarray, targets: Components, distance: float = 3.0, matching: str = "first"
) -> tuple[int, int, int]:
    """Target-level counts of one binarised prediction (what a threshold sweep needs).

    Args:
        pred: bool (H, W) prediction.
        targets: the ground truth's components.
        distance: centroid distance bound for a match (strict), in pixels.
        matching: `"first"` or `"optimal"`, see `match_targets`.

    Returns:
        (predicted objects, matched targets, false-alarm pixels), where false-alarm pixels are
        all pixels of the predicted objects that matched no target (BasicIRSTD after its Fa fix).
    """
    objects = connected_components(pred)
    pairs = match_targets(targets.centroids, objects.centroids, distance, matching)
    matched_area = int(sum(int(objects.areas[p]) for _, p in pairs))
    return len(objects), len(pairs), int(objects.areas.sum()) - matched_area


def image_stats(
    pred: np.ndarray,
    gt: np.ndarray,
    distance: float = 3.0,
    matching: str = "first",
    gt_components: Components | None = None,
) -> ImageStats:
    """Pixel counts and target matching for one image.

    Args:
        pred: bool (H, W) binarised prediction.
        gt: bool (H, W) ground truth.
        distance: centroid distance bound for a match (strict), in pixels.
        matching: `"first"` or `"optimal"`, see `match_targets`.
        gt_components: the ground truth's components when already known (saves a labelling).

    Returns:
        The image's `ImageStats`.
    """
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be equal (H, W) shapes")
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    n_pixels = int(pred.size)
    targets = gt_components if gt_components is not None else connected_components(gt)
    n_objects, n_matched, fa_pixels = target_counts(pred, targets, distance, matching)
    return ImageStats(
        tp=tp,
        fp=fp,
        fn=fn,
        tn=n_pixels - tp - fp - fn,
        n_pixels=n_pixels,
        n_targets=len(targets),
        n_objects=n_objects,
        n_matched=n_matched,
        fa_pixels=fa_pixels,
        height=int(pred.shape[0]),
        width=int(pred.shape[1]),
    )
