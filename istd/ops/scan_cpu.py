"""Fused CPU selective scan (Mamba S6): Numba kernels for the forward and the backward pass.

Gu and Dao, "Mamba" (2023). The recurrence runs per (batch, channel) row, parallel over rows
(forward) or over (batch, group, channel block) items (backward), vectorised across the N
state lanes. Nothing of size (B, D, L, N) is allocated: the forward keeps the
state every ``CHUNK`` steps, and the backward recomputes each chunk's states from that
checkpoint into a small buffer before walking it in reverse.

Why the hand-written exp: Numba only vectorises ``np.exp`` through Intel SVML, which the
current llvmlite no longer links (``numba -s``: "llvmlite Using SVML Patched LLVM: False", and
installing ``icc_rt`` does not change that). A scalar libm call per state lane would make the
scan several times slower than the C measuring stick, so ``_exp`` is a range reduction
to |r| <= ln2/2 with a degree-5 polynomial (relative error < 4e-7 over the float32 range, 2e-7
for |x| < 1) whose 2^k scaling is built by a bit cast; LLVM vectorises it across the state
lanes. It is the scan's innermost cost (one exp per state update), so it has as few
instructions as that accuracy allows.

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

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from torch import Tensor

from istd.ops._threads import sync_numba_threads

# steps between checkpoints. The backward's per-chunk work (a channel pair's checkpoint,
# carried rows, zeroing) is paid once a chunk; its buffers (CHUNK + 1, N) sit in L2 at this
# size (4 x 64 KB of 1 MB). On long sequences 1024 measured 1.025x faster forward + backward
# than 512, 512 1.05 to 1.13x faster than 64, and 128 0.89x the speed of 512.
CHUNK = 1024
_ROWS = 4  # rows the forward kernel runs together (written out in its loop body)
# aim for this many independent backward work items: parallel work for up to 4 threads on
# batch-1 ungrouped scans. Each item's partial dB/dC rows (L x N) are written and summed
# afterwards, so more items cost memory passes: 4 measured 1.03 to 1.04x faster forward +
# backward than 8 on batch x groups <= 4 shapes (2 threads), and 8 2 to 6 % faster than 16
_BACKWARD_ITEMS = 4
_FLOATS_PER_LINE = 16  # float32 values in a 64-byte cache line
_MAX_BLOCKS = 256  # parallel blocks per call: enough for load balance, few scratch allocations
# fewer in the backward, whose blocks each sum dA into their own (dim, N) slice, zeroed and
# summed afterwards: 256 slices were 4 MB on the word scan (64, 256, 16), 0.18 ms against a
# 0.63 ms forward (64 blocks: 1.11x forward + backward there). Fixed, not per thread count, so
# that the sums' order and results do not depend on the machine.
_BACKWARD_BLOCKS = 64


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


@intrinsic
def _empty_aligned(typingctx, shape):  # noqa: ARG001 (Numba intrinsic signature)
    """``np.empty(shape, np.float32)`` (a C-contiguous array) with its data on a 64-byte
    cache-line boundary; ``shape`` a tuple of integers.

    Why: Numba's ``np.empty`` aligns to 32 bytes, so about half the time every 16-float row
    of a scratch buffer straddled two cache lines and each of its vector loads and stores was
    split in two. A view of a larger ``np.empty`` at the aligned offset instead made the
    backward 3 to 4x slower (LLVM stopped vectorising its loops).
    """
    if not isinstance(shape, types.UniTuple) or not isinstance(shape.dtype, types.Integer):
        return None
    array_type = types.Array(types.float32, shape.count, "C")

    def codegen(context, builder, signature, args):
        intp = context.get_value_type(types.intp)
        dims = [
            context.cast(builder, builder.extract_value(args[0], k), shape.dtype, types.intp)
            for k in range(shape.count)
        ]
        itemsize = ir.Constant(intp, 4)
        strides = [itemsize]  # C order: the last axis is contiguous
        for dim in reversed(dims[1:]):
            strides.insert(0, builder.mul(strides[0], dim))
        size = builder.mul(strides[0], dims[0])
        meminfo = context.nrt.meminfo_alloc_aligned(builder, size=size, align=64)
        data = context.nrt.meminfo_data(builder, meminfo)
        array = context.make_array(array_type)(context, builder)
        context.populate_array(
            array,
            data=builder.bitcast(data, ir.FloatType().as_pointer()),
            shape=cgutils.pack_array(builder, dims),
            strides=cgutils.pack_array(builder, strides),
            itemsize=itemsize,
            meminfo=meminfo,
        )
        return array._getvalue()

    return array_type(shape), codegen


@intrinsic
def _stack_empty(typingctx, size):  # noqa: ARG001 (Numba intrinsic signature)
    """An uninitialised float32 array of compile-time length ``size`` on the stack.

    Why: LLVM keeps a small stack array whose indices are known after unrolling in vector
    registers, whereas rows of a heap array (``np.empty``) are loaded and stored on every
    step of a loop. The backward's carried rows in stack arrays made forward + backward 1.22
    to 1.29 times faster. Valid only inside the function that creates it (never return it).
    """
    if not isinstance(size, types.IntegerLiteral):
        return None
    length = size.literal_value
    array_type = types.Array(types.float32, 1, "C")

    def codegen(context, builder, signature, args):
        data = cgutils.alloca_once(builder, ir.FloatType(), size=length)
        array = context.make_array(array_type)(context, builder)
        itemsize = context.get_constant(types.intp, 4)
        context.populate_array(
            array,
            data=data,
            shape=cgutils.pack_array(builder, [context.get_constant(types.intp, length)]),
            strides=cgutils.pack_array(builder, [itemsize]),
            itemsize=itemsize,
            meminfo=None,
        )
        return array._getvalue()

    return array_type(size), codegen


def _prefetch_hint(write: int) -> Callable:
    """An intrinsic asking the CPU to bring flat element ``index`` of a C-contiguous array into
    its caches, to be read (``write`` 0) or written (1).

    A hint (LLVM's ``llvm.prefetch``, kept in all cache levels): it never faults and changes no
    value, so the kernels' results are the same with or without it.
    """

    @intrinsic
    def prefetch(typingctx, array, index):  # noqa: ARG001 (Numba intrinsic signature)
        if not isinstance(array, types.Array) or array.layout != "C":
            return None
        if not isinstance(index, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]),
                "llvm.prefetch.p0i8",
            )
            builder.call(fn, [address, i32(write), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.none(array, index), codegen

    return prefetch


_prefetch = _prefetch_hint(0)
_prefetch_write = _prefetch_hint(1)


# float32 constants: Numba keeps module-level np.float32 values in float32 arithmetic,
# whereas a Python float literal would promote the whole expression to float64.
_LOG2E = np.float32(1.4426950408889634)
_LN2 = np.float32(0.6931471805599453)
_X_MIN = np.float32(-87.0)  # below: exp underflows to denormals; clamp to ~1.6e-38
_X_MAX = np.float32(88.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
# exp(r) ~ 1 + r + r^2 (_P2 + _P3 r + _P4 r^2 + _P5 r^3) on |r| <= ln2/2: minimax for relative
# error (1.1e-7) with the first two Taylor terms kept exact, so that exp(x) - 1 stays accurate
# for tiny x (short steps, where the scan's decay is closest to 1)
_P2 = np.float32(4.9999231100e-01)
_P3 = np.float32(1.6667114198e-01)
_P4 = np.float32(4.1890159249e-02)
_P5 = np.float32(8.3125140518e-03)
_TWO = np.float32(2.0)
_U1 = np.uint64(1)  # unsigned 1: uint64 + int64 is float64 in Numba
# 2 atanh(s) series coefficients: log(1 + y) = 2 (s + s^3/3 + ... + s^11/11), s = y / (2 + y)
_THIRD, _FIFTH, _SEVENTH = np.float32(1 / 3), np.float32(1 / 5), np.float32(1 / 7)
_NINTH, _ELEVENTH = np.float32(1 / 9), np.float32(1 / 11)


@njit(inline="always", fastmath=True, cache=True)
def _exp(x):
    """exp(x) in float32, written so that LLVM can vectorise it (no libm call)."""
    x = min(max(x, _X_MIN), _X_MAX)
    k = np.floor(x * _LOG2E + _HALF)
    # one ln2 constant, not a hi/lo pair: its rounding (1.9e-9) times |k| <= 127 adds at most
    # 2.4e-7 relative error, and saves an instruction on the scan's hottest line
    r = x - k * _LN2
    p = _P5
    p = p * r + _P4
    p = p * r + _P3
    p = p * r + _P2
    p = p * r + _ONE
    p = p * r + _ONE
    return p * _bits_to_float32((np.int32(k) + 127) << 23)  # p * 2^k


@njit(inline="always", fastmath=True, cache=True)
def _softplus(x):
    """log(1 + exp(x)) in float32, vectorisable: max(x, 0) + log1p(exp(-|x|)).

    log1p(y) for y in (0, 1] by the atanh series in s = y / (2 + y) <= 1/3, truncated after
    s^11: relative error below 2e-7.
    """
    y = _exp(-abs(x))
    s = y / (_TWO + y)
    s2 = s * s
    p = _ELEVENTH
    p = p * s2 + _NINTH
    p = p * s2 + _SEVENTH
    p = p * s2 + _FIFTH
    p = p * s2 + _THIRD
    p = p * s2 + _ONE
    return max(x, _ZERO) + _TWO * s * p


# error_model="numpy": with Python's (the default) every float division tests for zero, and
# that branch keeps LLVM from vectorising softplus (12x slower)
@njit(fastmath=True, error_model="numpy", cache=True)
def _step_sizes_kernel(delta, bias, softplus, out):
    """out[r, t] = softplus(delta[r, t] + bias[r % dim]) (or without softplus); (R, L) arrays.

    One vectorised pass in place of torch's add and softplus (two passes, two temporaries).
    Serial: it is memory-bound and a fraction of the scan, and a parallel loop would add to
    the first call's compile time.
    """
    R, L = delta.shape
    dim = bias.shape[0]
    for r in range(R):
        b = bias[r % dim]
        if softplus:
            for t in range(L):
                out[r, t] = _softplus(delta[r, t] + b)
        else:
            for t in range(L):
                out[r, t] = delta[r, t] + b


@njit(fastmath=True, cache=True)
def _sum_parts_kernel(part, out):
    """out[b, g] = sum over p of part[b, g, p]: (batch, G, P, M) -> (batch, G, M).

    Serial on purpose: the backward's partial rows are still in cache, and a parallel torch sum
    first wakes its sleeping OpenMP workers (``OMP_WAIT_POLICY=PASSIVE``, see istd/__init__).
    With this loop forward + backward ran 1.08x faster on (1, 128, 4096), whose 8 work items
    then left 8 partial dB and dC rows, and 1.02x to 1.08x on the 4-group sentence scans.
    """
    batch, G, P, M = part.shape
    for b in range(batch):
        for g in range(G):
            for m in range(M):
                out[b, g, m] = part[b, g, 0, m]
            for p in range(1, P):
                for m in range(M):
                    out[b, g, m] += part[b, g, p, m]


@njit(inline="always", cache=True)
def _channel_block(g, p, per_group, per_part):
    """(first channel, channel count) of the backward's channel block p in group g; the count
    is 0 for a block past the group's last channel."""
    d_start = g * per_group + p * per_part
    return d_start, max(0, min(per_part, (g + 1) * per_group - d_start))


@njit(fastmath=True, cache=True)
def _sum_blocks_kernel(dA_part, dD_part, batch, G, parts, per_block, dA, dD):
    """dA (dim, N) and dD (dim,): the backward blocks' partial sums added up.

    The backward numbers its items ((b * G + g) * parts + p) and gives each block a run of
    ``per_block`` consecutive items; a block zeroes and writes only the rows of the channels its
    items cover, and only those are read here (on batch-1 scans one block per channel: a copy,
    where adding up every block's full slice read and zeroed ``n_blocks`` times more).
    """
    dim, N = dA.shape
    per_group = dim // G
    per_part = (per_group + parts - 1) // parts
    for g in range(G):
        for p in range(parts):
            d_start, n_d = _channel_block(g, p, per_group, per_part)
            last_blk = -1
            for b in range(batch):
                blk = ((b * G + g) * parts + p) // per_block
                if b == 0:
                    for d in range(d_start, d_start + n_d):
                        dD[d] = dD_part[blk, d]
                        for n in range(N):
                            dA[d, n] = dA_part[blk, d, n]
                elif blk != last_blk:  # the next block on these channels (blocks only grow)
                    for d in range(d_start, d_start + n_d):
                        dD[d] += dD_part[blk, d]
                        for n in range(N):
                            dA[d, n] += dA_part[blk, d, n]
                last_blk = blk


@functools.cache
def _scan_fwd_kernel(N: int) -> Callable:
    """The forward scan kernel compiled for N states, whose four rows' states then live in
    stack arrays (registers)."""

    @njit(parallel=True, fastmath=True, cache=True)
    def kernel(u, dt, A, Bm, Cm, Dv, y, last, ckpt, save_ckpt, n_blocks):
        """Forward scan.

        u, dt, y: (R, L), R = batch * dim, row r = (b, d); A: (dim, N); Bm, Cm: (batch, G, L, N);
        Dv: (dim,); last: (R, N) final state; ckpt: (R, ceil(L / CHUNK) - 1, N) state before
        each chunk after the first, whose state is zero (written when ``save_ckpt``; none for
        sequences of one chunk, such as MiM-ISTD's 16-word scans). Rows run four at a time (a short last tile repeats its
        last row): each row's recurrence is a chain of dependent multiply-adds, and four
        independent chains in one loop body keep the FP units busy (1.2 to 1.5x faster than one
        row at a time; a loop over the four rows instead of the written-out body measured slower,
        LLVM does not interleave it). Tiles are split into ``n_blocks`` parallel blocks so that
        scratch memory is allocated per block (MiM-ISTD's word scans have ~10^5 rows of 16 steps).
        """
        R, L = u.shape
        dim = A.shape[0]
        per_group = dim // Bm.shape[1]
        n_chunks = (L + CHUNK - 1) // CHUNK
        n_tiles = (R + _ROWS - 1) // _ROWS
        per_block = (n_tiles + n_blocks - 1) // n_blocks
        for blk in prange(n_blocks):
            h0, h1, h2, h3 = _stack_empty(N), _stack_empty(N), _stack_empty(N), _stack_empty(N)
            for tile in range(blk * per_block, min(n_tiles, blk * per_block + per_block)):
                r0 = _ROWS * tile
                r1, r2, r3 = min(r0 + 1, R - 1), min(r0 + 2, R - 1), min(r0 + 3, R - 1)
                b0, d0 = r0 // dim, r0 % dim
                b1, d1 = r1 // dim, r1 % dim
                b2, d2 = r2 // dim, r2 % dim
                b3, d3 = r3 // dim, r3 % dim
                g0, g1, g2, g3 = d0 // per_group, d1 // per_group, d2 // per_group, d3 // per_group
                for n in range(N):
                    h0[n], h1[n], h2[n], h3[n] = _ZERO, _ZERO, _ZERO, _ZERO
                for c in range(n_chunks):
                    if save_ckpt and c > 0:
                        for n in range(N):
                            ckpt[r0, c - 1, n], ckpt[r1, c - 1, n] = h0[n], h1[n]
                            ckpt[r2, c - 1, n], ckpt[r3, c - 1, n] = h2[n], h3[n]
                    for t in range(c * CHUNK, min(c * CHUNK + CHUNK, L)):
                        dt0, dt1, dt2, dt3 = dt[r0, t], dt[r1, t], dt[r2, t], dt[r3, t]
                        x0, x1, x2, x3 = u[r0, t], u[r1, t], u[r2, t], u[r3, t]
                        dx0, dx1, dx2, dx3 = dt0 * x0, dt1 * x1, dt2 * x2, dt3 * x3
                        # the update and the C contraction are separate loops: a reduction in
                        # the exp loop makes LLVM interleave it past N = 16 lanes, unvectorised
                        for n in range(N):
                            h0[n] = _exp(dt0 * A[d0, n]) * h0[n] + dx0 * Bm[b0, g0, t, n]
                            h1[n] = _exp(dt1 * A[d1, n]) * h1[n] + dx1 * Bm[b1, g1, t, n]
                            h2[n] = _exp(dt2 * A[d2, n]) * h2[n] + dx2 * Bm[b2, g2, t, n]
                            h3[n] = _exp(dt3 * A[d3, n]) * h3[n] + dx3 * Bm[b3, g3, t, n]
                        y0, y1, y2, y3 = _ZERO, _ZERO, _ZERO, _ZERO
                        for n in range(N):
                            y0 += h0[n] * Cm[b0, g0, t, n]
                            y1 += h1[n] * Cm[b1, g1, t, n]
                            y2 += h2[n] * Cm[b2, g2, t, n]
                            y3 += h3[n] * Cm[b3, g3, t, n]
                        y[r0, t], y[r1, t] = y0 + Dv[d0] * x0, y1 + Dv[d1] * x1
                        y[r2, t], y[r3, t] = y2 + Dv[d2] * x2, y3 + Dv[d3] * x3
                for n in range(N):
                    last[r0, n], last[r1, n], last[r2, n], last[r3, n] = (
                        h0[n],
                        h1[n],
                        h2[n],
                        h3[n],
                    )

    return kernel


@functools.cache
def _scan_bwd_kernel(N: int) -> Callable:
    """The backward scan kernel compiled for N states.

    With N a compile-time constant, LLVM unrolls the state loops (12 to 15 % faster than with
    N read at run time, the same results to the bit), and the carried rows can live on the
    stack (``_stack_empty``). Each N compiles once per machine (Numba keys a cached closure
    by the values it captures).
    """

    @njit(parallel=True, fastmath=True, cache=True)
    def kernel(
        u, dt, A, Bm, Cm, Dv, gy, glast, ckpt, parts, n_blocks,
        du, ddt, dA_part, dD_part, dB_part, dC_part,
    ):  # fmt: skip
        """Backward scan: gradients of the forward's y (and last state) w.r.t. u, dt, A, B, C, D.

        gy: (R, L) gradient of y; glast: (R, N) gradient of the last state, or (0, N) when the
        last state was not used (zero: no (R, N) tensor of zeros to fill and read); ckpt as the
        forward's.
        Work item (b, g, p) handles channel block p of group g in batch b, so every shared-B/C
        gradient buffer has a single writer: dB_part, dC_part (batch, G, parts, L, N), summed over
        parts afterwards; dA_part (n_blocks, dim, N) and dD_part (n_blocks, dim), one slice per
        block (a block's items cover several batch entries), of which a block zeroes and writes
        only the rows of its items' channels (summed afterwards by ``_sum_blocks_kernel``).
        du, ddt: (R, L). Items are split into ``n_blocks`` parallel blocks. Within an item the
        chunk loop is outermost, so the item's dB/dC rows of one chunk stay in cache while each of
        its channels adds to them. Channels go in pairs (suffixes 1 and 2), written out for the
        same reason as the forward's four rows: two independent chains, and one read-modify-write
        of dB/dC for both. An odd block's last pair has a dummy second channel (a copy of the
        first whose gradient inputs are masked to zero; its du/ddt zeros are overwritten by the
        first's, and its zero dA and dD sums go to the first channel). A pair's carried rows (lam,
        the dA sums, A) live in N-element stack arrays during a chunk, which LLVM keeps in
        registers; lam goes to the ``lam`` scratch between chunks, and the dA and dD sums are
        added to the block's slices after each chunk (no per-item scratch to zero and sum:
        1.01 to 1.07x faster on the word scans' 16-step sequences). Step indices are unsigned
        (no wraparound code).
        """
        L = u.shape[1]
        dim = A.shape[0]
        batch, G = Bm.shape[0], Bm.shape[1]
        per_group = dim // G
        per_part = (per_group + parts - 1) // parts
        n_chunks = ckpt.shape[1] + 1
        n_items = batch * G * parts
        per_block = (n_items + n_blocks - 1) // n_blocks
        for blk in prange(n_blocks):
            steps = min(CHUNK, L)  # a chunk's length at most
            hs1 = _empty_aligned((steps + 1, N))  # hs[j + 1] = state after chunk step j
            hs2 = _empty_aligned((steps + 1, N))
            dec1 = _empty_aligned((steps, N))  # exp(dt A) at chunk step j
            dec2 = _empty_aligned((steps, N))
            lam = _empty_aligned((per_part + 1, N))  # dLoss/dh carried back, times decay
            # the pair's carried rows, in registers through a chunk's reverse walk
            l1, l2 = _stack_empty(N), _stack_empty(N)  # the pair's lam rows
            a1, a2 = _stack_empty(N), _stack_empty(N)  # and dA sums
            A1, A2 = _stack_empty(N), _stack_empty(N)
            for item in range(blk * per_block, min(n_items, blk * per_block + per_block)):
                b = item // (G * parts)
                g = (item // parts) % G
                p = item % parts
                d_start, n_d = _channel_block(g, p, per_group, per_part)
                # the block's first item on these channels: the previous batch entry's item on
                # them (G * parts items back) ran in an earlier block, or there is none
                if item - G * parts < blk * per_block:
                    for d in range(d_start, d_start + n_d):
                        dD_part[blk, d] = _ZERO
                        for n in range(N):
                            dA_part[blk, d, n] = _ZERO
                for c in range(n_chunks - 1, -1, -1):
                    t0 = c * CHUNK
                    T = min(CHUNK, L - t0)
                    # unsigned step indices: Numba then skips the negative-index wraparound
                    # (three integer ops per index on every step of the loops below)
                    t0u, Tu = np.uint64(t0), np.uint64(T)
                    # the reverse walk reads the chunk's C rows backwards, which the hardware
                    # prefetcher does not follow on short runs: on the 16-step word scans every
                    # item's first pair waited for each of its C lines (this hint: 1.09 to 1.14x
                    # forward + backward there; the forward, reading forwards, gains nothing)
                    c_first = ((b * G + g) * L + t0) * N  # flat index of C[b, g, t0, 0]
                    for e in range(0, T * N, _FLOATS_PER_LINE):
                        _prefetch(Cm, c_first + e)
                    # the first pair writes the chunk's dB rows backwards too
                    db_first = (((b * G + g) * parts + p) * L + t0) * N  # dB_part[b, g, p, t0, 0]
                    for e in range(0, T * N, _FLOATS_PER_LINE):
                        _prefetch_write(dB_part, db_first + e)
                    if n_d == 0:  # a part past the group's channels: its rows are summed too
                        for t in range(t0, t0 + T):
                            for n in range(N):
                                dB_part[b, g, p, t, n] = _ZERO
                                dC_part[b, g, p, t, n] = _ZERO
                    for k in range(0, n_d, 2):
                        two = k + 1 < n_d
                        # the first pair writes the chunk's dB/dC rows, the others add to them
                        # (a select, not a zeroing pass: 1.07 to 1.09x on the 16-step word scans)
                        keep = k > 0
                        # a dummy second channel repeats the first with its gradient masked to
                        # zero, so the step loops need no branch
                        mask2 = _ONE if two else _ZERO
                        d1 = d_start + k
                        d2 = d1 + 1 if two else d1
                        r1, r2 = b * dim + d1, b * dim + d2
                        # the reverse walk writes the pair's du/ddt rows backwards (1.01 to
                        # 1.05x on the sentence and word scans, A/B twice)
                        for e in range(0, T, _FLOATS_PER_LINE):
                            _prefetch_write(du, r1 * L + t0 + e)
                            _prefetch_write(du, r2 * L + t0 + e)
                            _prefetch_write(ddt, r1 * L + t0 + e)
                            _prefetch_write(ddt, r2 * L + t0 + e)
                        for n in range(N):
                            hs1[0, n] = ckpt[r1, c - 1, n] if c > 0 else _ZERO
                            hs2[0, n] = ckpt[r2, c - 1, n] if c > 0 else _ZERO
                            A1[n], A2[n] = A[d1, n], A[d2, n]
                        # recompute the chunk's states; dC needs h_t
                        for j in range(Tu):
                            t = t0u + j
                            dt1, dt2 = dt[r1, t], dt[r2, t]
                            dx1, dx2 = dt1 * u[r1, t], dt2 * u[r2, t]
                            gy1, gy2 = gy[r1, t], gy[r2, t] * mask2
                            for n in range(N):
                                bn = Bm[b, g, t, n]
                                da1 = _exp(dt1 * A1[n])
                                da2 = _exp(dt2 * A2[n])
                                h1 = da1 * hs1[j, n] + dx1 * bn
                                h2 = da2 * hs2[j, n] + dx2 * bn
                                dec1[j, n], dec2[j, n] = da1, da2
                                hs1[j + _U1, n], hs2[j + _U1, n] = h1, h2
                                old = dC_part[b, g, p, t, n] if keep else _ZERO
                                dC_part[b, g, p, t, n] = old + gy1 * h1 + gy2 * h2
                        # walk the chunk in reverse: lam_t = gy_t C_t + exp(dt_{t+1} A) lam_{t+1}
                        if c == n_chunks - 1:  # the last chunk first: lam from the last state
                            if glast.shape[0] > 0:
                                for n in range(N):
                                    l1[n], l2[n] = glast[r1, n], glast[r2, n] * mask2
                            else:
                                for n in range(N):
                                    l1[n], l2[n] = _ZERO, _ZERO
                        else:
                            for n in range(N):
                                l1[n], l2[n] = lam[k, n], lam[k + 1, n]
                        for n in range(N):
                            a1[n], a2[n] = _ZERO, _ZERO
                        dd1, dd2 = _ZERO, _ZERO
                        for step in range(Tu):
                            j = Tu - _U1 - step
                            t = t0u + j
                            dt1, dt2 = dt[r1, t], dt[r2, t]
                            x1, x2 = u[r1, t], u[r2, t]
                            dx1, dx2 = dt1 * x1, dt2 * x2
                            gy1, gy2 = gy[r1, t], gy[r2, t] * mask2
                            sb1, sb2 = _ZERO, _ZERO  # sum_n lam B
                            sa1, sa2 = _ZERO, _ZERO  # sum_n lam A exp(dt A) h_{t-1}
                            for n in range(N):
                                cn, bn = Cm[b, g, t, n], Bm[b, g, t, n]
                                lt1 = l1[n] + gy1 * cn
                                lt2 = l2[n] + gy2 * cn
                                old = dB_part[b, g, p, t, n] if keep else _ZERO
                                dB_part[b, g, p, t, n] = old + lt1 * dx1 + lt2 * dx2
                                sb1 += lt1 * bn
                                sb2 += lt2 * bn
                                w1 = lt1 * dec1[j, n] * hs1[j, n]
                                w2 = lt2 * dec2[j, n] * hs2[j, n]
                                a1[n] += w1 * dt1
                                a2[n] += w2 * dt2
                                sa1 += w1 * A1[n]
                                sa2 += w2 * A2[n]
                                l1[n] = lt1 * dec1[j, n]
                                l2[n] = lt2 * dec2[j, n]
                            # the second channel first: a dummy's zeros are then overwritten
                            du[r2, t] = dt2 * sb2 + Dv[d2] * gy2
                            ddt[r2, t] = sa2 + x2 * sb2
                            du[r1, t] = dt1 * sb1 + Dv[d1] * gy1
                            ddt[r1, t] = sa1 + x1 * sb1
                            dd1 += gy1 * x1
                            dd2 += gy2 * x2
                        if c > 0:
                            for n in range(N):
                                lam[k, n], lam[k + 1, n] = l1[n], l2[n]
                        # a dummy's sums are zero, so adding them to its first channel is harmless
                        for n in range(N):
                            dA_part[blk, d1, n] += a1[n]
                            dA_part[blk, d2, n] += a2[n]
                        dD_part[blk, d1] += dd1
                        dD_part[blk, d2] += dd2

    return kernel


def _is_steps_last(t: Tensor) -> bool:
    """Whether (..., N, L) float32 ``t`` is the transposed view of a contiguous (..., L, N)."""
    return t.dtype == torch.float32 and t.transpose(-1, -2).is_contiguous()


def _steps_last(t: Tensor) -> np.ndarray:
    """(..., N, L) -> contiguous float32 (..., L, N) array: free when ``t`` is the transposed
    view of such a tensor (SS2D computes B and C that way), else one copy."""
    return t.detach().float().transpose(-1, -2).contiguous().numpy()


def _np(t: Tensor) -> np.ndarray:
    """A contiguous float32 NumPy view of a CPU tensor (copying only when needed)."""
    return t.detach().to(torch.float32).contiguous().numpy()


def _backward_parts(batch: int, groups: int, per_group: int) -> int:
    # fixed by the shapes, not the thread count, so results do not depend on the machine
    return max(1, min(per_group, -(-_BACKWARD_ITEMS // (batch * groups))))


def _sum_parts(part: Tensor) -> Tensor:
    """(batch, G, P, ...) partial sums of the backward's work items or blocks -> their
    (batch, G, ...) total."""
    batch, G, P = part.shape[:3]
    if P == 1:
        return part[:, :, 0]
    total = torch.empty(batch, G, *part.shape[3:])
    _sum_parts_kernel(part.numpy().reshape(batch, G, P, -1), total.numpy().reshape(batch, G, -1))
    return total


class _SelectiveScanCPU(torch.autograd.Function):
    """Core scan y = scan(u, dt, A, B, C) + D u on float32 CPU tensors, with its backward."""

    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor):
        # u, dt (batch, dim, L); A (dim, N); B, C (batch, G, N, L); D (dim,)
        batch, dim, L = u.shape
        N = A.shape[1]
        u2, dt2 = _np(u).reshape(batch * dim, L), _np(dt).reshape(batch * dim, L)  # (R, L)
        Bt, Ct = _steps_last(B), _steps_last(C)  # (batch, G, N, L) -> (batch, G, L, N)
        A2, D2 = _np(A), _np(D)
        y = torch.empty(batch, dim, L)
        last = torch.empty(batch, dim, N)
        save = any(ctx.needs_input_grad)
        n_chunks = -(-L // CHUNK) if save else 0
        ckpt = np.empty((batch * dim, max(n_chunks - 1, 0), N), np.float32)  # (R, chunks - 1, N)
        sync_numba_threads()
        _scan_fwd_kernel(N)(
            u2, dt2, A2, Bt, Ct, D2, y.numpy().reshape(batch * dim, L),
            last.numpy().reshape(batch * dim, N), ckpt, save, min(-(-batch * dim // _ROWS), _MAX_BLOCKS),
        )  # fmt: skip
        if save:
            # the inputs go through save_for_backward so that autograd notices in-place edits
            ctx.save_for_backward(u, dt, A, D)
            ctx.arrays = (Bt, Ct, ckpt)
            ctx.steps_last = (_is_steps_last(B), _is_steps_last(C))
            # an unused output's gradient arrives as None instead of a filled tensor of zeros
            # (the last state is unused in SS2D: (R, N) zeros to fill and read for nothing)
            ctx.set_materialize_grads(False)
        return y, last

    @staticmethod
    def backward(ctx, gy: Tensor | None, glast: Tensor | None):
        u, dt, A, D = ctx.saved_tensors
        Bt, Ct, ckpt = ctx.arrays
        batch, dim, L = u.shape
        R, N, G = batch * dim, A.shape[1], Bt.shape[1]
        u2, dt2, A2, D2 = _np(u).reshape(R, L), _np(dt).reshape(R, L), _np(A), _np(D)
        gy2 = np.zeros((R, L), np.float32) if gy is None else _np(gy).reshape(R, L)
        gl2 = np.zeros((0, N), np.float32) if glast is None else _np(glast).reshape(R, N)
        parts = _backward_parts(batch, G, dim // G)
        du = torch.empty(batch, dim, L)
        ddt = torch.empty(batch, dim, L)
        n_blocks = min(batch * G * parts, _BACKWARD_BLOCKS)
        dA_part = torch.empty(n_blocks, dim, N)  # rows zeroed by the blocks that use them
        dD_part = torch.empty(n_blocks, dim)
        dB_part = torch.empty(batch, G, parts, L, N)  # every row written by the kernel
        dC_part = torch.empty(batch, G, parts, L, N)
        sync_numba_threads()
        _scan_bwd_kernel(N)(
            u2, dt2, A2, Bt, Ct, D2, gy2, gl2, ckpt, parts, n_blocks,
            du.numpy().reshape(R, L), ddt.numpy().reshape(R, L), dA_part.numpy(),
            dD_part.numpy(), dB_part.numpy(), dC_part.numpy(),
        )  # fmt: skip
        # (batch, G, P, L, N) summed over P -> (batch, G, N, L), in the layout B and C came in:
        # a transposed view for (L, N) inputs (free), else one copy (a leaf's AccumulateGrad
        # would otherwise keep the strided view)
        dB, dC = (_sum_parts(part).transpose(2, 3) for part in (dB_part, dC_part))
        dB, dC = (
            grad if steps_last else grad.contiguous()
            for grad, steps_last in zip((dB, dC), ctx.steps_last, strict=True)
        )
        del ctx.arrays
        dA, dD = torch.empty(dim, N), torch.empty(dim)
        per_block = -(-batch * G * parts // n_blocks)  # as the kernel splits its items
        _sum_blocks_kernel(
            dA_part.numpy(), dD_part.numpy(), batch, G, parts, per_block, dA.numpy(), dD.numpy()
        )  # fmt: skip
        return du, ddt, dA, dB, dC, dD


def step_sizes_cpu(delta: Tensor, bias: Tensor | None, softplus: bool) -> Tensor:
    """softplus(delta + bias) (or without softplus) in one pass, no autograd.

    Args:
        delta: (..., dim, L) CPU tensor. bias: (dim,) or None. softplus: apply softplus.

    Returns:
        float32 tensor of delta's shape.
    """
    dim, L = delta.shape[-2], delta.shape[-1]
    bias = bias.float() if bias is not None else delta.new_zeros(dim, dtype=torch.float32)
    steps = torch.empty(delta.shape)
    _step_sizes_kernel(
        _np(delta).reshape(-1, L), _np(bias), softplus, steps.numpy().reshape(-1, L)
    )  # fmt: skip
    return steps


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
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        if delta_bias is not None:  # autograd differentiates the bias and the softplus
            dt = dt + delta_bias.float()[:, None]  # (D,) -> (D, 1) broadcast over L
        if delta_softplus:
            dt = F.softplus(dt)
    elif delta_bias is not None or delta_softplus:
        dt = step_sizes_cpu(dt, delta_bias, delta_softplus)
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
