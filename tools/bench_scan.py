"""Benchmark the `cpu` selective-scan backend against the C measuring stick.

Prints forward and forward+backward throughput in state updates per second
(batch x dim x L x N / time) on the issue's shapes and on the shapes MiM-ISTD's scans have on a
512 x 512 input, all on the same number of threads (2 by default). In the same run it builds
``../shared/bench/scan_ref.c`` (a hand-vectorised C forward scan, not part of this project)
with ``cc -O3 -march=native -ffast-math -fopenmp`` into a temporary folder, runs it on the same
shapes and prints the ratio. Last, it measures the first-call compile time of the Numba kernels
in fresh subprocesses, with an empty and with a warm on-disk cache.

With ``--device cuda`` it times the `triton` backend instead (CUDA events, median of the
repetitions after a warm-up that compiles), beside the `reference` backend's forward on the
same GPU; there is no measuring stick or Numba compile to time there.

Usage:
    python tools/bench_scan.py                 # everything, 2 threads
    python tools/bench_scan.py --quick         # fewer shapes and repetitions
    python tools/bench_scan.py --layout network  # B/C in the layout the network passes
    python tools/bench_scan.py --device cuda   # the Triton kernels on a GPU
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# before torch: istd sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads when torch loads, so the
# timings are those of `istd` and its CLI (torch first would time torch's spinning default)
import istd  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
STICK_SOURCE = REPO.parent / "shared" / "bench" / "scan_ref.c"


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    dim: int
    L: int
    N: int = 16
    groups: int | None = None  # B/C as (batch, groups, N, L); None: (batch, N, L)

    @property
    def updates(self) -> int:
        return self.batch * self.dim * self.L * self.N


def shapes(quick: bool) -> list[Shape]:
    """The issue's two shapes, then MiM-ISTD's scans on a 512 x 512 input (batch 1).

    Sentence SS2D: u (1, 4 * d_inner, L), B/C grouped by direction (1, 4, 16, L). Word SS2D:
    one sequence of 16 pixels per sentence, batch = number of sentences.
    """
    out = [Shape("issue", 4, 64, 16384), Shape("issue", 1, 128, 4096)]
    for d_inner, L in ((64, 4096), (128, 1024), (256, 256), (512, 64)):
        out.append(Shape("sentence", 1, 4 * d_inner, L, groups=4))
    for d_inner, n_sentences in ((8, 4096), (16, 1024), (32, 256), (64, 64)):
        out.append(Shape("word", n_sentences, 4 * d_inner, 16, groups=4))
    return out[:1] + out[2:3] + out[6:7] if quick else out


def build_stick(workdir: Path) -> Path | None:
    """Compile the measuring stick; None (with a message) when it or a compiler is missing."""
    cc = shutil.which("cc")
    if cc is None or not STICK_SOURCE.is_file():
        print(f"measuring stick skipped: {'no C compiler (cc)' if cc is None else STICK_SOURCE} "
              "not found")  # fmt: skip
        return None
    exe = workdir / "scan_ref"
    cmd = [cc, "-O3", "-march=native", "-ffast-math", "-fopenmp", str(STICK_SOURCE), "-o", str(exe)]
    subprocess.run([*cmd, "-lm"], check=True)
    return exe


def run_stick(exe: Path, shape: Shape, threads: int, reps: int) -> float:
    """Best forward time (s) of the C scan; it has B/C as (batch, L, N) shared by all channels."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    args = [str(exe), str(shape.batch), str(shape.dim), str(shape.L), str(shape.N), str(reps)]
    line = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    return float(line.split("best ")[1].split(" ms")[0]) / 1e3


