"""Optimizer, learning-rate schedule (stepped every batch) and the EMA of weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "ModelEma"]


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """`params` is either parameters or param-group dicts (transfer learning passes per-group `lr`)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of each group's base rate at `step` (0-based), for every schedule."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch) if cfg.schedule != "onecycle" else 0
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "onecycle":
        # Linear ramp up over the first 25% of steps from 1/25 of the peak, then cosine down to ~0.
        peak = max(1, int(0.25 * total))
        if step < peak:
            return 0.04 + 0.96 * step / peak
        return 0.5 * (1 + math.cos(math.pi * (step - peak) / max(1, total - peak))) * 0.999 + 1e-3
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    if cfg.schedule == "step":
        return 0.1 ** (step // (cfg.step_size * steps_per_epoch))
    return 1.0


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch))


class ModelEma:
    """Exponential moving average of a model's weights (buffers copied as they are)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.detach(), 1 - self.decay)
            else:
                ema_v.copy_(v)
