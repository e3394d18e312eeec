"""Selective scan over a token grid in every scan direction at once, read and written through
the scan orders' index table (CPU, float32, inference).

SS2D scans its token map in K directions and sums the directions' outputs back on the grid.
Done with the sequence scan, the tokens are first copied into every direction's order
(a gather into a (B, K, C', L) tensor) and the outputs copied back and summed (a merge):
two passes over K times the map, about as long as the scan itself on the sentence grids. This
kernel instead reads each step's token through ``index[k, t]`` straight from the
channels-last map, with dt, B and C computed in grid order (a token's projections do not
depend on when a scan reaches it: every direction's x_proj is one GEMM over the map, and
dt_proj + softplus one vectorised pass), and adds each direction's output into the grid
(``istd.ops.ScanOrder`` defines the orders; `istd.ops.scan_reference` is the oracle).

Each work item owns four channels of one batch entry and runs all K directions for them,
so every output element has one writer and directions are summed in order 0..K-1 (results do
not depend on the thread count). No autograd: training gathers and scans with the
differentiable ops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from istd.ops._threads import sync_numba_threads
from istd.ops.scan_cpu import _exp, _softplus, _stack_empty

_ZERO = np.float32(0.0)


# error_model="numpy": no zero test in softplus's division, which would keep LLVM from
# vectorising it
@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)
def _dt_proj_softplus_kernel(dts, w_dt, b_dt, out):
    """out[b, k, c, t] = softplus(b_dt[k, c] + sum_r w_dt[k, c, r] dts[b, k, r, t]).

    dts: (Bt, K, R, L) the dt-rank part of x_proj; w_dt: (K, C', R); b_dt: (K, C');
    out: (Bt, K, C', L). The same product as a batched GEMM over K with inner size R
    (2 to 16), which MKL runs at a few percent of its speed; here each output row stays in L1
    while the R rank rows are added into it.
    """
    Bt, K, Cd, L = out.shape
    R = dts.shape[2]
    for row in prange(Bt * K * Cd):
        b, k, c = row // (K * Cd), (row // Cd) % K, row % Cd
        for t in range(L):
            out[b, k, c, t] = b_dt[k, c]
        for r in range(R):
            w = w_dt[k, c, r]
            for t in range(L):
                out[b, k, c, t] += w * dts[b, k, r, t]
        for t in range(L):
            out[b, k, c, t] = _softplus(out[b, k, c, t])


@functools.cache
def _scan_grid_kernel(N: int) -> Callable:
    """The grid scan kernel compiled for N states: the four channels' states then live in
    stack arrays, which LLVM keeps in registers (loaded and stored every step otherwise)."""

    @njit(parallel=True, fastmath=True, cache=True)
    def kernel(x, dt, Bm, Cm, A, Dv, index, grouped, out):
        """x, out: (Bt, L, Di) channels-last tokens; dt: (Bt, K, C', L) step sizes in grid order;
        Bm, Cm: (Bt, K, L, N) in grid order; A: (K * C', N); Dv: (K * C',); index: (K, L).

        Direction k reads channels k * C' .. when ``grouped`` (C' = Di / K), else all Di.
        Four channels run per loop body (independent chains, as in `istd.ops.scan_cpu`); a short
        last group repeats its last channel and writes it once.
        """
        Bt, L, Di = x.shape
        K, Cd = dt.shape[1], dt.shape[2]
        n_quads = (Cd + 3) // 4
        for item in prange(Bt * n_quads):
            b = item // n_quads
            c0 = (item % n_quads) * 4
            c1, c2, c3 = min(c0 + 1, Cd - 1), min(c0 + 2, Cd - 1), min(c0 + 3, Cd - 1)
            h0, h1, h2, h3 = _stack_empty(N), _stack_empty(N), _stack_empty(N), _stack_empty(N)
            for k in range(K):
                ch = k * Cd if grouped else 0  # channel offset of direction k in x and out
                first = grouped or k == 0  # the first write to these output channels
                p0, p1, p2, p3 = k * Cd + c0, k * Cd + c1, k * Cd + c2, k * Cd + c3  # A, D rows
                for n in range(N):
                    h0[n], h1[n], h2[n], h3[n] = _ZERO, _ZERO, _ZERO, _ZERO
                for step in range(L):
                    t = index[k, step]
                    dt0, dt1, dt2, dt3 = (
                        dt[b, k, c0, t],
                        dt[b, k, c1, t],
                        dt[b, k, c2, t],
                        dt[b, k, c3, t],
                    )
                    x0, x1, x2, x3 = (
                        x[b, t, ch + c0],
                        x[b, t, ch + c1],
                        x[b, t, ch + c2],
                        x[b, t, ch + c3],
                    )
                    dx0, dx1, dx2, dx3 = dt0 * x0, dt1 * x1, dt2 * x2, dt3 * x3
                    for n in range(N):
                        bn = Bm[b, k, t, n]
                        h0[n] = _exp(dt0 * A[p0, n]) * h0[n] + dx0 * bn
                        h1[n] = _exp(dt1 * A[p1, n]) * h1[n] + dx1 * bn
                        h2[n] = _exp(dt2 * A[p2, n]) * h2[n] + dx2 * bn
                        h3[n] = _exp(dt3 * A[p3, n]) * h3[n] + dx3 * bn
                    y0, y1, y2, y3 = Dv[p0] * x0, Dv[p1] * x1, Dv[p2] * x2, Dv[p3] * x3
                    for n in range(N):
                        cn = Cm[b, k, t, n]
                        y0 += h0[n] * cn
                        y1 += h1[n] * cn
                        y2 += h2[n] * cn
                        y3 += h3[n] * cn
                    if not first:
                        y0 += out[b, t, ch + c0]
                        y1 += out[b, t, ch + c1]
                        y2 += out[b, t, ch + c2]
                        y3 += out[b, t, ch + c3]
                    out[b, t, ch + c0] = y0
                    if c0 + 1 < Cd:
                        out[b, t, ch + c1] = y1
                    if c0 + 2 < Cd:
                        out[b, t, ch + c2] = y2
                    if c0 + 3 < Cd:
                        out[b, t, ch + c3] = y3

    return kernel


def scan_grid_cpu(
    x: Tensor,
    proj: Tensor,
    dt_weight: Tensor,
    dt_bias: Tensor,
    A: Tensor,
    D: Tensor,
    index: Tensor,
    grouped: bool,
) -> Tensor:
    """Every direction's selective scan over a token grid, summed on the grid (no autograd).

    Args:
        x: (Bt, L, Di) float32 CPU tokens, L = H * W in row-major order.
        proj: (Bt, L, K, R + 2N) each direction's x_proj output per token, in grid order:
            the dt rank R, then B, then C.
        dt_weight: (K, C', R) dt_proj weights; dt_bias: (K, C'). The step sizes are
            softplus(dt_weight @ proj[..., :R] + dt_bias).
        A: (K * C', N), negative. D: (K * C',) skip weights.
        index: (K, L) scan orders: direction k reads grid position ``index[k, t]`` at step t.
        grouped: direction k takes channel group k (C' = Di / K) instead of all Di channels.

    Returns:
        (Bt, L, Di) float32: the directions' outputs summed (or side by side when grouped).
    """
    Bt, L, Di = x.shape
    K, Cd, R = dt_weight.shape
    N = A.shape[1]

    def arr(t: Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().float().numpy())

    # per-direction blocks: the scan walks one direction's (L, N) B and C at a time, which stay
    # in L2; interleaved with the other directions' columns they did not (measured 1.3-1.8x
    # slower)
    by_direction = proj.detach().float().transpose(1, 2)  # (Bt, K, L, E) view
    dt = np.empty((Bt, K, Cd, L), np.float32)
    out = torch.empty(Bt, L, Di)
    sync_numba_threads()
    _dt_proj_softplus_kernel(
        arr(by_direction[..., :R].transpose(2, 3)),  # (Bt, K, R, L)
        arr(dt_weight),
        arr(dt_bias.reshape(K, Cd)),
        dt,
    )
    _scan_grid_kernel(N)(
        arr(x), dt, arr(by_direction[..., R : R + N]), arr(by_direction[..., R + N :]),
        arr(A), arr(D), np.ascontiguousarray(index.cpu().numpy(), dtype=np.int64), grouped,
        out.numpy(),
    )  # fmt: skip
    return out
