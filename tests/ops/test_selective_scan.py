"""The public entry point: shape checks that show the shapes received, backend dispatch."""

from __future__ import annotations

import pytest
import torch

from istd.errors import BackendError, IstdError
from istd.ops import ShapeError, available_backends, selective_scan, selective_scan_ref


def _inputs(batch=2, dim=4, N=3, length=6, groups=None):
    g = torch.Generator().manual_seed(1)
    shape = (batch, N, length) if groups is None else (batch, groups, N, length)
    return dict(
        u=torch.randn(batch, dim, length, generator=g),
        delta=torch.rand(batch, dim, length, generator=g),
        A=-torch.rand(dim, N, generator=g),
        B=torch.randn(*shape, generator=g),
        C=torch.randn(*shape, generator=g),
    )


def test_reference_backend_is_the_oracle() -> None:
    x = _inputs(groups=2)
    y = selective_scan(**x, delta_softplus=True, backend="reference")
    torch.testing.assert_close(y, selective_scan_ref(**x, delta_softplus=True))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (dict(u=torch.randn(2, 4)), "u must be (batch, dim, L)"),
        (dict(delta=torch.rand(2, 4, 5)), "delta must have u's shape"),
        (dict(A=torch.rand(5, 3)), "A must be (dim, N) = (4, N)"),
        (dict(B=torch.randn(2, 3, 5)), "B must be (batch, N, L) = (2, 3, 6)"),
        (dict(C=torch.randn(2, 3, 3, 6)), "C has G=3 groups, which must divide dim=4"),
        (dict(D=torch.randn(3)), "D must be (dim,) = (4,)"),
        (dict(delta_bias=torch.randn(4, 1)), "delta_bias must be (dim,)"),
        (dict(z=torch.randn(2, 4, 5)), "z must have u's shape"),
        (dict(u=torch.zeros(2, 4, 6, dtype=torch.long)), "u must be floating point"),
        (dict(A=torch.randn(4, 3, dtype=torch.complex64)), "A must be floating point"),
    ],
)
def test_bad_shapes_raise_one_error_showing_the_shapes(change: dict, needle: str) -> None:
    x = _inputs()
    x.update(change)
    with pytest.raises(ShapeError) as info:
        selective_scan(**x, backend="reference")
    message = str(info.value)
    assert needle in message
    assert isinstance(info.value, IstdError) and isinstance(info.value, ValueError)


def test_backend_errors_name_the_problem() -> None:
    x = _inputs()
    with pytest.raises(BackendError, match="unknown scan backend 'cuda'"):
        selective_scan(**x, backend="cuda")
    if "triton" not in available_backends():
        with pytest.raises(BackendError, match="triton"):
            selective_scan(**x, backend="triton")


def test_available_backends_always_lists_the_reference() -> None:
    assert available_backends()[0] == "reference"


def test_last_state_is_returned_in_float32() -> None:
    x = _inputs()
    y, last = selective_scan(**x, return_last_state=True, backend="auto")
    assert y.shape == (2, 4, 6) and y.dtype == torch.float32
    assert last.shape == (2, 4, 3) and last.dtype == torch.float32


@pytest.mark.parametrize("name", ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"])
def test_non_tensor_arguments_raise_shape_error_naming_them(name: str) -> None:
    x = _inputs()
    x[name] = [1.0]  # the shapes text read `.shape` of it first: AttributeError
    with pytest.raises(ShapeError, match=f"{name} must be a torch.Tensor, got list"):
        selective_scan(**x, backend="reference")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize(("batch", "dim"), [(0, 4), (2, 0)])
def test_empty_batch_or_dim_is_refused_by_every_backend(backend: str, batch: int, dim: int) -> None:
    # The cpu kernel launch divided by zero while the reference returned an empty result.
    if backend not in available_backends():
        pytest.skip(f"backend {backend} not installed")
    x = _inputs(batch=batch, dim=dim)
    with pytest.raises(ShapeError, match=r"batch, dim, L >= 1 \(received u \(" + f"{batch}, {dim}"):
        selective_scan(**x, backend=backend)
