"""The fused small-grid kernel (x + SS2D(LayerNorm(x))) against the op-by-op path (its oracle)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from istd.models.layers.ss2d import SS2D
from istd.ops import available_backends

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="numba not installed")


def _perturbed(dim: int, scan: str, seed: int) -> SS2D:
    """An SS2D whose parameters are moved off their initial values (A, D, norms included)."""
    torch.manual_seed(seed)
    block = SS2D(dim, scan=scan).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return block


@pytest.mark.parametrize("scan", ["cross", "bidirectional", "local"])
@pytest.mark.parametrize(
    ("dim", "grids", "H", "W"),
    [(4, 37, 4, 4), (5, 16, 3, 5), (8, 17, 1, 1), (32, 16, 8, 8), (7, 20, 2, 9)],
)
def test_fused_matches_op_by_op(scan: str, dim: int, grids: int, H: int, W: int) -> None:
    block = _perturbed(dim, scan, seed=dim * H * W)
    norm = _norm(dim)
    x = 3 * torch.randn(grids, H, W, dim) + 1  # off zero mean and unit variance: the norm acts
    with torch.no_grad():
        assert block._fused_grids(x)
        update = block._forward(norm(x))
        got = block.residual(x, norm)
    assert got.shape == x.shape
    # the residual x dominates the sum: compare the SS2D update itself
    torch.testing.assert_close(got - x, update, rtol=1e-4, atol=1e-5 * update.abs().max().item())


def _norm(dim: int) -> nn.LayerNorm:
    norm = nn.LayerNorm(dim)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


def test_fused_is_deterministic() -> None:
    block, norm = _perturbed(8, "cross", seed=1), _norm(8)
    x = torch.randn(300, 4, 4, 8)
    with torch.no_grad():
        assert torch.equal(block.residual(x, norm), block.residual(x, norm))


def test_norm_without_affine_takes_the_op_by_op_path() -> None:
    block = _perturbed(4, "cross", seed=6)
    x = torch.randn(20, 4, 4, 4)
    bare = nn.LayerNorm(4, elementwise_affine=False)
    with torch.no_grad():
        torch.testing.assert_close(block.residual(x, bare), x + block._forward(bare(x)))


def test_both_norm_epsilons_are_applied() -> None:
    """Near-constant tokens make eps matter: swapping or dropping one would show."""
    block = _perturbed(4, "cross", seed=7)
    block.out_norm.eps = 0.05
    norm = _norm(4)
    norm.eps = 0.5
    x = 1 + 0.3 * torch.randn(20, 4, 4, 4)
    with torch.no_grad():
        update = block._forward(norm(x))
        got = block.residual(x, norm) - x
    torch.testing.assert_close(got, update, rtol=1e-4, atol=1e-5 * update.abs().max().item())


def test_a_trainable_norm_keeps_its_gradient() -> None:
    block = _perturbed(4, "cross", seed=8)
    block.requires_grad_(False)  # a frozen SS2D, a trainable norm, an input without grad
    norm = _norm(4)
    out = block.residual(torch.randn(20, 4, 4, 4), norm)
    out.sum().backward()
    assert norm.weight.grad is not None


def test_fused_path_not_taken_where_it_does_not_apply() -> None:
    block = _perturbed(8, "cross", seed=2)
    words = torch.randn(16, 4, 4, 8)
    assert not block._fused_grids(words)  # grad mode with trainable parameters: autograd path
    with torch.no_grad():
        assert block._fused_grids(words)
        assert not block._fused_grids(torch.randn(16, 16, 16, 8))  # large grids
        assert not block._fused_grids(words[:2])  # too few grids to share out
        assert not _perturbed(64, "cross", seed=5)._fused_grids(torch.randn(16, 4, 4, 64))
        assert not block._fused_grids(words.double())
        assert not _perturbed(8, "grouped", seed=3)._fused_grids(words)
        assert not SS2D(8, backend="reference")._fused_grids(words)


def test_training_gradients_unchanged_by_the_fused_path() -> None:
    """Training never reaches the kernel: gradients flow as through the op-by-op forward."""
    block = _perturbed(4, "cross", seed=4).train()
    x = torch.randn(16, 4, 4, 4, requires_grad=True)
    block.residual(x, _norm(4)).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in block.parameters())
