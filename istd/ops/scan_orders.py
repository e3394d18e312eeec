"""2-D scan orders: how an H x W feature map becomes the 1-D sequences a selective scan reads.

Each order is an index table: direction k, step t reads row-major grid position
``index[k, t]``. Scanning is a differentiable gather; merging sums the directions back onto the
grid (a scatter-add, computed as a gather through the inverse permutation, which is exact
because every row of the table is a permutation, and deterministic).

The four kinds come from the designs MiM-ISTD and its relatives build on:

- ``cross``: VMamba's SS2D cross scan (Liu et al., "VMamba: Visual State Space Model", 2024):
  row-major, column-major, and both reversed (K = 4).
- ``bidirectional``: Vision Mamba (Zhu et al., "Vim", 2024): row-major and reversed (K = 2).
- ``local``: LocalMamba (Huang et al., 2024): tokens of each ``window x window`` tile kept
  together, tiles in row-major order; the column-wise variant (tiles and tokens column-major);
  and both reversed (K = 4). Edge tiles are clipped rather than padded, so every H, W works.
- ``grouped``: GroupMamba (Shaker et al., 2024): channels split into four groups, group k
  scanned in ``cross`` direction k (K = 4, each direction carries C / 4 channels).

The public LocalMamba and GroupMamba code is only right on square grids; here every table is
built from explicit (row, column) coordinates, so H != W is handled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from istd.errors import ConfigError
from istd.ops._shapes import ShapeError

SCAN_KINDS = ("cross", "bidirectional", "local", "grouped")


def _row_major(H: int, W: int) -> Tensor:
    return torch.arange(H * W)  # (L,) grid positions in reading order


def _column_major(H: int, W: int) -> Tensor:
    # (H, W) position grid read column by column: transpose then flatten -> (L,)
    return torch.arange(H * W).view(H, W).t().reshape(-1)


def _local(H: int, W: int, window: int, column_first: bool) -> Tensor:
    """Window-by-window order; edge windows are clipped to the grid (no padding)."""
    grid = torch.arange(H * W).view(H, W)  # (H, W)
    tiles = []
    row_starts, col_starts = range(0, H, window), range(0, W, window)
    if column_first:
        starts = [(r, c) for c in col_starts for r in row_starts]
    else:
        starts = [(r, c) for r in row_starts for c in col_starts]
    for r, c in starts:
        tile = grid[r : r + window, c : c + window]  # (<=w, <=w)
        tiles.append(tile.t().reshape(-1) if column_first else tile.reshape(-1))
    return torch.cat(tiles)  # (L,)


@dataclass(frozen=True)
class ScanOrder:
    """Index tables for scanning an H x W grid in K directions.

    Attributes:
        kind: one of ``SCAN_KINDS``.
        H: grid height.
        W: grid width.
        index: (K, L) LongTensor, L = H * W; direction k, step t reads grid position
            ``index[k, t]`` (row-major).
        inverse: (K, L) LongTensor, ``inverse[k, index[k, t]] == t``.
        grouped: direction k carries channel group k (C' = C / K) instead of all channels.
    """

    kind: str
    H: int
    W: int
    index: Tensor
    inverse: Tensor
    grouped: bool = False

    @property
    def num_directions(self) -> int:
        """K, the number of scan directions."""
        return self.index.shape[0]

    def _check(self, x: Tensor, name: str, dims: int) -> None:
        if x.dim() != dims:
            raise ShapeError(f"{name} must have {dims} dimensions, got shape {tuple(x.shape)}")

    def scan(self, x: Tensor) -> Tensor:
        """Read a feature map in every direction.

        Args:
            x: (B, C, H, W).

        Returns:
            (B, K, C', L): C' = C, or C / K for ``grouped``.
        """
        self._check(x, "x", 4)
        Bt, C, H, W = x.shape
        K, L = self.index.shape
        if (H, W) != (self.H, self.W):
            raise ShapeError(f"x is {H}x{W} but this scan order was built for {self.H}x{self.W}")
        flat = x.reshape(Bt, C, L)  # (B, C, H, W) -> (B, C, L)
        index = self.index.to(x.device)
        if self.grouped:
            if C % K:
                raise ShapeError(f"grouped scan needs channels divisible by {K}, got C={C}")
            groups = flat.view(Bt, K, C // K, L)  # (B, K, C/K, L)
            gather = index[None, :, None, :].expand(Bt, K, C // K, L)
            return torch.gather(groups, 3, gather)  # (B, K, C/K, L)
        out = flat.index_select(2, index.reshape(-1))  # (B, C, K*L)
        return out.view(Bt, C, K, L).transpose(1, 2)  # (B, C, K, L) -> (B, K, C, L)

    def merge(self, y: Tensor) -> Tensor:
        """Put every direction's sequence back on the grid and sum the directions.

        Args:
            y: (B, K, C', L).

        Returns:
            (B, C, H, W): C = C' (summed over K), or K * C' for ``grouped``.
        """
        self._check(y, "y", 4)
        Bt, K, Cp, L = y.shape
        if tuple(self.index.shape) != (K, L):
            raise ShapeError(
                f"y has K={K}, L={L} but this scan order has K={self.num_directions}, "
                f"L={self.H * self.W}"
            )
        inverse = self.inverse.to(y.device)
        gather = inverse[None, :, None, :].expand(Bt, K, Cp, L)
        grid = torch.gather(y, 3, gather)  # (B, K, C', L), row-major grid order
        if self.grouped:
            return grid.reshape(Bt, K * Cp, self.H, self.W)  # (B, K*C', L) -> (B, C, H, W)
        return grid.sum(1).view(Bt, Cp, self.H, self.W)  # (B, C, L) -> (B, C, H, W)


def build_scan_order(kind: str, H: int, W: int, window: int = 2) -> ScanOrder:
    """Build the index tables of a 2-D scan order.

    Args:
        kind: ``cross``, ``bidirectional``, ``local`` or ``grouped``.
        H: grid height (>= 1).
        W: grid width (>= 1).
        window: tile size of the ``local`` order (>= 1); ignored by the others.

    Returns:
        A :class:`ScanOrder` with ``index`` and ``inverse`` of shape (K, H * W).

    Example:
        >>> order = build_scan_order("cross", 3, 5)
        >>> seq = order.scan(torch.randn(2, 8, 3, 5))      # (2, 4, 8, 15)
        >>> order.merge(seq).shape
        torch.Size([2, 8, 3, 5])
    """
    if kind not in SCAN_KINDS:
        raise ConfigError(f"unknown scan order {kind!r}; known: {', '.join(SCAN_KINDS)}")
    if H < 1 or W < 1:
        raise ConfigError(f"scan order needs H, W >= 1, got H={H}, W={W}")
    if window < 1:
        raise ConfigError(f"scan order window must be >= 1, got {window}")
    if kind == "bidirectional":
        row = _row_major(H, W)
        rows = [row, row.flip(0)]
    elif kind == "local":
        by_row, by_col = _local(H, W, window, False), _local(H, W, window, True)
        rows = [by_row, by_col, by_row.flip(0), by_col.flip(0)]
    else:  # cross and grouped share VMamba's four directions
        row, col = _row_major(H, W), _column_major(H, W)
        rows = [row, col, row.flip(0), col.flip(0)]
    index = torch.stack(rows)  # (K, L)
    inverse = torch.empty_like(index)
    steps = torch.arange(H * W).expand_as(index)
    inverse.scatter_(1, index, steps)  # inverse[k, index[k, t]] = t
    return ScanOrder(kind, H, W, index, inverse, grouped=kind == "grouped")
