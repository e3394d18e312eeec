"""Fused CPU selective scan (Mamba S6): Numba kernels for the forward and the backward pass.

Gu and Dao, "Mamba" (2023). The recurrence runs per (batch, channel) row, parallel over rows
(forward) or over (batch, group, channel block) items (backward), vectorised across the N
state lanes. Nothing of size (B, D, L, N) is allocated: the forward keeps the
state every ``CHUNK`` steps, and the backward recomputes each chunk's states from that
checkpoint into a small buffer before walking it in reverse.

Why the hand-written exp: Numba only vectorises ``np.exp`` through Intel SVML, which the
current llvmlite no longer links (``numba -s``: "llvmlite Using SVML Patched LLVM: False", and
installing ``icc_rt`` does not change that). A scalar libm call per state lane would make the
scan several times slower than the C measuring stick, so ``_exp`` is a Cody-Waite range
reduction with a degree-6 polynomial (relative error < 4e-7 over the float32 range) whose
2^k scaling is built by a bit cast; LLVM vectorises it across the state lanes.

The elementwise parts (``delta_bias`` + softplus before the scan, the ``silu(z)`` gate after it,
fp16/bf16 -> float32 casts) run as vectorised PyTorch ops around the kernel; autograd
differentiates them, so the kernels only handle ``u, dt, A, B, C, D``.

Kernels are compiled on first use (``cache=True``: the machine code is cached on disk next to
this file, or in ``NUMBA_CACHE_DIR``), so nothing is compiled at install time and no C
compiler is needed. ``torch.set_num_threads`` sets the kernels' thread count too. Torch's and
Numba's OpenMP pools both spin-wait after each parallel region; on a machine with few cores,
``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported) stops them taking turns at
stalling each other in the backward, where torch ops and kernels alternate.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic
from torch import Tensor

CHUNK = 64  # steps between checkpoints: the backward buffers (CHUNK + 1, N) stay in L1
_BACKWARD_ITEMS = 16  # aim for this many independent backward work items (load balance)
_MAX_BLOCKS = 256  # parallel blocks per call: enough for load balance, few scratch allocations


@intrinsic
def _bits_to_float32(typingctx, bits):  # noqa: ARG001 (Numba intrinsic signature)
    """Reinterpret the low 32 bits of an integer as a float32 (a bit cast, no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth != 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


# float32 constants: Numba keeps module-level np.float32 values in float32 arithmetic,
# whereas a Python float literal would promote the whole expression to float64.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 split in two so that k * ln2 is exact
_LN2_LO = np.float32(-2.12194440e-4)
_X_MIN = np.float32(-87.0)  # below: exp underflows to denormals; clamp to ~1.6e-38
_X_MAX = np.float32(88.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_P0 = np.float32(1.9875691500e-4)  # Taylor-like minimax coefficients of exp on |r| <= ln2/2
_P1 = np.float32(1.3981999507e-3)
_P2 = np.float32(8.3334519073e-3)
_P3 = np.float32(4.1665795894e-2)
_P4 = np.float32(1.6666665459e-1)
_P5 = np.float32(5.0000001201e-1)


@njit(inline="always", fastmath=True, cache=True)
def _exp(x):
    """exp(x) in float32, written so that LLVM can vectorise it (no libm call)."""
    x = min(max(x, _X_MIN), _X_MAX)
    k = np.floor(x * _LOG2E + _HALF)
    r = x - k * _LN2_HI
    r = r - k * _LN2_LO
    p = _P0
    p = p * r + _P1
    p = p * r + _P2
    p = p * r + _P3
    p = p * r + _P4
    p = p * r + _P5
    p = p * r * r + r + _ONE
    return p * _bits_to_float32((np.int32(k) + 127) << 23)  # p * 2^k


@njit(parallel=True, fastmath=True, cache=True)
def _scan_fwd_kernel(u, dt, A, Bm, Cm, Dv, y, last, ckpt, save_ckpt, n_blocks):
    """Forward scan.

    u, dt, y: (R, L), R = batch * dim, row r = (b, d); A: (dim, N); Bm, Cm: (batch, G, L, N);
    Dv: (dim,); last: (R, N) final state; ckpt: (R, ceil(L / CHUNK), N) state before each
    chunk (written when ``save_ckpt``). Rows are split into ``n_blocks`` parallel blocks so that
    scratch memory is allocated per block, not per row (MiM-ISTD's word scans have ~10^5 rows
    of 16 steps).
    """
    R, L = u.shape
    dim, N = A.shape
    per_group = dim // Bm.shape[1]
    n_chunks = (L + CHUNK - 1) // CHUNK
    per_block = (R + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        h = np.empty(N, np.float32)
        for r in range(blk * per_block, min(R, blk * per_block + per_block)):
            b = r // dim
            d = r % dim
            g = d // per_group
            skip = Dv[d]
            for n in range(N):
                h[n] = _ZERO
            for c in range(n_chunks):
                if save_ckpt:
                    for n in range(N):
                        ckpt[r, c, n] = h[n]
                for t in range(c * CHUNK, min(c * CHUNK + CHUNK, L)):
                    dtt = dt[r, t]
                    x = u[r, t]
                    dx = dtt * x
                    # the update and the C contraction are separate loops: a reduction in
                    # the exp loop makes LLVM interleave it past N = 16 lanes, unvectorised
                    for n in range(N):
                        h[n] = _exp(dtt * A[d, n]) * h[n] + dx * Bm[b, g, t, n]
                    acc = _ZERO
                    for n in range(N):
                        acc += h[n] * Cm[b, g, t, n]
                    y[r, t] = acc + skip * x
            for n in range(N):
                last[r, n] = h[n]


@njit(parallel=True, fastmath=True, cache=True)
def _scan_bwd_kernel(
    u, dt, A, Bm, Cm, Dv, gy, glast, ckpt, parts, n_blocks,
    du, ddt, dA_part, dD_part, dB_part, dC_part,
):  # fmt: skip
    """Backward scan: gradients of the forward's y (and last state) w.r.t. u, dt, A, B, C, D.

    gy: (R, L) gradient of y; glast: (R, N) gradient of the last state; ckpt as the forward's.
    Work item (b, g, p) handles channel block p of group g in batch b, so every shared-B/C
    gradient buffer has a single writer: dB_part, dC_part (batch, G, parts, L, N), summed over
    parts afterwards; dA_part (n_blocks, dim, N) and dD_part (n_blocks, dim), zero on entry,
    one slice per block (a block's items cover several batch entries), summed afterwards.
    du, ddt: (R, L). Items are split into ``n_blocks`` parallel blocks. Within an item the
    chunk loop is outermost, so the item's dB/dC rows of one chunk stay in L1 while each of
    its channels adds to them.
    """
    L = u.shape[1]
    dim, N = A.shape
    batch, G = Bm.shape[0], Bm.shape[1]
    per_group = dim // G
    per_part = (per_group + parts - 1) // parts
    n_chunks = ckpt.shape[1]
    n_items = batch * G * parts
    per_block = (n_items + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        hs = np.empty((CHUNK + 1, N), np.float32)  # hs[j + 1] = state after chunk step j
        decay = np.empty((CHUNK, N), np.float32)  # exp(dt A) at chunk step j
        lam = np.empty((per_part, N), np.float32)  # dLoss/dh carried back, times decay
        dA_acc = np.empty((per_part, N), np.float32)
        dD_acc = np.empty(per_part, np.float32)
        for item in range(blk * per_block, min(n_items, blk * per_block + per_block)):
            b = item // (G * parts)
            g = (item // parts) % G
            p = item % parts
            d_start = g * per_group + p * per_part
            n_d = max(0, min(per_part, (g + 1) * per_group - d_start))
            for t in range(L):  # zeroed here rather than by torch: one pass less over memory
                for n in range(N):
                    dB_part[b, g, p, t, n] = _ZERO
                    dC_part[b, g, p, t, n] = _ZERO
            for k in range(n_d):
                for n in range(N):
                    lam[k, n] = glast[b * dim + d_start + k, n]
                    dA_acc[k, n] = _ZERO
                dD_acc[k] = _ZERO
            for c in range(n_chunks - 1, -1, -1):
                t0 = c * CHUNK
                T = min(CHUNK, L - t0)
                for k in range(n_d):
                    d = d_start + k
                    r = b * dim + d
                    for n in range(N):
                        hs[0, n] = ckpt[r, c, n]
                    # recompute the chunk's states; dC needs h_t
                    for j in range(T):
                        t = t0 + j
                        dtt = dt[r, t]
                        dx = dtt * u[r, t]
                        gyt = gy[r, t]
                        for n in range(N):
                            da = _exp(dtt * A[d, n])
                            hn = da * hs[j, n] + dx * Bm[b, g, t, n]
                            decay[j, n] = da
                            hs[j + 1, n] = hn
                            dC_part[b, g, p, t, n] += gyt * hn
                    # walk the chunk in reverse: lam_t = gy_t C_t + exp(dt_{t+1} A) lam_{t+1}
                    skip = Dv[d]
                    dd = _ZERO
                    for j in range(T - 1, -1, -1):
                        t = t0 + j
                        dtt = dt[r, t]
                        x = u[r, t]
                        dx = dtt * x
                        gyt = gy[r, t]
                        s_b = _ZERO  # sum_n lam B
                        s_a = _ZERO  # sum_n lam A exp(dt A) h_{t-1}
                        for n in range(N):
                            lt = lam[k, n] + gyt * Cm[b, g, t, n]
                            dB_part[b, g, p, t, n] += lt * dx
                            s_b += lt * Bm[b, g, t, n]
                            w = lt * decay[j, n] * hs[j, n]
                            dA_acc[k, n] += w * dtt
                            s_a += w * A[d, n]
                            lam[k, n] = lt * decay[j, n]
                        du[r, t] = dtt * s_b + skip * gyt
                        ddt[r, t] = s_a + x * s_b
                        dd += gyt * x
                    dD_acc[k] += dd
            for k in range(n_d):
                for n in range(N):
                    dA_part[blk, d_start + k, n] += dA_acc[k, n]
                dD_part[blk, d_start + k] += dD_acc[k]


@njit(cache=True)
def _sum_swap_kernel(src, dst):
    """dst[m, y, x] = sum_p src[m, p, x, y]: (M, P, X, Y) -> (M, Y, X).

    Swaps B/C between (N, L) and the kernels' (L, N) layout, and sums the backward's partials
    on the way; torch's strided copy is several times slower on these small inner dimensions.
    Single-threaded: it is memory-bound, and a parallel loop would add a second to compiling.
    """
    M, P, X, Y = src.shape
    for m in range(M):
        for x in range(X):
            for y in range(Y):
                acc = src[m, 0, x, y]
                for q in range(1, P):
                    acc += src[m, q, x, y]
                dst[m, y, x] = acc


def _swap_last(t: Tensor, parts: int = 1) -> Tensor:
    """(..., P * X, Y) float32 tensor -> contiguous (..., Y, X), summing the P parts."""
    *lead, PX, Y = t.shape
    X = PX // parts
    src = _np(t).reshape(-1, parts, X, Y)  # (M, P, X, Y)
    out = torch.empty(*lead, Y, X)
    _sum_swap_kernel(src, out.numpy().reshape(-1, Y, X))
    return out


def _sync_threads() -> None:
    """Let ``torch.set_num_threads`` govern the Numba kernels as well."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _np(t: Tensor) -> np.ndarray:
    """A contiguous float32 NumPy view of a CPU tensor (copying only when needed)."""
    return t.detach().to(torch.float32).contiguous().numpy()


def _backward_parts(batch: int, groups: int, per_group: int) -> int:
    # fixed by the shapes, not the thread count, so results do not depend on the machine
    return max(1, min(per_group, -(-_BACKWARD_ITEMS // (batch * groups))))


class _SelectiveScanCPU(torch.autograd.Function):
    """Core scan y = scan(u, dt, A, B, C) + D u on float32 CPU tensors, with its backward."""

    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor):
        # u, dt (batch, dim, L); A (dim, N); B, C (batch, G, N, L); D (dim,)
        batch, dim, L = u.shape
        N = A.shape[1]
        u2, dt2 = _np(u).reshape(batch * dim, L), _np(dt).reshape(batch * dim, L)  # (R, L)
        Bt = _swap_last(B).numpy()  # (batch, G, N, L) -> (batch, G, L, N)
        Ct = _swap_last(C).numpy()  # (batch, G, N, L) -> (batch, G, L, N)
        A2, D2 = _np(A), _np(D)
        y = torch.empty(batch, dim, L)
        last = torch.empty(batch, dim, N)
        save = any(ctx.needs_input_grad)
        n_chunks = -(-L // CHUNK) if save else 0
        ckpt = np.empty((batch * dim, n_chunks, N), np.float32)  # (R, chunks, N)
        _sync_threads()
        _scan_fwd_kernel(
            u2, dt2, A2, Bt, Ct, D2, y.numpy().reshape(batch * dim, L),
            last.numpy().reshape(batch * dim, N), ckpt, save, min(batch * dim, _MAX_BLOCKS),
        )  # fmt: skip
        if save:
            # the inputs go through save_for_backward so that autograd notices in-place edits
            ctx.save_for_backward(u, dt, A, D)
            ctx.arrays = (Bt, Ct, ckpt)
        return y, last

    @staticmethod
    def backward(ctx, gy: Tensor | None, glast: Tensor | None):
        u, dt, A, D = ctx.saved_tensors
        Bt, Ct, ckpt = ctx.arrays
        batch, dim, L = u.shape
        R, N, G = batch * dim, A.shape[1], Bt.shape[1]
        u2, dt2, A2, D2 = _np(u).reshape(R, L), _np(dt).reshape(R, L), _np(A), _np(D)
        gy2 = np.zeros((R, L), np.float32) if gy is None else _np(gy).reshape(R, L)
        gl2 = np.zeros((R, N), np.float32) if glast is None else _np(glast).reshape(R, N)
        parts = _backward_parts(batch, G, dim // G)
        du = torch.empty(batch, dim, L)
        ddt = torch.empty(batch, dim, L)
        n_blocks = min(batch * G * parts, _MAX_BLOCKS)
        dA_part = torch.zeros(n_blocks, dim, N)
        dD_part = torch.zeros(n_blocks, dim)
        dB_part = torch.empty(batch, G, parts, L, N)  # zeroed by the kernel
        dC_part = torch.empty(batch, G, parts, L, N)
        _sync_threads()
        _scan_bwd_kernel(
            u2, dt2, A2, Bt, Ct, D2, gy2, gl2, ckpt, parts, n_blocks,
            du.numpy().reshape(R, L), ddt.numpy().reshape(R, L), dA_part.numpy(),
            dD_part.numpy(), dB_part.numpy(), dC_part.numpy(),
        )  # fmt: skip
        # (batch, G, P, L, N) summed over P -> (batch, G, L, N), returned as a transposed
        # (batch, G, N, L) view: autograd takes any strides, and the swap was a serial pass
        dB = (dB_part[:, :, 0] if parts == 1 else dB_part.sum(2)).transpose(2, 3)
        dC = (dC_part[:, :, 0] if parts == 1 else dC_part.sum(2)).transpose(2, 3)
        del ctx.arrays
        return du, ddt, dA_part.sum(0), dB, dC, dD_part.sum(0)


def selective_scan_cpu(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan on CPU tensors with the fused Numba kernels (shapes are not re-checked).

    Args: as :func:`istd.ops.selective_scan` (which validates them and calls this).

    Returns:
        y (B, D, L) float32, and the last state (B, D, N) float32 when ``return_last_state``.
    """
    dim = u.shape[1]
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]  # (D,) -> (D, 1) broadcast over L
    if delta_softplus:
        dt = F.softplus(dt)
    B4 = B.float() if B.dim() == 4 else B.float().unsqueeze(1)  # (B, N, L) -> (B, 1, N, L)
    C4 = C.float() if C.dim() == 4 else C.float().unsqueeze(1)  # (B, N, L) -> (B, 1, N, L)
    if B4.shape[1] != C4.shape[1]:  # the kernel indexes both by one group id
        groups = math.lcm(B4.shape[1], C4.shape[1])  # divides dim, as both counts do
        B4 = B4.repeat_interleave(groups // B4.shape[1], dim=1)  # (B, G, N, L)
        C4 = C4.repeat_interleave(groups // C4.shape[1], dim=1)  # (B, G, N, L)
    Dv = D.float() if D is not None else u.new_zeros(dim, dtype=torch.float32)
    y, last = _SelectiveScanCPU.apply(u.float(), dt, A.float(), B4, C4, Dv)
    if z is not None:
        y = y * F.silu(z.float())
    return (y, last) if return_last_state else y
