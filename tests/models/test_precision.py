"""Inference precision: which convolutions switch to bfloat16, when, and what it changes."""

from __future__ import annotations

import pytest
import torch

from istd.errors import ConfigError
from istd.models import build_model, precision
from istd.models.layers.patch import ConvBNAct
from istd.models.precision import (
    conv_precision,
    current_conv_dtype,
    has_dense_convs,
    resolve_precision,
)

runs_bf16 = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    reason="oneDNN cannot run bfloat16 convolutions on this CPU (needs AVX-512 or AVX-NE-CONVERT)",
)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, has_bf16: bool) -> None:
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": has_bf16)
    assert resolve_precision("auto") == (torch.bfloat16 if has_bf16 else torch.float32)
    assert resolve_precision("float32") == torch.float32


def test_native_means_avx512_bf16_or_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain AVX-512 runs bfloat16 by emulation, slower than float32: not native."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not precision.native_bfloat16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.native_bfloat16()
    assert not precision.native_bfloat16("cuda")  # CUDA auto stays float32


def test_emulated_or_gpu_bfloat16_and_unknown_names_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": False)
    with pytest.raises(ConfigError, match="no native bfloat16"):
        resolve_precision("bfloat16")
    with pytest.raises(ConfigError, match="CPU inference only"):
        resolve_precision("bfloat16", "cuda")
    with pytest.raises(ConfigError, match="'fp8'"):
        resolve_precision("fp8")


def test_the_context_is_scoped() -> None:
    assert current_conv_dtype() == torch.float32
    with conv_precision(torch.bfloat16):
        assert current_conv_dtype() == torch.bfloat16
    assert current_conv_dtype() == torch.float32


def test_only_dense_convolutions_are_marked() -> None:
    model = build_model("mim-istd")
    dense = [m for m in model.modules() if isinstance(m, ConvBNAct) and m.dense]
    assert dense and all(m[0].groups == 1 and m[0].in_channels >= 16 for m in dense)
    assert not model.stem.shared.dense  # the stem's one-channel conv stays float32
    assert has_dense_convs(model) and not has_dense_convs(build_model("tophat"))


def _with_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics away from the identity, as in trained weights."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model


@runs_bf16
def test_bfloat16_convolutions_change_little_and_not_training() -> None:
    torch.manual_seed(0)
    model = _with_statistics(build_model("mim-istd")).eval()
    x = torch.rand(2, 1, 64, 80)
    with torch.inference_mode():
        exact = model(x)
        with conv_precision(torch.bfloat16):
            fast = model(x)
        again = model(x)  # the context is gone: float32 again
    assert fast.dtype == torch.float32
    assert not torch.equal(exact, fast)  # the switch took effect
    assert torch.equal(exact, again)
    assert (torch.sigmoid(fast) - torch.sigmoid(exact)).abs().max() < 0.02
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        with conv_precision(torch.bfloat16):
            a = model(x)
        torch.manual_seed(1)
        b = model(x)
    assert torch.equal(a, b)  # training always runs float32


@runs_bf16
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_block_returns_its_input_dtype(dtype: torch.dtype) -> None:
    block = ConvBNAct(16, 16).eval().to(dtype)
    x = torch.rand(1, 16, 8, 8, dtype=dtype)
    with torch.inference_mode(), conv_precision(torch.bfloat16):
        assert block(x).dtype == dtype


def test_without_cudnn_restores_the_setting() -> None:
    before = torch.backends.cudnn.enabled
    with pytest.raises(RuntimeError), precision.without_cudnn():
        assert not torch.backends.cudnn.enabled
        raise RuntimeError("a failing forward")
    assert torch.backends.cudnn.enabled == before
