"""Public selective scan: checks shapes, picks a backend, runs it.

Mamba's S6 scan (Gu and Dao, 2023) with the shapes and semantics of ``mamba_ssm``'s
``selective_scan_fn``. Backends: ``reference`` (plain PyTorch, the oracle), ``cpu`` (fused
Numba kernel), ``triton`` (fused kernel for CUDA tensors) and ``auto`` (by device).
"""

from __future__ import annotations

import warnings

from torch import Tensor

from istd.errors import BackendError
from istd.ops import _availability as avail
from istd.ops._shapes import check_scan_inputs
from istd.ops.scan_reference import selective_scan_ref

BACKENDS = ("auto", "reference", "cpu", "triton")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(backend: str, u: Tensor) -> str:
    """Turn a ``backend=`` argument into the backend that will run on ``u``'s device.

    Args:
        backend: one of ``BACKENDS``.
        u: the input, (B, D, L); only its device is used.

    Returns:
        ``reference``, ``cpu`` or ``triton``.

    Raises:
        BackendError: unknown name, or a backend that cannot run on this device or install.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown scan backend {backend!r}; known: {', '.join(BACKENDS)}")
    device = u.device.type
    if backend == "auto":
        if device == "cuda":
            if avail.HAS_TRITON:
                return "triton"
            _warn_once(
                "auto-cuda",
                "triton is not installed, so the selective scan on CUDA runs the slow reference "
                f"backend ({avail.TRITON_IMPORT_ERROR}); install it with `pip install triton`",
            )
            return "reference"
        if device == "cpu":
            if avail.HAS_NUMBA:
                return "cpu"
            _warn_once(
                "auto-cpu",
                "numba is not installed, so the selective scan on CPU runs the slow reference "
                f"backend ({avail.NUMBA_IMPORT_ERROR}); install it with `pip install numba`",
            )
            return "reference"
        _warn_once(
            f"auto-{device}",
            f"no fused selective-scan kernel for {device} tensors; using the reference backend",
        )
        return "reference"
    if backend == "cpu":
        if not avail.HAS_NUMBA:
            raise BackendError(
                f"scan backend 'cpu' needs numba ({avail.NUMBA_IMPORT_ERROR}); `pip install numba`"
            )
        if device != "cpu":
            raise BackendError(f"scan backend 'cpu' needs CPU tensors, got {u.device}")
    if backend == "triton":
        if not avail.HAS_TRITON:
            raise BackendError(
                f"scan backend 'triton' needs triton ({avail.TRITON_IMPORT_ERROR}); "
                "`pip install triton`"
            )
        if device != "cuda" and not (device == "cpu" and avail.triton_interpreter()):
            raise BackendError(
                f"scan backend 'triton' needs CUDA tensors, got {u.device} "
                "(CPU tensors only under TRITON_INTERPRET=1, for testing)"
            )
    return backend


def selective_scan(
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
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan (Mamba S6), differentiable in every tensor argument.

    ``dt = softplus(delta + delta_bias)`` (softplus only when ``delta_softplus``);
    ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t``; ``y_t = C_t . h_t + D u_t``; the output is
    ``y * silu(z)`` when ``z`` is given. fp16/bf16 inputs are accepted; all scan arithmetic is
    float32.

    Args:
        u: input, (B, D, L), none of them 0 (empty sizes raise ShapeError on every backend).
        delta: time step, (B, D, L).
        A: state matrix diagonal, (D, N), real (negative for a stable scan).
        B: input projection, (B, N, L), or (B, G, N, L) where each group serves a contiguous
            block of ``D // G`` channels.
        C: output projection, same layouts as ``B``.
        D: skip connection, (D,).
        z: gate, (B, D, L).
        delta_bias: added to ``delta``, (D,).
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the state after the last step.
        backend: ``auto`` (``triton`` for CUDA, ``cpu`` for CPU tensors), ``reference``, ``cpu``
            or ``triton``.

    Returns:
        y (B, D, L) float32, and the last state (B, D, N) float32 when ``return_last_state``.

    Raises:
        ShapeError: inputs do not have the shapes above (the message shows those received).
        BackendError: the requested backend cannot run here.

    Example:
        >>> u = torch.randn(2, 8, 100); A = -torch.rand(8, 16)
        >>> y = selective_scan(u, torch.rand(2, 8, 100), A, torch.randn(2, 16, 100),
        ...                    torch.randn(2, 16, 100), delta_softplus=True)
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(backend, u)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "cpu":
        from istd.ops.scan_cpu import selective_scan_cpu

        return selective_scan_cpu(*args)
    if name == "triton":
        try:
            from istd.ops.triton.scan import selective_scan_triton
        except ImportError as exc:
            raise BackendError(f"scan backend 'triton' failed to import ({exc})") from exc
        return selective_scan_triton(*args)
    return selective_scan_ref(*args)
