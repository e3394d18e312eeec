"""Autograd wrapper joining the Triton forward and backward selective-scan kernels."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from istd.ops.triton.scan_bwd import _scan_bwd
from istd.ops.triton.scan_fwd import _scan_fwd


def _as_groups(M: Tensor, groups: int) -> Tensor:
    """(B, N, L) or (B, G', N, L) -> (B, groups, N, L), a view where possible."""
    if M.dim() == 3:
        M = M.unsqueeze(1)  # (B, N, L) -> (B, 1, N, L)
    if M.shape[1] == groups:
        return M
    if M.shape[1] == 1:
        return M.expand(-1, groups, -1, -1)  # stride 0 over groups: no copy
    return M.repeat_interleave(groups // M.shape[1], dim=1)  # (B, G', N, L) -> (B, G, N, L)


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool):
        # u, delta, z (batch, dim, L); A (dim, N); B, C (batch, G, N, L); D, delta_bias (dim,)
        save = any(ctx.needs_input_grad)
        out, last, states = _scan_fwd(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states=save
        )
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
            ctx.delta_softplus = delta_softplus
        return out, last

    @staticmethod
    def backward(ctx, gout: Tensor | None, glast: Tensor | None):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        if gout is None:
            gout = torch.zeros(u.shape, device=u.device, dtype=torch.float32)
        grads = _scan_bwd(
            u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, states, gout, glast
        )
        inputs = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z}
        inputs["delta_bias"] = delta_bias
        # gradients come back in each input's dtype
        out = [
            grads[k].to(t.dtype) if t is not None and k in grads else None
            for k, t in inputs.items()
        ]
        return (*out, None)


def selective_scan_triton(
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
    """Selective scan with the fused Triton kernels (shapes are not re-checked).

    Args: as :func:`istd.ops.selective_scan` (which validates them and calls this).

    Returns:
        y (B, D, L) float32, and the last state (B, D, N) float32 when ``return_last_state``.
    """
    groups = math.lcm(B.shape[1] if B.dim() == 4 else 1, C.shape[1] if C.dim() == 4 else 1)
    B4, C4 = _as_groups(B, groups), _as_groups(C, groups)  # (batch, G, N, L)
    out, last = _SelectiveScanTriton.apply(u, delta, A, B4, C4, D, z, delta_bias, delta_softplus)
    return (out, last) if return_last_state else out
