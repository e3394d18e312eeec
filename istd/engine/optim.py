"""Optimiser and learning-rate schedule of a training run, built from its config.

AdaGrad with a warm-up then cosine schedule is the recipe ACM and DNANet train with (see
`istd.engine.config`); Adam and AdamW are offered for experiments.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from istd.engine.config import OptimConfig, ScheduleConfig
from istd.errors import ConfigError

__all__ = ["build_optimizer", "build_scheduler"]


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: which parameters `cfg.weight_decay` applies to.

    With ``decay="weights"`` only conv and linear weights are decayed. Biases, norm parameters
    and the scan's ``A_log``, ``D`` and step-size bias (marked ``_no_weight_decay``, as
    mamba_ssm marks A_log and D) are not: decay pulls every ``A_log`` to 0, i.e. all 16 states
    to one decay rate, the ``D`` skip to nothing and the step sizes to softplus(0). Measured on
    the first NUAA-SIRST weights, trained with ``decay="all"``: A_log 0.00 to 0.03 where it
    starts at log(1..16), D 0.00 in 11 of 12 blocks, mean step 0.40 to 0.45 where it starts
    in 0.001 to 0.1.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.decay == "all":
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    kept = [p for p in params if p.ndim <= 1 or getattr(p, "_no_weight_decay", False)]
    kept_ids = {id(p) for p in kept}
    decayed = [p for p in params if id(p) not in kept_ids]
    return [
        {"params": decayed, "weight_decay": cfg.weight_decay},
        {"params": kept, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdaGrad (default, as ACM and DNANet), Adam or AdamW over `param_groups(model, cfg)`."""
    params = param_groups(model, cfg)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    betas = (cfg.betas[0], cfg.betas[1])
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optim.name {cfg.name!r}; known: adagrad, adam, adamw")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleConfig,
    lr: float,
    epochs: int,
    steps_per_epoch: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up over `warmup_epochs`, then cosine to `min_lr` (or flat).

    The warm-up is cut to ``epochs - 1`` epochs, so a short run of a shipped recipe (a smoke
    test with ``train.epochs=1``) keeps a schedule instead of failing validation.
    """
    total = epochs * steps_per_epoch
    warmup = min(cfg.warmup_epochs, epochs - 1) * steps_per_epoch
    floor = cfg.min_lr / lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    if cfg.name not in ("cosine", "constant"):
        raise ConfigError(f"unknown schedule.name {cfg.name!r}; known: cosine, constant")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
