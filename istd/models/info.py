"""Model facts for `istd info` and the benchmarks: parameters, FLOPs, latency, peak memory.

FLOPs count matmuls and convolutions with `torch.utils.flop_counter` plus an analytic count of
the selective scan, which that counter cannot see (a fused kernel): 9 FLOPs per state element per
step, 9 * B * D * L * N per scan call (the discretisation exp and multiplies, the state update
and the output contraction). Elementwise work (norms, activations) is not counted. The count runs
the reference scan path, whose projections are torch ops: the fused CPU kernels also do the
projections inside Numba, where the counter would miss them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from istd.errors import ConfigError, DataError
from istd.models._registry import build_model, list_models
from istd.models.hub import from_pretrained
from istd.models.layers.ss2d import SS2D
from istd.models.precision import conv_precision, has_dense_convs, resolve_precision


@dataclass
class ModelInfo:
    """What `istd info` prints.

    Attributes:
        model: registry name.
        source: the registry (random weights) or the weights folder loaded.
        parameters: number of parameters.
        size: (H, W) of the measured input; batch is 1.
        gflops: total GFLOPs of one forward (standard ops + scan).
        gflops_scan: the selective scan's share.
        latency_ms: median forward latency (eval mode, inference_mode), or None if not measured.
        latency_min_ms: fastest forward.
        runs: timed forwards.
        peak_memory_mb: in MiB, on CPU the peak RSS increase during the forwards (warm-up
            included) over the RSS just before them, None where Linux's /proc cannot measure
            it; on CUDA the peak allocated memory (weights included) during the timed forwards.
        device: where it ran.
        threads: torch intra-op threads.
        scan_backend: the model's scan backend setting, or None for models without scans.
        conv_dtype: the dense convolutions' dtype in the timed forwards.
    """

    model: str
    source: str
    parameters: int
    size: tuple[int, int]
    gflops: float
    gflops_scan: float
    latency_ms: float | None
    latency_min_ms: float | None
    runs: int
    peak_memory_mb: float | None
    device: str
    threads: int
    scan_backend: str | None
    conv_dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (or a single ``N`` for a square) into (H, W).

    Raises:
        ConfigError: not of that form, or a side below 1.
    """
    parts = text.lower().replace("*", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"size must look like HxW (e.g. 512x640), got {text!r}") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise ConfigError(f"size must be HxW with H, W >= 1, got {text!r}")
    return dims[0], dims[1]


def load_for_info(model: str | Path, **overrides: Any) -> tuple[nn.Module, str]:
    """A registry name builds the model (random weights, `overrides` apply); anything else is
    loaded with :func:`from_pretrained` (a weights folder or a named weights folder).

    Returns:
        The model and a description of where it came from.
    """
    if isinstance(model, str) and model in list_models():
        net = build_model(model, **overrides)
        weight_free = getattr(net, "requires_weights", True) is False
        return net, "registry (weight-free)" if weight_free else "registry (random weights)"
    net = from_pretrained(model)
    if overrides:
        if not hasattr(net, "config"):
            raise ConfigError(f"cannot apply {overrides} to {model}")
        for key, value in overrides.items():
            if key != "scan_backend":
                raise ConfigError(f"only scan_backend can be changed on loaded weights, not {key}")
            for m in net.modules():
                if isinstance(m, SS2D):
                    m.backend = value
    return net, str(model)


