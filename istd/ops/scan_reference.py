"""Plain PyTorch selective scan (Mamba's S6): the oracle every fast backend is tested against.

Gu and Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023). The
semantics follow ``selective_scan_ref`` of the reference ``mamba_ssm`` package: a discretised
diagonal state-space recurrence run step by step. It is written for clarity, not speed: it
materialises the (B, D, L, N) discretised tensors and loops over L in Python.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _expand_groups(M: Tensor, dim: int) -> Tensor:
    """Give every channel its own copy of an input-dependent B or C.

    Args:
        M: (B, N, L) shared by all channels, or (B, G, N, L) with ``dim % G == 0``.
        dim: number of channels D.

    Returns:
        (B, D, N, L): contiguous blocks of ``dim // G`` channels share one group.
    """
    if M.dim() == 3:
        return M.unsqueeze(1).expand(-1, dim, -1, -1)  # (B, N, L) -> (B, D, N, L)
    return M.repeat_interleave(dim // M.shape[1], dim=1)  # (B, G, N, L) -> (B, D, N, L)


def selective_scan_ref(
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
    """Run the selective scan step by step in PyTorch.

    ``dt = softplus(delta + delta_bias)`` (softplus only when ``delta_softplus``);
    ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t``; ``y_t = C_t . h_t + D u_t``; the output is
    ``y * silu(z)`` when ``z`` is given. Arithmetic is float32 (float64 when the inputs are
    float64, which the tests use as a high-precision oracle). Shapes are not validated here;
    :func:`istd.ops.selective_scan` does that.

    Args:
        u: input, (B, D, L).
        delta: time step before bias/softplus, (B, D, L).
        A: state matrix diagonal, (D, N), real.
        B: input projection, (B, N, L) or grouped (B, G, N, L).
        C: output projection, (B, N, L) or grouped (B, G, N, L).
        D: skip connection, (D,).
        z: gate, (B, D, L).
        delta_bias: added to delta, (D,).
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the state after the last step.

    Returns:
        y (B, D, L) in float32 (float64 for float64 inputs), and the last state (B, D, N) when
        ``return_last_state``.

    Example:
        >>> u = torch.randn(1, 4, 10); A = -torch.rand(4, 8)
        >>> y = selective_scan_ref(u, torch.rand(1, 4, 10), A, torch.randn(1, 8, 10),
        ...                        torch.randn(1, 8, 10))
    """
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, _ = u.shape
    u = u.to(compute)
    dt = delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[:, None]  # (D,) -> (D, 1) broadcast over L
    if delta_softplus:
        dt = F.softplus(dt)
    A = A.to(compute)
    Bx = _expand_groups(B.to(compute), dim)  # (B, D, N, L)
    Cx = _expand_groups(C.to(compute), dim)  # (B, D, N, L)

    decay = torch.exp(dt.unsqueeze(2) * A[None, :, :, None])  # (B, D, N, L)
    drive = (dt * u).unsqueeze(2) * Bx  # (B, D, N, L)

    h = u.new_zeros(batch, dim, A.shape[1])  # (B, D, N)
    ys = []
    # unbind once: indexing [..., t] inside the loop would make autograd build a full-size
    # gradient per step (quadratic in L)
    for decay_t, drive_t, C_t in zip(
        decay.unbind(-1), drive.unbind(-1), Cx.unbind(-1), strict=True
    ):
        h = decay_t * h + drive_t  # (B, D, N)
        ys.append((h * C_t).sum(-1))  # (B, D)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)  # (B, D, L)

    if D is not None:
        y = y + D.to(compute)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(compute))
    return (y, h) if return_last_state else y