def make_inputs(shape: Shape, steps_last: bool = False):
    """Inputs in the stick's ranges: u, B, C in [-1, 1), dt in [0, 0.1), A in -(0.5 .. 8.5).

    B and C are contiguous (..., N, L) tensors (mamba_ssm's layout), or with ``steps_last``
    transposed views of contiguous (..., L, N) ones, as the network's SS2D passes them.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    bc = (shape.batch, shape.N, shape.L)
    if shape.groups:
        bc = (shape.batch, shape.groups, shape.N, shape.L)
    x = {
        "u": torch.rand(shape.batch, shape.dim, shape.L, generator=g) * 2 - 1,
        "delta": torch.rand(shape.batch, shape.dim, shape.L, generator=g) * 0.1,
        "A": -(0.5 + 8 * torch.rand(shape.dim, shape.N, generator=g)),
        "B": torch.rand(*bc, generator=g) * 2 - 1,
        "C": torch.rand(*bc, generator=g) * 2 - 1,
        "D": torch.ones(shape.dim),
    }
    if steps_last:
        for key in ("B", "C"):
            x[key] = x[key].transpose(-1, -2).contiguous().transpose(-1, -2)
    return x


def _best(fn, reps: int, budget: float) -> tuple[float, float]:
    """Best wall and best CPU (all threads) time of ``fn()`` over at least ``reps`` runs and
    about ``budget`` seconds. CPU time is less disturbed by other work on a shared machine."""
    best, best_cpu, spent, runs = float("inf"), float("inf"), 0.0, 0
    while runs < reps or (spent < budget and runs < 200):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        elapsed = time.perf_counter() - t0
        best_cpu = min(best_cpu, time.process_time() - c0)
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return best, best_cpu


def time_cpu(
    shape: Shape, reps: int, budget: float, steps_last: bool
) -> tuple[tuple[float, float], ...]:
    """Best (wall, CPU) times (s) of the `cpu` backend's forward (no grad) and
    forward+backward."""
    import torch

    from istd.ops import selective_scan

    x = make_inputs(shape, steps_last)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    # the output's gradient is an input of the backward, made once (as in `time_cuda`): filling
    # a fresh tensor of ones in every run timed the harness too (0.1 ms to 0.4 ms a call here)
    gy = torch.ones(shape.batch, shape.dim, shape.L)

    def forward() -> None:
        with torch.no_grad():
            selective_scan(**x, backend="cpu")

    def forward_backward() -> None:
        for v in leaves.values():
            v.grad = None
        selective_scan(**leaves, backend="cpu").backward(gy)

    forward()  # compile or load from the cache
    forward_backward()
    return _best(forward, reps, budget), _best(forward_backward, reps, budget)


def time_cuda(shape: Shape, reps: int, backend: str, backward: bool = True) -> tuple[float, float]:
    """Median forward (no grad) and forward+backward times (s) of ``backend`` on the GPU
    (forward+backward is NaN when ``backward`` is false)."""
    import statistics

    import torch

    from istd.ops import selective_scan

    x = {k: v.cuda() for k, v in make_inputs(shape).items()}
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    gy = torch.ones(shape.batch, shape.dim, shape.L, device="cuda")

    def forward() -> None:
        with torch.no_grad():
            selective_scan(**x, backend=backend)

    def forward_backward() -> None:
        for v in leaves.values():
            v.grad = None
        selective_scan(**leaves, backend=backend).backward(gy)

    def median(fn) -> float:
        fn()  # compile (Triton caches on disk) and allocate
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)

    return median(forward), median(forward_backward) if backward else float("nan")


def main_cuda(reps: int) -> None:
    """`triton` forward and forward+backward on the GPU, `reference` forward beside it."""
    import torch

    print(f"device: {torch.cuda.get_device_name()}; median of {reps} runs after a warm-up")
    header = (
        f"{'shape':>9} {'batch':>5} {'dim':>5} {'L':>6} {'G':>2} | {'ref fwd':>7} "
        f"{'tri fwd':>7} {'fwd+bwd':>7} G upd/s | tri/ref | (f+b)/f"
    )
    print(header)
    print("-" * len(header))
    for shape in shapes(quick=False):
        ref, _ = time_cuda(shape, 3, "reference", backward=False)
        fwd, both = time_cuda(shape, reps, "triton")
        rate = [shape.updates / t / 1e9 for t in (ref, fwd, both)]
        print(
            f"{shape.name:>9} {shape.batch:>5} {shape.dim:>5} {shape.L:>6} "
            f"{shape.groups or 1:>2} | {rate[0]:7.3f} {rate[1]:7.1f} {rate[2]:7.1f}        "
            f"| {ref / fwd:7.0f} | {both / fwd:7.2f}",
            flush=True,
        )


_FIRST_CALL = """
import time
t0 = time.perf_counter()
import torch
from istd.ops import selective_scan
t1 = time.perf_counter()
c1 = time.process_time()
x = dict(u=torch.randn(1, 8, 100), delta=torch.rand(1, 8, 100), A=-torch.rand(8, 16),
         B=torch.randn(1, 16, 100), C=torch.randn(1, 16, 100))
