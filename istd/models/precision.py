"""Inference precision: bfloat16 dense convolutions where the CPU multiplies bfloat16 natively.

On CPUs with AVX512-BF16 or AMX, oneDNN's bfloat16 convolutions take half the time of float32
ones (32 to 128 channels, 3 x 3; products accumulated in float32). MiM-ISTD's dense 3 x 3
convolutions (decoder blocks, skip branches, stem) are about a quarter of its CPU inference.
Only those switch: the selective scans, projections and norms stay float32, and every layer
still returns float32. This follows what CPU inference runtimes do by default on such CPUs
(OpenVINO's bf16 inference-precision hint); `float32` keeps the exact arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn

from istd.errors import ConfigError

PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively on this CPU (AVX512-BF16 or AMX)."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """The dense convolutions' compute dtype for `precision` on `device`.

    ``auto``: bfloat16 on a CPU that multiplies it natively, float32 elsewhere (CUDA
    included: only the CPU path is measured). ``bfloat16`` where it would be emulated is
    refused: it would be several times slower, not faster.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return torch.float32
    native = native_bfloat16(device)
    if precision == "bfloat16" and not native:
        raise ConfigError(
            f"precision bfloat16: device {str(device)!r} has no native bfloat16 convolutions "
            "(a CPU with AVX512-BF16 or AMX is needed); use float32"
        )
    return torch.bfloat16 if native else torch.float32


def set_conv_precision(model: nn.Module, dtype: torch.dtype) -> int:
    """Run `model`'s dense convolution blocks in `dtype` in eval mode; returns how many.

    Training ignores the setting (it always runs float32).
    """
    from istd.models.layers.patch import ConvBNAct

    blocks = [m for m in model.modules() if isinstance(m, ConvBNAct) and m.dense]
    for block in blocks:
        block.compute_dtype = dtype
    return len(blocks)
