"""U-shaped decoder of MiM-ISTD: skip branches, upsampling stages and the segmentation head.

Design of Chen et al., "Mamba-in-Mamba for Efficient Infrared Small Target Detection" (TGRS
2024): every encoder stage's sentence map is upsampled 2x by a transposed conv into a skip; the
decoder climbs from the deepest skip with Swin-Unet patch expanding (Cao et al., 2021), adds the
next skip and refines with two ResNet basic blocks (He et al., 2016); a conv head predicts the
one-channel logit map at H/4. With ``MiMConfig.head_stride`` 2, one more such stage, whose
skip is the stem's H/2 map, feeds a second head at H/2 whose output corrects the first's
(upsampled) logits; with 1, a third stage at H, whose skip is a conv of the frame, corrects
them again.

Feature maps here are NCHW tensors in channels_last memory (the encoder's (B, H, W, C) tokens
seen through `permute(0, 3, 1, 2)`), which oneDNN's convolutions consume without copies.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from istd.models.layers.patch import ConvBNAct, PatchExpand

TARGET_PRIOR = 0.01  # initial target probability of every pixel


class SkipBranch(nn.Module):
    """ConvTranspose 2x2 s2 + BN + GELU + Conv 3x3 + BN + GELU: a stage map at twice its size."""

    def __init__(self, dim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2, bias=False, **dd)
        self.up_norm = nn.BatchNorm2d(dim, **dd)
        self.act = nn.GELU()
        self.refine = ConvBNAct(dim, dim, act=nn.GELU, **dd)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, H, W, C) tokens. Returns (B, C, 2H, 2W)."""
        y = self.up(x.permute(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W) view -> (B, C, 2H, 2W)
        return self.refine(self.act(self.up_norm(y)))


class ResidualBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus identity, then ReLU."""

    def __init__(self, dim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv1 = ConvBNAct(dim, dim, **dd)
        self.conv2 = ConvBNAct(dim, dim, act=None, **dd)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, C, H, W). Returns (B, C, H, W)."""
        return self.act(self.conv2(self.conv1(x)) + x)


class DecoderStage(nn.Module):
    """Patch-expand the deeper map to C/2 at twice its size, add the skip, two residual blocks."""

    def __init__(self, dim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.expand = PatchExpand(dim, **dd)
        self.blocks = nn.Sequential(ResidualBlock(dim // 2, **dd), ResidualBlock(dim // 2, **dd))

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        """Args: deep (B, C, H, W), skip (B, C/2, 2H, 2W). Returns (B, C/2, 2H, 2W)."""
        up = self.expand(
            deep.permute(0, 2, 3, 1)
        )  # (B, C, H, W) -> (B, H, W, C) -> (B, 2H, 2W, C/2)
        return self.blocks(up.permute(0, 3, 1, 2) + skip)  # (B, C/2, 2H, 2W)


class SegHead(nn.Module):
    """Conv 3x3 (C -> C/4) + BN + ReLU + Dropout + Conv 1x1 -> one logit channel.

    Args:
        dim: input channels.
        dropout: before the 1 x 1 conv.
        residual: a correction added to another head's logits: its 1 x 1 conv starts at zero,
            so the network starts as it was without this head (and as its loaded weights
            predicted).
    """

    def __init__(
        self,
        dim: int,
        dropout: float = 0.1,
        residual: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        hidden = max(dim // 4, 1)
        self.conv = ConvBNAct(dim, hidden, **dd)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Conv2d(hidden, 1, 1, **dd)
        if residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        else:
            # Start every pixel at the target prior (Lin et al., focal loss, ICCV 2017): targets
            # cover ~0.1-1 % of a frame. From sigmoid(0) = 0.5 SoftIoU's gradient on the
            # background nearly cancels and training stalls for epochs (measured on NUAA-SIRST).
            nn.init.constant_(self.out.bias, -math.log((1 - TARGET_PRIOR) / TARGET_PRIOR))

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, C, H, W). Returns logits (B, 1, H, W)."""
        return self.out(self.drop(self.conv(x)))
