"""Mamba-in-Mamba block: an inner (word) path nested in an outer (sentence) path.

Chen et al., "Mamba-in-Mamba for Efficient Infrared Small Target Detection" (TGRS 2024), after
the Transformer-in-Transformer layout (Han et al., NeurIPS 2021): the words of every sentence
(its 4 x 4 grid of sub-patches) are mixed by an inner SS2D, the result is projected and added to
its sentence, and the sentences are mixed by an outer SS2D over the whole sentence grid. Each
mixer may be followed by the convolutional FFN of the authors' latest version.

Unlike the reference code, tokens are permuted back onto their true grid before every scan and
depthwise conv, so both run over spatial neighbours.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from istd.models.layers.patch import ConvBNAct, from_sentences, to_sentences
from istd.models.layers.ss2d import SS2D


def _bn_last(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """BatchNorm over the last axis of channels-last tokens (same statistics as BatchNorm2d)."""
    return bn(x.reshape(-1, x.shape[-1])).view(x.shape)  # (B, H, W, C) -> (B*H*W, C) -> back


class ConvFFN(nn.Module):
    """1x1 conv (d -> 2d) + GELU + BN, 3x3 depthwise + GELU + BN with a skip, 1x1 (2d -> d) + BN.

    The 1x1 convs are Linear layers on channels-last tokens (the same maps, no permute).
    """

    def __init__(self, dim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        hidden = 2 * dim
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.bn1 = nn.BatchNorm1d(hidden, **dd)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, **dd)
        self.bn2 = nn.BatchNorm2d(hidden, **dd)
        # No bias: the BatchNorm right after would cancel it (and it would get no gradient).
        self.fc2 = nn.Linear(hidden, dim, bias=False, **dd)
        self.bn3 = nn.BatchNorm1d(dim, **dd)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, H, W, d). Returns (B, H, W, d)."""
        h = _bn_last(self.bn1, F.gelu(self.fc1(x)))  # (B, H, W, 2d)
        local = self.bn2(F.gelu(self.dw(h.permute(0, 3, 1, 2))))  # (B, 2d, H, W) channels_last
        h = h + local.permute(0, 2, 3, 1)  # back to (B, H, W, 2d), a view
        return _bn_last(self.bn3, self.fc2(h))  # (B, H, W, d)


class InnerPath(nn.Module):
    """Word mixing inside each sentence, then the words' projection onto their sentence.

    Args:
        word_dim: word dimension w.
        sentence_dim: sentence dimension C.
        inner: ``mamba`` (SS2D over each sentence's 4 x 4 words) or ``conv`` (3x3 conv + BN +
            GELU on the word map, the paper's ablation).
        ffn: add the ConvFFN after the mixer.
        ss2d: keyword arguments of the SS2D (scan, d_state, expand, window, backend).
    """

    def __init__(
        self,
        word_dim: int,
        sentence_dim: int,
        inner: str,
        ffn: bool,
        ss2d: dict[str, Any],
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.inner = inner
        if inner == "mamba":
            self.norm = nn.LayerNorm(word_dim, **dd)
            self.mixer: nn.Module = SS2D(word_dim, **ss2d, **dd)
        else:
            self.norm = None
            self.mixer = ConvBNAct(word_dim, word_dim, act=nn.GELU, **dd)
        self.ffn_norm = nn.LayerNorm(word_dim, **dd) if ffn else None
        self.ffn = ConvFFN(word_dim, **dd) if ffn else None
        self.proj = nn.Sequential(
            nn.LayerNorm(16 * word_dim, **dd),
            nn.Linear(16 * word_dim, sentence_dim, **dd),
            nn.LayerNorm(sentence_dim, **dd),
        )

    def forward(self, words: Tensor, Hs: int, Ws: int) -> tuple[Tensor, Tensor]:
        """Args: words (B, 4*Hs, 4*Ws, w) map.

        Returns:
            The updated word map (B, 4*Hs, 4*Ws, w) and the sentence update (B, Hs, Ws, C).
        """
        B = words.shape[0]
        if self.inner == "mamba":
            grids = to_sentences(words)  # (B*Hs*Ws, 4, 4, w)
            grids = self.mixer.residual(grids, self.norm)  # grids + SS2D(norm(grids))
            words = from_sentences(grids, B, Hs, Ws)  # (B, 4Hs, 4Ws, w)
        else:
            mixed = self.mixer(words.permute(0, 3, 1, 2))  # (B, w, 4Hs, 4Ws) channels_last
            words = words + mixed.permute(0, 2, 3, 1)
            grids = None
        if self.ffn is not None:
            words = words + self.ffn(self.ffn_norm(words))
            grids = None
        if grids is None:
            grids = to_sentences(words)  # (B*Hs*Ws, 4, 4, w)
        flat = grids.reshape(B, Hs, Ws, -1)  # (B, Hs, Ws, 16*w), one sentence's words in a row
        return words, self.proj(flat)


class MiMBlock(nn.Module):
    """One encoder block: optional inner path, then outer SS2D (+ FFN) over the sentence grid.

    Args:
        dim: sentence dimension C.
        word_dim: word dimension w (used when ``inner`` is not None).
        inner: ``mamba``, ``conv`` or None (no word path in this block).
        ffn: add ConvFFNs after the mixers.
        ss2d: keyword arguments of every SS2D.
    """

    def __init__(
        self,
        dim: int,
        word_dim: int,
        inner: str | None,
        ffn: bool,
        ss2d: dict[str, Any],
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.inner = InnerPath(word_dim, dim, inner, ffn, ss2d, **dd) if inner else None
        self.norm = nn.LayerNorm(dim, **dd)
        self.mixer = SS2D(dim, **ss2d, **dd)
        self.ffn_norm = nn.LayerNorm(dim, **dd) if ffn else None
        self.ffn = ConvFFN(dim, **dd) if ffn else None

    def forward(self, sentences: Tensor, words: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Args: sentences (B, Hs, Ws, C); words (B, 4*Hs, 4*Ws, w) or None.

        Returns:
            Updated sentences (B, Hs, Ws, C) and words (unchanged when this block has no inner path).
        """
        if self.inner is not None:
            if words is None:
                raise ValueError("this block has an inner path but received no words")
            _, Hs, Ws, _ = sentences.shape
            words, update = self.inner(words, Hs, Ws)
            sentences = sentences + update
        sentences = self.mixer.residual(sentences, self.norm)  # + SS2D(norm(sentences))
        if self.ffn is not None:
            sentences = sentences + self.ffn(self.ffn_norm(sentences))
        return sentences, words
