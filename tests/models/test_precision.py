"""Inference precision: which convolutions switch to bfloat16, when, and what it changes."""

from __future__ import annotations

import pytest
import torch

from istd.errors import ConfigError
from istd.models import build_model, precision
from istd.models.layers.patch import ConvBNAct
from istd.models.precision import resolve_precision, set_conv_precision

native = pytest.mark.skipif(
    not precision.native_bfloat16(), reason="this CPU has no native bfloat16 (AVX512-BF16, AMX)"
)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, has_bf16: bool) -> None:
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": has_bf16)
    assert resolve_precision("auto") == (torch.bfloat16 if has_bf16 else torch.float32)
    assert resolve_precision("float32") == torch.float32


def test_emulated_bfloat16_and_unknown_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": False)
    with pytest.raises(ConfigError, match="no native bfloat16"):
        resolve_precision("bfloat16")
    with pytest.raises(ConfigError, match="'fp8'"):
        resolve_precision("fp8")


def test_cuda_auto_stays_float32() -> None:
    assert not precision.native_bfloat16("cuda")


def test_only_dense_convolutions_switch() -> None:
    model = build_model("mim-istd").eval()
    blocks = [m for m in model.modules() if isinstance(m, ConvBNAct)]
    switched = set_conv_precision(model, torch.bfloat16)
    dense = [m for m in blocks if m.compute_dtype == torch.bfloat16]
    assert switched == len(dense) > 0
    assert all(m[0].groups == 1 and m[0].in_channels >= 16 for m in dense)
    # the stem's one-channel conv and narrow convs stay float32
    assert model.stem.shared.compute_dtype == torch.float32


@native
def test_bfloat16_convolutions_change_little_and_not_training() -> None:
    torch.manual_seed(0)
    model = build_model("mim-istd")
    # BatchNorm statistics away from the identity, as in trained weights
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 1, 64, 80)
    model.eval()
    with torch.inference_mode():
        exact = model(x)
        set_conv_precision(model, torch.bfloat16)
        fast = model(x)
    assert fast.dtype == torch.float32
    assert not torch.equal(exact, fast)  # the switch took effect
    assert (torch.sigmoid(fast) - torch.sigmoid(exact)).abs().max() < 0.02
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(x)
        set_conv_precision(model, torch.float32)
        torch.manual_seed(1)
        b = model(x)
    assert torch.equal(a, b)  # training always runs float32
