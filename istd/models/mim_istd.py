"""MiM-ISTD: Mamba-in-Mamba for infrared small-target detection, and its registered variants.

Chen et al., "Mamba-in-Mamba for Efficient Infrared Small Target Detection", IEEE TGRS 2024
(arXiv 2403.02148). Images are cut into 8 x 8-pixel visual sentences holding 4 x 4 visual words
of 2 x 2 pixels; a four-stage pyramid of Mamba-in-Mamba blocks encodes them and a U-shaped
decoder predicts a one-channel logit map.

Variants:
    ``mim-istd``: the authors' latest version (depths 2-2-2-2, dims 32-256, FFNs).
    ``mim-istd-s``: the arXiv version (depths 2-4-9-2, dims 16-128, no FFN).
    ``mim-istd-test``: a two-stage toy for fast tests.
Every variant takes ``scan`` / ``inner`` / ... overrides (see :class:`MiMConfig`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from istd.errors import ConfigError, DataError
from istd.models._registry import register_model
from istd.models.config import MiMConfig
from istd.models.hub import HubMixin
from istd.models.layers.decoder import DecoderStage, SegHead, SkipBranch
from istd.models.layers.mim_block import MiMBlock
from istd.models.layers.patch import (
    ConvBNAct,
    PatchMerging,
    Stem,
    WordMerging,
    pad_to_multiple,
)


class MiMISTD(nn.Module, HubMixin):
    """The MiM-ISTD network: images in [0, 1] -> target logits.

    Args:
        config: hyperparameters.
        model_name: registry name, saved with the weights.
    """

    requires_weights = True

    def __init__(
        self, config: MiMConfig, model_name: str = "mim-istd", device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.config, self.model_name = config, model_name
        c = config
        S = len(c.depths)
        word_stages = [i for i in range(S) if c.inner != "none" and c.inner_depths[i] > 0]
        # Words are carried from the stem up to the last stage that uses them, no further, so
        # that no merge layer is left without a gradient.
        self.last_word_stage = max(word_stages) if word_stages else -1
        ss2d = {
            "d_state": c.d_state,
            "expand": c.expand,
            "scan": c.scan,
            "window": c.local_window,
            "backend": c.scan_backend,
        }
        self.stem = Stem(
            c.in_chans, c.stem_dim, c.dims[0], c.word_dims[0] if word_stages else None, **dd
        )
        self.stages = nn.ModuleList(
            nn.ModuleList(
                MiMBlock(
                    c.dims[i],
                    c.word_dims[i],
                    c.inner if (c.inner != "none" and j < c.inner_depths[i]) else None,
                    c.ffn,
                    ss2d,
                    **dd,
                )
                for j in range(c.depths[i])
            )
            for i in range(S)
        )
        self.merges = nn.ModuleList(
            PatchMerging(c.dims[i], c.dims[i + 1], **dd) for i in range(S - 1)
        )
        self.word_merges = nn.ModuleList(
            WordMerging(c.word_dims[i], c.word_dims[i + 1], **dd)
            for i in range(self.last_word_stage)
        )
        self.skips = nn.ModuleList(SkipBranch(d, **dd) for d in c.dims)
        self.decoder = nn.ModuleList(DecoderStage(c.dims[i], **dd) for i in range(1, S))
        self.head = SegHead(c.dims[0], c.head_dropout, **dd)
        optional: tuple[str, ...] = ()
        if c.head_stride <= 2:
            # One more stage, H/4 -> H/2 with the stem's map as its skip, and a head there that
            # corrects the H/4 head: it starts at zero, so weights trained without it load
            # (`optional_prefixes` below) into a network that predicts what they did.
            self.stem_skip = ConvBNAct(c.stem_dim, c.dims[0] // 2, **dd)
            self.fine = DecoderStage(c.dims[0], **dd)
            self.fine_head = SegHead(c.dims[0] // 2, c.head_dropout, residual=True, **dd)
            optional += ("stem_skip.", "fine.", "fine_head.")
        if c.head_stride == 1:
            # The same again, H/2 -> H, its skip a conv of the (normalised) frame itself.
            self.input_skip = ConvBNAct(c.in_chans, c.dims[0] // 4, **dd)
            self.finest = DecoderStage(c.dims[0] // 2, **dd)
            self.finest_head = SegHead(c.dims[0] // 4, c.head_dropout, residual=True, **dd)
            optional += ("input_skip.", "finest.", "finest_head.")
        # May be missing from loaded weights (`istd.engine.checkpoint.load_weights`).
        self.optional_prefixes = optional
        # Normalisation lives in the config (saved in config.json), so the buffers are not
        # persisted in the state dict.
        self.register_buffer(
            "norm_mean", torch.tensor(c.norm_mean, **dd).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "norm_std", torch.tensor(c.norm_std, **dd).view(1, -1, 1, 1), persistent=False
        )
        self.pad_multiple = 8 * 2 ** (S - 1)  # H/8 sentence grid, halved S - 1 times
        # Token maps reach the convs as channels_last views; channels_last conv weights spare
        # oneDNN a weight reorder on every call.
        self.to(memory_format=torch.channels_last)

    def set_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Set the input normalisation (training calls this with its training-split statistics)."""
        self.config = self.config.replace(norm_mean=tuple(mean), norm_std=tuple(std))
        dd = {"device": self.norm_mean.device, "dtype": self.norm_mean.dtype}
        self.norm_mean = torch.tensor(self.config.norm_mean, **dd).view(1, -1, 1, 1)
        self.norm_std = torch.tensor(self.config.norm_std, **dd).view(1, -1, 1, 1)

    def set_input_scale(self, scale: float) -> None:
        """Run on frames resized by `scale` from now on (see `MiMConfig.input_scale`)."""
        self.config = self.config.replace(input_scale=scale)

    def forward(self, x: Tensor) -> Tensor:
        """Predict target logits.

        Args:
            x: images (B, in_chans, H, W) in [0, 1], any H, W >= 1.

        Returns:
            Logits (B, 1, H, W).
        """
        if x.dim() != 4 or x.shape[1] != self.config.in_chans or x.shape[2] < 1 or x.shape[3] < 1:
            raise DataError(
                f"model input must be (B, {self.config.in_chans}, H, W) with H, W >= 1, "
                f"got {tuple(x.shape)}"
            )
        height, width = x.shape[2], x.shape[3]
        x = (x - self.norm_mean) / self.norm_std
        scale = self.config.input_scale
        if scale != 1.0:  # see MiMConfig.input_scale
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            x = F.interpolate(
                x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1
            )
        # Zero after normalisation = the mean intensity: a neutral fill for the padding.
        x, H, W = pad_to_multiple(x, self.pad_multiple)  # (B, in, Hp, Wp)
        # (B, stem_dim, Hp/2, Wp/2), (B, Hp/2, Wp/2, w0) | None, (B, Hp/8, Wp/8, C0)
        shared, words, sentences = self.stem(x)
        skips = []
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                sentences, words = block(sentences, words)
            skips.append(self.skips[i](sentences))  # (B, C_i, Hp/2^(i+2), Wp/2^(i+2))
            if i < len(self.merges):
                sentences = self.merges[i](sentences)
                words = self.word_merges[i](words) if i < self.last_word_stage else None
        y = skips[-1]
        for i in reversed(range(len(self.decoder))):
            y = self.decoder[i](y, skips[i])  # (B, C_i, Hp/2^(i+2), Wp/2^(i+2))
        logits = self.head(y)  # (B, 1, Hp/4, Wp/4)
        logits = F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)
        if self.config.head_stride <= 2:
            y = self.fine(y, self.stem_skip(shared))  # (B, C0/2, Hp/2, Wp/2)
            # Each map upsampled once, straight to full size: at the start the sum is exactly
            # the H/4 head's prediction.
            fine = F.interpolate(
                self.fine_head(y), scale_factor=2.0, mode="bilinear", align_corners=False
            )
            logits = logits + fine  # (B, 1, Hp, Wp)
        if self.config.head_stride == 1:
            y = self.finest(y, self.input_skip(x))  # (B, C0/4, Hp, Wp)
            logits = logits + self.finest_head(y)
        logits = logits[:, :, :H, :W]  # crop the padding
        if scale != 1.0:
            logits = F.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
        return logits.contiguous()  # (B, 1, height, width)


