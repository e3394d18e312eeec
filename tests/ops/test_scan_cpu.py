"""The fused Numba `cpu` backend against the reference: outputs, last state, every gradient."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from istd.ops import available_backends, selective_scan, selective_scan_ref

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="numba not installed")


@pytest.mark.parametrize("L", [1, 2, 7, 64, 1000, 4099])
@pytest.mark.parametrize("groups", [None, 3])
def test_matches_reference_for_all_lengths(scan_inputs, scan_check, L: int, groups) -> None:
    # dim 6 and N 5 are multiples of no block or lane width
    scan_check("cpu", scan_inputs(2, 6, 5, L, groups, seed=L))


@pytest.mark.parametrize(("batch", "dim", "groups", "parts"), [(1, 5, None, 4), (33, 4, 2, 1)])
def test_kernels_write_every_output_row(scan_inputs, monkeypatch, batch, dim, groups, parts):
    """Outputs are allocated uninitialised: fill them with NaN and expect none to survive.

    One batch entry and 5 channels make 4 backward parts of 2 channels, the last past the
    group's channels (its dB/dC rows are summed with the others). 33 x 2 items in 64 blocks
    make blocks of two items, one of them holding the last item of group 0 and the first of
    group 1 (each block zeroes the dA/dD rows of the channels it works on, and only those are
    summed)."""
    from istd.ops import scan_cpu

    x = scan_inputs(batch, dim, 4, 600 if batch == 1 else 20, groups, seed=5)
    x = {k: v.float() for k, v in x.items() if v is not None}
    assert scan_cpu._backward_parts(batch, groups or 1, dim // (groups or 1)) == parts
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    y, last = selective_scan_ref(**leaves, delta_softplus=True, return_last_state=True)
    (y.square().sum() + last.sum()).backward()
    want = [v.grad for v in leaves.values()]

    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    y, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend="cpu")
    (y.square().sum() + last.sum()).backward()
    for name, got, ref in zip(leaves, (v.grad for v in leaves.values()), want, strict=True):
        assert torch.isfinite(got).all(), name
        assert (got - ref).abs().max() <= 1e-3 * ref.abs().max(), name


def test_last_state_gradient_crosses_chunks(scan_inputs, scan_check) -> None:
    # three channels a group: a pair and a lone channel (the kernel's dummy), over 3 chunks
    scan_check("cpu", scan_inputs(2, 9, 4, 1100, groups=3, seed=3), softplus=True, last_state=True)


@pytest.mark.parametrize(
    ("groups", "options"),
    [
        (None, dict(D=False, z=False, bias=False)),
        (1, dict(D=True, z=False, bias=True)),
        (2, dict(D=False, z=True, bias=False)),
        (6, dict(D=True, z=True, bias=True)),
    ],
)
@pytest.mark.parametrize("softplus", [False, True])
def test_optional_inputs_and_groupings(scan_inputs, scan_check, groups, options, softplus) -> None:
    x = scan_inputs(3, 6, 16, 130, groups, **options)
    if not softplus:  # keep dt positive without the softplus
        x["delta"] = x["delta"].abs() * 0.1
        if x["delta_bias"] is not None:
            x["delta_bias"] = torch.nn.functional.softplus(x["delta_bias"])
    scan_check("cpu", x, softplus=softplus, last_state=softplus)


def test_mixed_grouping_of_B_and_C(scan_inputs, scan_check) -> None:
    x = scan_inputs(2, 6, 4, 33, groups=2)
    x["C"] = torch.randn(2, 3, 4, 33, dtype=torch.float64)
    scan_check("cpu", x)


@pytest.mark.parametrize(("dtype", "grad_tol"), [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_half_precision_inputs_compute_in_float32(scan_inputs, scan_check, dtype, grad_tol) -> None:
    # the reference sees the same rounded values, so the forward still meets 1e-4; gradients
    # are rounded back to the input dtype, hence the per-dtype gradient tolerance
    x = scan_inputs(2, 4, 16, 50, groups=2)
    scan_check("cpu", x, prepare=lambda t: t.to(dtype), grad_tol=grad_tol)


@pytest.mark.parametrize("layout", ["ln", "gnbl", "expanded"])
def test_B_and_C_in_any_memory_layout(scan_inputs, scan_check, layout: str) -> None:
    # SS2D passes B, C as einsum returns them; the kernel must read any strides, forward and
    # backward (its dB, dC come back as transposed views)
    def prepare(t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        if t.dim() != 4:  # only B and C are (batch, G, N, L)
            return t
        if layout == "ln":  # (batch, G, L, N) memory, as SS2D builds it
            return t.transpose(2, 3).contiguous().transpose(2, 3)
        if layout == "gnbl":  # (G, N, batch, L) memory, what a per-group bmm returns
            return t.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)
        return t[:, :1].expand_as(t)  # a stride-0 group axis (not a leaf-like layout)

    scan_check("cpu", scan_inputs(5, 8, 16, 37, groups=4), prepare=prepare)


def test_huge_batch_of_short_sequences(scan_inputs, scan_check) -> None:
    # MiM-ISTD's inner (word) scan: many sentences of L = 16
    scan_check("cpu", scan_inputs(300, 8, 16, 16, groups=4))


def test_same_inputs_give_identical_results(scan_inputs) -> None:
    # also across thread counts: the work split depends on the shapes only
    x = scan_inputs(2, 8, 16, 300, groups=2)
    runs = []
    threads = torch.get_num_threads()
    for n_threads in (1, 2, threads):
        torch.set_num_threads(n_threads)
        leaves = {k: v.float().requires_grad_() for k, v in x.items() if v is not None}
        y, last = selective_scan(
            **leaves, delta_softplus=True, return_last_state=True, backend="cpu"
        )
        (y.square().sum() + last.sum()).backward()
        runs.append([y.detach(), last.detach(), *(v.grad for v in leaves.values())])
    torch.set_num_threads(threads)
    for run in runs[1:]:
        for a, b in zip(runs[0], run, strict=True):
            assert torch.equal(a, b)


def test_auto_picks_cpu_for_cpu_tensors(scan_inputs) -> None:
    x = {k: v.float() for k, v in scan_inputs(1, 4, 8, 20).items() if v is not None}
    torch.testing.assert_close(
        selective_scan(**x, delta_softplus=True, backend="auto"),
        selective_scan(**x, delta_softplus=True, backend="cpu"),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("softplus", [False, True])
@pytest.mark.parametrize("steps_last", [False, True])
def test_no_grad_forward_matches(scan_inputs, bias: bool, softplus: bool, steps_last) -> None:
    # without autograd the kernel adds delta_bias and applies softplus itself, and reads B, C
    # without a copy when they are transposed views of (..., L, N) tensors
    x = scan_inputs(2, 5, 16, 200, groups=5 if steps_last else None, bias=bias, seed=7)
    x = {k: v.float() for k, v in x.items() if v is not None}
    if not softplus:  # keep dt positive without the softplus
        x["delta"] = x["delta"].abs() * 0.1
        if bias:
            x["delta_bias"] = torch.nn.functional.softplus(x["delta_bias"])
    if steps_last:
        x["B"], x["C"] = (
            t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (x["B"], x["C"])
        )
    with torch.no_grad():
        y = selective_scan(**x, delta_softplus=softplus, backend="cpu")
    want = selective_scan_ref(**x, delta_softplus=softplus)
    assert (y - want).abs().max() <= 1e-4 * want.abs().max()


@pytest.mark.slow
def test_very_long_sequence_is_finite_and_matches(scan_inputs) -> None:
    L = 65_536
    x = {k: v.float() for k, v in scan_inputs(1, 4, 16, L, groups=2).items() if v is not None}
    leaves = {k: v.requires_grad_() for k, v in x.items()}
    y, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend="cpu")
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    (y.sum() + last.sum()).backward()
    for k, v in leaves.items():
        assert torch.isfinite(v.grad).all(), k
    with torch.no_grad():
        want = selective_scan_ref(**x, delta_softplus=True)
    err = ((y.detach() - want).abs().max() / want.abs().max()).item()
    assert err <= 1e-4, f"L=65536 forward relative error {err:.3g}"


def test_first_kernel_call_keeps_torch_thread_count() -> None:
    # a fresh process: Numba's OpenMP pool starts on the first kernel call
    code = (
        "import torch, istd\n"
        "from istd.ops import selective_scan\n"
        "torch.set_num_threads(1)\n"
        "x = dict(u=torch.randn(1, 4, 9), delta=torch.rand(1, 4, 9), A=-torch.rand(4, 8),\n"
        "         B=torch.randn(1, 8, 9), C=torch.randn(1, 8, 9))\n"
        "selective_scan(**x, backend='cpu')\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_kernel_cache_check_sees_an_empty_cache(tmp_path) -> None:
    # a fresh NUMBA_CACHE_DIR holds no compiled kernels: the first forward would compile
    code = "import istd.ops as o; print(o.cpu_kernels_cached())"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_kernel_cache_check_wants_every_word_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """All shapes share one index file: one compiled shape must not answer for the others."""
    from numba.core.serialize import dumps

    from istd.ops import _availability, scan_grid_cpu, ss2d_grids_cpu

    monkeypatch.setattr(_availability.os.path, "exists", lambda path: True)
    first = ss2d_grids_cpu._grids_kernel(4, 4, 4, 4, 8, 16, 1)  # the first stage's shape
    monkeypatch.setattr(first._cache._cache_file, "_load_index", lambda: {})
    others = [ss2d_grids_cpu._grids_kernel(4, 4, w, 4, 2 * w, 16, -(-w // 16)) for w in (8, 16, 32)]
    for later in [*others, scan_grid_cpu._scan_grid_kernel(16)]:  # cached, as if compiled
        cells = tuple(c.cell_contents for c in later.py_func.__closure__)
        key = (None, None, (None, _availability.hashlib.sha256(dumps(cells)).hexdigest()))
        monkeypatch.setattr(later._cache._cache_file, "_load_index", lambda key=key: {key: ""})
    assert not _availability.cpu_kernels_cached()
    cells = tuple(c.cell_contents for c in first.py_func.__closure__)
    key = (None, None, (None, _availability.hashlib.sha256(dumps(cells)).hexdigest()))
    monkeypatch.setattr(first._cache._cache_file, "_load_index", lambda: {key: ""})
    assert _availability.cpu_kernels_cached()


def test_scratch_buffers_start_on_cache_lines() -> None:
    # the backward's scratch rows are 16 floats: one 64-byte line each when the data is aligned
    from numba import njit

    from istd.ops.scan_cpu import _empty_aligned

    @njit
    def make(rows):
        a = _empty_aligned((rows, 16))
        a[:] = 2.0
        b = _empty_aligned((3, rows, 5))
        b[:] = 1.0
        return a, b

    for rows in (1, 7, 1025):
        a, b = make(rows)
        assert a.shape == (rows, 16) and a.flags.c_contiguous and a.ctypes.data % 64 == 0
        assert b.shape == (3, rows, 5) and b.flags.c_contiguous and b.ctypes.data % 64 == 0
        assert a.sum() == 32.0 * rows and b.sum() == 15.0 * rows
