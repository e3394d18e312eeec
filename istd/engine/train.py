"""Training: `train_one_epoch` and the `fit` loop behind `istd train`.

MiM-ISTD's authors (Chen et al., TGRS 2024) publish no training code; the recipe here is the
one ACM and DNANet train with (see `istd.engine.config`), laid out like torchvision's
segmentation reference script: plain functions with explicit arguments, one resume record.

Reproducibility: the data order comes from a `DistributedSampler` seeded with (seed, epoch);
each sample's augmentation is seeded with (seed, epoch, index); and every epoch begins by
seeding Python, NumPy and torch with (seed, epoch, rank). So an epoch's randomness depends
on nothing that came before it, which makes a resumed run (from the epoch-level `last.ckpt`)
equal to an uninterrupted one, whatever the DataLoader workers or the DDP world do. The RNG
states are stored in the checkpoint as well and restored on resume. The data side lives in
`istd.engine.train_data`, the optimiser and schedule in `istd.engine.optim`.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from istd._atomic import recover_dir, remove_stale_temps
from istd.data import IRSTDDataset, compute_norm_stats
from istd.engine.checkpoint import (
    RunState,
    load_checkpoint,
    load_weights,
    make_record,
    prepare_work_dir,
    restore_run,
    save_checkpoint,
    write_best,
    write_config,
    write_init_record,
    write_log,
)
from istd.engine.config import TrainConfig, apply_override, load_config
from istd.engine.curves import CURVES_FILE, write_training_curves
from istd.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
    is_dist,
    resolve_device,
)
from istd.engine.evaluate import evaluate
from istd.engine.losses import build_loss
from istd.engine.optim import build_optimizer, build_scheduler
from istd.engine.selection import trailing_mean
from istd.engine.train_data import (
    ids_sha256,
    make_train_loader,
    make_train_set,
    seed_everything,
    split_samples,
)
from istd.errors import ConfigError, DataError
from istd.metrics import Metrics
from istd.models import build_model, from_pretrained, list_models

__all__ = [
    "DivergenceError",
    "FitResult",
    "Reporter",
    "fit",
    "configure_cpu",
    "train_one_epoch",
]


# Validation metrics written to log.csv (all scalars go to best/config.json).
LOG_METRICS = ("iou", "niou", "pd", "fa")


class DivergenceError(ConfigError):
    """The loss became NaN or infinite; the run stopped before the bad step was applied."""


@dataclass
class EpochStats:
    """What one training epoch did on this rank."""

    loss: float
    steps: int
    images: int
    seconds: float


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    amp: bool = False,
    grad_clip: float | None = None,
    ema: AveragedModel | None = None,
    on_step: Callable[[float, int], None] | None = None,
    where: str = "",
) -> EpochStats:
    """One pass over `loader`: forward, loss, backward, step, schedule step.

    Args:
        amp: bf16 autocast for the network (the scan itself runs in float32).
        grad_clip: max global gradient norm, or None.
        ema: a moving average of `model`'s weights, updated after every step.
        on_step: called with (loss, images in the batch) after every step, for progress bars.
        where: prefix for error messages (e.g. "epoch 3").

    Returns:
        Mean loss over steps, step count, image count and seconds.

    Raises:
        DivergenceError: a NaN or infinite loss on any rank, before that step is applied.
    """
    model.train()
    total, steps, images = 0.0, 0, 0
    start = time.perf_counter()
    for image, mask in loader:
        image = image.to(device, non_blocking=True)  # (B, 1, S, S)
        mask = mask.to(device, non_blocking=True)  # (B, 1, S, S)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(image)  # (B, 1, S, S)
        loss = loss_fn(logits.float(), mask)
        finite = torch.isfinite(loss.detach()).to(torch.int32)
        if is_dist():
            # Every rank must stop on the same step, or the others hang in the gradient all-reduce.
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if not bool(finite.item()):
            raise DivergenceError(
                f"{where} step {steps + 1}: loss is {loss.item()} (NaN or inf); the step was not "
                "applied and last.ckpt still holds the last good epoch. Lower optim.lr, set "
                "optim.grad_clip, or check the data with `istd data check`."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(
                model.module if isinstance(model, DistributedDataParallel) else model
            )
        steps += 1
        images += image.shape[0]
        total += loss.item()
        if on_step is not None:
            on_step(loss.item(), image.shape[0])
    if steps == 0:
        raise DataError(f"{where}: the training loader yielded no batch")
    return EpochStats(
        loss=total / steps, steps=steps, images=images, seconds=time.perf_counter() - start
    )


class Reporter:
    """Progress hooks `fit` calls on the main process; the CLI subclasses it with Rich."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """An epoch (1-based) of `steps` optimiser steps begins."""

    def step(self, loss: float, images: int) -> None:
        """One optimiser step on `images` images ended with `loss`."""

    def epoch_end(self, row: dict[str, Any]) -> None:
        """An epoch ended; `row` is its log.csv row (epoch 0, the starting weights validated
        before a fine-tuning run's first step, has no loss, lr or speed)."""

    def note(self, text: str) -> None:
        """A one-line message (resume point, best checkpoint, ...)."""


@dataclass
class FitResult:
    """Where a finished run left things."""

    work_dir: Path
    epochs: int
    step: int
    best_epoch: int | None
    best_value: float | None
    history: list[dict[str, Any]]


def fit(
    config: TrainConfig | str | Path | None,
    work_dir: str | Path,
    *,
    overrides: list[str] | None = None,
    resume: bool = False,
    load_from: str | Path | None = None,
    amp: bool = False,
    device: str = "cpu",
    reporter: Reporter | None = None,
) -> FitResult:
    """Train `config` in `work_dir`: resolved config, log.csv, last.ckpt and best/.

    Args:
        config: the run's config, a shipped config name or a YAML path; None with `resume`
            reuses the work dir's config.yaml.
        overrides: `key=value` strings applied to `config` (see `load_config`).
        work_dir: the run folder; a new run refuses a folder that already holds a run.
        resume: continue from `work_dir/last.ckpt` (a fresh start when none was written yet).
        load_from: a weights folder (`save_pretrained` layout) to initialise the network from.
        amp: bf16 autocast for everything but the scan.
        device: "cpu" or "cuda" (under torchrun, CUDA rank r uses GPU LOCAL_RANK).
        reporter: progress hooks; None trains silently.

    Returns:
        Epochs done, global step, best epoch and value, and the log rows.

    Raises:
        ConfigError: bad config or work dir; DivergenceError for a NaN or inf loss.
        DataError, WeightsError, BackendError: bad dataset, weights or device.

    Example:
        >>> cfg = load_config("mim-istd_nuaa-sirst", ["data.limit=8"])
        >>> fit(cfg, "runs/smoke")  # doctest: +SKIP
    """
    if isinstance(config, (str, Path)):
        config = load_config(config, overrides)
    elif overrides:
        if config is None:
            raise ConfigError("--set needs CONFIG (the saved config of a resumed run is fixed)")
        config = copy.deepcopy(config)
        for item in overrides:
            apply_override(config, item)
    dev = resolve_device(device)
    info = init_distributed(dev)
    if dev.type == "cuda" and info.enabled:
        dev = torch.device("cuda", info.local_rank)
    # Process-wide torch settings the run changes; put back for the caller (tests, notebooks).
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        cfg = prepare_work_dir(config, Path(work_dir), resume, load_from, barrier)
        return _run(cfg, Path(work_dir), resume, load_from, amp, dev, info, reporter or Reporter())
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.set_flush_denormal(False)  # torch's default (it has no getter to save)
        cleanup()


def configure_cpu(threads: int | None) -> None:
    """Process-wide CPU settings for training: thread count and denormal flushing.

    Numba's pool (the CPU scan) starts lazily on its first call and then resets the OpenMP
    thread count, changing torch's for the rest of the process: the first step after a
    (re)start would round differently from the steps after it, breaking exact resume.
    Starting it here makes every step alike. Denormal floats, which training produces in
    small activations and gradients, make x86 arithmetic several times slower; flushing
    them to zero changes nothing measurable in the weights.
    """
    # Threads inherit the creator's floating-point mode: flush before any pool starts.
    torch.set_flush_denormal(True)
    try:
        import numba
    except ImportError:  # no CPU scan kernel, nothing to start
        pass
    else:
        numba.get_num_threads()  # launches the pool
    if threads is not None:
        torch.set_num_threads(threads)


def _build_network(cfg: TrainConfig, mean: float, std: float, seed: int) -> nn.Module:
    """The network to train, seeded, with the training split's normalisation in its config."""
    probe = build_model(cfg.model.name, **cfg.model.overrides)
    if not any(p.requires_grad for p in probe.parameters()):
        networks = [n for n in list_models() if n.startswith("mim-istd")]
        raise ConfigError(
            f"model {cfg.model.name!r} has no trainable parameters (a weight-free detector); "
            f"train a network: {', '.join(networks)}"
        )
    seed_everything(seed)  # same initial weights on every rank and every run
    return build_model(cfg.model.name, **cfg.model.overrides, norm_mean=(mean,), norm_std=(std,))


def _run(
    cfg: TrainConfig,
    work_dir: Path,
    resume: bool,
    load_from: str | Path | None,
    amp: bool,
    dev: torch.device,
    info: DistInfo,
    reporter: Reporter,
) -> FitResult:
    t = cfg.train
    configure_cpu(t.threads)
    torch.use_deterministic_algorithms(t.deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not t.deterministic
    train_s, val_s = split_samples(cfg)
    splits = {"train": ids_sha256(train_s), "val": ids_sha256(val_s)}
    if cfg.data.norm_mean is not None and cfg.data.norm_std is not None:
        mean, std = cfg.data.norm_mean[0], cfg.data.norm_std[0]
    else:
        mean, std = compute_norm_stats(train_s)
    model = _build_network(cfg, mean, std, t.seed).to(dev)
    ckpt_path = work_dir / "last.ckpt"
    record = load_checkpoint(ckpt_path) if resume and ckpt_path.is_file() else None
    if load_from is not None and record is None:
        source = from_pretrained(load_from)
        load_weights(model, source.state_dict(), str(load_from))
        reporter.note(f"initialised from {load_from}")
    ema = None
    if t.ema_decay is not None:
        # Buffers too, so the average carries its own normalisation statistics.
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
    published = model if ema is None else ema.module  # what is validated and saved to best/

    train_set = make_train_set(train_s, cfg, norm_mean=mean)
    steps_per_epoch = len(make_train_loader(train_set, cfg, 0, info.rank, info.world_size))
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.optim.lr, t.epochs, steps_per_epoch)
    loss_fn = build_loss(cfg.loss)
    state = RunState()
    if record is not None:
        state = restore_run(record, model, optimizer, scheduler, splits, ckpt_path, ema)
        reporter.note(f"resuming after epoch {state.epoch} (step {state.step}) from {ckpt_path}")
    if info.is_main:
        write_config(work_dir, cfg)
        if load_from is not None and record is None:
            write_init_record(work_dir, load_from)
        recover_dir(work_dir / "best")
        remove_stale_temps(work_dir, "config.yaml", "log.csv", "last.ckpt", CURVES_FILE)  # SIGKILL
        write_log(work_dir, state.history)  # drops rows of an epoch cut short before its ckpt
    if info.enabled:
        # Depthwise-conv grads arrive channels-last; DDP copies them into its buckets (a speed
        # hint only, printed every step otherwise).
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    net = DistributedDataParallel(model) if info.enabled else model
    val_loader = DataLoader(
        IRSTDDataset(val_s, cache=True), batch_size=1, num_workers=cfg.data.num_workers
    )
    dataset_name = Path(cfg.data.root).name

    def validate_and_publish(epoch: int, row: dict[str, Any]) -> None:
        """Validate `published` after `epoch` epochs into `row`; a new best goes to best/."""
        metrics = validate(published, val_loader, t.threshold, dev)
        logged = (*LOG_METRICS, t.best_metric)
        row.update({f"val_{k}": v for k, v in metrics.items() if k in logged})
        if t.best_metric not in metrics:
            raise ConfigError(
                f"train.best_metric {t.best_metric!r} unknown; known: {', '.join(metrics)}"
            )
        column = f"val_{t.best_metric}"
        earlier = [r[column] for r in state.history if r.get(column) is not None]
        value = trailing_mean([*earlier, metrics[t.best_metric]], t.best_window)
        better = state.best_value is None or (
            value > state.best_value if t.best_mode == "max" else value < state.best_value
        )
        if better and math.isfinite(value):
            state.best_value, state.best_epoch = value, epoch
            extra = {
                "dataset": f"{dataset_name} ({cfg.data.train_split} split)",
                "metrics": metrics,
                "split": f"validation: {cfg.data.val_split or 'held out of train'}",
                "split_sha256": splits, "epoch": epoch, "train_config": cfg.to_dict(),
                "selection": {"metric": t.best_metric, "window": t.best_window, "score": value},
            }  # fmt: skip
            write_best(work_dir / "best", published, extra)
            over = f" (mean of the last {t.best_window} validations)" if t.best_window > 1 else ""
            reporter.note(f"epoch {epoch}: best {t.best_metric} {value:.4f}{over} -> best/")

    if load_from is not None and record is None and info.is_main:
        # Epoch 0: the starting weights under this run's config (its validation split, its
        # model overrides), so that fine-tuning never publishes worse weights than it began
        # with and the log shows where it began.
        began = time.perf_counter()
        row: dict[str, Any] = {"epoch": 0, "step": 0, "loss": None, "lr": None}
        validate_and_publish(0, row)
        row.update(images_per_s=None, epoch_s=time.perf_counter() - began)
        state.wall_time += row["epoch_s"]
        row["wall_time_s"] = state.wall_time
        state.history.append(row)
        write_log(work_dir, state.history)
        write_training_curves(work_dir, pd.DataFrame(state.history), state.best_epoch)
        reporter.epoch_end(row)

    for epoch in range(state.epoch, t.epochs):
        began = time.perf_counter()
        seed_everything(t.seed, epoch, info.rank)
        loader = make_train_loader(train_set, cfg, epoch, info.rank, info.world_size)
        if info.is_main:
            reporter.epoch_start(epoch + 1, t.epochs, len(loader))
        stats = train_one_epoch(
            net, loader, optimizer, scheduler, loss_fn, dev, amp=amp, grad_clip=cfg.optim.grad_clip,
            ema=ema, on_step=reporter.step if info.is_main else None, where=f"epoch {epoch + 1}",
        )  # fmt: skip
        state.step += stats.steps
        images = all_reduce_sum(float(stats.images), dev)
        row = {
            "epoch": epoch + 1,
            "step": state.step,
            "loss": all_reduce_mean(stats.loss, dev),
            "lr": scheduler.get_last_lr()[0],
        }
        last = epoch + 1 == t.epochs
        if info.is_main and ((epoch + 1) % t.val_every == 0 or last):
            validate_and_publish(epoch + 1, row)
        row["images_per_s"] = images / max(stats.seconds, 1e-9)
        row["epoch_s"] = time.perf_counter() - began
        state.wall_time += row["epoch_s"]
        row["wall_time_s"] = state.wall_time
        state.history.append(row)
        state.epoch = epoch + 1
        if info.is_main:
            write_log(work_dir, state.history)
            if f"val_{t.best_metric}" in row:
                write_training_curves(work_dir, pd.DataFrame(state.history), state.best_epoch)
            save_checkpoint(
                ckpt_path, make_record(state, model, optimizer, scheduler, splits, mean, std, ema)
            )
            reporter.epoch_end(row)
        barrier()
    return FitResult(
        work_dir, state.epoch, state.step, state.best_epoch, state.best_value, state.history
    )


@torch.inference_mode()
def validate(
    model: nn.Module, loader: DataLoader, threshold: float, device: torch.device
) -> dict[str, float]:
    """Scalar validation metrics of `model` on `loader` (IoU, nIoU, Pd, Fa, ...)."""
    metrics = Metrics(threshold=threshold, keep_per_image=False)
    values = evaluate(model, loader, metrics, device)
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
