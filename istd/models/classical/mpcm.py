"""Multiscale patch-based contrast measure (MPCM) detector.

Paper: Y. Wei, X. You and H. Li, "Multiscale patch-based contrast measure for small infrared
target detection", Pattern Recognition 58:216-226, 2016. At scale l the mean of the l x l patch
around a pixel is compared with the means of its eight neighbouring l x l patches; the
differences in opposite directions are multiplied and the smallest product over the four
directions is the patch contrast. A target is brighter than its surroundings in every direction,
whereas an edge is not brighter across itself, so its smallest product is near zero. The
multiscale measure is the largest contrast over the scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from istd.errors import ConfigError
from istd.models._registry import register_model
from istd.models.classical._base import ClassicalConfig, ClassicalDetector, make_config

# Four direction pairs (dy, dx) in units of the patch size; each is paired with its opposite.
_DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1))


@dataclass
class MPCMConfig(ClassicalConfig):
    """MPCM parameters.

    Defaults chosen on the NUAA-SIRST val split (idx_427/val.txt, 85 images; the test split was
    never used) with ``python tools/tune_classical.py --tune``: a grid over scales {(3, 5), (3,
    5, 7), (3, 5, 7, 9), (5, 7, 9), (3, 5, 7, 9, 11)}, k {3, 6, 9, 12, 14, 16, 20, 24, 32} and
    floor {0.02, 0.04, 0.06, 0.1, 0.15, 0.2}, keeping the setting with the highest dataset IoU
    at probability > 0.5 (ties: higher Pd, then lower Fa). The chosen scales=(3, 5, 7, 9), k=20,
    floor=0.04 scored on val: IoU 0.464, nIoU 0.510, Pd 0.928, Fa 33.1e-6. Grid and top
    settings: docs/classical.md.

    Attributes:
        scales: patch sizes l (odd, >= 1); the paper uses 3, 5, 7, 9.
    """

    scales: tuple[int, ...] = (3, 5, 7, 9)
    k: float = 20.0
    floor: float = 0.04

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.scales, list):
            self.scales = tuple(self.scales)
        if (
            not isinstance(self.scales, tuple)
            or not self.scales
            or not all(isinstance(s, int) and s >= 1 and s % 2 == 1 for s in self.scales)
        ):
            raise ConfigError(
                f"scales must be a non-empty tuple of odd integers >= 1, got {self.scales!r}"
            )


def patch_contrast(image: np.ndarray, size: int) -> np.ndarray:
    """Bright-target patch contrast at one scale, in intensity units.

    For each pixel, ``d_i = m_T - m_Bi`` compares the (size x size) patch mean ``m_T`` with the
    mean of the neighbouring patch one patch-width away in direction i. The paper's measure is
    ``min_i d_i * d_{i+4}``; we keep only bright contrasts (both factors clipped at 0, so a dark
    target's two negatives do not count) and take the square root so the result is in the
    image's intensity units, like the other detectors (a monotone change: same detections).

    Args:
        image: float32 (H, W).
        size: odd patch size l.

    Returns:
        float32 (H, W), >= 0.
    """
    h, w = image.shape
    means = cv2.blur(image, (size, size), borderType=cv2.BORDER_REFLECT_101)  # (H, W)
    # Neighbour patch means are the mean map shifted by one patch width; pad so shifts stay in.
    padded = np.pad(means, size, mode="symmetric")  # (H + 2l, W + 2l)

    def shifted(dy: int, dx: int) -> np.ndarray:
        y0, x0 = size + dy * size, size + dx * size
        return padded[y0 : y0 + h, x0 : x0 + w]

    contrast = None
    for dy, dx in _DIRECTIONS:
        d_fwd = np.maximum(means - shifted(dy, dx), 0.0)
        d_bwd = np.maximum(means - shifted(-dy, -dx), 0.0)
        product = d_fwd * d_bwd
        contrast = product if contrast is None else np.minimum(contrast, product)
    return np.sqrt(contrast).astype(np.float32, copy=False)


class MPCM(ClassicalDetector):
    """Multiscale patch-based contrast measure (Wei, You & Li, 2016), bright targets.

    Patch means use `cv2.blur` (box filter, reflected borders); directions are array shifts.
    """

    model_name = "mpcm"
    config_class = MPCMConfig

    def response(self, image: np.ndarray) -> np.ndarray:
        """Largest patch contrast over the scales for one grey float32 (H, W) image, >= 0."""
        return np.maximum.reduce([patch_contrast(image, s) for s in self.config.scales])


@register_model("mpcm")
def mpcm(**overrides: Any) -> MPCM:
    """MPCM detector; keyword overrides replace `MPCMConfig` fields."""
    return MPCM(make_config(MPCMConfig, overrides))
