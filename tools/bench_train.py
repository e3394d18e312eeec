"""Training throughput: images/s at 256 x 256 crops, batch 8, 2 threads, and seconds per epoch.

Runs the real training step (`istd.engine.train.train_one_epoch`: data loading and
augmentation, forward, SoftIoU loss, backward, AdaGrad step, schedule step) on the
NUAA-SIRST training split, after one warm-up epoch that pays the JIT compilation, and
projects the time of one NUAA-SIRST training epoch (256 images).

Usage:
    python tools/bench_train.py [--model mim-istd] [--batch 8] [--crop 256] [--threads 2]
                                [--images 32] [--amp] [--data-root ../shared/datasets/NUAA-SIRST]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from istd.engine.config import load_config
from istd.engine.losses import build_loss
from istd.engine.train import (
    build_optimizer,
    build_scheduler,
    make_train_loader,
    make_train_set,
    seed_everything,
    split_samples,
    train_one_epoch,
)
from istd.models import build_model

NUAA_TRAIN_IMAGES = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mim-istd")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--images", type=int, default=32, help="training images timed (after warm-up)"
    )
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--data-root",
        default=str(Path(__file__).resolve().parents[1].parent / "shared/datasets/NUAA-SIRST"),
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
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
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    train_set = make_train_set(train, cfg)
    steps = len(make_train_loader(train_set, cfg, 0, 0, 1))
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.optim.lr, 2, steps)
    loss_fn = build_loss(cfg.loss)

    def epoch(e: int) -> tuple[int, float]:
        loader = make_train_loader(train_set, cfg, e, 0, 1)
        start = time.perf_counter()
        stats = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, device, amp=args.amp)
        return stats.images, time.perf_counter() - start

    warm_images, warm_s = epoch(0)  # JIT compilation, first-touch allocations
    images, seconds = epoch(1)
    ips = images / seconds
    print(
        f"model {args.model} ({n_params / 1e6:.2f} M params), crops {args.crop}x{args.crop}, batch {args.batch}, "
        f"{args.threads} threads, amp={args.amp}, device {args.device} ({platform.processor() or platform.machine()})"
    )
    print(f"warm-up epoch: {warm_images} images in {warm_s:.1f} s")
    print(f"timed epoch:   {images} images in {seconds:.1f} s -> {ips:.2f} images/s")
    print(
        f"projected NUAA-SIRST training epoch ({NUAA_TRAIN_IMAGES} images): {NUAA_TRAIN_IMAGES / ips:.0f} s"
    )


if __name__ == "__main__":
    main()
