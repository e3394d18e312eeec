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
