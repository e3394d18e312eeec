"""White top-hat detector (morphological background suppression).

Paper: J.-F. Rivest and R. Fortin, "Detection of dim targets in digital infrared imagery by
morphological image processing", Optical Engineering 35(7):1886-1893, 1996. The top-hat is the
image minus its morphological opening: structures smaller than the structuring element (small
bright targets) survive, wider background (clouds, terrain, ramps) is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from istd.errors import ConfigError
from istd.models._registry import register_model
from istd.models.classical._base import ClassicalConfig, ClassicalDetector, make_config


@dataclass
class TopHatConfig(ClassicalConfig):
    """White top-hat parameters.

    Defaults chosen on the NUAA-SIRST val split (idx_427/val.txt, 85 images; never test) with
    ``python tools/tune_classical.py --tune``: a grid over radius {2, 3, 4, 5, 7}, k {2, 3, 4, 5,
    6, 8} and floor {0.02, 0.04, 0.06, 0.08, 0.10, 0.15}, keeping the setting with the highest
    dataset IoU (ties: higher Pd, then lower Fa). See docs/classical.md for the scores.

    Attributes:
        radius: radius in pixels of the disk-shaped structuring element (diameter 2 r + 1);
            targets narrower than the disk are kept.
    """

    radius: int = 4
    k: float = 3.0
    floor: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.radius, int) and self.radius >= 1):
            raise ConfigError(f"radius must be an integer >= 1, got {self.radius!r}")


class TopHat(ClassicalDetector):
    """White top-hat (Rivest & Fortin, 1996): ``image - opening(image, disk(radius))``.

    The opening is computed with OpenCV (`cv2.morphologyEx`, elliptical kernel); its border
    handling ignores pixels outside the frame, so a bright frame edge is not a target by itself.
    """

    model_name = "tophat"
    config_class = TopHatConfig

    def response(self, image: np.ndarray) -> np.ndarray:
        """Top-hat of one grey float32 (H, W) image, >= 0, same shape."""
        d = 2 * self.config.radius + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
        out = cv2.morphologyEx(image, cv2.MORPH_TOPHAT, kernel)
        # OpenCV returns (H, W); clip guards against float rounding below zero.
        return np.maximum(out, 0.0).astype(np.float32, copy=False)


@register_model("tophat")
def tophat(**overrides: Any) -> TopHat:
    """White top-hat detector; keyword overrides replace `TopHatConfig` fields."""
    return TopHat(make_config(TopHatConfig, overrides))
