"""The oracle itself, checked against an independent scalar loop written from the equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from istd.ops import selective_scan_ref


def _scalar_scan(u, delta, A, B, C, D, z, bias, softplus):
    """h_t = exp(dt A) h + dt B u; y = C.h + D u; y * silu(z) -- one element at a time."""
    batch, dim, length = u.shape
    N = A.shape[1]
    y = np.zeros((batch, dim, length))
    last = np.zeros((batch, dim, N))
    for b in range(batch):
        for d in range(dim):
            g = d // (dim // B.shape[1]) if B.ndim == 4 else None
            h = np.zeros(N)
            for t in range(length):
                dt = delta[b, d, t] + bias[d]
                if softplus:
                    dt = math.log1p(math.exp(dt))
                Bt = B[b, g, :, t] if g is not None else B[b, :, t]
                Ct = C[b, g, :, t] if g is not None else C[b, :, t]
                h = np.exp(dt * A[d]) * h + dt * Bt * u[b, d, t]
                out = float(Ct @ h) + D[d] * u[b, d, t]
                y[b, d, t] = out * z[b, d, t] / (1 + math.exp(-z[b, d, t]))
            last[b, d] = h
    return y, last


@pytest.mark.parametrize("groups", [None, 1, 3])
def test_reference_matches_the_equations(groups: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    batch, dim, N, length = 2, 6, 4, 9
    u = torch.randn(batch, dim, length, generator=g, dtype=torch.float64)
    delta = torch.randn(batch, dim, length, generator=g, dtype=torch.float64)
    A = -torch.rand(dim, N, generator=g, dtype=torch.float64) * 3
    shape = (batch, N, length) if groups is None else (batch, groups, N, length)
    B = torch.randn(*shape, generator=g, dtype=torch.float64)
    C = torch.randn(*shape, generator=g, dtype=torch.float64)
    D = torch.randn(dim, generator=g, dtype=torch.float64)
    z = torch.randn(batch, dim, length, generator=g, dtype=torch.float64)
    bias = torch.randn(dim, generator=g, dtype=torch.float64)
    y, last = selective_scan_ref(u, delta, A, B, C, D, z, bias, True, return_last_state=True)
    want_y, want_last = _scalar_scan(*(t.numpy() for t in (u, delta, A, B, C, D, z, bias)), True)
    np.testing.assert_allclose(y.numpy(), want_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(last.numpy(), want_last, rtol=1e-10, atol=1e-12)


def test_reference_computes_in_float32_for_half_inputs() -> None:
    u = torch.randn(1, 2, 5).to(torch.bfloat16)
    delta = torch.rand(1, 2, 5).half()
    A = -torch.rand(2, 3)
    B, C = torch.randn(1, 3, 5).half(), torch.randn(1, 3, 5)
    y = selective_scan_ref(u, delta, A, B, C)
    assert y.dtype == torch.float32
    want = selective_scan_ref(u.float(), delta.float(), A, B.float(), C)
    torch.testing.assert_close(y, want, rtol=0, atol=0)


def test_without_options_dt_is_delta_and_y_is_plain() -> None:
    # one channel, one state: h_t = e^{a dt} h + dt b u, y = c h
    u = torch.tensor([[[1.0, 2.0]]])
    delta = torch.tensor([[[0.5, 0.25]]])
    A, B, C = torch.tensor([[-2.0]]), torch.tensor([[[3.0, 1.0]]]), torch.tensor([[[1.0, 2.0]]])
    y = selective_scan_ref(u, delta, A, B, C)
    h0 = 0.5 * 3.0 * 1.0
    h1 = math.exp(-0.5) * h0 + 0.25 * 1.0 * 2.0
    torch.testing.assert_close(y, torch.tensor([[[h0, 2.0 * h1]]]))
