"""Training throughput: images/s at 256 x 256 crops, batch 8, 2 threads, and seconds per epoch.

Runs the real training step (`istd.engine.train.train_one_epoch`: data loading and
augmentation, forward, SoftIoU loss, backward, AdaGrad step, schedule step) on the
NUAA-SIRST training split, after one warm-up epoch that pays the JIT compilation, and
projects the time of one NUAA-SIRST training epoch (256 images).

Usage:
    python tools/bench_train.py [--model mim-istd] [--batch 8] [--crop 256] [--threads 2]
                                [--images 16] [--rounds 3] [--amp] [--data-root ../shared/datasets/NUAA-SIRST]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

# before torch: istd sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads when torch loads, so the
# timings are those of `istd` and its CLI (torch first would time torch's spinning default)
import istd  # noqa: F401

# isort: split
import torch

from istd.engine.config import load_config
from istd.engine.losses import build_loss
from istd.engine.train import (
    build_optimizer,
    build_scheduler,
    configure_cpu,
    make_train_loader,
    make_train_set,
    seed_everything,
    split_samples,
    train_one_epoch,
)
from istd.models import build_model
from istd.ops._threads import openmp_wait

NUAA_TRAIN_IMAGES = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mim-istd")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=16, help="training images per timed epoch")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs (best and median)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--data-root",
        default=str(Path(__file__).resolve().parents[1].parent / "shared/datasets/NUAA-SIRST"),
    )
    args = parser.parse_args()

    configure_cpu(args.threads)  # as `fit`: threads hold for Numba too; denormals flushed
    device = torch.device(args.device)
    cfg = load_config(
        "mim-istd_nuaa-sirst",
        [
            f"data.root={args.data_root}",
            f"model.name={args.model}",
            f"augment.crop_size={args.crop}",
            f"train.batch_size={args.batch}",
            f"data.limit={args.images}",
            f"train.threads={args.threads}",
        ],
    )
    train, _ = split_samples(cfg)
    seed_everything(cfg.train.seed)
    model = build_model(args.model).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(model, cfg.optim)
    train_set = make_train_set(train, cfg)
    steps = len(make_train_loader(train_set, cfg, 0, 0, 1))
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.optim.lr, 1 + args.rounds, steps)
    loss_fn = build_loss(cfg.loss)

    def epoch(e: int) -> tuple[int, float, float]:
        loader = make_train_loader(train_set, cfg, e, 0, 1)
        wall, cpu = time.perf_counter(), time.process_time()
        stats = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, device, amp=args.amp)
        return stats.images, time.perf_counter() - wall, time.process_time() - cpu

    load_before = os.getloadavg()[0]
    warm_images, warm_s, _ = epoch(0)  # JIT compilation, first-touch allocations
    rounds = [epoch(1 + r) for r in range(args.rounds)]
    images = rounds[0][0]
    walls = sorted(r[1] for r in rounds)
    best_ips = images / walls[0]
    median_ips = images / walls[len(walls) // 2]
    cpu_ips = images / min(r[2] for r in rounds)  # images per CPU-second, all threads summed
    print(f"model {args.model} ({n_params / 1e6:.2f} M params), crops {args.crop}x{args.crop}, "
          f"batch {args.batch}, {args.threads} threads, amp={args.amp}, device {args.device} "
          f"({platform.processor() or platform.machine()})")  # fmt: skip
    print(f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores (other processes share them); {openmp_wait()}")  # fmt: skip
    print(f"warm-up epoch: {warm_images} images in {warm_s:.1f} s")
    print(f"{args.rounds} timed epochs of {images} images: best {best_ips:.2f} images/s, "
          f"median {median_ips:.2f} images/s; {cpu_ips:.2f} images per CPU-second")  # fmt: skip
    print(f"projected NUAA-SIRST training epoch ({NUAA_TRAIN_IMAGES} images): "
          f"best {NUAA_TRAIN_IMAGES / best_ips:.0f} s, median {NUAA_TRAIN_IMAGES / median_ips:.0f} s; "
          f"{NUAA_TRAIN_IMAGES / cpu_ips / args.threads:.0f} s if {args.threads} cores were all ours")  # fmt: skip


if __name__ == "__main__":
    main()
