"""SS2D: the 2-D selective-scan block of VMamba, used by MiM-ISTD for both words and sentences.

Liu et al., "VMamba: Visual State Space Model" (2024): Linear d -> 4d (x and gate z), 3 x 3
depthwise conv and SiLU on x, a selective scan (Gu and Dao, "Mamba", 2023) over the token grid
in K directions with per-direction projections, the directions merged by summation, LayerNorm,
``y * silu(z)`` and Linear 2d -> d. The scan order is a switch (`istd.ops.build_scan_order`):
VMamba's ``cross``, Vim's ``bidirectional``, LocalMamba's ``local`` and GroupMamba's ``grouped``
(Shaker et al., 2024), the last followed by GroupMamba's Channel Affinity Modulation.

The scan itself is `istd.ops.selective_scan`; this module only prepares its inputs. All K
directions run as one scan call: channels are stacked as (K * C') and B, C are passed grouped
per direction, (B, K, N, L).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from istd.ops import ScanOrder, build_scan_order, selective_scan
from istd.ops._availability import HAS_NUMBA as _HAS_NUMBA

if _HAS_NUMBA:
    from istd.ops.scan_grid_cpu import scan_grid_cpu
    from istd.ops.ss2d_grids_cpu import MAX_DIM, MAX_TOKENS, MIN_GRIDS, ss2d_grids_cpu


class ChannelAffinity(nn.Module):
    """GroupMamba's Channel Affinity Modulation: pool, 1x1, ReLU, 1x1, sigmoid -> per-channel scale."""

    def __init__(self, dim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        hidden = max(dim // 4, 1)
        self.fc1 = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, y: Tensor) -> Tensor:
        """Args: y (B, C, H, W). Returns y rescaled per channel, (B, C, H, W)."""
        pooled = y.mean(dim=(2, 3))  # (B, C)
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))  # (B, C)
        return y * scale[:, :, None, None]


