"""Max-median filter detector.

Paper: S. D. Deshpande, M. H. Er, R. Venkateswarlu and P. Chan, "Max-mean and max-median filters
for detection of small targets", Proc. SPIE 3809, Signal and Data Processing of Small Targets,
1999. The background at each pixel is the largest of four medians taken along the horizontal,
vertical and two diagonal lines through it; a small target is not the median of any line, while
an edge or a ridge lies along at least one line and so is kept in the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from istd.errors import ConfigError
from istd.models._registry import register_model
from istd.models.classical._base import ClassicalConfig, ClassicalDetector, make_config


@dataclass
class MaxMedianConfig(ClassicalConfig):
    """Max-median parameters.

    Defaults chosen on the NUAA-SIRST val split (idx_427/val.txt, 85 images; the test split was
    never used) with ``python tools/tune_classical.py --tune``: a grid over size {9, 15, 21, 27,
    35, 45}, k {3, 6, 9, 12, 14, 16, 20, 24, 32} and floor {0.02, 0.04, 0.06, 0.1, 0.15, 0.2},
    keeping the setting with the highest dataset IoU at probability > 0.5 (ties: higher Pd, then
    lower Fa). The chosen size=35, k=14, floor=0.06 scored on val: IoU 0.635, nIoU 0.684, Pd
    0.969, Fa 71.1e-6. Grid and top settings: docs/classical.md.

    Attributes:
        size: length in pixels of each of the four median lines (odd, >= 3).
    """

    size: int = 35
    k: float = 14.0
    floor: float = 0.06

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.size, int) and self.size >= 3 and self.size % 2 == 1):
            raise ConfigError(f"size must be an odd integer >= 3, got {self.size!r}")


def line_footprints(size: int) -> list[np.ndarray]:
    """The four boolean (size, size) line footprints: horizontal, vertical, both diagonals."""
    eye = np.eye(size, dtype=bool)
    horizontal = np.zeros((size, size), dtype=bool)
    horizontal[size // 2, :] = True
    return [horizontal, horizontal.T.copy(), eye, eye[:, ::-1].copy()]


class MaxMedian(ClassicalDetector):
    """Max-median filter (Deshpande et al., 1999): ``image - max(4 directional medians)``.

    Medians use `scipy.ndimage.median_filter` with line footprints and mirrored borders.
    """

    model_name = "maxmedian"
    config_class = MaxMedianConfig

    def response(self, image: np.ndarray) -> np.ndarray:
        """Max-median residual of one grey float32 (H, W) image, >= 0, same shape."""
        medians = [
            ndimage.median_filter(image, footprint=fp, mode="mirror")
            for fp in line_footprints(self.config.size)
        ]
        background = np.maximum.reduce(medians)  # (H, W)
        return np.maximum(image - background, 0.0).astype(np.float32, copy=False)


@register_model("maxmedian")
def maxmedian(**overrides: Any) -> MaxMedian:
    """Max-median filter detector; keyword overrides replace `MaxMedianConfig` fields."""
    return MaxMedian(make_config(MaxMedianConfig, overrides))
