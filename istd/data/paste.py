"""Target copy-paste augmentation: more targets per training frame, on other backgrounds.

A training split of a few hundred frames holds a few hundred targets, most of them alone in
their frame. `TargetBank` cuts every target of the training split out with a small margin and
keeps its *contrast* (the patch minus its local background, the median of the margin), not its
pixels; `TargetBank.paste` adds a few of them to a frame at random free places, so the pasted
target keeps its shape and brightness step while the texture underneath is the new frame's.
Its mask is the target's own. Pasting runs before the albumentations pipeline, so the crop,
flips and noise treat pasted and real targets alike.

Off in the shipped configs: on NUAA-SIRST (the x1.5 stage with ``paste_p`` 0.5) it found one
more validation target but tripled the false alarms, the network firing on bright clutter
(docs/runs/mim-istd-nuaa-sirst-x1.5-paste). It may pay on data whose frames rarely hold more
than one target but whose clutter is dimmer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.measure import label, regionprops

from istd.errors import ConfigError

__all__ = ["TargetBank", "TargetPatch"]

MARGIN = 3  # px of background kept around a target: its local background and the feathering
TRIES = 20  # placements tried per target before it is left out (a frame crowded with targets)


@dataclass(frozen=True)
class TargetPatch:
    """One target cut out of a training frame.

    Attributes:
        contrast: (h, w) float32, the patch minus its local background, feathered to zero over
            the margin so that pasting leaves no seam.
        mask: (h, w) uint8 in {0, 1}, the target's pixels.
    """

    contrast: np.ndarray
    mask: np.ndarray


class TargetBank:
    """The targets of a training split, ready to paste.

    Args:
        patches: the targets (see `from_pairs`).

    Raises:
        ConfigError: no targets (a training split without any target mask).
    """

    def __init__(self, patches: list[TargetPatch]) -> None:
        if not patches:
            raise ConfigError("augment.paste_p > 0 but the training split holds no targets")
        self.patches = patches

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> TargetBank:
        """Cut every 8-connected target out of (image (H, W) float32, mask (H, W) uint8) pairs.

        Targets touching the frame border are kept: their margin is what the frame has.
        """
        patches = []
        for image, mask in pairs:
            labels = label(mask > 0, connectivity=2)  # (H, W) int
            for region in regionprops(labels):
                y0, x0, y1, x1 = region.bbox
                y0, x0 = max(y0 - MARGIN, 0), max(x0 - MARGIN, 0)
                y1, x1 = min(y1 + MARGIN, mask.shape[0]), min(x1 + MARGIN, mask.shape[1])
                target = (labels[y0:y1, x0:x1] == region.label).astype(np.uint8)  # (h, w)
                patch = image[y0:y1, x0:x1]
                background = patch[mask[y0:y1, x0:x1] == 0]  # other targets are not background
                level = float(np.median(background)) if background.size else float(patch.min())
                patches.append(TargetPatch(_feathered(patch - level, target), target))
        return cls(patches)

    def __len__(self) -> int:
        return len(self.patches)

    def paste(
        self, image: np.ndarray, mask: np.ndarray, count: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add `count` random targets, each randomly flipped, where the frame has none nearby.

        Args:
            image: (H, W) float32 in [0, 1]; not modified.
            mask: (H, W) uint8 in {0, 1}; not modified.
            count: how many targets to try to place.
            rng: the random stream (the training set seeds it per sample and epoch).

        Returns:
            New (image clipped to [0, 1], mask). A target is placed only where no other
            target is within `MARGIN` px and its own pixels stay within [0, 1]; one that finds
            no such place in `TRIES` draws, or is larger than the frame, is left out.
        """
        image, mask = image.copy(), mask.copy()
        height, width = mask.shape
        # Kept clear of real and pasted targets by a margin, so no two targets merge.
        occupied = cv2.dilate(mask, np.ones((2 * MARGIN + 1,) * 2, np.uint8))  # (H, W)
        for _ in range(count):
            patch = self.patches[rng.integers(len(self.patches))]
            flip = (slice(None, None, rng.choice((-1, 1))), slice(None, None, rng.choice((-1, 1))))
            contrast, target = patch.contrast[flip], patch.mask[flip]  # (h, w) each
            h, w = target.shape
            if h > height or w > width:
                continue
            for _ in range(TRIES):
                y, x = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
                region = image[y : y + h, x : x + w]
                pasted = region + contrast
                # A target pushed past full scale (onto a saturated cloud) would be labelled
                # where nothing is left to see: try elsewhere.
                clipped = pasted[target > 0].max() > 1.0 or pasted[target > 0].min() < 0.0
                if not occupied[y : y + h, x : x + w].any() and not clipped:
                    region[...] = pasted
                    mask[y : y + h, x : x + w] |= target
                    occupied[
                        max(y - MARGIN, 0) : y + h + MARGIN, max(x - MARGIN, 0) : x + w + MARGIN
                    ] = 1
                    break
        np.clip(image, 0.0, 1.0, out=image)
        return image, mask


def _feathered(contrast: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`contrast` weighted by 1 on the target, falling to 0 across the margin (a blurred mask)."""
    weight = cv2.GaussianBlur(target.astype(np.float32), (0, 0), sigmaX=MARGIN / 3)  # (h, w)
    weight = np.maximum(weight / max(float(weight.max()), 1e-6), target)  # 1 on the target
    return (contrast * weight).astype(np.float32)
