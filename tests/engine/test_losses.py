"""Losses: known values, gradients, batch-level reduction and the config switch."""

from __future__ import annotations

import pytest
import torch

from istd.engine.config import LossConfig
from istd.engine.losses import BCESoftIoULoss, DiceLoss, SoftIoULoss, build_loss
from istd.errors import ConfigError


def test_soft_iou_perfect_and_worst() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:4, 2:4] = 1
    good = torch.where(target > 0, 50.0, -50.0)
    bad = -good
    loss = SoftIoULoss(smooth=0.0)
    assert loss(good, target).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(bad, target).item() == pytest.approx(1.0, abs=1e-6)


def test_soft_iou_matches_hand_computation() -> None:
    logits = torch.tensor([[[[0.0, 1.0], [-1.0, 2.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    expected = 1 - (inter + 1) / (p.sum() + target.sum() - inter + 1)
    assert SoftIoULoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    dice = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
    assert DiceLoss()(logits, target).item() == pytest.approx(dice.item(), rel=1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    both = BCESoftIoULoss(bce_weight=0.5)(logits, target)
    assert both.item() == pytest.approx(0.5 * bce.item() + expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["softiou", "dice", "bce+softiou"])
def test_losses_give_finite_gradients_on_empty_masks(name: str) -> None:
    loss_fn = build_loss(LossConfig(name=name))
    logits = torch.randn(3, 1, 5, 7, requires_grad=True)
    loss = loss_fn(logits, torch.zeros(3, 1, 5, 7))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_shape_mismatch_and_unknown_name() -> None:
    with pytest.raises(ValueError, match="shape"):
        SoftIoULoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ConfigError, match="focal"):
        build_loss(LossConfig(name="focal"))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["softiou", "dice", "bce+softiou"])
def test_per_image_reduction_is_the_mean_of_single_image_losses(name: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 6, 6)
    target = (torch.rand(3, 1, 6, 6) > 0.8).float()
    target[2] = 0  # an empty crop
    per_image = build_loss(LossConfig(name=name, reduction="image"))
    singles = torch.stack([per_image(logits[i : i + 1], target[i : i + 1]) for i in range(3)])
    assert per_image(logits, target).item() == pytest.approx(singles.mean().item(), rel=1e-6)
    batch = build_loss(LossConfig(name=name))
    assert batch(logits, target).item() != pytest.approx(per_image(logits, target).item())


def test_per_image_soft_iou_weighs_an_empty_crops_false_alarm_like_a_miss() -> None:
    # Crop 0 holds a 4 x 4 target predicted exactly; crop 1 is empty but for one confident
    # false-alarm pixel. Over the batch the pixel costs 1/18; per image, half of that crop's loss.
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:6, 2:6] = 1
    logits = torch.where(target > 0, 50.0, -50.0)
    logits[1, 0, 0, 0] = 50.0
    batch = SoftIoULoss(smooth=1.0)(logits, target).item()
    per_image = SoftIoULoss(smooth=1.0, per_image=True)(logits, target).item()
    assert batch == pytest.approx(1 - 17 / 18, rel=1e-4)
    assert per_image == pytest.approx((0 + (1 - 1 / 2)) / 2, rel=1e-4)


def test_unknown_reduction() -> None:
    with pytest.raises(ConfigError, match="reduction"):
        build_loss(LossConfig(reduction="pixel"))  # type: ignore[arg-type]
