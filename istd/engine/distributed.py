"""Distributed-training helpers: rank, world size, barrier, main-process checks.

`torchrun --nproc_per_node=N -m istd train ...` sets `RANK`, `WORLD_SIZE` and `LOCAL_RANK`;
`init_distributed` reads them and joins the process group (gloo on the CPU, NCCL on CUDA). A
plain run is a world of one and every helper degrades to a no-op, so the training loop has a
single code path. As in torchvision's reference scripts, only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from istd.errors import BackendError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that writes logs and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def env_dist_info() -> DistInfo:
    """The rank layout torchrun put in the environment (a world of one without torchrun)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError as exc:
        raise BackendError(f"malformed RANK/WORLD_SIZE/LOCAL_RANK environment: {exc}") from None


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; return this process's place.

    Args:
        device: the training device; CUDA uses NCCL and pins this process to `LOCAL_RANK`.

    Raises:
        BackendError: the backend is unavailable here.
    """
    info = env_dist_info()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise BackendError("this torch build has no torch.distributed; run without torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        if not dist.is_nccl_available():
            raise BackendError("NCCL is not available; use --device cpu (gloo) for DDP here")
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend)
    return info


def is_dist() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_dist():
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a Python number over ranks (the number itself in a single process)."""
    if not is_dist():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def all_reduce_sum(value: float, device: torch.device) -> float:
    """Sum of a Python number over ranks."""
    if not is_dist():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's boolean, seen by every rank (so all ranks stop together)."""
    if not is_dist():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def cleanup() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str) -> torch.device:
    """The torch device for a `--device` value.

    Raises:
        BackendError: unknown name, or CUDA asked for where there is none.
    """
    if device not in ("cpu", "cuda"):
        raise BackendError(f"unknown device {device!r}; use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendError("--device cuda asked for, but torch sees no CUDA device here")
    if device == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; must be set before it starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.device(device)
