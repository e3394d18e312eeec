"""Time the working tree's CPU scan kernels against another revision's, side by side.

On a shared machine two runs minutes apart can differ by 15 %, more than most kernel changes
gain, so a change is judged here in one process: both versions of `istd/ops/scan_cpu.py` are
imported (the other one from `git show REV:...` into a temporary folder), each shape's inputs are
shared, and the two are timed in alternation, best of `--reps`. Printed per shape: forward
(no grad) and forward+backward times of each, the speed-up of the working tree, and the largest
gradient difference between the two relative to the gradient's size.

Usage:
    python tools/ab_scan.py                  # against HEAD (uncommitted kernel changes)
    python tools/ab_scan.py --base HEAD~3 --reps 25
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

# before torch: istd sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads when torch loads, so the
# timings are those of `istd` and its CLI (torch first would time torch's spinning default)
import istd  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
KERNEL = "istd/ops/scan_cpu.py"
# (batch, dim, L, groups): the two shapes and MiM-ISTD's sentence and word scans
SHAPES = ((4, 64, 16384, 1), (1, 128, 4096, 1), (1, 256, 4096, 4), (1, 1024, 256, 4),
          (1, 2048, 64, 4), (4096, 32, 16, 4), (256, 128, 16, 4), (64, 256, 16, 4))  # fmt: skip


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Numba's cache looks the module up by name
    spec.loader.exec_module(module)
    return module


def revision_kernel(rev: str, folder: Path) -> Path:
    """`rev`'s scan_cpu.py written into `folder` (its own Numba cache goes beside it)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:{KERNEL}"], cwd=REPO, check=True, capture_output=True, text=True
        ).stdout
    except subprocess.CalledProcessError as exc:
        sys.exit(f"git show {rev}:{KERNEL} failed: {exc.stderr.strip()}")
    path = folder / "scan_cpu_base.py"
    path.write_text(source, encoding="utf-8")
    return path


def inputs(batch: int, dim: int, L: int, groups: int, N: int = 16):
    """The benchmark's ranges; B and C as the network passes them (transposed (L, N) views)."""
    import torch

    g = torch.Generator().manual_seed(0)
    bc = (batch, groups, L, N)
    return {
        "u": torch.rand(batch, dim, L, generator=g) * 2 - 1,
        "dt": torch.rand(batch, dim, L, generator=g) * 0.1,
        "A": -(0.5 + 8 * torch.rand(dim, N, generator=g)),
        "B": (torch.rand(*bc, generator=g) * 2 - 1).transpose(-1, -2),
        "C": (torch.rand(*bc, generator=g) * 2 - 1).transpose(-1, -2),
        "D": torch.ones(dim),
    }


def runners(module: ModuleType, x: dict):
    """(forward, forward+backward, leaves) closures over the module's autograd function."""
    import torch

    scan = module._SelectiveScanCPU.apply
    names = ("u", "dt", "A", "B", "C", "D")
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    gy = torch.ones_like(x["u"])  # the output's gradient, made once (not timed)

    def forward() -> None:
        with torch.no_grad():
            scan(*(x[k] for k in names))

    def forward_backward() -> None:
        for leaf in leaves.values():
            leaf.grad = None
        y, _ = scan(*(leaves[k] for k in names))
        y.backward(gy)

    return forward, forward_backward, leaves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--reps", type=int, default=15, help="timed runs of each, best kept")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="istd-ab-") as tmp:
        base = load_module("scan_cpu_base", revision_kernel(args.base, Path(tmp)))
        # the working tree's kernel under its own name: Numba's on-disk cache records the module
        # name, so loading it as another would leave cache entries that `istd` cannot load
        new = importlib.import_module("istd.ops.scan_cpu")
        print(f"{args.base} against the working tree, {args.threads} threads, best of {args.reps}")
        print(f"{'batch, dim, L, G':>20} | {'base fwd':>8} {'fwd+bwd':>8} | {'tree fwd':>8} "
              f"{'fwd+bwd':>8} | speed-up f+b | max grad diff")  # fmt: skip
        for shape in SHAPES:
            x = inputs(*shape)
            versions = [runners(m, x) for m in (base, new)]
            for _, fb, _ in versions:
                fb()  # compile or load from the cache; leaves the gradients to compare
            grads = [[leaves[k].grad for k in leaves] for _, _, leaves in versions]
            diff = max(
                ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
                for a, b in zip(*grads, strict=True)
            )
            best = [[float("inf")] * 2 for _ in versions]
            for _ in range(args.reps):
                for times, (fwd, fb, _) in zip(best, versions, strict=True):
                    for i, fn in enumerate((fwd, fb)):
                        start = time.perf_counter()
                        fn()
                        times[i] = min(times[i], time.perf_counter() - start)
            (bf, bfb), (tf, tfb) = best
            print(f"{str(shape):>20} | {bf * 1e3:7.2f}ms {bfb * 1e3:7.2f}ms | {tf * 1e3:7.2f}ms "
                  f"{tfb * 1e3:7.2f}ms | {bfb / tfb:11.3f}x | {diff:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
