"""Inference precision: bfloat16 dense convolutions where the CPU multiplies bfloat16 natively.

On CPUs with AVX512-BF16 or AMX, oneDNN's bfloat16 convolutions take half the time of float32
ones (32 to 128 channels, 3 x 3; products accumulated in float32). MiM-ISTD's dense 3 x 3
convolutions (decoder blocks, skip branches, stem) are about a quarter of its CPU inference.
Only those switch: the selective scans, projections and norms stay float32, and every layer
still returns float32. This follows what CPU inference runtimes do by default on such CPUs
(OpenVINO's bf16 inference-precision hint); `float32` keeps the reference arithmetic.

The precision is a context (`conv_precision`), not a model attribute: a model passed to
`istd.Predictor` is left as it was, and two callers sharing one model do not interfere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from istd.errors import ConfigError

PRECISIONS = ("auto", "float32", "bfloat16")

_CONV_DTYPE: ContextVar[torch.dtype] = ContextVar("istd_conv_dtype", default=torch.float32)


def native_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles).

    oneDNN also runs bfloat16 on plain AVX-512 CPUs, by emulation, several times slower than
    float32: those answer False.
    """
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """The dense convolutions' compute dtype for `precision` on `device`.

    ``auto``: bfloat16 on a CPU that multiplies it natively, float32 elsewhere (CUDA
    included: only the CPU path is measured). ``bfloat16`` where it would be emulated, or on a
    GPU, is refused: it would be slower, not faster.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return torch.float32
    native = native_bfloat16(device)
    if precision == "bfloat16" and not native:
        where = (
            "bfloat16 convolutions apply to CPU inference only"
            if torch.device(device).type != "cpu"
            else "this CPU has no native bfloat16 (AVX512-BF16 or AMX)"
        )
        raise ConfigError(
            f"precision bfloat16 on device {str(device)!r}: {where}; use auto or float32"
        )
    return torch.bfloat16 if native else torch.float32


@contextmanager
def conv_precision(dtype: torch.dtype) -> Iterator[None]:
    """Run the dense convolution blocks (`ConvBNAct` with ``dense``) in `dtype` in eval mode
    within this context. Training ignores it (it always runs float32)."""
    token = _CONV_DTYPE.set(dtype)
    try:
        yield
    finally:
        _CONV_DTYPE.reset(token)


def current_conv_dtype() -> torch.dtype:
    """The dense convolutions' dtype in the current context (float32 outside any)."""
    return _CONV_DTYPE.get()


def has_dense_convs(model: nn.Module) -> bool:
    """Whether `conv_precision` changes anything in `model` (weight-free detectors: no)."""
    from istd.models.layers.patch import ConvBNAct

    return any(isinstance(m, ConvBNAct) and m.dense for m in model.modules())


@contextmanager
def without_cudnn() -> Iterator[None]:
    """Run CUDA convolutions with torch's own kernels instead of cuDNN, for inference.

    cuDNN plans every new input size for seconds (2 to 4 s per size over NUAA-SIRST's images on
    an H100, so a folder of them ran at 2.3 images/s); torch's kernels run MiM-ISTD's small
    convolutions at 35 images/s from the first image. Training, at one crop size, keeps cuDNN.
    """
    enabled = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = enabled
