"""Triton backward selective scan: recomputes each chunk's states, then scans the adjoint back.

Per chunk, walked from the last to the first: the states are recomputed from the state the
forward saved at the chunk start (nothing of size L x N was stored), the output before the gate
is rebuilt for the ``z`` gradient, and the adjoint ``lam_t = dLoss/dh_t`` solves the reverse
recurrence ``lam_t = gy_t C_t + exp(dt_{t+1} A) lam_{t+1}`` with a reverse
``tl.associative_scan``; ``lam`` entering the previous chunk is carried in registers. With
``exp(dt_t A) h_{t-1} = h_t - dt_t B_t u_t`` no shifted state is needed:

- dA += sum_t lam_t dt_t (h_t - dt_t B_t u_t)
- d(dt_t) = sum_n lam_t (A (h_t - dt_t B_t u_t) + B_t u_t)
- du_t = dt_t sum_n lam_t B_t + D gy_t;  dB_t = sum_d lam_t dt_t u_t;  dC_t = sum_d gy_t h_t

dB and dC are shared by the channels of a group, which several programs handle: each program
writes its own partial (no atomics, so results are reproducible) and the caller sums them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from istd.ops.triton.scan_fwd import CHUNK, _affine_combine, _softplus, block_sizes


@triton.heuristics(
    {
        "HAS_D": lambda args: args["D"] is not None,
        "HAS_Z": lambda args: args["z"] is not None,
        "HAS_BIAS": lambda args: args["delta_bias"] is not None,
        "HAS_GLAST": lambda args: args["glast"] is not None,
    }
)
@triton.jit
def _scan_bwd_kernel(
    u, delta, A, B, C, D, z, delta_bias, gout, glast, states,
    du, ddelta, dz, dA_part, dD_part, dbias_part, dB_part, dC_part,
    L, dim, per_group, G, N, n_chunks, n_dblocks,
    s_u_b, s_u_d, s_u_l, s_dt_b, s_dt_d, s_dt_l, s_z_b, s_z_d, s_z_l,
    s_a_d, s_a_n, s_b_b, s_b_g, s_b_n, s_b_l, s_c_b, s_c_g, s_c_n, s_c_l,
    SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_GLAST: tl.constexpr,
):  # fmt: skip
    pid_bg = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = pid_bg // G
    g = pid_bg % G
    d_in_group = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = d_in_group < per_group
    offs_d = g * per_group + d_in_group  # (BLOCK_D,)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A_dn = tl.load(A + offs_d[:, None] * s_a_d + offs_n[None, :] * s_a_n, mask=mask_dn, other=0.0)
    A_dn = A_dn.to(tl.float32)  # (BLOCK_D, BLOCK_N)
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(delta_bias + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    skip = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        skip = tl.load(D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    rows = b * dim + offs_d  # (BLOCK_D,)
    lam_next = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # lam at the next chunk's start
    if HAS_GLAST:
        lam_next = tl.load(glast + rows[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    part = (b * G + g) * n_dblocks + pid_d  # this program's dB / dC partial
    for k in range(0, n_chunks):
        c = n_chunks - 1 - k
        offs_t = c * CHUNK + tl.arange(0, CHUNK)
        mask_t = offs_t < L
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        u_off = b * s_u_b + offs_d[:, None] * s_u_d + offs_t[None, :] * s_u_l
        x = tl.load(u + u_off, mask=mask_dt, other=0.0).to(tl.float32)  # (BLOCK_D, CHUNK)
        dt_off = b * s_dt_b + offs_d[:, None] * s_dt_d + offs_t[None, :] * s_dt_l
        pre = tl.load(delta + dt_off, mask=mask_dt, other=0.0).to(tl.float32) + bias[:, None]
        dt = pre
        if SOFTPLUS:
            dt = _softplus(pre)
        dt = tl.where(mask_dt, dt, 0.0)
        # dt one step ahead, for the decay that carries lam_{t+1} back to step t
        mask_next = mask_d[:, None] & (offs_t[None, :] + 1 < L)
        pre_next = tl.load(delta + dt_off + s_dt_l, mask=mask_next, other=0.0).to(tl.float32)
        pre_next = pre_next + bias[:, None]
        dt_next = pre_next
        if SOFTPLUS:
            dt_next = _softplus(pre_next)
        dt_next = tl.where(mask_next, dt_next, 0.0)  # past the end: decay 1, lam passes
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
        # recompute the chunk's states from the saved chunk-start state
        h0 = tl.load(
            states + (rows[:, None] * n_chunks + c) * N + offs_n[None, :], mask=mask_dn, other=0.0
        )  # (BLOCK_D, BLOCK_N)
        decay = tl.exp(dt[:, None, :] * A_dn[:, :, None])  # (BLOCK_D, BLOCK_N, CHUNK)
        drive = (dt * x)[:, None, :] * Bc[None, :, :]  # (BLOCK_D, BLOCK_N, CHUNK)
        decay_prod, hs = tl.associative_scan((decay, drive), 2, _affine_combine)
        hs = hs + decay_prod * h0[:, :, None]
        go_off = rows[:, None] * L + offs_t[None, :]
        gy = tl.load(gout + go_off, mask=mask_dt, other=0.0).to(tl.float32)  # (BLOCK_D, CHUNK)
        if HAS_Z:
            zz = tl.load(
                z + b * s_z_b + offs_d[:, None] * s_z_d + offs_t[None, :] * s_z_l,
                mask=mask_dt,
                other=0.0,
            ).to(tl.float32)
            sig = tl.sigmoid(zz)
            y = tl.sum(hs * Cc[None, :, :], axis=1) + skip[:, None] * x  # before the gate
            tl.store(dz + go_off, gy * y * sig * (1.0 + zz * (1.0 - sig)), mask=mask_dt)
            gy = gy * zz * sig
        # adjoint: reverse scan of lam_t = gy_t C_t + exp(dt_{t+1} A) lam_{t+1}
        decay_next = tl.exp(dt_next[:, None, :] * A_dn[:, :, None])  # (BLOCK_D, BLOCK_N, CHUNK)
        src = gy[:, None, :] * Cc[None, :, :]  # (BLOCK_D, BLOCK_N, CHUNK)
        carry_prod, lam = tl.associative_scan((decay_next, src), 2, _affine_combine, reverse=True)
        lam = lam + carry_prod * lam_next[:, :, None]
        is_first = tl.arange(0, CHUNK)[None, None, :] == 0
        lam_next = tl.sum(tl.where(is_first, lam, 0.0), axis=2)
        h_prev_decayed = hs - drive  # exp(dt_t A) h_{t-1}
        dA_acc += tl.sum(lam * h_prev_decayed * dt[:, None, :], axis=2)
        s_b = tl.sum(lam * Bc[None, :, :], axis=1)  # (BLOCK_D, CHUNK)
        d_dt = tl.sum(lam * h_prev_decayed * A_dn[:, :, None], axis=1) + x * s_b
        d_pre = d_dt
        if SOFTPLUS:
            d_pre = d_dt * tl.sigmoid(pre)
        d_pre = tl.where(mask_dt, d_pre, 0.0)
        tl.store(du + go_off, dt * s_b + skip[:, None] * gy, mask=mask_dt)
        tl.store(ddelta + go_off, d_pre, mask=mask_dt)
        dD_acc += tl.sum(gy * x, axis=1)
        dbias_acc += tl.sum(d_pre, axis=1)
        part_off = (part * N + offs_n[:, None]) * L + offs_t[None, :]  # (BLOCK_N, CHUNK)
        dBc = tl.sum(lam * (dt * x)[:, None, :], axis=0)  # (BLOCK_N, CHUNK)
        tl.store(dB_part + part_off, dBc, mask=mask_nt)
        dCc = tl.sum(hs * gy[:, None, :], axis=0)  # (BLOCK_N, CHUNK)
        tl.store(dC_part + part_off, dCc, mask=mask_nt)
    tl.store(dA_part + rows[:, None] * N + offs_n[None, :], dA_acc, mask=mask_dn)
    tl.store(dD_part + rows, dD_acc, mask=mask_d)
    tl.store(dbias_part + rows, dbias_acc, mask=mask_d)


def _scan_bwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    states: Tensor,
    gout: Tensor,
    glast: Tensor | None,
) -> dict[str, Tensor]:
    """Launch the backward kernel and reduce the partial gradients.

    Args:
        u, delta, A, B, C, D, z, delta_bias, delta_softplus: as given to ``_scan_fwd``.
        states: (batch, dim, ceil(L / CHUNK), N) chunk-start states from ``_scan_fwd``.
        gout: gradient of the output, (batch, dim, L).
        glast: gradient of the last state, (batch, dim, N), or None.

    Returns:
        float32 gradients keyed ``u, delta, A, B, C`` and, where the input was given,
        ``D, z, delta_bias``; B and C as (batch, G, N, L).
    """
    batch, dim, L = u.shape
    N, G = A.shape[1], B.shape[1]
    per_group = dim // G
    n_chunks = triton.cdiv(L, CHUNK)
    block_d, block_n = block_sizes(N, per_group)
    n_dblocks = triton.cdiv(per_group, block_d)
    f32 = dict(device=u.device, dtype=torch.float32)
    grads = {
        "u": torch.empty(batch, dim, L, **f32),
        "delta": torch.empty(batch, dim, L, **f32),
        "z": torch.empty(batch, dim, L, **f32) if z is not None else None,
    }
    dA_part = torch.empty(batch, dim, N, **f32)
    dD_part = torch.empty(batch, dim, **f32)
    dbias_part = torch.empty(batch, dim, **f32)
    dB_part = torch.empty(batch, G, n_dblocks, N, L, **f32)
    dC_part = torch.empty(batch, G, n_dblocks, N, L, **f32)
    gout = gout.contiguous()  # indexed as (batch * dim, L) rows
    glast = glast.contiguous() if glast is not None else None
    zs = z.stride() if z is not None else (0, 0, 0)
    grid = (batch * G, n_dblocks)
    _scan_bwd_kernel[grid](
        u, delta, A, B, C, D, z, delta_bias, gout, glast, states,
        grads["u"], grads["delta"], grads["z"], dA_part, dD_part, dbias_part, dB_part, dC_part,
        L, dim, per_group, G, N, n_chunks, n_dblocks,
        *u.stride(), *delta.stride(), *zs, *A.stride(), *B.stride(), *C.stride(),
        SOFTPLUS=delta_softplus, BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=CHUNK,
    )  # fmt: skip
    grads["A"] = dA_part.sum(0)  # (batch, dim, N) -> (dim, N)
    grads["B"] = dB_part.sum(2)  # (batch, G, blocks, N, L) -> (batch, G, N, L)
    grads["C"] = dC_part.sum(2)
    if D is not None:
        grads["D"] = dD_part.sum(0)  # (batch, dim) -> (dim,)
    if delta_bias is not None:
        grads["delta_bias"] = dbias_part.sum(0)
    return grads
