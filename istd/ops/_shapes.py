"""Shape checks shared by the scan entry points; errors show the shapes received."""

from __future__ import annotations

from torch import Tensor

from istd.errors import IstdError


class ShapeError(IstdError, ValueError):
    """A tensor given to an ``istd.ops`` function has the wrong shape or dtype.

    It is also a ``ValueError`` so that generic callers can catch it as one.
    """


def check_scan_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
) -> None:
    """Raise :class:`ShapeError` unless the inputs have mamba_ssm's selective-scan shapes.

    Args: as :func:`istd.ops.selective_scan`.
    """

    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z}
    tensors["delta_bias"] = delta_bias
    required = ("u", "delta", "A", "B", "C")
    # Types first: the shapes text below reads `.shape` of every argument.
    for name, t in tensors.items():
        if t is None and name not in required:
            continue
        if not isinstance(t, Tensor):
            raise ShapeError(
                f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}"
            )

    def shape(t: Tensor | None) -> str:
        return "None" if t is None else str(tuple(t.shape))

    received = (
        f"(received u {shape(u)}, delta {shape(delta)}, A {shape(A)}, B {shape(B)}, "
        f"C {shape(C)}, D {shape(D)}, z {shape(z)}, delta_bias {shape(delta_bias)})"
    )
    for name, t in tensors.items():
        if t is not None and not t.is_floating_point():
            raise ShapeError(
                f"selective_scan: {name} must be floating point, got {t.dtype} {received}"
            )
    # Empty sizes are refused for every backend alike (the fused kernels cannot launch on them).
    if u.dim() != 3 or min(u.shape) < 1:
        raise ShapeError(
            f"selective_scan: u must be (batch, dim, L) with batch, dim, L >= 1 {received}"
        )
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ShapeError(f"selective_scan: delta must have u's shape (batch, dim, L) {received}")
    if z is not None and z.shape != u.shape:
        raise ShapeError(f"selective_scan: z must have u's shape (batch, dim, L) {received}")
    if A.dim() != 2 or A.shape[0] != dim or A.shape[1] < 1:
        raise ShapeError(f"selective_scan: A must be (dim, N) = ({dim}, N) {received}")
    N = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        if M.dim() == 3 and tuple(M.shape) == (batch, N, length):
            continue
        if M.dim() == 4 and tuple(M.shape[::2]) == (batch, N) and M.shape[3] == length:
            groups = M.shape[1]
            if groups >= 1 and dim % groups == 0:
                continue
            raise ShapeError(
                f"selective_scan: {name} has G={groups} groups, which must divide dim={dim} {received}"
            )
        raise ShapeError(
            f"selective_scan: {name} must be (batch, N, L) = ({batch}, {N}, {length}) or "
            f"(batch, G, N, L) with dim % G == 0 {received}"
        )
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and tuple(v.shape) != (dim,):
            raise ShapeError(f"selective_scan: {name} must be (dim,) = ({dim},) {received}")
    devices = {t.device for t in tensors.values() if t is not None}
    if len(devices) > 1:
        raise ShapeError(
            f"selective_scan: all tensors must be on one device, got {sorted(map(str, devices))}"
        )