for v in x.values():
    v.requires_grad_()
selective_scan(**x, backend="cpu").sum().backward()
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {time.process_time() - c1:.3f}")
"""


def first_call(cache_dir: Path, threads: int) -> tuple[float, float, float]:
    """(import time, first forward+backward wall time, its CPU time) in a fresh interpreter
    using ``cache_dir`` as Numba's on-disk cache."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "NUMBA_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[-3]), float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for every contender")
    parser.add_argument("--reps", type=int, default=5, help="repetitions; the best time counts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved C / cpu rounds")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per timing loop")
    parser.add_argument("--quick", action="store_true", help="three shapes, fewer repetitions")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--layout",
        choices=("mamba", "network"),
        default="mamba",
        help="B/C as contiguous (batch, N, L) tensors (mamba_ssm's API), or as transposed views "
        "of (batch, L, N) ones, the layout MiM-ISTD's SS2D passes (no swap in the kernel call)",
    )
    args = parser.parse_args()
    if args.device == "cuda":
        main_cuda(max(args.reps, 20))
        return
    reps = 2 if args.quick else args.reps
    if args.quick:
        args.rounds, args.budget = 1, 0.2
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))

    import numba
    import torch

    from istd.ops._threads import openmp_wait

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    print(f"B/C layout: {args.layout}; threads: {args.threads} (torch and numba); best of "
          f">= {reps} runs x {args.rounds} rounds; host load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine is noisy); "
          f"{openmp_wait()}")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="istd-bench-scan-") as tmp:
        exe = build_stick(Path(tmp))
        header = (
            f"{'shape':>9} {'batch':>5} {'dim':>5} {'L':>6} {'G':>2} | {'C fwd':>7} "
            f"{'cpu fwd':>7} {'fwd+bwd':>7} G upd/s | cpu/C | (f+b)/f wall  CPU"
        )
        print(header)
        print("-" * len(header))
        rows = []
        for shape in shapes(args.quick):
            # interleaved rounds, best of each: other load on the machine comes and goes
            c_time = fwd = both = fwd_cpu = both_cpu = float("inf")
            for _ in range(args.rounds):
                if exe:
                    c_reps = max(reps, min(200, int(args.budget * 0.4e9 / shape.updates)))
                    c_time = min(c_time, run_stick(exe, shape, args.threads, c_reps))
                f, fb = time_cpu(shape, reps, args.budget, args.layout == "network")
                fwd, both = min(fwd, f[0]), min(both, fb[0])
                fwd_cpu, both_cpu = min(fwd_cpu, f[1]), min(both_cpu, fb[1])
            c_time = c_time if exe else float("nan")
            rate = [shape.updates / t / 1e9 for t in (c_time, fwd, both)]
            row = (c_time / fwd, both / fwd, both_cpu / fwd_cpu)
            rows.append(row)
            print(
                f"{shape.name:>9} {shape.batch:>5} {shape.dim:>5} {shape.L:>6} "
                f"{shape.groups or 1:>2} | {rate[0]:7.3f} {rate[1]:7.3f} {rate[2]:7.3f}        "
                f"| {row[0]:5.2f} | {row[1]:12.2f} {row[2]:4.2f}",
                flush=True,
            )
        cold = first_call(Path(tmp) / "numba-cache", args.threads)
        warm = first_call(Path(tmp) / "numba-cache", args.threads)
    print(f"first call (fwd+bwd, fresh process): empty cache {cold[1]:.2f} s wall "
          f"({cold[2]:.2f} s CPU), on-disk cache {warm[1]:.2f} s wall ({warm[2]:.2f} s CPU); "
          f"import torch + istd.ops: {cold[0]:.2f} s")  # fmt: skip
    for i, what in enumerate(("cpu/C forward", "(fwd+bwd)/fwd wall", "(fwd+bwd)/fwd CPU")):
        values = [r[i] for r in rows]
        print(f"{what}: min {min(values):.2f}, max {max(values):.2f}")


if __name__ == "__main__":
    main()
