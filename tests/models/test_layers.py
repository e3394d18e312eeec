"""Layer blocks: SS2D against a plain per-direction formulation, patch ops, word layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from istd.models.layers.patch import (
    ConvBNAct,
    PatchExpand,
    PatchMerging,
    from_sentences,
    pad_to_multiple,
    to_sentences,
)
from istd.models.layers.ss2d import SS2D
from istd.ops import selective_scan


def _ss2d_plain(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D written the direct way: scan order's scan/merge and per-direction projections."""
    Bt, H, W, _ = x.shape
    L, K, Cd, N, R = H * W, m.K, m.d_dir, m.d_state, m.dt_rank
    xz = m.in_proj(x)
    xi, z = xz.chunk(2, dim=-1)
    xi = F.silu(m.conv(xi.permute(0, 3, 1, 2).contiguous()))
    order = m._order(H, W)
    xs = order.scan(xi).contiguous()  # (B, K, C', L)
    x_dbl = torch.einsum("kec,bkcl->bkel", m.x_proj_weight, xs)
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    dts = torch.einsum("kcr,bkrl->bkcl", m.dt_proj_weight, dts)
    y = selective_scan(
        xs.reshape(Bt, K * Cd, L),
        dts.reshape(Bt, K * Cd, L),
        -torch.exp(m.A_log),
        Bs.contiguous(),
        Cs.contiguous(),
        m.D,
        delta_bias=m.dt_proj_bias.reshape(-1),
        delta_softplus=True,
        backend="reference",
    )
    y = order.merge(y.view(Bt, K, Cd, L))
    if m.affinity is not None:
        y = m.affinity(y)
    y = m.out_norm(y.permute(0, 2, 3, 1)) * F.silu(z)
    return m.out_proj(y)


@pytest.mark.parametrize("scan", ["cross", "bidirectional", "local", "grouped"])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (4, 4)])
def test_ss2d_matches_plain_formulation(scan: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    m = SS2D(8, d_state=4, scan=scan, backend="reference").double()
    x = torch.randn(2, *size, 8, dtype=torch.float64)
    got, want = m(x), _ss2d_plain(m, x)
    diff = (got - want).abs().max().item()
    assert diff < 1e-9, f"max diff {diff:.3g}"


@pytest.mark.parametrize("scan", ["cross", "grouped"])
def test_ss2d_float32_cpu_path_matches_plain_formulation(scan: str) -> None:
    # float32 CPU tensors take the Numba gather/merge path; the plain formulation does not
    torch.manual_seed(1)
    m = SS2D(8, d_state=4, scan=scan, backend="cpu")
    x = torch.randn(3, 5, 6, 8, requires_grad=True)
    with torch.no_grad():  # the Numba path serves inference
        got, want = m(x), _ss2d_plain(m, x)
    diff = (got - want).abs().max().item()
    assert diff < 1e-4 * want.abs().max().item(), f"max diff {diff:.3g}"
    got, want = m(x), _ss2d_plain(m, x)  # with autograd (the torch path)
    g = torch.randn_like(got)
    params = [x, *m.parameters()]
    got_g = torch.autograd.grad(got, params, g, allow_unused=True)
    want_g = torch.autograd.grad(want, params, g, allow_unused=True)
    for p, a, b in zip(params, got_g, want_g, strict=True):
        if b is None:
            continue
        diff = (a - b).abs().max().item()
        assert diff <= 1e-3 * b.abs().max().item() + 1e-6, f"grad {tuple(p.shape)}: {diff:.3g}"


def test_ss2d_sees_the_whole_grid_in_both_axes() -> None:
    """Changing one token changes outputs before it in row-major order (the reversed scans)."""
    torch.manual_seed(0)
    m = SS2D(8, d_state=4, backend="reference").eval()
    x = torch.randn(1, 5, 6, 8)
    x2 = x.clone()
    x2[0, 4, 5] += 1.0  # last token
    with torch.no_grad():
        delta = (m(x) - m(x2)).abs().sum(-1)[0]  # (H, W)
    assert (delta > 0).all(), "every token should depend on every other through some direction"


def test_ss2d_trains_after_a_first_call_under_inference_mode() -> None:
    # fine-tuning validates the starting weights first: the grid's scan tables are built then
    m = SS2D(8, d_state=4, backend="reference")
    x = torch.randn(1, 3, 5, 8)
    with torch.inference_mode():
        m(x)
    m(x).sum().backward()
    assert m.x_proj_weight.grad is not None


def test_ss2d_init_follows_mamba() -> None:
    m = SS2D(32, d_state=16)
    assert m.dt_rank == 2 and m.d_inner == 64 and m.K == 4
    assert torch.allclose(-torch.exp(m.A_log[0]), -torch.arange(1.0, 17.0))
    assert torch.equal(m.D, torch.ones_like(m.D))
    dt = F.softplus(m.dt_proj_bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6


def test_patch_merge_and_expand_shapes() -> None:
    x = torch.randn(2, 6, 10, 16)
    assert PatchMerging(16, 32)(x).shape == (2, 3, 5, 32)
    assert PatchExpand(16)(x).shape == (2, 12, 20, 8)


def test_word_layout_round_trip_keeps_sentences_together() -> None:
    words = torch.arange(2 * 8 * 12 * 3.0).view(2, 8, 12, 3)
    grids = to_sentences(words)  # (2*2*3, 4, 4, 3)
    assert grids.shape == (12, 4, 4, 3)
    assert torch.equal(grids[4], words[0, 4:8, 4:8])  # sentence (row 1, col 1) of image 0
    assert torch.equal(from_sentences(grids, 2, 2, 3), words)


def test_pad_to_multiple() -> None:
    x, H, W = pad_to_multiple(torch.ones(1, 1, 7, 13), 8)
    assert x.shape == (1, 1, 8, 16) and (H, W) == (7, 13)
    assert x[..., 7:, :].abs().sum() == 0 and x[..., :, 13:].abs().sum() == 0


@pytest.mark.parametrize("act", [torch.nn.ReLU, torch.nn.GELU, None])
def test_conv_bn_fold_in_eval_matches_the_unfused_layers(act: type[torch.nn.Module] | None) -> None:
    torch.manual_seed(0)
    block = ConvBNAct(6, 10, stride=2, act=act)
    block.train()
    for _ in range(3):  # give the running statistics non-trivial values
        block(torch.randn(4, 6, 15, 17) * 3 + 1)
    block.eval()
    x = torch.randn(2, 6, 15, 17).to(memory_format=torch.channels_last)
    with torch.no_grad():
        want = torch.nn.Sequential.forward(block, x)  # conv, BN, activation one by one
        got = block(x)
    diff = (got - want).abs().max().item()
    assert diff < 1e-5, f"max diff {diff:.3g}"
