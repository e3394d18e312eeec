"""Scan orders: permutations, merge(scan(x)) == K * x, grid adjacency, H != W."""

from __future__ import annotations

import pytest
import torch

from istd.errors import ConfigError
from istd.ops import SCAN_KINDS, build_scan_order

SIZES = [(1, 1), (1, 7), (5, 1), (3, 5), (6, 4), (7, 13), (8, 8)]


def _coords(index: torch.Tensor, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    return index // W, index % W


@pytest.mark.parametrize("kind", SCAN_KINDS)
@pytest.mark.parametrize(("H", "W"), SIZES)
def test_each_direction_is_a_permutation(kind: str, H: int, W: int) -> None:
    order = build_scan_order(kind, H, W, window=3)
    K = {"bidirectional": 2}.get(kind, 4)
    assert order.index.shape == (K, H * W)
    assert order.index.dtype == torch.long
    for k in range(K):
        assert torch.equal(order.index[k].sort().values, torch.arange(H * W)), (kind, k)
        assert torch.equal(order.index[k][order.inverse[k]], torch.arange(H * W))


@pytest.mark.parametrize("kind", ["cross", "bidirectional", "local"])
@pytest.mark.parametrize(("H", "W"), SIZES)
def test_merge_of_scan_is_direction_count_times_x(kind: str, H: int, W: int) -> None:
    order = build_scan_order(kind, H, W, window=2)
    x = torch.randn(2, 3, H, W)
    seq = order.scan(x)
    assert seq.shape == (2, order.num_directions, 3, H * W)
    torch.testing.assert_close(order.merge(seq), order.num_directions * x)


@pytest.mark.parametrize(("H", "W"), SIZES)
def test_grouped_scans_each_channel_group_once(H: int, W: int) -> None:
    order = build_scan_order("grouped", H, W)
    x = torch.randn(2, 8, H, W)
    seq = order.scan(x)
    assert seq.shape == (2, 4, 2, H * W)
    # group k (channels 2k, 2k+1) read in cross direction k
    cross = build_scan_order("cross", H, W).scan(x)  # (2, 4, 8, L)
    for k in range(4):
        torch.testing.assert_close(seq[:, k], cross[:, k, 2 * k : 2 * k + 2])
    # each channel appears in exactly one direction, so merge(scan(x)) == x
    torch.testing.assert_close(order.merge(seq), x)
    with pytest.raises(ValueError, match="divisible"):
        order.scan(torch.randn(1, 6, H, W))


def test_cross_directions_on_a_non_square_grid() -> None:
    H, W = 3, 5
    order = build_scan_order("cross", H, W)
    grid = torch.arange(H * W).view(H, W)
    assert torch.equal(order.index[0], grid.reshape(-1))
    assert torch.equal(order.index[1], grid.t().reshape(-1))
    assert torch.equal(order.index[2], grid.reshape(-1).flip(0))
    assert torch.equal(order.index[3], grid.t().reshape(-1).flip(0))
    # consecutive steps are grid neighbours except at line breaks
    for k, line in ((0, W), (1, H), (2, W), (3, H)):
        r, c = _coords(order.index[k], W)
        step = (r[1:] - r[:-1]).abs() + (c[1:] - c[:-1]).abs()
        breaks = torch.arange(1, H * W) % line == 0
        assert torch.all(step[~breaks] == 1), k
        assert torch.all(step[breaks] > 1) or min(H, W) == 1, k


@pytest.mark.parametrize(("H", "W", "w"), [(5, 7, 2), (6, 4, 3), (9, 2, 4), (4, 4, 2)])
def test_local_windows_stay_together_on_any_grid(H: int, W: int, w: int) -> None:
    order = build_scan_order("local", H, W, window=w)
    for k, column_first in ((0, False), (1, True)):
        r, c = _coords(order.index[k], W)
        tile = (r // w) * 1000 + (c // w)
        # each tile's tokens are contiguous in the sequence: the tile id changes once per tile
        changes = int((tile[1:] != tile[:-1]).sum())
        n_tiles = -(-H // w) * -(-W // w)
        assert changes == n_tiles - 1, (k, changes, n_tiles)
        # tiles visited row-major (or column-major), tokens inside tiles likewise
        first = torch.ones_like(tile, dtype=torch.bool)
        first[1:] = tile[1:] != tile[:-1]
        tr, tc = r[first] // w, c[first] // w
        major, minor = (tc, tr) if column_first else (tr, tc)
        assert torch.all(major[1:] * 1000 + minor[1:] > major[:-1] * 1000 + minor[:-1])
        same = ~first[1:]
        dr, dc = r[1:] - r[:-1], c[1:] - c[:-1]
        if column_first:  # inside a tile: down one row, or to the next column's top
            assert torch.all((((dr == 1) & (dc == 0)) | (dc == 1))[same])
        else:
            assert torch.all((((dc == 1) & (dr == 0)) | (dr == 1))[same])
    # the reversed directions are exact reversals
    assert torch.equal(order.index[2], order.index[0].flip(0))
    assert torch.equal(order.index[3], order.index[1].flip(0))


def test_scan_and_merge_are_differentiable() -> None:
    order = build_scan_order("cross", 4, 6)
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: order.merge(order.scan(t) * 2.0), (x,))


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown scan order 'zigzag'"):
        build_scan_order("zigzag", 4, 4)
    with pytest.raises(ConfigError, match="H, W >= 1"):
        build_scan_order("cross", 0, 4)
    with pytest.raises(ConfigError, match="window"):
        build_scan_order("local", 4, 4, window=0)
    order = build_scan_order("cross", 4, 5)
    with pytest.raises(ValueError, match="built for 4x5"):
        order.scan(torch.randn(1, 1, 5, 4))
    with pytest.raises(ValueError, match="K=2"):
        order.merge(torch.randn(1, 2, 1, 20))