class SS2D(nn.Module):
    """2-D selective-scan block on channels-last tokens.

    Args:
        dim: token dimension d.
        d_state: state size N.
        expand: inner width is expand * d.
        scan: ``cross``, ``bidirectional``, ``local`` or ``grouped``.
        window: tile size of the ``local`` order.
        backend: selective-scan backend (``auto``, ``reference``, ``cpu``, ``triton``).
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        expand: int = 2,
        scan: str = "cross",
        window: int = 2,
        backend: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.dim, self.d_state, self.scan, self.window, self.backend = (
            dim,
            d_state,
            scan,
            window,
            backend,
        )
        self.d_inner = d_inner = expand * dim
        self.K = K = 2 if scan == "bidirectional" else 4
        self.d_dir = d_dir = (
            d_inner // K if scan == "grouped" else d_inner
        )  # channels per direction
        self.dt_rank = R = math.ceil(dim / 16)

        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False, **dd)
        self.conv = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, **dd)
        # Per-direction projections, stacked so one batched matmul serves all K directions.
        bound = d_dir**-0.5
        self.x_proj_weight = nn.Parameter(
            torch.empty(K, R + 2 * d_state, d_dir, **dd).uniform_(-bound, bound)
        )
        self.dt_proj_weight = nn.Parameter(
            torch.empty(K, d_dir, R, **dd).uniform_(-(R**-0.5), R**-0.5)
        )
        self.dt_proj_bias = nn.Parameter(self._dt_bias_init(K * d_dir, **dd).view(K, d_dir))
        # S4D-real initialisation: A = -[1..N] for every channel; stored as log(-A).
        A = torch.arange(1, d_state + 1, **dd).expand(K * d_dir, d_state)
        self.A_log = nn.Parameter(torch.log(A).contiguous())  # (K*C', N)
        self.D = nn.Parameter(torch.ones(K * d_dir, **dd))  # (K*C',)
        # weight decay would pull every A_log to 0 (one decay rate for all states), D to 0 and
        # the step sizes to softplus(0) (the bias is (K, C'), so the 1-D rule misses it)
        for kept in (self.A_log, self.D, self.dt_proj_bias):
            kept._no_weight_decay = True
        self.affinity = ChannelAffinity(d_inner, **dd) if scan == "grouped" else None
        self.out_norm = nn.LayerNorm(d_inner, **dd)
        self.out_proj = nn.Linear(d_inner, dim, bias=False, **dd)
        self._orders: dict[tuple[int, int, torch.device], ScanOrder] = {}
        self.chunk_elements = 1 << 20  # inference chunk size, in scan-input elements

    @staticmethod
    def _dt_bias_init(n: int, dt_min: float = 1e-3, dt_max: float = 0.1, **dd: Any) -> Tensor:
        """Mamba's dt initialisation: softplus(bias) is log-uniform in [dt_min, dt_max]."""
        u = torch.rand(n, **dd)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
        return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus

    def _order(self, H: int, W: int, device: torch.device | None = None) -> ScanOrder:
        """The scan order of an H x W grid, its index tables on ``device`` (CPU by default).

        Kept per device: copying the tables to a GPU in every call would wait for it twice per
        block (and rule out CUDA-graph capture)."""
        key = (H, W, torch.device("cpu") if device is None else device)
        if key not in self._orders:  # index tables depend on the grid size only
            # Normal tensors even when first met under inference_mode (validation before
            # training): autograd refuses to save inference tensors for the backward.
            with torch.inference_mode(False):
                order = build_scan_order(self.scan, H, W, self.window)
                index, inverse = order.index.to(key[2]), order.inverse.to(key[2])
            self._orders[key] = dataclasses.replace(order, index=index, inverse=inverse)
        return self._orders[key]

    def scan_flops(self, batch: int, H: int, W: int) -> int:
        """Analytic FLOPs of the selective scan alone (~9 per state element per step)."""
        return 9 * batch * self.K * self.d_dir * H * W * self.d_state

    def residual(self, x: Tensor, norm: nn.LayerNorm) -> Tensor:
        """The pre-norm residual step x + SS2D(norm(x)); many small grids (the words of every
        sentence) run it as one fused kernel on the CPU at inference.

        Args: x (B, H, W, d) tokens; norm: LayerNorm over d. Returns (B, H, W, d).
        """
        fusable = (
            isinstance(norm, nn.LayerNorm)
            and norm.weight is not None
            and norm.bias is not None
            and tuple(norm.normalized_shape) == (x.shape[-1],)
            # the kernel has no autograd: a trainable norm takes the op-by-op path
            and not (torch.is_grad_enabled() and any(p.requires_grad for p in norm.parameters()))
        )
        if fusable and self._fused_grids(x):
            return self._forward_grids(x, norm)
        return x + self(norm(x))

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, H, W, d) tokens. Returns (B, H, W, d)."""
        Bt, H, W, _ = x.shape
        # Without autograd, independent grids (the words of many sentences) run in chunks: the
        # per-direction B, C tensors (K * 2N values per token) then stay cache-sized instead of
        # growing with the image, which bounds peak memory.
        per_grid = H * W * self.K * (2 * self.d_state + 2 * self.d_dir)
        if Bt > 1 and not torch.is_grad_enabled() and Bt * per_grid > self.chunk_elements:
            step = max(1, self.chunk_elements // per_grid)
            return torch.cat([self._forward(c) for c in x.split(step)])
        return self._forward(x)

    def _cpu_inference(self, x: Tensor) -> bool:
        """Whether the Numba inference kernels serve this call: CPU, float32, no autograd."""
        return (
            _HAS_NUMBA
            and self.backend in ("auto", "cpu")
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not (
                torch.is_grad_enabled()
                and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
            )
        )

    def _fused_grids(self, x: Tensor) -> bool:
        """Whether the fused small-grid kernel serves this call: many small, narrow grids (the
        words of every sentence), an order whose directions read all channels. The kernel runs
        one grid per thread at a time: a few wide grids (the deepest sentence maps of a small
        image) go faster through torch's threaded GEMMs."""
        Bt, H, W, _ = x.shape
        return (
            H * W <= MAX_TOKENS
            and Bt >= MIN_GRIDS
            and self.dim <= MAX_DIM
            and self.affinity is None
            and not self._order(H, W).grouped
            and self._cpu_inference(x)
        )

    @torch.profiler.record_function("ss2d_grids_cpu")
    def _forward_grids(self, x: Tensor, norm: nn.LayerNorm) -> Tensor:
        _, H, W, _ = x.shape
        return ss2d_grids_cpu(
            x,
            norm.weight,
            norm.bias,
            norm.eps,
            self.in_proj.weight,
            self.conv.weight,
            self.conv.bias,
            self.x_proj_weight,
            self.dt_proj_weight,
            self.dt_proj_bias,
            -torch.exp(self.A_log),
            self.D,
            self.out_norm.weight,
            self.out_norm.bias,
            self.out_norm.eps,
            self.out_proj.weight,
            self._order(H, W).index,
        )

    def _forward(self, x: Tensor) -> Tensor:
        Bt, H, W, _ = x.shape
        L, K, Cd, N, Di, R = H * W, self.K, self.d_dir, self.d_state, self.d_inner, self.dt_rank
        w_in = self.in_proj.weight  # (2*2d, d); two calls keep x and z contiguous
        z = F.linear(x, w_in[Di:])  # (B, H, W, 2d)
        x = F.linear(x, w_in[:Di])  # (B, H, W, 2d)
        x = F.silu(self.conv(x.permute(0, 3, 1, 2)))  # (B, 2d, H, W) in channels_last memory
        order = self._order(H, W, x.device)
        if self._cpu_inference(x):  # scan straight over the grid, no gather or merge
            return self._finish(self._scan_grid(x, order), z)
        # Every direction's input in its scan order, one gather: (B, K, C', L).
        index = order.index.view(1, K, 1, L)  # (1, K, 1, L)
        u_src = x.reshape(Bt, Di, L)  # (B, 2d, L) channel-major (one copy)
        u_src = (
            u_src.view(Bt, K, Cd, L) if order.grouped else u_src.unsqueeze(1).expand(Bt, K, Di, L)
        )
        u = torch.gather(u_src, 3, index.expand(Bt, K, Cd, L))  # (B, K, C', L)
        # Per-direction projections; einsum picks the GEMM layout (few big or many small).
        # Three products instead of one split: B and C come out as transposed views of
        # contiguous (B, K, L, N) tensors, the layout the CPU scan reads without a copy.
        w = self.x_proj_weight  # (K, R+2N, C')
        dts = torch.einsum("kec,bkcl->bkel", w[:, :R], u)  # (B, K, R, L)
        Bs = torch.einsum("kec,bkcl->bkle", w[:, R : R + N], u).contiguous().transpose(2, 3)
        Cs = torch.einsum("kec,bkcl->bkle", w[:, R + N :], u).contiguous().transpose(2, 3)
        dt = torch.einsum("kcr,bkrl->bkcl", self.dt_proj_weight, dts)  # (B, K, C', L)
        y = selective_scan(
            u.view(Bt, K * Cd, L),
            dt.reshape(Bt, K * Cd, L),  # einsum may return a permuted view; copy only then
            -torch.exp(self.A_log),  # (K*C', N)
            Bs,  # (B, K, N, L): group k serves direction k's C' channels
            Cs,
            self.D,
            delta_bias=self.dt_proj_bias.view(-1),
            delta_softplus=True,
            backend=self.backend,
        )  # (B, K*C', L) float32
        inverse = order.inverse.view(1, K, 1, L)
        y = torch.gather(
            y.view(Bt, K, Cd, L).to(x.dtype), 3, inverse.expand(Bt, K, Cd, L)
        )  # grid order
        y = y.reshape(Bt, Di, L) if order.grouped else y.sum(1)  # (B, 2d, L)
        return self._finish(y.view(Bt, Di, H, W).permute(0, 2, 3, 1), z)

    def _finish(self, y: Tensor, z: Tensor) -> Tensor:
        """Merged scan output (B, H, W, 2d) -> channel affinity (grouped), norm, gate, out_proj."""
        if self.affinity is not None:
            y = self.affinity(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.out_norm(y) * F.silu(z)  # (B, H, W, 2d)
        return self.out_proj(y)  # (B, H, W, d)

    def _scan_grid(self, x: Tensor, order: ScanOrder) -> Tensor:
        """Scan every direction over the grid of x (B, 2d, H, W), channels_last memory;
        returns the merged output (B, H, W, 2d). Projections are computed in grid order."""
        Bt, Di, H, W = x.shape
        L, K, Cd = H * W, self.K, self.d_dir
        x_cl = x.permute(0, 2, 3, 1).reshape(Bt, L, Di)  # a view for channels_last memory
        w = self.x_proj_weight  # (K, E, C'), E = R + 2N
        E = w.shape[1]
        if order.grouped:  # direction k projects its own channel group
            proj = torch.einsum("blkc,kec->blke", x_cl.view(Bt, L, K, Cd), w).contiguous()
        else:  # every direction's projection of every token in one GEMM
            proj = F.linear(x_cl, w.reshape(K * E, Cd)).view(Bt, L, K, E)
        y = scan_grid_cpu(
            x_cl,
            proj,
            self.dt_proj_weight,
            self.dt_proj_bias,
            -torch.exp(self.A_log),
            self.D,
            order.index,
            order.grouped,
        )  # (B, L, 2d)
        return y.view(Bt, H, W, Di)
