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


def pd_fa_png(curves: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Pd against Fa (x 1e-6) at each sweep threshold, one line per model.

    Args:
        curves: model label -> `Metrics.curves()` (its `pd_fa` entry is used).
    """
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    for name, cur in curves.items():
        pf = cur["pd_fa"]
        fa = np.asarray(pf["fa"], dtype=np.float64) * 1e6
        pd = np.asarray(pf["pd"], dtype=np.float64)
        ax.plot(fa, pd, marker="o", markersize=3, label=name)
    ax.set_xlabel("Fa (x 1e-6): false-alarm pixels / all pixels")
    ax.set_ylabel("Pd: detected targets / targets")
    ax.set_ylim(0, 1.02)
    # Fa spans orders of magnitude between low and high thresholds: log scale, zero kept at left.
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    ax.set_title("Pd-Fa over probability thresholds")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def roc_png(curves: Mapping[str, Mapping[str, Any]], aucs: Mapping[str, float]) -> bytes:
    """Pixel-level ROC (true-positive rate against false-positive rate), one line per model."""
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    for name, cur in curves.items():
        fpr = np.asarray(cur["roc"]["fpr"], dtype=np.float64)
        tpr = np.asarray(cur["roc"]["tpr"], dtype=np.float64)
        keep = fpr > 0  # the log axis cannot show fpr = 0
        ax.plot(fpr[keep], tpr[keep], label=f"{name} (AUC {aucs.get(name, float('nan')):.4f})")
    ax.set_xscale("log")
    ax.set_xlabel("false-positive rate (pixels)")
    ax.set_ylabel("true-positive rate (pixels)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title("Pixel ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


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
