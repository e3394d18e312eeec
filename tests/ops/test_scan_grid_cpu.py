"""The grid scan (index-table reads, directions summed on the grid) against gather, the reference
scan and merge."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from istd.ops import available_backends, build_scan_order, selective_scan_ref

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="numba not installed")


def _in_scan_order(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(Bt, K, X, L) grid-order values -> the same in each direction's scan order."""
    Bt, K, X, L = t.shape
    return torch.gather(t, 3, index.view(1, K, 1, L).expand(Bt, K, X, L))


GRIDS = [(2, 6, 3, 7), (1, 12, 5, 4), (3, 8, 1, 1)]  # (Bt, Di, H, W); H != W included


@pytest.mark.parametrize(
    ("kind", "Bt", "Di", "H", "W"),
    [(kind, *grid) for kind in ("cross", "bidirectional", "local") for grid in GRIDS]
    + [("grouped", *grid) for grid in GRIDS if grid[1] % 4 == 0],  # 4 channel groups
)
def test_matches_gather_reference_scan_and_merge(kind: str, Bt: int, Di: int, H: int, W: int):
    from istd.ops.scan_grid_cpu import scan_grid_cpu

    torch.manual_seed(Di * H * W)
    order = build_scan_order(kind, H, W, 2)
    K, L, N = order.num_directions, H * W, 16
    Cd = Di // K if order.grouped else Di  # 6 and 3 (grouped 12): not multiples of 4
    R = 3  # dt rank
    x = torch.randn(Bt, Di, H, W)
    dts = torch.randn(Bt, L, K, R)  # x_proj's dt-rank outputs, grid order
    dt_weight, dt_bias = torch.randn(K, Cd, R) * 0.3, torch.randn(K, Cd) - 2
    dt = F.softplus(torch.einsum("blkr,kcr->bkcl", dts, dt_weight) + dt_bias[None, :, :, None])
    Bs, Cs = torch.randn(Bt, K, L, N), torch.randn(Bt, K, L, N)  # grid order
    proj = torch.cat([dts, Bs.transpose(1, 2), Cs.transpose(1, 2)], dim=3)  # (Bt, L, K, R + 2N)
    A = -torch.exp(torch.rand(K * Cd, N) * 2)
    D = torch.randn(K * Cd)

    u = order.scan(x)  # (Bt, K, C', L) in scan order
    y = selective_scan_ref(
        u.reshape(Bt, K * Cd, L).double(),
        _in_scan_order(dt, order.index).reshape(Bt, K * Cd, L).double(),
        A.double(),
        _in_scan_order(Bs.transpose(2, 3), order.index).double(),  # (Bt, K, N, L)
        _in_scan_order(Cs.transpose(2, 3), order.index).double(),
        D.double(),
    )
    want = order.merge(y.view(Bt, K, Cd, L)).float()  # (Bt, Di, H, W)
    got = scan_grid_cpu(
        x.permute(0, 2, 3, 1).reshape(Bt, L, Di),
        proj,
        dt_weight,
        dt_bias,
        A,
        D,
        order.index,
        order.grouped,
    )
    torch.testing.assert_close(
        got, want.permute(0, 2, 3, 1).reshape(Bt, L, Di), rtol=1e-4, atol=1e-4
    )
