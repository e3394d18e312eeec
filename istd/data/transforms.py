"""Augmentation pipelines (albumentations) for training and evaluation.

Small infrared targets cover a few dozen pixels of a frame, so a plain random crop often holds
no target at all. The training crop is therefore target-aware: with probability ``target_p`` it
is placed so that a randomly chosen target pixel lies somewhere inside it (albumentations'
`CropNonEmptyMaskIfExists`, which jitters the window uniformly around that pixel), otherwise it
is uniform. Flips and 90-degree rotations keep the physics of an IR frame; noise and blur are
mild so that faint targets survive. Evaluation runs at native resolution with no resizing.

albumentations is imported on first use: it takes about a second to import (most of `istd`'s
start-up before this change), which `istd predict` and `istd eval` do not need, and its
online check for a newer version is switched off (no network traffic from importing `istd`).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import cv2
import numpy as np

from istd.errors import ConfigError

if TYPE_CHECKING:
    import albumentations as A

__all__ = [
    "PairTransform",
    "apply_transform",
    "eval_transform",
    "is_scale_range",
    "seed_transform",
    "train_transform",
]

#: A callable taking and returning (image (H, W) float32 [0, 1], mask (H, W) uint8 {0, 1}).
PairTransform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _albumentations() -> ModuleType:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # read when it is imported
    import albumentations

    return albumentations


def train_transform(
    crop_size: int = 256,
    target_p: float = 0.8,
    noise_p: float = 0.3,
    blur_p: float = 0.2,
    seed: int | None = None,
    hflip_p: float = 0.5,
    vflip_p: float = 0.5,
    rot90_p: float = 0.5,
    scale_p: float = 0.0,
    scale_range: tuple[float, float] = (0.7, 1.5),
    pad_value: float = 0.0,
) -> A.Compose:
    """The training pipeline: rescale, pad, target-aware random crop, flips, rotations, noise,
    blur.

    Args:
        crop_size: side of the square crop; smaller images are padded (image with
            `pad_value`, mask with 0) at a random position first.
        target_p: probability that the crop is centred (with random jitter) around a target
            pixel when the mask has one; otherwise the crop is uniform.
        noise_p: probability of additive Gaussian noise (standard deviation 0.5 % to 2 % of
            full scale).
        blur_p: probability of a 3 x 3 Gaussian blur with sigma 0.3 to 0.7.
        seed: seed of the pipeline's random stream (None: not seeded); see `seed_transform`.
        hflip_p, vflip_p, rot90_p: probabilities of a horizontal flip, a vertical flip and a
            rotation by a random multiple of 90 degrees. All three at 0.5 give the eight
            orientations equally often. Frames with an up (sky above ground) might prefer the
            horizontal flip alone; on NUAA-SIRST it made no difference (docs/ablation.md).
        scale_p, scale_range: probability of resizing the whole frame first by a factor drawn
            uniformly from ``scale_range`` (image bilinear, or area-averaged when shrinking;
            mask nearest). Targets then come in more sizes than the training set's: a network
            trained without it missed all four ~100-pixel targets of a NUAA-SIRST frame that
            it found at 0.5 and 0.75 of the size. 0 (the default) leaves the pipeline, and the
            random stream of runs made before the option, unchanged.
        pad_value: intensity in [0, 1] of the padding around frames smaller than the crop.
            0 (black) is the recipe of the shipped weights; the network itself pads frames at
            prediction with its normalisation mean (`istd.models.layers.patch.pad_to_multiple`),
            so passing that mean trains on the border it will meet.

    Returns:
        An albumentations pipeline called as ``pipeline(image=..., mask=...)``.

    Raises:
        ConfigError: a crop size below 1, a probability outside [0, 1] or a scale range that
            is not two positive factors, smallest first.
    """
    if crop_size < 1:
        raise ConfigError(f"crop_size must be at least 1, got {crop_size}")
    if not 0.0 <= pad_value <= 1.0:
        raise ConfigError(f"pad_value must lie in [0, 1], got {pad_value}")
    if not is_scale_range(scale_range):
        raise ConfigError(f"scale_range must be two factors 0 < low <= high, got {scale_range}")
    probabilities = {
        "target_p": target_p,
        "noise_p": noise_p,
        "blur_p": blur_p,
        "hflip_p": hflip_p,
        "vflip_p": vflip_p,
        "rot90_p": rot90_p,
        "scale_p": scale_p,
    }
    for name, value in probabilities.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must lie in [0, 1], got {value}")
    A = _albumentations()  # noqa: N806 (the library's usual alias)
    crops: list[A.BasicTransform] = []
    if target_p > 0:
        crops.append(A.CropNonEmptyMaskIfExists(height=crop_size, width=crop_size, p=target_p))
    if target_p < 1:
        crops.append(A.RandomCrop(height=crop_size, width=crop_size, p=1.0 - target_p))
    rescale: list[A.BasicTransform] = []
    if scale_p > 0:  # absent at 0: an idle transform would still draw from the random stream
        low, high = scale_range
        rescale.append(
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),  # albumentations scales by 1 + U(limits)
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                area_for_downscale="image",
                p=scale_p,
            )
        )
    pipeline = A.Compose(
        [
            *rescale,
            A.PadIfNeeded(
                min_height=crop_size,
                min_width=crop_size,
                position="random",
                border_mode=cv2.BORDER_CONSTANT,
                fill=pad_value,
                fill_mask=0,
            ),
            A.OneOf(crops, p=1.0),
            A.HorizontalFlip(p=hflip_p),
            A.VerticalFlip(p=vflip_p),
            A.RandomRotate90(p=rot90_p),
            A.GaussNoise(std_range=(0.005, 0.02), p=noise_p),
            A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.3, 0.7), p=blur_p),
        ]
    )
    if seed is not None:
        seed_transform(pipeline, seed)
    return pipeline


def is_scale_range(scale_range: tuple[float, float] | list[float]) -> bool:
    """Whether ``scale_range`` is two finite factors with 0 < low <= high."""
    if len(scale_range) != 2:
        return False
    low, high = (float(v) for v in scale_range)
    return 0.0 < low <= high < float("inf")


def seed_transform(pipeline: A.Compose, seed: int) -> None:
    """Seed every transform of `pipeline` with one shared random stream.

    Not `Compose(seed=...)` or `set_random_seed`: in albumentations 2.0 those give each child
    transform its own generator with the same seed, so all children draw the same numbers and
    the flips and the rotation fire together or not at all (4 of the 8 orientations, the
    identity 58 % of the time instead of 1/8; measured).
    """
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


def eval_transform() -> None:
    """The evaluation pipeline: none. Images keep their native resolution and values."""
    return None


def apply_transform(
    transform: A.Compose | PairTransform | None, image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a pipeline to one image and its mask.

    Args:
        transform: an albumentations pipeline, a plain ``(image, mask) -> (image, mask)``
            callable, or None (identity).
        image: (H, W) float32 in [0, 1].
        mask: (H, W) uint8 in {0, 1}.

    Returns:
        (H', W') float32 image clipped to [0, 1] and (H', W') uint8 mask in {0, 1}.
    """
    if transform is None:
        return image, mask
    albumentations = sys.modules.get("albumentations")  # not imported: not one of its pipelines
    if albumentations is not None and isinstance(transform, albumentations.BaseCompose):
        out = transform(image=image, mask=mask)
        image, mask = out["image"], out["mask"]
    else:
        image, mask = transform(image, mask)
    if image.ndim == 3:  # albumentations may hand back (H, W, 1)
        image = image[..., 0]
    if mask.ndim == 3:
        mask = mask[..., 0]
    image = np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
    return image, (mask > 0).astype(np.uint8)