def set_input_scale(model: nn.Module, scale: float | None) -> nn.Module:
    """Make a network run on frames resized by `scale` (None keeps its own); returns `model`.

    Raises:
        ConfigError: `scale` outside [0.25, 4], or a model without an input scale (the
            weight-free detectors).
    """
    if scale is None:
        return model
    if not isinstance(model, MiMISTD):
        name = getattr(model, "model_name", type(model).__name__)
        members = getattr(getattr(model, "config", None), "members", None)
        if members:
            raise ConfigError(
                f"input scale {scale}: {name!r} is an ensemble; each member runs at its own"
            )
        raise ConfigError(f"input scale {scale}: model {name!r} has none (networks only)")
    model.set_input_scale(scale)
    return model


# Each variant's hyperparameters; entry functions apply keyword overrides to a copy.
VARIANTS: dict[str, MiMConfig] = {
    "mim-istd": MiMConfig(),
    "mim-istd-s": MiMConfig(
        depths=(2, 4, 9, 2), dims=(16, 32, 64, 128), inner_depths=(1, 1, 2, 1), ffn=False
    ),
    "mim-istd-test": MiMConfig(
        stem_dim=4, depths=(1, 1), dims=(8, 16), word_dims=(4, 4), inner_depths=(1, 1), d_state=4
    ),
}


def variant_config(name: str, **overrides: Any) -> MiMConfig:
    """The config a variant would be built with, without building it (cheap validation).

    Raises:
        ConfigError: an unknown or mistyped field, or an invalid value, naming it.
    """
    return VARIANTS[name].replace(**overrides)


def _build(name: str, overrides: dict[str, Any]) -> MiMISTD:
    # device and dtype are call arguments of build_model, not config fields.
    dd = {k: overrides.pop(k) for k in ("device", "dtype") if k in overrides}
    return MiMISTD(variant_config(name, **overrides), model_name=name, **dd)


@register_model("mim-istd")
def mim_istd(**overrides: Any) -> MiMISTD:
    """MiM-ISTD, the authors' latest version: 4.86 M parameters with in_chans=3."""
    return _build("mim-istd", overrides)


@register_model("mim-istd-s")
def mim_istd_s(**overrides: Any) -> MiMISTD:
    """MiM-ISTD as in the arXiv paper: depths 2-4-9-2, dims 16-128, no FFN.

    The inner Mamba runs in the first block of each stage and in blocks 0 and 1 of the 9-block stage.
    """
    return _build("mim-istd-s", overrides)


@register_model("mim-istd-test")
def mim_istd_test(**overrides: Any) -> MiMISTD:
    """A two-stage toy MiM-ISTD for fast tests (not for real use)."""
    return _build("mim-istd-test", overrides)
