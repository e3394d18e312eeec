"""Triton forward selective scan: discretisation, chunked scan, C contraction, D skip, z gate.

Gu and Dao, "Mamba" (2023). One program owns a block of channels of one (batch, group) and
walks L in chunks of ``CHUNK`` steps. Inside a chunk the recurrence ``h_t = a_t h_{t-1} + b_t``
is solved with ``tl.associative_scan`` over the affine maps (a, b), whose composition is
associative; the state entering the chunk is added through the cumulative product of the
decays. The state lives in float32 registers; between chunks only (BLOCK_D, N) is carried.
When gradients are needed, the state entering every chunk is written out (L / CHUNK of them,
not L), and the backward recomputes each chunk's states from it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

CHUNK = 32  # steps per chunk: a power of two (tl.associative_scan), small enough for registers


@triton.jit
def _affine_combine(a_left, b_left, a_right, b_right):
    # (h -> a_left h + b_left) followed by (h -> a_right h + b_right)
    return a_left * a_right, b_left * a_right + b_right


@triton.jit
def _softplus(x):
    # log1p(exp(x)) without log1p: a 3-term series where exp(x) is small (log(1 + e) would
    # lose the digits of e), the identity above 20 as in torch.nn.functional.softplus
    e = tl.exp(tl.minimum(x, 20.0))
    series = e * (1.0 - e * (0.5 - e * (1.0 / 3.0)))
    return tl.where(x > 20.0, x, tl.where(x < -5.0, series, tl.log(1.0 + e)))


@triton.heuristics(
    {
        "HAS_D": lambda args: args["D"] is not None,
        "HAS_Z": lambda args: args["z"] is not None,
        "HAS_BIAS": lambda args: args["delta_bias"] is not None,
        "SAVE_STATES": lambda args: args["states"] is not None,
    }
)
@triton.jit
def _scan_fwd_kernel(
    u, delta, A, B, C, D, z, delta_bias, out, last, states,
    L, dim, per_group, G, N, n_chunks,
    s_u_b, s_u_d, s_u_l, s_dt_b, s_dt_d, s_dt_l, s_z_b, s_z_d, s_z_l,
    s_a_d, s_a_n, s_b_b, s_b_g, s_b_n, s_b_l, s_c_b, s_c_g, s_c_n, s_c_l,
    SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SAVE_STATES: tl.constexpr,
):  # fmt: skip
    pid_bg = tl.program_id(0)
    b = pid_bg // G
    g = pid_bg % G
    d_in_group = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = d_in_group < per_group
    offs_d = g * per_group + d_in_group  # (BLOCK_D,) channel ids
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    # padded state lanes get A = 0 and B = C = 0: their state stays 0 and adds nothing
    A_dn = tl.load(A + offs_d[:, None] * s_a_d + offs_n[None, :] * s_a_n, mask=mask_dn, other=0.0)
    A_dn = A_dn.to(tl.float32)  # (BLOCK_D, BLOCK_N)
    if HAS_BIAS:
        bias = tl.load(delta_bias + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_D:
        skip = tl.load(D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    rows = b * dim + offs_d  # (BLOCK_D,) row of the (batch * dim, ...) outputs
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for c in range(0, n_chunks):
        if SAVE_STATES:
            s_ptr = states + (rows[:, None] * n_chunks + c) * N + offs_n[None, :]
            tl.store(s_ptr, h, mask=mask_dn)
        offs_t = c * CHUNK + tl.arange(0, CHUNK)
        mask_t = offs_t < L
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        x = tl.load(
            u + b * s_u_b + offs_d[:, None] * s_u_d + offs_t[None, :] * s_u_l,
            mask=mask_dt,
            other=0.0,
        ).to(tl.float32)  # (BLOCK_D, CHUNK)
        dt = tl.load(
            delta + b * s_dt_b + offs_d[:, None] * s_dt_d + offs_t[None, :] * s_dt_l,
            mask=mask_dt,
            other=0.0,
        ).to(tl.float32)  # (BLOCK_D, CHUNK)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(mask_dt, dt, 0.0)  # steps past L: decay 1, drive 0, the state passes
        Bc = tl.load(
            B + b * s_b_b + g * s_b_g + offs_n[:, None] * s_b_n + offs_t[None, :] * s_b_l,
            mask=mask_nt,
            other=0.0,
        ).to(tl.float32)  # (BLOCK_N, CHUNK)
        Cc = tl.load(
            C + b * s_c_b + g * s_c_g + offs_n[:, None] * s_c_n + offs_t[None, :] * s_c_l,
            mask=mask_nt,
            other=0.0,
        ).to(tl.float32)  # (BLOCK_N, CHUNK)
        decay = tl.exp(dt[:, None, :] * A_dn[:, :, None])  # (BLOCK_D, BLOCK_N, CHUNK)
        drive = (dt * x)[:, None, :] * Bc[None, :, :]  # (BLOCK_D, BLOCK_N, CHUNK)
        decay_prod, hs = tl.associative_scan((decay, drive), 2, _affine_combine)
        hs = hs + decay_prod * h[:, :, None]  # add the state entering the chunk
        y = tl.sum(hs * Cc[None, :, :], axis=1)  # (BLOCK_D, CHUNK)
        if HAS_D:
            y = y + skip[:, None] * x
        if HAS_Z:
            zz = tl.load(
                z + b * s_z_b + offs_d[:, None] * s_z_d + offs_t[None, :] * s_z_l,
                mask=mask_dt,
                other=0.0,
            ).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(out + rows[:, None] * L + offs_t[None, :], y, mask=mask_dt)
        is_last = tl.arange(0, CHUNK)[None, None, :] == CHUNK - 1
        h = tl.sum(tl.where(is_last, hs, 0.0), axis=2)  # (BLOCK_D, BLOCK_N) state after chunk
    tl.store(last + rows[:, None] * N + offs_n[None, :], h, mask=mask_dn)


def block_sizes(N: int, per_group: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_N): all N state lanes in one block; BLOCK_D keeps the
    (BLOCK_D, BLOCK_N, CHUNK) tiles at about 4096 float32 values."""
    block_n = triton.next_power_of_2(N)
    block_d = max(1, min(16, triton.next_power_of_2(per_group), 4096 // (block_n * CHUNK)))
    return block_d, block_n


def _scan_fwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    save_states: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Launch the forward kernel.

    Args:
        u, delta, z: (batch, dim, L); A: (dim, N); B, C: (batch, G, N, L) with one G for both;
        D, delta_bias: (dim,). Any dtype and strides; arithmetic is float32.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        save_states: also return the state entering every chunk, for the backward.

    Returns:
        out (batch, dim, L) float32, last state (batch, dim, N) float32, and the chunk states
        (batch, dim, ceil(L / CHUNK), N) float32 or None.
    """
    batch, dim, L = u.shape
    N, G = A.shape[1], B.shape[1]
    assert B.shape == C.shape == (batch, G, N, L), (tuple(B.shape), tuple(C.shape))
    per_group = dim // G
    n_chunks = triton.cdiv(L, CHUNK)
    out = torch.empty(batch, dim, L, device=u.device, dtype=torch.float32)
    last = torch.empty(batch, dim, N, device=u.device, dtype=torch.float32)
    states = None
    if save_states:
        states = torch.empty(batch, dim, n_chunks, N, device=u.device, dtype=torch.float32)
    block_d, block_n = block_sizes(N, per_group)
    zs = z.stride() if z is not None else (0, 0, 0)
    grid = (batch * G, triton.cdiv(per_group, block_d))
    _scan_fwd_kernel[grid](
        u, delta, A, B, C, D, z, delta_bias, out, last, states,
        L, dim, per_group, G, N, n_chunks,
        *u.stride(), *delta.stride(), *zs, *A.stride(), *B.stride(), *C.stride(),
        SOFTPLUS=delta_softplus, BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=CHUNK,
    )  # fmt: skip
    return out, last, states
