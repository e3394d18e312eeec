"""Reusable MiM-ISTD blocks: SS2D, Mamba-in-Mamba blocks, patch ops, decoder parts."""

from istd.models.layers.decoder import DecoderStage, ResidualBlock, SegHead, SkipBranch
from istd.models.layers.mim_block import ConvFFN, InnerPath, MiMBlock
from istd.models.layers.patch import ConvBNAct, PatchExpand, PatchMerging, Stem, WordMerging
from istd.models.layers.ss2d import SS2D, ChannelAffinity

__all__ = [
    "SS2D",
    "ChannelAffinity",
    "ConvBNAct",
    "ConvFFN",
    "DecoderStage",
    "InnerPath",
    "MiMBlock",
    "PatchExpand",
    "PatchMerging",
    "ResidualBlock",
    "SegHead",
    "SkipBranch",
    "Stem",
    "WordMerging",
]
