"""FlipTTA: the mean probability over the four flips, in the frame's own orientation."""

from __future__ import annotations

import torch
from torch import nn

from istd.models import build_model
from istd.models.tta import FlipTTA


class LeftEdge(nn.Module):
    """Logit 10 where the pixel's left neighbour is darker, -10 elsewhere: not flip-invariant."""

    model_name = "left-edge"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = torch.nn.functional.pad(x[:, :1, :, :-1], (1, 0), value=1.0)
        return torch.where(x[:, :1] > left, 10.0, -10.0)


def test_averages_the_four_flipped_views() -> None:
    frame = torch.zeros(1, 1, 5, 6)
    frame[0, 0, 2, 3] = 1.0  # one bright pixel: brighter than its neighbour in every view
    prob = torch.sigmoid(FlipTTA(LeftEdge())(frame))
    assert prob[0, 0, 2, 3] > 0.99
    assert prob[0, 0, 2, 4] < 0.01  # never brighter than the neighbour its view compares
    by_hand = (
        sum(
            torch.flip(torch.sigmoid(LeftEdge()(torch.flip(frame, d))), d)
            if d
            else torch.sigmoid(LeftEdge()(frame))
            for d in ((), (3,), (2,), (2, 3))
        )
        / 4
    )
    assert torch.allclose(prob, by_hand, atol=1e-5)


def test_differs_from_one_view_for_a_direction_sensitive_model() -> None:
    frame = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    one = torch.sigmoid(LeftEdge()(frame))
    four = torch.sigmoid(FlipTTA(LeftEdge())(frame))
    assert not torch.allclose(one, four)
    assert ((four * 4).round() - four * 4).abs().max() < 1e-3  # quarters: 0, 1/4, ..., 1


def test_keeps_the_network_s_config_name_and_shape() -> None:
    torch.manual_seed(0)
    network = build_model("mim-istd-test", scan_backend="reference").eval()
    wrapped = FlipTTA(network)
    assert wrapped.config is network.config and wrapped.model_name == network.model_name
    x = torch.rand(2, 1, 19, 23)
    with torch.inference_mode():
        logits = wrapped(x)
        assert logits.shape == (2, 1, 19, 23) and torch.isfinite(logits).all()
        # A frame and its mirror image get mirrored predictions: the average is symmetric.
        mirrored = wrapped(torch.flip(x, (3,)))
    assert torch.allclose(torch.flip(mirrored, (3,)), logits, atol=1e-4)
