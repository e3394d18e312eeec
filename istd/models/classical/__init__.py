"""Weight-free (classical) infrared small-target detectors as registered `istd` models.

Each maps (B, C, H, W) images in [0, 1] to (B, 1, H, W) logits of a [0, 1] saliency whose 0.5
level is the classical adaptive threshold mean + k * std (with a floor), so they run wherever a
network does: `build_model("tophat")`, `istd predict --model tophat`, `istd eval --model mpcm`.
They have no parameters (``requires_weights = False``) and need no training.

- ``tophat``: white top-hat, Rivest & Fortin, Optical Engineering 1996.
- ``mpcm``: multiscale patch-based contrast measure, Wei, You & Li, Pattern Recognition 2016.
- ``maxmedian``: max-median filter, Deshpande, Er, Venkateswarlu & Chan, Proc. SPIE 1999.
"""

from istd.models.classical._base import (
    ClassicalConfig,
    ClassicalDetector,
    adaptive_saliency,
    saliency_to_logits,
)
from istd.models.classical.maxmedian import MaxMedian, MaxMedianConfig
from istd.models.classical.mpcm import MPCM, MPCMConfig
from istd.models.classical.tophat import TopHat, TopHatConfig

CLASSICAL_MODELS = ("maxmedian", "mpcm", "tophat")

__all__ = [
    "CLASSICAL_MODELS",
    "MPCM",
    "ClassicalConfig",
    "ClassicalDetector",
    "MPCMConfig",
    "MaxMedian",
    "MaxMedianConfig",
    "TopHat",
    "TopHatConfig",
    "adaptive_saliency",
    "saliency_to_logits",
]
