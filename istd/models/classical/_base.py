"""Shared machinery for the weight-free detectors: input checks, adaptive scaling, logits.

Every classical detector computes a non-negative *response* map per image with NumPy, OpenCV or
SciPy, then maps it to a [0, 1] saliency whose 0.5 level is the classical adaptive threshold
``T = max(mean(R) + k * std(R), floor)`` (the mean + k * std rule of Wei et al., MPCM, 2016, with
an absolute floor so that a flat, nearly noise-free frame does not fire on tiny ripples). The
module returns the logit of that saliency, so ``sigmoid(logits) > 0.5`` is exactly
``response > T`` and the usual 0.5 threshold of `istd.metrics.Metrics` and the Predictor applies
unchanged. Per-image min-max scaling is deliberately not used: it would always put some pixel at
1 and so always "detect" something.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from istd.errors import ConfigError, DataError

# Saliency is clamped to [EPS, 1 - EPS] before the logit so logits stay finite (|logit| <= 9.2).
EPS = 1e-4


@dataclass
class ClassicalConfig:
    """Parameters every weight-free detector shares.

    Attributes:
        k: the adaptive threshold is ``mean(R) + k * std(R)`` of the image's response R.
        floor: lower bound on that threshold, in the response's intensity units ([0, 1] images).
        in_chans: channels of the input images; colour inputs are averaged to grey.
    """

    k: float = 3.0
    floor: float = 0.05
    in_chans: int = 1

    def __post_init__(self) -> None:
        if not (_is_number(self.k) and math.isfinite(self.k) and self.k >= 0):
            raise ConfigError(f"k must be a finite number >= 0, got {self.k!r}")
        if not (_is_number(self.floor) and math.isfinite(self.floor) and self.floor > 0):
            raise ConfigError(f"floor must be a finite number > 0, got {self.floor!r}")
        if not (isinstance(self.in_chans, int) and self.in_chans >= 1):
            raise ConfigError(f"in_chans must be an integer >= 1, got {self.in_chans!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassicalConfig:
        """Rebuild from `to_dict` output; unknown keys raise `ConfigError` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def make_config(cls: type[ClassicalConfig], overrides: dict[str, Any]) -> ClassicalConfig:
    """Build ``cls`` from keyword overrides, naming unknown keys in a `ConfigError`."""
    return cls.from_dict(overrides)


def adaptive_saliency(response: np.ndarray, k: float, floor: float) -> np.ndarray:
    """Map a non-negative response (H, W) to a [0, 1] saliency whose 0.5 level is the threshold.

    The threshold is ``T = max(mean + k * std, floor)`` over the image; the saliency is
    ``clip(R / (2 T), 0, 1)``: linear in R, 0.5 exactly at T, saturating at 2 T.

    Args:
        response: float32 (H, W), >= 0.
        k: multiplier of the response's standard deviation.
        floor: smallest allowed threshold (> 0).

    Returns:
        float32 (H, W) in [0, 1].
    """
    # float64 statistics: float32 sums over a 512 x 512 frame lose digits for tiny responses.
    threshold = max(
        float(response.mean(dtype=np.float64) + k * response.std(dtype=np.float64)), floor
    )
    return np.clip(response / np.float32(2.0 * threshold), 0.0, 1.0).astype(np.float32)


def saliency_to_logits(saliency: np.ndarray) -> np.ndarray:
    """Logit of a [0, 1] saliency, clamped to [EPS, 1 - EPS] so the result is finite."""
    s = np.clip(saliency, EPS, 1.0 - EPS).astype(np.float32)
    return np.log(s / (1.0 - s))  # one log: s is at most 1 - EPS, so no division by 0


class ClassicalDetector(nn.Module):
    """Base class: a weight-free detector mapping (B, C, H, W) [0, 1] images to (B, 1, H, W) logits.

    Subclasses set ``model_name`` and ``config_class`` and implement :meth:`response` on one grey
    float32 (H, W) image with NumPy / OpenCV / SciPy operations. The module has no parameters and
    no gradient flows through it.
    """

    requires_weights: ClassVar[bool] = False
    model_name: ClassVar[str] = ""
    config_class: ClassVar[type[ClassicalConfig]] = ClassicalConfig

    def __init__(self, config: ClassicalConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(self.config).__name__}"
            )

    def response(self, image: np.ndarray) -> np.ndarray:
        """Non-negative target response of one grey image: float32 (H, W) -> float32 (H, W)."""
        raise NotImplementedError

    def saliency(self, image: np.ndarray) -> np.ndarray:
        """[0, 1] saliency of one grey float32 (H, W) image; > 0.5 marks target pixels."""
        return adaptive_saliency(self.response(image), self.config.k, self.config.floor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the saliency.

        Args:
            x: (B, C, H, W) float images in [0, 1]; C > 1 is averaged to grey.

        Returns:
            (B, 1, H, W) float32 logits on ``x.device``, finite.
        """
        if x.ndim != 4 or not x.is_floating_point():
            raise DataError(
                f"{self.model_name} expects float images (B, C, H, W) in [0, 1], "
                f"got {x.dtype} of shape {tuple(x.shape)}"
            )
        if x.numel() == 0:
            raise DataError(f"{self.model_name} got an empty batch of shape {tuple(x.shape)}")
        # NumPy from here on: the detectors are NumPy / OpenCV code, and small torch reductions
        # pay thread-pool start-up costs (tens of ms per 512 x 512 frame on a busy CPU).
        images = x.detach().to("cpu", torch.float32).numpy()  # (B, C, H, W)
        lo, hi = float(images.min()), float(images.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{self.model_name} expects images scaled to [0, 1] (divide 8-bit by 255, "
                f"16-bit by 65535), got values in [{lo:g}, {hi:g}]"
            )
        grey = images.mean(axis=1, dtype=np.float32)  # (B, C, H, W) -> (B, H, W)
        logits = np.stack([saliency_to_logits(self.saliency(img)) for img in grey])  # (B, H, W)
        return torch.from_numpy(logits).unsqueeze(1).to(x.device)  # (B, 1, H, W)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.to_dict().items())


__all__ = [
    "EPS",
    "ClassicalConfig",
    "ClassicalDetector",
    "adaptive_saliency",
    "make_config",
    "saliency_to_logits",
]
