"""The fused Triton backend against the reference.

On a machine without CUDA these run under ``TRITON_INTERPRET=1`` (set here, before the kernels
are first imported) on small shapes, because the interpreter is slow.
"""

from __future__ import annotations

import pytest
import torch

from istd.ops import _availability

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(not _availability.HAS_TRITON, reason="triton not installed"),
]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    if DEVICE == "cpu":
        # triton decides to interpret when kernels are decorated, i.e. when it and our
        # kernels are first imported: that must happen with the variable set
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        from triton.runtime.interpreter import InterpretedFunction

        from istd.ops.triton import scan_fwd

        if not isinstance(scan_fwd._affine_combine, InterpretedFunction):
            pytest.skip("triton was imported before TRITON_INTERPRET=1 was set in this process")


@pytest.mark.parametrize("L", [1, 2, 7, 64])
@pytest.mark.parametrize("groups", [None, 3])
def test_matches_reference_short(scan_inputs, scan_check, L: int, groups) -> None:
    # dim 6 and N 5 are multiples of no block size
    scan_check("triton", scan_inputs(2, 6, 5, L, groups, seed=L), device=DEVICE)


@pytest.mark.parametrize("L", [1000, 4099])
def test_matches_reference_long(scan_inputs, scan_check, L: int) -> None:
    scan_check("triton", scan_inputs(1, 3, 4, L, groups=3, seed=L), device=DEVICE)


@pytest.mark.parametrize(
    ("groups", "options", "softplus"),
    [
        (None, dict(D=False, z=False, bias=False), False),
        (2, dict(D=True, z=False, bias=True), True),
        (1, dict(D=False, z=True, bias=False), True),
    ],
)
def test_optional_inputs(scan_inputs, scan_check, groups, options, softplus) -> None:
    x = scan_inputs(2, 4, 16, 40, groups, **options)
    if not softplus:  # keep dt positive without the softplus
        x["delta"] = x["delta"].abs() * 0.1
    scan_check("triton", x, softplus=softplus, last_state=softplus, device=DEVICE)


def test_mixed_grouping_and_half_inputs(scan_inputs, scan_check) -> None:
    x = scan_inputs(1, 6, 8, 20, groups=2)
    x["C"] = torch.randn(1, 3, 8, 20, dtype=torch.float64)
    scan_check("triton", x, device=DEVICE)
    scan_check("triton", x, device=DEVICE, prepare=lambda t: t.to(torch.float16), grad_tol=2e-3)


def test_auto_never_picks_triton_for_cpu_tensors(scan_inputs) -> None:
    from istd.ops.selective_scan import resolve_backend

    assert resolve_backend("auto", torch.zeros(1, 1, 1)) != "triton"
    if DEVICE == "cuda":
        assert resolve_backend("auto", torch.zeros(1, 1, 1, device="cuda")) == "triton"
