"""Stem, patch merging and patch expanding: how MiM-ISTD moves between resolutions.

The stem follows MiM-ISTD (Chen et al., TGRS 2024): one stride-2 conv shared by the two token
levels, then a conv giving the word map (each 2 x 2 input pixels one word, each 4 x 4 block of
words one sentence) and three convs giving the sentence grid at H/8. Patch merging and expanding
are the Swin / Swin-Unet operations (Liu et al., 2021; Cao et al., 2021).

Token maps are channels-last, (B, H, W, C), so LayerNorm and Linear run without permutes; the
convs receive `permute(0, 3, 1, 2)` views, which PyTorch treats as channels_last NCHW tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from istd.models.precision import current_conv_dtype


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + activation, the stem's and decoder's basic unit."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int = 3,
        stride: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
        groups: int = 1,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False, **dd
            ),
            nn.BatchNorm2d(out_chs, **dd),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)
        # A full conv over at least 16 channels is compute-bound: the one worth running in
        # bfloat16 (`istd.models.precision`); narrower and depthwise ones are memory-bound.
        self.dense = groups == 1 and kernel > 1 and in_chs >= 16

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, in_chs, H, W). Returns (B, out_chs, H', W').

        In eval mode the BatchNorm is folded into the conv (weight and bias rescaled on the fly,
        a weight-sized computation), which saves one full pass over the output map; a dense
        conv runs in the dtype `istd.models.precision.conv_precision` sets (its output cast
        back to x's dtype).
        """
        conv, bn = self[0], self[1]
        if self.training or not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
            return super().forward(x)
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (out,)
        weight = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)  # keeps its layout
        bias = bn.bias - bn.running_mean * scale
        wanted = current_conv_dtype() if self.dense else torch.float32
        dtype = x.dtype if wanted == torch.float32 else wanted
        y = F.conv2d(
            x.to(dtype), weight.to(dtype), bias.to(dtype), conv.stride, conv.padding,
            conv.dilation, conv.groups,
        ).to(x.dtype)  # fmt: skip
        for layer in list(self)[2:]:
            y = y.relu_() if isinstance(layer, nn.ReLU) else layer(y)  # y is ours: in place
        return y


class Stem(nn.Module):
    """Image -> word map at H/2 and sentence grid at H/8.

    Args:
        in_chans: image channels.
        stem_dim: channels of the shared stride-2 map.
        sentence_dim: sentence token dimension of the first stage.
        word_dim: word dimension of the first stage, or None for an encoder without words.
    """

    def __init__(
        self,
        in_chans: int,
        stem_dim: int,
        sentence_dim: int,
        word_dim: int | None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.shared = ConvBNAct(in_chans, stem_dim, stride=2, **dd)
        self.words = ConvBNAct(stem_dim, word_dim, **dd) if word_dim else None
        mid = sentence_dim // 2
        self.sentences = nn.Sequential(
            ConvBNAct(stem_dim, mid, stride=2, **dd),
            ConvBNAct(mid, sentence_dim, stride=2, **dd),
            ConvBNAct(sentence_dim, sentence_dim, **dd),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Args: x (B, in_chans, H, W), H and W multiples of 8.

        Returns:
            the shared map (B, stem_dim, H/2, W/2), words (B, H/2, W/2, word_dim) or None,
            sentences (B, H/8, W/8, sentence_dim).
        """
        x = self.shared(x)  # (B, stem_dim, H/2, W/2)
        words = None
        if self.words is not None:
            words = self.words(x).permute(0, 2, 3, 1)  # (B, Cw, H/2, W/2) -> (B, H/2, W/2, Cw)
        sentences = self.sentences(x).permute(0, 2, 3, 1)  # (B, C, H/8, W/8) -> (B, H/8, W/8, C)
        return x, words, sentences


class PatchMerging(nn.Module):
    """Swin patch merging: each 2 x 2 block of tokens concatenated, LayerNorm, Linear 4C -> 2C."""

    def __init__(self, dim: int, out_dim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm = nn.LayerNorm(4 * dim, **dd)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False, **dd)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, H, W, C), H and W even. Returns (B, H/2, W/2, out_dim)."""
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C)  # split each axis into (blocks, 2)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, H // 2, W // 2, 4 * C)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))


class WordMerging(nn.Module):
    """Words of 2 x 2 neighbouring sentences (8 x 8 words) -> 4 x 4 words of the merged sentence.

    On the word map that is a 3 x 3 stride-2 conv to the next word dimension.
    """

    def __init__(self, dim: int, out_dim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, 2, 1, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, Hw, Ww, Cw). Returns (B, Hw/2, Ww/2, out_dim)."""
        y = self.conv(x.permute(0, 3, 1, 2))  # (B, Cw, Hw, Ww) channels_last view -> conv
        return y.permute(0, 2, 3, 1)  # (B, C', Hw/2, Ww/2) -> (B, Hw/2, Ww/2, C')


class PatchExpand(nn.Module):
    """Swin-Unet patch expanding: Linear C -> 2C, 2 x 2 pixel shuffle, LayerNorm -> C/2 at 2x."""

    def __init__(self, dim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.expand = nn.Linear(dim, 2 * dim, bias=False, **dd)
        self.norm = nn.LayerNorm(dim // 2, **dd)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, H, W, C). Returns (B, 2H, 2W, C/2)."""
        B, H, W, C = x.shape
        x = self.expand(x).view(B, H, W, 2, 2, C // 2)  # (B, H, W, p1, p2, C/2)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, 2 * H, 2 * W, C // 2)  # pixel shuffle
        return self.norm(x)


def to_sentences(words: Tensor) -> Tensor:
    """Word map -> one 4 x 4 word grid per sentence.

    Args:
        words: (B, Hw, Ww, C) with Hw, Ww multiples of 4.

    Returns:
        (B * Hw/4 * Ww/4, 4, 4, C), sentences in row-major order.
    """
    B, Hw, Ww, C = words.shape
    x = words.reshape(B, Hw // 4, 4, Ww // 4, 4, C)  # (B, Hs, 4, Ws, 4, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, 4, 4, C)  # (B*Hs*Ws, 4, 4, C)


def from_sentences(grids: Tensor, B: int, Hs: int, Ws: int) -> Tensor:
    """Inverse of :func:`to_sentences`: (B*Hs*Ws, 4, 4, C) -> (B, 4*Hs, 4*Ws, C)."""
    C = grids.shape[-1]
    x = grids.reshape(B, Hs, Ws, 4, 4, C).permute(0, 1, 3, 2, 4, 5)  # (B, Hs, 4, Ws, 4, C)
    return x.reshape(B, 4 * Hs, 4 * Ws, C)


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    """Zero-pad the bottom and right of (B, C, H, W) so H and W are multiples of `multiple`.

    Returns:
        The padded tensor and the original H, W (to crop the output back).
    """
    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, H, W
