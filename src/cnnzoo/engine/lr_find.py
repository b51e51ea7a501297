"""The learning-rate range test (Smith, 2017, "Cyclical Learning Rates for Training Neural Networks", 3.3;
fastai's `lr_find`): train a few hundred steps while the rate grows exponentially, watch the loss, and
suggest the rate at which it falls fastest.

1. the model's weights and buffers, which parameters train, its mode and the random state are saved
2. step i of n trains at lr_i = start * (end / start) ** (i / (n - 1)); parameter groups keep their ratios
   to the largest rate (fine-tuning's discriminative rates), so the sweep's axis is the head's rate
3. the sweep stops once the loss, as an exponential average (0.98, bias-corrected, as fastai's), passes 4x
   its lowest value or is not finite: the rate is far too high from there on
4. the loss curve is smoothed again, centred (a Hann window of ~1/15 of the steps): the running average
   lags ~50 steps, over a decade of rate at 300 steps for 7 decades, and moved the suggestion up to 2x
5. the suggestion: the steepest descent of the smoothed loss against log(lr), before its minimum (fastai's
   `steep`); the minimum's rate / 10 (fastai's older rule) is reported too
6. what 1 saved is put back: the model leaves as it came, and a training run after it starts the same
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._io import atomic_write
from ..errors import CnnzooError
from ..models import create_model
from ..runtime import autocast_dtype, resolve_device
from .config import TrainConfig, describe_recipe, scale_to_data
from .frozen import set_frozen_bn_eval
from .loop import _loss
from .optim import build_optimizer
from .setup import check_image_size, load_splits, resolve_image_size, run_loaders

__all__ = ["LrFind", "lr_find", "lr_find_model", "plot_title", "START_LR", "END_LR", "STEPS"]

START_LR, END_LR = 1e-6, 10.0  # the sweep's range: below any useful rate to past every divergence
STEPS = 300  # "a few hundred" steps; a sweep that diverges stops sooner
SMOOTHING = 0.98
DIVERGED = 4.0  # stop once the smoothed loss passes this multiple of its lowest value
_READ_EVERY = 10  # steps between reads of the losses (each read is a host sync)


@dataclass
class LrFind:
    """One sweep: the rate and loss of every step, and the suggested rate."""

    lrs: list[float]
    losses: list[float]  # each step's training loss
    smoothed: list[float]
    suggestion: float  # steepest descent of the smoothed loss, before its minimum
    min_lr: float  # the rate at the smoothed loss's minimum (its tenth is fastai's older suggestion)
    stopped_early: bool  # the loss diverged before `end_lr`

    @property
    def method(self) -> str:
        return "steepest descent of the smoothed loss"

    def describe(self) -> str:
        end = f", stopped at {self.lrs[-1]:.3g} (diverged)" if self.stopped_early else ""
        return (
            f"suggested learning rate {self.suggestion:.3g} ({self.method}); minimum of the loss at "
            f"{self.min_lr:.3g}, a tenth of it {self.min_lr / 10:.3g}; {len(self.lrs)} steps from "
            f"{self.lrs[0]:.3g}{end}"
        )

    def plot(self, path: str | Path, title: str) -> Path:
        """Loss against rate (log x), the suggested rate marked; written atomically."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.plot(self.lrs, self.losses, color="0.75", linewidth=0.8, label="loss per step")
        ax.plot(self.lrs, self.smoothed, color="C0", label="smoothed")
        y = np.interp(math.log(self.suggestion), np.log(self.lrs), self.smoothed)
        ax.axvline(self.suggestion, color="C3", linestyle="--", linewidth=1)
        ax.plot([self.suggestion], [y], "o", color="C3", label=f"suggested {self.suggestion:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        top = min(max(self.smoothed), 1.5 * self.smoothed[0])  # the divergence would flatten the rest
        ax.set_ylim(min(self.smoothed) - 0.05 * abs(top), top * 1.05)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(path)
        try:
            atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
        finally:
            plt.close(fig)
        return path


def lr_find(
    model: nn.Module,
    train_loader,
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    param_groups: list[dict] | None = None,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    steps: int = STEPS,
) -> LrFind:
    """Sweep the rate of `cfg`'s optimizer from `start_lr` to `end_lr` over `steps` batches of
    `train_loader` (again from its start when it runs out); `model` is left as it came."""
    if not 0 < start_lr < end_lr:
        raise CnnzooError(f"the sweep needs 0 < start < end, got {start_lr:g} and {end_lr:g}")
    if steps < 10:
        raise CnnzooError(f"a sweep of {steps} steps is too short to read a slope from: give 10 or more")
    saved = _Saved(model)
    try:
        return _sweep(model, train_loader, cfg, torch.device(device), param_groups, start_lr, end_lr, steps)
    finally:
        saved.restore(model)


class _Saved:
    """What the sweep changes: weights and buffers, `requires_grad`, training mode, the random state."""

    def __init__(self, model: nn.Module):
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.grad = [p.requires_grad for p in model.parameters()]
        self.modes = [m.training for m in model.modules()]
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)
        for p, g in zip(model.parameters(), self.grad, strict=True):
            p.requires_grad_(g)
            p.grad = None
        for m, training in zip(model.modules(), self.modes, strict=True):
            m.training = training
        torch.set_rng_state(self.rng)
        if self.cuda_rng:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def _sweep(model, loader, cfg, device, param_groups, start_lr, end_lr, steps) -> LrFind:
    model.to(device).train()
    set_frozen_bn_eval(model)  # fine-tuning: frozen BatchNorm stays in inference mode
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise CnnzooError("nothing to train: every parameter is frozen")
    optimizer = build_optimizer(cfg, param_groups if param_groups is not None else trainable)
    top = max(g["lr"] for g in optimizer.param_groups)
    ratios = [g["lr"] / top for g in optimizer.param_groups]
    rates = np.geomspace(start_lr, end_lr, steps)
    amp = autocast_dtype(cfg.precision, device)
    losses: list[torch.Tensor] = []
    read: list[float] = []
    epoch = 0
    while len(losses) < steps:
        loader.set_epoch(epoch)
        epoch += 1
        for x, y in loader:
            for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                group["lr"] = float(rates[len(losses)]) * ratio
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = _loss(model(x), y, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            losses.append(loss.detach().float())
            if len(losses) % _READ_EVERY == 0 or len(losses) == steps:
                read = torch.stack(losses).tolist()  # the only host sync, every few steps
                if _diverged(read):
                    return _result(rates, read, stopped_early=True)
            if len(losses) == steps:
                break
    return _result(rates, read, stopped_early=False)


def _smooth(losses: list[float]) -> list[float]:
    avg, out = 0.0, []
    for i, loss in enumerate(losses, 1):
        avg = SMOOTHING * avg + (1 - SMOOTHING) * loss
        out.append(avg / (1 - SMOOTHING**i))
    return out


def _centred(losses: list[float]) -> list[float]:
    """A moving average with a Hann window centred on each step (shorter at the ends): no lag."""
    width = max(5, len(losses) // 15) | 1
    window = np.hanning(width + 2)[1:-1]
    x = np.asarray(losses, dtype=np.float64)
    total = np.convolve(x, window, mode="same") / np.convolve(np.ones_like(x), window, mode="same")
    return total.tolist()


def _diverged(losses: list[float]) -> bool:
    if not all(math.isfinite(v) for v in losses):
        return True
    smoothed = _smooth(losses)
    return smoothed[-1] > DIVERGED * min(smoothed)


def _result(rates: np.ndarray, losses: list[float], stopped_early: bool) -> LrFind:
    """Cut the run at its first non-finite loss, smooth it, and find the suggestion."""
    finite = next((i for i, v in enumerate(losses) if not math.isfinite(v)), len(losses))
    losses = losses[:finite]
    if len(losses) < 10:
        raise CnnzooError(
            f"the loss was not finite after {finite} steps, from {rates[0]:.3g}: give a lower start rate"
        )
    lrs = [float(r) for r in rates[: len(losses)]]
    smoothed = _centred(losses)
    low = int(np.argmin(smoothed))
    skip = max(1, len(lrs) // 10)  # the first steps: the window is cut short there
    if low - skip >= 3:
        slope = np.gradient(np.asarray(smoothed[: low + 1]), np.log10(lrs[: low + 1]))
        suggestion = lrs[skip + int(np.argmin(slope[skip:]))]
    else:  # the loss never fell: fall back to fastai's older rule
        suggestion = lrs[low] / 10
    return LrFind(lrs, losses, smoothed, suggestion, lrs[low], stopped_early)


def plot_title(model: str, data: str, cfg: TrainConfig) -> str:
    """The plot's title: model, data (a folder by its name), batch and optimizer."""
    if data.startswith("folder:"):
        data = "folder:" + Path(data[len("folder:") :]).name
    return f"LR range test: {model} on {data}, batch {cfg.batch_size}, {cfg.optimizer}"


def lr_find_model(
    cfg: TrainConfig,
    *,
    given: Collection[str] | None = None,
    png: str | Path | None = "lr_find.png",
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    steps: int = STEPS,
    quiet: bool = False,
) -> tuple[LrFind, TrainConfig]:
    """`cnnzoo lr-find MODEL --data D`: the sweep on a fresh `cfg.model`, with the batch, augmentation and
    optimizer `cnnzoo train` would use (its recipe scaled to the data where `given` leaves it free); the
    plot written to `png` (None: none). Returns the sweep and the recipe it ran with."""
    check_image_size(cfg)
    device = resolve_device(cfg.device)
    splits = load_splits(cfg)
    info = splits.info
    changed: dict = {}
    if given is not None:
        cfg, changed = scale_to_data(cfg, len(splits.train), frozenset(given))
    if not quiet:
        print(describe_recipe(cfg, len(splits.train), changed, None if given is None else frozenset(given)))
    image_size = resolve_image_size(cfg, info, quiet)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=info.num_classes, in_chans=info.channels, **cfg.model_kwargs)
    train_loader, _ = run_loaders(splits, cfg, image_size, device)
    result = lr_find(model, train_loader, cfg, device=device, start_lr=start_lr, end_lr=end_lr, steps=steps)
    if png is not None:
        result.plot(
            png, f"LR range test: {cfg.model} on {info.name}, batch {cfg.batch_size}, {cfg.optimizer}"
        )
    return result, cfg
