"""ISTD metrics: IoU, nIoU, Pd, Fa, precision / recall / F1, Pd-Fa and ROC sweeps.

Definitions (docs/metrics.md) equal BasicIRSTD's after its Fa fix; see `Metrics`.
"""

from istd.metrics.metrics import DEFAULT_CURVE_THRESHOLDS, Metrics
from istd.metrics.stats import ImageStats, connected_components, image_stats, match_targets

__all__ = [
    "DEFAULT_CURVE_THRESHOLDS",
    "ImageStats",
    "Metrics",
    "connected_components",
    "image_stats",
    "match_targets",
]
