"""Numba gather/merge of SS2D tokens against the scan orders' torch scan/merge, with gradients."""

from __future__ import annotations

import pytest
import torch

from istd.ops import available_backends, build_scan_order

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="numba not installed")


@pytest.mark.parametrize("kind", ["cross", "bidirectional", "local", "grouped"])
@pytest.mark.parametrize(("H", "W"), [(1, 1), (3, 7), (4, 4), (20, 13)])
def test_gather_and_merge_match_scan_order(kind: str, H: int, W: int) -> None:
    from istd.ops.scan_gather_cpu import scan_gather_cpu, scan_merge_cpu

    torch.manual_seed(H * W)
    order = build_scan_order(kind, H, W, 2)
    K, C = order.num_directions, 8
    Cd = C // K if order.grouped else C
    x = torch.randn(3, C, H, W, requires_grad=True)  # (B, C, H, W)
    y = torch.randn(3, K, Cd, H * W, requires_grad=True)  # (B, K, C', L)
    g_u = torch.randn(3, K, Cd, H * W)
    g_m = torch.randn(3, C, H, W)

    want_u = order.scan(x)
    want_m = order.merge(y)
    want_grads = torch.autograd.grad([want_u, want_m], [x, y], [g_u, g_m])

    x_cl = x.permute(0, 2, 3, 1).reshape(3, H * W, C)  # (B, L, C) channels-last
    got_u = scan_gather_cpu(x_cl, order.index, order.inverse, order.grouped)
    got_m = scan_merge_cpu(y, order.index, order.inverse, order.grouped)  # (B, L, C)
    got_m = got_m.view(3, H, W, C).permute(0, 3, 1, 2)
    got_grads = torch.autograd.grad([got_u, got_m], [x, y], [g_u, g_m])

    assert torch.equal(got_u, want_u), "gather differs"
    diff = (got_m - want_m).abs().max().item()
    assert diff < 1e-5, f"merge max diff {diff:.3g}"
    for name, got, want in zip(("x", "y"), got_grads, want_grads, strict=True):
        diff = (got - want).abs().max().item()
        assert diff < 1e-5, f"grad {name} max diff {diff:.3g}"
