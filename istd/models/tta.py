"""Flip test-time augmentation: average a model's probabilities over mirrored copies of a frame.

A small target looks the same mirrored, but the network does not see it the same way: its
scans run in fixed directions and its patch grid is anchored at the top-left corner. Averaging
over the frame and its horizontal, vertical and double flips cancels part of that variance
(fewer one-view false alarms, fuller target shapes) for four times the compute.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FLIPS", "FlipTTA", "logit_of_mean"]

# The dims of a (B, C, H, W) tensor each view mirrors: none, width, height, both.
FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))
_EPS = 1e-7  # keeps the logit of an averaged probability of exactly 0 or 1 finite


class FlipTTA(nn.Module):
    """Wrap `model` so its logits are those of the mean probability over the four flips.

    Args:
        model: maps frames (B, C, H, W) to logits (B, 1, H, W); a network or a weight-free
            detector.

    The wrapper keeps the wrapped model's `config` and `model_name`, so code that reads a
    network's input scale or channel count sees through it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self) -> Any:
        return getattr(self.model, "config", None)

    @property
    def model_name(self) -> str:
        return str(getattr(self.model, "model_name", type(self.model).__name__))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, 1, H, W) of the flip-averaged probabilities for frames (B, C, H, W)."""
        probs = []
        for dims in FLIPS:
            view = torch.flip(x, dims) if dims else x
            prob = torch.sigmoid(self.model(view).float())
            probs.append(
                torch.flip(prob, dims) if dims else prob
            )  # back to the frame's orientation
        return logit_of_mean(probs)


def logit_of_mean(probs: list[Tensor]) -> Tensor:
    """Logits of the mean of probability maps of one shape (flip views, ensemble members)."""
    return torch.logit(torch.stack(probs).mean(dim=0), eps=_EPS)
