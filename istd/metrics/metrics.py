"""`Metrics`: accumulate per-image statistics, reduce them to IoU, nIoU, Pd, Fa and more.

Follows the update / compute / reset shape of torchvision's segmentation `ConfusionMatrix`
(references/segmentation/utils.py): all state is a set of summable counts, so an all-reduce
over DDP ranks is one `torch.distributed.all_reduce` of one float64 vector. Definitions are
in docs/metrics.md; they equal BasicIRSTD's (after its Fa fix) with the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from istd.errors import DataError
from istd.metrics import functional as F
from istd.metrics.stats import (
    MATCHINGS,
    Components,
    ImageStats,
    connected_components,
    image_stats,
    target_counts,
)

# Pd-Fa sweep thresholds on probabilities: dense at both ends, where Fa and Pd change fastest.
DEFAULT_CURVE_THRESHOLDS: tuple[float, ...] = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99,
)  # fmt: skip
# Pixel ROC resolution: probability bins even in logit (see functional.roc_edges); two (K,)
# counts, whatever the data size.
ROC_BINS = 1000
# The Pd-Fa area is taken over Fa in [0, 1e-4], i.e. up to 100 x 1e-6, the range tables report.
PD_FA_FA_MAX = 1e-4

# The quality metrics `Metrics.compute()` reports (besides counts and settings): the names a
# training run may select best/ on (`train.best_metric`).
METRIC_NAMES: tuple[str, ...] = (
    "iou", "niou", "pd", "fa", "precision", "recall", "f1", "target_precision", "target_recall",
    "target_f1", "pd_fa_auc", "roc_auc",
)  # fmt: skip

# Order of the summable scalar counts in the state vector.
_SCALARS = (
    "tp", "fp", "fn", "tn", "n_pixels", "n_targets", "n_objects", "n_matched", "fa_pixels",
    "n_images", "iou_sum", "n_empty", "n_binary",
)  # fmt: skip


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu").numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"{name} must be a 2-D (H, W) array, got shape {tuple(x.shape)}")
    return x


class Metrics:
    """Accumulates ISTD metrics over images; `compute()` reduces them.

    Args:
        threshold: a probability map is binarised as `pred > threshold` (0.5 = logit > 0).
        distance: a target is detected by a predicted object whose centroid is closer than
            this, in pixels (strict).
        niou_empty: per-image IoU when prediction and ground truth are both empty: `"zero"`
            (ACM's convention), `"one"` or `"skip"`.
        matching: `"first"` (BasicIRSTD: greedy in label order) or `"optimal"` (one-to-one,
            minimum total distance).
        curve_thresholds: probability thresholds of the Pd-Fa sweep.
        roc_bins: probability bins of the pixel ROC.
        keep_per_image: keep one record per image for `per_image()` (not all-reduced).

    Example:
        >>> m = Metrics()
        >>> m.update(prob, gt)             # prob: (H, W) float in [0, 1] or bool; gt: (H, W) bool
        >>> m.compute()["pd"]
    """

    def __init__(
        self,
        threshold: float = 0.5,
        distance: float = 3.0,
        niou_empty: str = "zero",
        matching: str = "first",
        curve_thresholds: Sequence[float] = DEFAULT_CURVE_THRESHOLDS,
        roc_bins: int = ROC_BINS,
        keep_per_image: bool = True,
    ) -> None:
        if niou_empty not in F.NIOU_EMPTY:
            raise ValueError(f"unknown niou_empty {niou_empty!r}; expected one of {F.NIOU_EMPTY}")
        if matching not in MATCHINGS:
            raise ValueError(f"unknown matching {matching!r}; expected one of {MATCHINGS}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        if distance <= 0:
            raise ValueError(f"distance must be > 0, got {distance}")
        if roc_bins < 2:
            raise ValueError(f"roc_bins must be >= 2, got {roc_bins}")
        self.threshold = float(threshold)
        self.distance = float(distance)
        self.niou_empty = niou_empty
        self.matching = matching
        self.curve_thresholds = np.asarray(sorted(curve_thresholds), dtype=np.float64)  # (C,)
        self.roc_bins = int(roc_bins)
        self.roc_edges = F.roc_edges(self.roc_bins)  # (K,) lower bin edges, probabilities
        self.keep_per_image = keep_per_image
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        n_curve = self.curve_thresholds.size
        self._scalars = np.zeros(len(_SCALARS), dtype=np.float64)
        # Per sweep threshold: matched targets, predicted objects, false-alarm pixels. (3, C)
        self._curve = np.zeros((3, n_curve), dtype=np.float64)
        # Pixel counts per probability bin: row 0 ground-truth foreground, row 1 background.
        self._roc = np.zeros((2, self.roc_bins), dtype=np.float64)  # (2, K)
        self._records: list[dict[str, Any]] = []
        # This process's own state, kept once all_reduce has replaced the state by global sums,
        # so that reducing again sums local counts (not already-summed ones) and stays exact.
        self._local: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # The record of the image most recently added (kept even when keep_per_image is off).
        self.last_record: dict[str, Any] | None = None

    def update(self, pred: Any, gt: Any, image_id: str | None = None) -> ImageStats:
        """Add one image.

        Args:
            pred: (H, W) probabilities in [0, 1] (float numpy array or tensor) or a bool mask.
                Bool masks cannot be swept, so curves are reported only when every image came
                with probabilities.
            gt: (H, W) bool ground truth (0/1 numbers are accepted).
            image_id: name for the per-image record.

        Returns:
            The image's statistics at `threshold`.

        Raises:
            DataError: shapes differ, or values are not probabilities / binary.
            RuntimeError: called after `all_reduce` (call `reset` first).
        """
        if self._local is not None:
            raise RuntimeError(
                "Metrics.update after all_reduce: the counts are already summed over ranks; "
                "call reset() before adding images"
            )
        pred = _to_numpy(pred, "pred")
        gt = _to_numpy(gt, "gt")
        if pred.shape != gt.shape:
            raise DataError(
                f"pred shape {pred.shape} differs from gt shape {gt.shape}"
                + (f" for image {image_id!r}" if image_id else "")
            )
        if gt.dtype != np.bool_:
            if not np.isin(gt, (0, 1)).all():
                raise DataError("gt must be a bool mask (or hold only 0 and 1)")
            gt = gt.astype(bool)
        if pred.dtype == np.bool_:
            prob = None
            mask = pred
        elif np.issubdtype(pred.dtype, np.floating):
            prob = pred.astype(np.float32, copy=False)
            if not np.isfinite(prob).all() or prob.min() < 0.0 or prob.max() > 1.0:
                raise DataError(
                    "pred must hold probabilities in [0, 1]"
                    f" (got [{np.nanmin(prob):.3g}, {np.nanmax(prob):.3g}]); apply a sigmoid to logits"
                )
            mask = prob > self.threshold
        else:
            raise DataError(f"pred must be bool or floating point, got dtype {pred.dtype}")

        gt_comp = connected_components(gt)
        st = image_stats(mask, gt, self.distance, self.matching, gt_components=gt_comp)
        union = st.tp + st.fp + st.fn
        empty = union == 0
        values = dict.fromkeys(_SCALARS, 0.0)
        values.update({k: float(v) for k, v in st.as_dict().items() if k in values})
        values.update(
            n_images=1.0,
            iou_sum=st.tp / union if union else 0.0,
            n_empty=float(empty),
            n_binary=float(prob is None),
        )
        self._scalars += np.array([values[k] for k in _SCALARS])
        if prob is not None:
            self._update_curves(prob, gt, gt_comp)
        iou_img = F.per_image_iou(
            np.array([st.tp]), np.array([st.fp]), np.array([st.fn]), self.niou_empty
        )
        self.last_record = {
            "image": image_id if image_id is not None else str(int(self.counts["n_images"]) - 1),
            "height": st.height,
            "width": st.width,
            "targets": st.n_targets,
            "detected": st.n_matched,
            "objects": st.n_objects,
            "false_alarm_objects": st.n_objects - st.n_matched,
            "false_alarm_pixels": st.fa_pixels,
            "target_pixels": st.tp + st.fn,
            "predicted_pixels": st.tp + st.fp,
            "intersection": st.tp,
            "union": union,
            "iou": float(iou_img[0]),
        }
        if self.keep_per_image:
            self._records.append(self.last_record)
        return st

    def _update_curves(self, prob: np.ndarray, gt: np.ndarray, gt_comp: Components) -> None:
        for c, t in enumerate(self.curve_thresholds):
            n_objects, n_matched, fa_pixels = target_counts(
                prob > t, gt_comp, self.distance, self.matching
            )
            self._curve[:, c] += (n_matched, n_objects, fa_pixels)
        # Bin k holds edges[k] <= p < edges[k + 1]; float64 so that edges compare exactly.
        bins = np.searchsorted(self.roc_edges, prob.astype(np.float64), side="right") - 1  # (H, W)
        self._roc[0] += np.bincount(bins[gt], minlength=self.roc_bins)
        self._roc[1] += np.bincount(bins[~gt], minlength=self.roc_bins)

    @property
    def counts(self) -> dict[str, float]:
        """The accumulated scalar counts (summed over images, and over ranks after all_reduce)."""
        return dict(zip(_SCALARS, self._scalars.tolist(), strict=True))

    @property
    def has_curves(self) -> bool:
        """Whether every image came with probabilities, so that sweeps are defined."""
        c = self.counts
        return c["n_images"] > 0 and c["n_binary"] == 0

    def curves(self) -> dict[str, dict[str, list[float]]]:
        """Threshold sweeps: `pd_fa` (thresholds, pd, fa) and `roc` (thresholds, fpr, tpr).

        Raises:
            DataError: some image was given as a bool mask, so there are no probabilities.
        """
        if not self.has_curves:
            raise DataError("threshold sweeps need probability maps for every image, not masks")
        c = self.counts
        nan = float("nan")
        pd_curve = [F.pd(m, c["n_targets"], nan) for m in self._curve[0]]
        fa_curve = [F.fa(f, c["n_pixels"], nan) for f in self._curve[2]]
        thr, fpr, tpr = F.roc_from_histograms(self._roc[0], self._roc[1], self.roc_edges)
        return {
            "pd_fa": {"thresholds": self.curve_thresholds.tolist(), "pd": pd_curve, "fa": fa_curve},
            "roc": {"thresholds": thr.tolist(), "fpr": fpr.tolist(), "tpr": tpr.tolist()},
        }

    def compute(self) -> dict[str, Any]:
        """Reduce the counts. Ratios are floats (NaN when undefined); `fa` is a fraction.

        Returns:
            iou, niou, pd, fa; pixel precision / recall / f1; target_precision / target_recall /
            target_f1; pd_fa_auc and roc_auc (NaN without probability maps); the counts
            n_images, n_targets, n_objects, n_matched, n_pixels, fa_pixels, n_empty; and the
            settings threshold, distance, matching, niou_empty.
        """
        c = self.counts
        nan = float("nan")
        n_images, n_empty = c["n_images"], c["n_empty"]
        # nIoU from summed per-image IoUs (empty images add 0), so it survives an all-reduce.
        if self.niou_empty == "zero":
            niou = c["iou_sum"] / n_images if n_images else nan
        elif self.niou_empty == "one":
            niou = (c["iou_sum"] + n_empty) / n_images if n_images else nan
        else:
            niou = c["iou_sum"] / (n_images - n_empty) if n_images > n_empty else nan
        t_fp = c["n_objects"] - c["n_matched"]
        t_fn = c["n_targets"] - c["n_matched"]
        out: dict[str, Any] = {
            "iou": F.iou(c["tp"], c["fp"], c["fn"]),
            "niou": niou,
            "pd": F.pd(c["n_matched"], c["n_targets"]),
            "fa": F.fa(c["fa_pixels"], c["n_pixels"]),
            "precision": F.precision(c["tp"], c["fp"]),
            "recall": F.recall(c["tp"], c["fn"]),
            "f1": F.f1(c["tp"], c["fp"], c["fn"]),
            "target_precision": F.precision(c["n_matched"], t_fp),
            "target_recall": F.recall(c["n_matched"], t_fn),
            "target_f1": F.f1(c["n_matched"], t_fp, t_fn),
            "pd_fa_auc": nan,
            "roc_auc": nan,
        }
        if self.has_curves:
            cur = self.curves()
            out["pd_fa_auc"] = F.pd_fa_area(cur["pd_fa"]["fa"], cur["pd_fa"]["pd"], PD_FA_FA_MAX)
            out["roc_auc"] = F.auc(cur["roc"]["fpr"], cur["roc"]["tpr"])
        for key in (
            "n_images",
            "n_targets",
            "n_objects",
            "n_matched",
            "n_pixels",
            "fa_pixels",
            "n_empty",
        ):
            out[key] = int(c[key])
        out.update(
            threshold=self.threshold,
            distance=self.distance,
            matching=self.matching,
            niou_empty=self.niou_empty,
        )
        return out

    def per_image(self) -> list[dict[str, Any]]:
        """One record per image seen on this process: image, height, width, targets, detected,
        objects, false_alarm_objects, false_alarm_pixels, target_pixels, predicted_pixels,
        intersection, union, iou (per `niou_empty`)."""
        return list(self._records)

    def all_reduce(self) -> None:
        """Sum the counts over all DDP ranks (no-op unless torch.distributed is initialised).

        Per-image records stay local to each rank; every rank's `compute()` then agrees.
        Idempotent: calling it again sums the same local counts, never the sums. `update` is
        refused afterwards until `reset`.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        if self._local is None:
            self._local = (self._scalars, self._curve, self._roc)
        scalars, curve, roc = self._local
        flat = np.concatenate([scalars, curve.ravel(), roc.ravel()])
        device = "cpu"
        if torch.distributed.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        t = torch.from_numpy(flat).to(device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        flat = t.cpu().numpy()
        n_s, n_c = self._scalars.size, self._curve.size
        self._scalars = flat[:n_s].copy()
        self._curve = flat[n_s : n_s + n_c].reshape(self._curve.shape).copy()
        self._roc = flat[n_s + n_c :].reshape(self._roc.shape).copy()