def count_flops(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """FLOPs of `model(x)`: (standard ops via flop_counter, selective scan analytic).

    Every SS2D runs the reference backend while counting, so the count is the same whatever
    backend the model is set to (the fused CPU kernels hide their projections from the counter).
    """
    scan_flops = 0

    def hook(module: SS2D, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
        nonlocal scan_flops
        Bt, H, W, _ = inputs[0].shape  # (B, H, W, d) tokens
        scan_flops += module.scan_flops(Bt, H, W)

    ss2d = [m for m in model.modules() if isinstance(m, SS2D)]
    backends = [m.backend for m in ss2d]
    handles = [m.register_forward_hook(hook) for m in ss2d]
    try:
        for m in ss2d:
            m.backend = "reference"
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, backend in zip(ss2d, backends, strict=True):
            m.backend = backend
    return counter.get_total_flops(), scan_flops


def _proc_status_mb(key: str) -> float | None:
    """A ``Vm*`` line of /proc/self/status in MiB, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # reported in kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0); False if not."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def time_forward(
    model: nn.Module, x: torch.Tensor, runs: int = 5, warmup: int = 1
) -> tuple[list[float], float | None]:
    """Time `runs` forwards after `warmup` (eval mode, inference_mode).

    Returns:
        Latencies in ms, and peak memory in MiB. On CPU: how far the RSS rose above its value
        just before the first forward, over the warm-up and the timed forwards (the warm-up
        counts because glibc keeps its freed buffers for the timed forwards; first-call kernel
        loading counts with it); None where /proc cannot measure it. On a GPU: the peak
        allocated CUDA memory during the timed forwards, weights included.
    """
    model.eval()
    cuda = x.device.type == "cuda"
    # The process's lifetime peak says nothing of this model: reset the peak to the current RSS.
    base = None if cuda or not _reset_peak_rss() else _proc_status_mb("VmRSS")
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        if cuda:
            torch.cuda.synchronize(x.device)
            torch.cuda.reset_peak_memory_stats(x.device)
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(x.device)
            times.append((time.perf_counter() - start) * 1e3)
    if cuda:
        return times, torch.cuda.max_memory_allocated(x.device) / 2**20
    peak = _proc_status_mb("VmHWM")
    return times, None if base is None or peak is None else max(0.0, peak - base)


def model_info(
    model: str | Path,
    size: tuple[int, int] = (512, 512),
    device: str = "cpu",
    threads: int | None = None,
    runs: int = 5,
    measure: bool = True,
    scan_backend: str | None = None,
    precision: str = "auto",
) -> ModelInfo:
    """Parameters, FLOPs, latency and peak memory of one model at one input size.

    Args:
        model: a registry name (random weights) or a weights folder / named weights.
        size: (H, W) of the single-image input.
        device: ``cpu`` or ``cuda``.
        threads: torch intra-op threads (None keeps the current setting).
        runs: timed forwards (after one warm-up, which also compiles kernels).
        measure: time the forward; False only counts parameters and FLOPs.
        scan_backend: override the model's scan backend.
        precision: dense-convolution precision of the timed forwards, as `istd predict`'s
            (`istd.models.precision`).

    Returns:
        A :class:`ModelInfo`.

    Example:
        >>> model_info("mim-istd", (512, 512), threads=2).latency_ms
    """
    if min(size) < 1:
        raise DataError(f"size must be >= 1 x 1, got {size}")
    if runs < 1:
        raise ConfigError(f"runs must be >= 1, got {runs}")
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    conv_dtype = resolve_precision(precision, device)
    overrides = {"scan_backend": scan_backend} if scan_backend else {}
    net, source = load_for_info(model, **overrides)
    if not has_dense_convs(net):
        conv_dtype = torch.float32
    net = net.to(device).eval()
    in_chans = getattr(getattr(net, "config", None), "in_chans", 1)
    x = torch.rand(1, in_chans, *size, device=device)
    # Timed first: the counting forward's freed buffers, kept by glibc, would hide the memory.
    with conv_precision(conv_dtype):
        times, peak = time_forward(net, x, runs=runs) if measure else ([], None)
    standard, scan = count_flops(net, x)
    backend = getattr(getattr(net, "config", None), "scan_backend", None)
    return ModelInfo(
        model=getattr(net, "model_name", str(model)),
        source=source,
        parameters=sum(p.numel() for p in net.parameters()),
        size=size,
        gflops=(standard + scan) / 1e9,
        gflops_scan=scan / 1e9,
        latency_ms=statistics.median(times) if times else None,
        latency_min_ms=min(times) if times else None,
        runs=len(times),
        peak_memory_mb=peak,
        device=str(device),
        threads=torch.get_num_threads(),
        scan_backend=scan_backend or backend,
        conv_dtype=str(conv_dtype).removeprefix("torch."),
    )
