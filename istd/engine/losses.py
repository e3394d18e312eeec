"""Segmentation losses for infrared small targets: SoftIoU, Dice and BCE + SoftIoU.

SoftIoU is the loss ACM (Dai et al., WACV 2021) and DNANet (Li et al., TIP 2023) train with and
that MiM-ISTD inherits: the IoU of the sigmoid probabilities with the mask, computed over the
whole batch so that images with tiny targets are not drowned by empty crops. `per_image`
computes SoftIoU and Dice per image and averages them instead: every crop then weighs the same,
so the probability spread over an empty or small-target crop costs as much as a large target's
miss. Every loss takes logits (B, 1, H, W) and {0, 1} targets of the same shape and returns a
scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from istd.engine.config import LossConfig
from istd.errors import ConfigError


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape"
        )


def _soft_sums(
    logits: torch.Tensor, target: torch.Tensor, per_image: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sums of p*t, p and t, with p = sigmoid(logits): what SoftIoU and Dice are made of.

    Over the whole batch (scalars), or per image ((B,) each) when `per_image`.
    """
    _check(logits, target)
    # float32 even under bf16 autocast: the sums run over millions of pixels.
    prob = torch.sigmoid(logits.float())  # (B, 1, H, W)
    target = target.float()
    dims = (1, 2, 3) if per_image else (0, 1, 2, 3)
    return (prob * target).sum(dims), prob.sum(dims), target.sum(dims)


class SoftIoULoss(nn.Module):
    """1 - (sum p*t + s) / (sum p + sum t - sum p*t + s), over the whole batch.

    Args:
        smooth: added to numerator and denominator; keeps all-empty batches finite (loss 0).
        per_image: sum over each image and average the B losses (see the module docstring).
    """

    def __init__(self, smooth: float = 1.0, per_image: bool = False) -> None:
        super().__init__()
        self.smooth = smooth
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits, target: (B, 1, H, W) -> scalar."""
        inter, prob_sum, target_sum = _soft_sums(logits, target, self.per_image)
        union = prob_sum + target_sum - inter
        return (1.0 - (inter + self.smooth) / (union + self.smooth)).mean()


class DiceLoss(nn.Module):
    """1 - (2 sum p*t + s) / (sum p + sum t + s), over the whole batch (or per image)."""

    def __init__(self, smooth: float = 1.0, per_image: bool = False) -> None:
        super().__init__()
        self.smooth = smooth
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits, target: (B, 1, H, W) -> scalar."""
        inter, prob_sum, target_sum = _soft_sums(logits, target, self.per_image)
        dice = (2.0 * inter + self.smooth) / (prob_sum + target_sum + self.smooth)
        return (1.0 - dice).mean()


class BCESoftIoULoss(nn.Module):
    """`bce_weight` * mean binary cross-entropy + SoftIoU.

    BCE gives every pixel a gradient early in training, when SoftIoU's is weak because the
    predicted probabilities are spread thinly over the background.
    """

    def __init__(
        self, bce_weight: float = 1.0, smooth: float = 1.0, per_image: bool = False
    ) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.soft_iou = SoftIoULoss(smooth, per_image)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits, target: (B, 1, H, W) -> scalar."""
        _check(logits, target)
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        return self.bce_weight * bce + self.soft_iou(logits, target)


def build_loss(cfg: LossConfig) -> nn.Module:
    """The loss named by `cfg.name`.

    Raises:
        ConfigError: unknown name or reduction.
    """
    if cfg.reduction not in ("batch", "image"):
        raise ConfigError(f"unknown loss.reduction {cfg.reduction!r}; known: batch, image")
    per_image = cfg.reduction == "image"
    if cfg.name == "softiou":
        return SoftIoULoss(cfg.smooth, per_image)
    if cfg.name == "dice":
        return DiceLoss(cfg.smooth, per_image)
    if cfg.name == "bce+softiou":
        return BCESoftIoULoss(cfg.bce_weight, cfg.smooth, per_image)
    raise ConfigError(f"unknown loss.name {cfg.name!r}; known: softiou, dice, bce+softiou")
