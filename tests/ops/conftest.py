"""Shared scan-test helpers: random inputs, one upstream gradient, relative-error checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from istd.ops import selective_scan, selective_scan_ref

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(
    batch: int,
    dim: int,
    N: int,
    L: int,
    groups: int | None = None,
    *,
    D: bool = True,
    z: bool = True,
    bias: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random float64 scan inputs with realistic ranges (Mamba's dt init: 1e-3 .. 1e-1)."""
    g = torch.Generator().manual_seed(seed)
    bc = (batch, N, L) if groups is None else (batch, groups, N, L)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    dt0 = torch.exp(torch.rand(dim, generator=g, dtype=torch.float64) * 4.6 - 6.9)
    x = {
        "u": rnd(batch, dim, L),
        "delta": 0.5 * rnd(batch, dim, L),
        "A": -torch.exp(torch.rand(dim, N, generator=g, dtype=torch.float64) * 2.8),
        "B": rnd(*bc),
        "C": rnd(*bc),
        "D": rnd(dim) if D else None,
        "z": rnd(batch, dim, L) if z else None,
        "delta_bias": torch.log(torch.expm1(dt0)) if bias else None,  # softplus^-1(dt0)
    }
    return x


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (absolute when want is all zeros)."""
    diff = (got.double() - want.double()).abs().max().item()
    scale = want.double().abs().max().item()
    return diff / scale if scale > 0 else diff


def check_backend(
    backend: str,
    x: dict[str, torch.Tensor | None],
    *,
    softplus: bool = True,
    last_state: bool = True,
    fwd_tol: float = 1e-4,
    grad_tol: float = 1e-3,
    device: str = "cpu",
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Compare ``backend`` with the reference: forward against the float32 reference, every
    gradient against float64 autograd through the reference, one shared upstream gradient."""
    names = [k for k in NAMES if x[k] is not None]
    prepare = prepare or (lambda t: t.float())
    ours = {k: prepare(x[k]).to(device).detach().requires_grad_() for k in names}
    out = selective_scan(
        **ours, delta_softplus=softplus, return_last_state=last_state, backend=backend
    )
    y, last = out if last_state else (out, None)
    assert y.dtype == torch.float32 and y.shape == x["u"].shape

    ref32 = selective_scan_ref(
        **{k: ours[k].detach().cpu() for k in names},
        delta_softplus=softplus,
        return_last_state=last_state,
    )
    y32 = ref32[0] if last_state else ref32
    err = rel_err(y.detach().cpu(), y32)
    assert err <= fwd_tol, f"{backend}: forward relative error {err:.3g} > {fwd_tol}"

    ref = {k: ours[k].detach().cpu().double().requires_grad_() for k in names}
    out64 = selective_scan_ref(**ref, delta_softplus=softplus, return_last_state=last_state)
    y64, last64 = out64 if last_state else (out64, None)
    g = torch.Generator().manual_seed(123)
    gy = torch.randn(y64.shape, generator=g, dtype=torch.float64)
    loss64 = (y64 * gy).sum()
    loss = (y * gy.float().to(device)).sum()
    if last_state:
        err = rel_err(last.detach().cpu(), last64)
        assert err <= fwd_tol, f"{backend}: last state relative error {err:.3g}"
        gl = torch.randn(last64.shape, generator=g, dtype=torch.float64)
        loss64 = loss64 + (last64 * gl).sum()
        loss = loss + (last * gl.float().to(device)).sum()
    want = torch.autograd.grad(loss64, [ref[k] for k in names])
    got = torch.autograd.grad(loss, [ours[k] for k in names])
    for k, a, b in zip(names, got, want, strict=True):
        assert a.shape == ours[k].shape and a.dtype == ours[k].dtype, k
        assert torch.isfinite(a).all(), f"{backend}: non-finite gradient of {k}"
        err = rel_err(a.cpu(), b)
        assert err <= grad_tol, f"{backend}: d{k} relative error {err:.3g} > {grad_tol}"


@pytest.fixture
def scan_inputs() -> Callable[..., dict[str, torch.Tensor]]:
    return make_inputs


@pytest.fixture
def scan_check() -> Callable[..., None]:
    return check_backend
