"""MiM-ISTD forward speed and memory: latency and peak RSS at 256^2 .. 2048^2 per scan backend.

Single image, batch 1, eval mode under `torch.inference_mode`, `--threads` CPU threads (2, the
project's machines), random weights (the cost does not depend on them). `--precision` (one or
several, comma-separated) sets the dense convolutions' precision as `istd predict` does
(`auto`: bfloat16 where the CPU multiplies it natively; `istd.models.precision`). Every (backend, size)
runs in a fresh subprocess, so its peak RSS (`ru_maxrss`) is that forward's alone, not left over
from a bigger size; `--warmup` forwards (the first also loads the compiled kernels) precede
`--runs` timed forwards.

The `reference` scan loops over the sequence in Python and takes minutes on large grids; it is
only run up to `--reference-max` (256 by default) and the table says where it was skipped. The
`triton` backend needs a CUDA device: with `--device cuda` the model runs there, each timing
waits for the GPU, and the memory column is the peak of `torch.cuda.max_memory_allocated`.

Usage:
    python tools/bench_model.py [--model mim-istd] [--sizes 256,512,1024,2048]
                                [--backends reference,cpu] [--threads 2] [--runs 3] [--warmup 1]
                                [--reference-max 256] [--precision auto,float32] [--json FILE]
                                [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

# before torch: istd sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads when torch loads, so the
# timings are those of `istd` and its CLI (torch first would time torch's spinning default)
import istd  # noqa: F401

TARGETS = "targets: 512^2 <= 150 ms; 2048^2 <= 3 s with peak RSS <= 2.5 GB; 2048^2 / 512^2 <= 18"


def _child(args: argparse.Namespace) -> None:
    """Measure one (backend, size) and print one JSON line."""
    import resource
    import statistics
    import time

    import torch

    from istd.models import build_model
    from istd.models.precision import conv_precision, resolve_precision

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(args.model, scan_backend=args.backend).eval().to(device)
    conv_dtype = resolve_precision(args.precision, device.type)
    x = torch.rand(1, model.config.in_chans, args.size, args.size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    with torch.inference_mode(), conv_precision(conv_dtype):
        for _ in range(args.warmup):  # kernel loading, allocator growth
            model(x)
        for _ in range(args.runs):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    print(
        json.dumps(
            {
                "median_ms": statistics.median(times) * 1e3,
                "best_ms": min(times) * 1e3,
                "peak_rss_mb": peak,
                "rss_before_forward_mb": rss_before,
                "conv_dtype": str(conv_dtype).removeprefix("torch."),
            }
        )
    )


def _run(args: argparse.Namespace, backend: str, precision: str, size: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--model",
        args.model,
        "--backend",
        backend,
        "--size",
        str(size),
        "--threads",
        str(args.threads),
        "--runs",
        str(args.runs),
        "--warmup",
        str(args.warmup),
        "--precision",
        precision,
        "--device",
        args.device,
    ]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {args.timeout} s"}
    if done.returncode != 0:
        return {
            "skipped": f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mim-istd")
    parser.add_argument("--sizes", default="256,512,1024,2048")
    parser.add_argument("--backends", default=None, help="default: every backend usable here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first")
    parser.add_argument("--reference-max", type=int, default=256)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per (backend, size)")
    parser.add_argument("--precision", default="auto", help="auto, float32, bfloat16; a list")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=512, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    from istd.ops import available_backends

    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",") if args.backends else available_backends()
    if not args.backends and args.device == "cuda":
        backends = [b for b in backends if b != "cpu"]  # the Numba kernels take CPU tensors
    from istd.ops._threads import openmp_wait

    print(f"model {args.model}, batch 1, eval, {args.threads} threads, {args.runs} timed runs; "
          f"{openmp_wait()}")  # fmt: skip
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(unset)')}"
    )
    print(TARGETS)
    print()
    memory = "peak CUDA MiB" if args.device == "cuda" else "peak RSS MiB"
    print(f"| backend | convolutions | size | median ms | best ms | {memory} | ms per Mpixel |")
    print("|---|---|---|---|---|---|---|")
    results: dict[str, dict[int, dict]] = {}
    for backend in backends:
        for precision in args.precision.split(","):
            label = f"{backend} {precision}"
            results[label] = {}
            for size in sizes:
                if backend == "reference" and size > args.reference_max:
                    r = {
                        "skipped": f"reference scan loops over L in Python (minutes above {args.reference_max}^2)"
                    }
                elif backend == "triton" and "triton" not in available_backends():
                    r = {"skipped": "triton needs a CUDA device"}
                else:
                    r = _run(args, backend, precision, size)
                results[label][size] = r
                used = r.get("conv_dtype", "")
                row = f"| {backend} | {precision}{f' ({used})' if used else ''} | {size}^2 |"
                if "skipped" in r:
                    print(f"{row} skipped: {r['skipped']} | | | |", flush=True)
                else:
                    per_mp = r["median_ms"] / (size * size / 1e6)
                    print(
                        f"{row} {r['median_ms']:.0f} | {r['best_ms']:.0f} | "
                        f"{r['peak_rss_mb']:.0f} | {per_mp:.0f} |",
                        flush=True,
                    )
    print()
    for label, by_size in results.items():
        a, b = by_size.get(512, {}), by_size.get(2048, {})
        if "median_ms" in a and "median_ms" in b:
            print(
                f"{label}: 2048^2 / 512^2 time ratio = {b['median_ms'] / a['median_ms']:.1f} (linear = 16)"
            )
    if args.json:
        _write_json(args.json, {"model": args.model, "threads": args.threads, "results": results})


if __name__ == "__main__":
    main()
