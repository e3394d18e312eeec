"""Report figures: Pd-Fa curves, pixel ROC curves and ground-truth / prediction overlays.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing depends on a
display or on global pyplot state, and each returns PNG bytes ready to save or embed.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

# Overlay colours (RGB): ground truth green, prediction red, where both outline yellow.
GT_COLOUR = np.array([0, 220, 0], dtype=np.uint8)
PRED_COLOUR = np.array([255, 40, 40], dtype=np.uint8)
BOTH_COLOUR = np.array([255, 230, 0], dtype=np.uint8)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _note(ax: Any, text: str) -> None:
    """Say in the plot why it is empty, rather than leaving blank axes."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _pd_fa_figure(curves: Mapping[str, Mapping[str, Any]]) -> Figure:
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    fa_max = 0.0
    any_pd = False
    for name, cur in curves.items():
        pf = cur["pd_fa"]
        fa = np.asarray(pf["fa"], dtype=np.float64) * 1e6
        pd = np.asarray(pf["pd"], dtype=np.float64)
        ax.plot(fa, pd, marker="o", markersize=3, label=name)
        any_pd |= bool(np.isfinite(pd).any())
        fa_max = max(fa_max, float(np.nanmax(fa, initial=0.0)))
    ax.set_xlabel("Fa (x 1e-6): false-alarm pixels / all pixels")
    ax.set_ylabel("Pd: detected targets / targets")
    ax.set_ylim(0, 1.02)
    # Fa spans orders of magnitude between low and high thresholds: log scale, zero kept at left.
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    if not any_pd:  # Pd is NaN at every threshold: nothing to draw, the x-range would be arbitrary
        ax.set_xlim(0, max(fa_max, 1.0))
        _note(ax, "no targets in this split: Pd undefined")
    ax.grid(True, alpha=0.3)
    ax.set_title("Pd-Fa over probability thresholds")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def pd_fa_png(curves: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Pd against Fa (x 1e-6) at each sweep threshold, one line per model.

    Args:
        curves: model label -> `Metrics.curves()` (its `pd_fa` entry is used).
    """
    return _png(_pd_fa_figure(curves))


def _roc_figure(curves: Mapping[str, Mapping[str, Any]], aucs: Mapping[str, float]) -> Figure:
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    rocs = {
        name: (np.asarray(c["roc"]["fpr"], np.float64), np.asarray(c["roc"]["tpr"], np.float64))
        for name, c in curves.items()
    }
    # The log axis cannot show fpr = 0, yet those points (a clean model's best) matter: draw them
    # at the axis' left edge, a decade below the smallest positive fpr.
    positive = [f[f > 0] for f, _ in rocs.values()]
    smallest = min((float(p.min()) for p in positive if p.size), default=1.0)
    left = smallest / 10
    has_zero = False
    for name, (fpr, tpr) in rocs.items():
        has_zero |= bool((fpr == 0).any())
        auc = aucs.get(name, float("nan"))
        x = np.where(fpr == 0, left, fpr)
        ax.plot(x, tpr, marker="o", markersize=3, label=f"{name} (AUC {auc:.4f})")
    ax.set_xscale("log")
    ax.set_xlim(left=left * 0.8, right=1.2)
    zero = " (fpr = 0 drawn at the left edge)" if has_zero else ""
    ax.set_xlabel(f"false-positive rate (pixels){zero}")
    ax.set_ylabel("true-positive rate (pixels)")
    ax.set_ylim(0, 1.02)
    if not any(np.isfinite(t).any() for _, t in rocs.values()):
        _note(ax, "no target pixels in this split: TPR undefined")
    ax.grid(True, alpha=0.3)
    ax.set_title("Pixel ROC")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def roc_png(curves: Mapping[str, Mapping[str, Any]], aucs: Mapping[str, float]) -> bytes:
    """Pixel-level ROC (true-positive rate against false-positive rate), one line per model.

    Points with fpr = 0, which a log axis cannot place, are drawn at the axis' left edge.
    """
    return _png(_roc_figure(curves, aucs))


def overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Draw ground-truth and prediction outlines on a grey image.

    Args:
        image: (H, W) float in [0, 1].
        gt: (H, W) bool ground truth, outlined in green.
        pred: (H, W) bool prediction, outlined in red (yellow where both outlines meet).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    grey = (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)  # (H, W) -> (H, W, 3)
    # Outer boundaries so that one-pixel targets stay visible instead of being painted over.
    g = find_boundaries(gt, mode="outer")
    p = find_boundaries(pred, mode="outer")
    rgb[g] = GT_COLOUR
    rgb[p] = PRED_COLOUR
    rgb[g & p] = BOTH_COLOUR
    return rgb
