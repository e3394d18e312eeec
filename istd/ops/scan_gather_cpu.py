"""Numba kernels that move SS2D tokens between the grid and its scan orders (CPU, float32).

VMamba's SS2D (Liu et al., 2024) reads every direction's input in its scan order and sums the
directions' outputs back on the grid. Done with ``torch.gather`` and a sum, that costs a
channels_last -> channel-major copy, a gather from an expanded tensor and, in training, a
``scatter_add`` into a zero-filled tensor: together about as much as the scan itself on the
sentence grids. These two kernels do each move in one pass, straight from and to the
channels-last token map, and are each other's adjoint, so each is the other's backward.

``gather``: ``out[b, k, c, t] = x[b, index[k, t], ch(k, c)]`` and
``merge``: ``out[b, index[k, t], ch(k, c)] (+)= y[b, k, c, t]``, summed over directions,
with ``ch(k, c) = k * C' + c`` for grouped orders (one channel group per direction) and ``c``
otherwise. The sum over directions runs in direction order, so results do not depend on
threads.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from istd.ops._threads import sync_numba_threads

_TILE = 16  # tokens per tile: the tile's rows stay in L1 while its channels are moved
_CB = 8  # channels per tile; both sizes are constants so that LLVM unrolls the tile loops


@njit(inline="always", cache=True)
def _load_rows(src, b, index, k, t0, T, c0, C, tile):
    """tile[j, c] = src[b, index[k, t0 + j], c0 + c]: token rows, contiguous loads."""
    if T == _TILE and C == _CB:
        for j in range(_TILE):
            row = index[k, t0 + j]
            for c in range(_CB):
                tile[j, c] = src[b, row, c0 + c]
    else:
        for j in range(T):
            row = index[k, t0 + j]
            for c in range(C):
                tile[j, c] = src[b, row, c0 + c]


def _gather_body(src, index, grouped, out):
    """src (B, L, Di) channels-last; index (K, L); out (B, K, C', L).

    Per tile of 16 steps x 8 channels: the source rows are read into a buffer (contiguous
    loads), then written out channel by channel (contiguous stores): a transpose in L1.
    """
    Bt, K, Cd, L = out.shape
    n_cb = (Cd + _CB - 1) // _CB
    for job in prange(Bt * K * n_cb):
        b = job // (K * n_cb)
        k = (job // n_cb) % K
        cs = (job % n_cb) * _CB
        C = min(_CB, Cd - cs)
        c0 = (k * Cd if grouped else 0) + cs
        tile = np.empty((_TILE, _CB), np.float32)
        for t0 in range(0, L, _TILE):
            T = min(_TILE, L - t0)
            _load_rows(src, b, index, k, t0, T, c0, C, tile)
            if T == _TILE and C == _CB:
                for c in range(_CB):
                    for j in range(_TILE):
                        out[b, k, cs + c, t0 + j] = tile[j, c]
            else:
                for c in range(C):
                    for j in range(T):
                        out[b, k, cs + c, t0 + j] = tile[j, c]


def _merge_body(y, index, grouped, out):
    """y (B, K, C', L); index (K, L); out (B, L, Di), directions summed unless grouped.

    The mirror of the gather: tiles of y are transposed in L1 and added to token rows. Jobs
    split batch and channels, never directions, so each output element has one writer and
    the directions are summed in order 0..K-1.
    """
    Bt, K, Cd, L = y.shape
    n_cb = (Cd + _CB - 1) // _CB
    n_groups = K if grouped else 1
    for job in prange(Bt * n_groups * n_cb):
        b = job // (n_groups * n_cb)
        grp = (job // n_cb) % n_groups
        cs = (job % n_cb) * _CB
        C = min(_CB, Cd - cs)
        tile = np.empty((_TILE, _CB), np.float32)
        k_start = grp if grouped else 0
        k_end = grp + 1 if grouped else K
        for k in range(k_start, k_end):
            c0 = (k * Cd if grouped else 0) + cs
            for t0 in range(0, L, _TILE):
                T = min(_TILE, L - t0)
                if T == _TILE and C == _CB:
                    for c in range(_CB):
                        for j in range(_TILE):
                            tile[j, c] = y[b, k, cs + c, t0 + j]
                else:
                    for c in range(C):
                        for j in range(T):
                            tile[j, c] = y[b, k, cs + c, t0 + j]
                for j in range(T):
                    row = index[k, t0 + j]
                    if k == k_start:
                        for c in range(C):
                            out[b, row, c0 + c] = tile[j, c]
                    else:
                        for c in range(C):
                            out[b, row, c0 + c] += tile[j, c]


# Each kernel in a threaded and a serial build: small calls (the word grids of one inference
# chunk) run serially, as a parallel region's wake-up and barrier cost more than the copy,
# and far more when other processes share the cores.
_gather_par = njit(parallel=True, cache=True)(_gather_body)
_gather_ser = njit(cache=True)(_gather_body)
_merge_par = njit(parallel=True, cache=True)(_merge_body)
_merge_ser = njit(cache=True)(_merge_body)
_PARALLEL_MIN = 1 << 19  # elements moved per call from which threads pay off


def _gather(x: Tensor, index: np.ndarray, grouped: bool) -> Tensor:
    Bt, L, Di = x.shape
    K = index.shape[0]
    out = torch.empty(Bt, K, Di // K if grouped else Di, L)  # (B, K, C', L)
    kernel = _gather_par if out.numel() >= _PARALLEL_MIN else _gather_ser
    sync_numba_threads()
    kernel(x.detach().contiguous().numpy(), index, grouped, out.numpy())
    return out


def _merge(y: Tensor, index: np.ndarray, grouped: bool) -> Tensor:
    Bt, K, Cd, L = y.shape
    out = torch.empty(Bt, L, K * Cd if grouped else Cd)  # (B, L, Di)
    kernel = _merge_par if y.numel() >= _PARALLEL_MIN else _merge_ser
    sync_numba_threads()
    kernel(y.detach().contiguous().numpy(), index, grouped, out.numpy())
    return out


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, index: np.ndarray, inverse: np.ndarray, grouped: bool):
        ctx.tables = (index, inverse, grouped)
        return _gather(x, index, grouped)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, inverse, grouped = ctx.tables
        return _merge(grad, index, grouped), None, None, None


class _Merge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, index: np.ndarray, inverse: np.ndarray, grouped: bool):
        ctx.tables = (index, inverse, grouped)
        return _merge(y, index, grouped)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, inverse, grouped = ctx.tables
        return _gather(grad, index, grouped), None, None, None


def _tables(index: Tensor, inverse: Tensor) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(index.cpu().numpy(), dtype=np.int64),
        np.ascontiguousarray(inverse.cpu().numpy(), dtype=np.int64),
    )


def scan_gather_cpu(x: Tensor, index: Tensor, inverse: Tensor, grouped: bool) -> Tensor:
    """Channels-last tokens -> every direction's input in its scan order (differentiable).

    Args:
        x: (B, L, Di) float32 CPU tokens, L = H * W in row-major order.
        index: (K, L) scan order, ``index[k, t]`` = grid position read at step t.
        inverse: (K, L) its inverse permutation.
        grouped: direction k takes channel group k (C' = Di / K) instead of all channels.

    Returns:
        (B, K, C', L) float32, contiguous.
    """
    idx, inv = _tables(index, inverse)
    return _Gather.apply(x, idx, inv, grouped)


def scan_merge_cpu(y: Tensor, index: Tensor, inverse: Tensor, grouped: bool) -> Tensor:
    """Every direction's output (scan order) -> channels-last tokens, directions summed.

    Args:
        y: (B, K, C', L) float32 CPU tensor.
        index, inverse, grouped: as :func:`scan_gather_cpu`.

    Returns:
        (B, L, Di) float32, Di = K * C' when grouped (groups side by side), else C'.
    """
    idx, inv = _tables(index, inverse)
    return _Merge.apply(y, idx, inv, grouped)
