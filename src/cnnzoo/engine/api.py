"""The trainer as one Python call, as airbench's `train94()`: `cnnzoo.train("lenet5", data="mnist")`.

    result = cnnzoo.train("lenet5", data="mnist", epochs=4, train_subset=10_000, quiet=True)
    result.model                       # the trained network (the weight average where the recipe keeps one), eval mode
    result.history                     # one dict per epoch, the figures of metrics.jsonl
    result.final_acc, result.best_acc  # test accuracy (%) after the last epoch, and the best epoch's
    result.run_dir                     # None: nothing was written; with out="runs/x", that run folder

Every `TrainConfig` field is a keyword (`epochs`, `lr`, `augment`, `precision`, `tensorboard`...); those not
given are the recipe for (model, data), exactly as `cnnzoo train MODEL --data DATA` resolves them: on
small data its epochs, batch size, rate and augmentation scaled to the training images (`config.scale_to_data`).

`fit_module` is the same loop for a network that is not in the zoo (a lecture's own small VGG stack, say):

    net = torch.nn.Sequential(...)                      # takes (B, C, H, W), gives (B, classes)
    result = cnnzoo.fit_module(net, data="fashion-mnist", epochs=2, train_subset=5_000)
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from ..errors import CnnzooError, unknown_name
from ..runtime import resolve_device
from .config import TrainConfig, checked_value, default_augment, default_config
from .loop import TrainResult, fit
from .setup import RunContext, load_splits, run_loaders
from .train import train as _train

__all__ = ["train", "fit_module", "config_overrides"]


def train(
    model: str,
    data: str = "mnist",
    *,
    out: str | Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    auto_resume: bool = False,
    **overrides,
) -> TrainResult:
    """Train `model` on `data` with the recipe's settings and `overrides` (any `TrainConfig` field).

    `out=None` writes nothing to disk: the model comes back in the result, nothing else is kept. A folder
    makes it a run as `cnnzoo train --out` makes one (checkpoints, metrics, summary.csv, TensorBoard
    events), refused if it holds a run unless `overwrite`; with `auto_resume` a run of the same configuration
    there is continued (`cnnzoo train --auto-resume`). `quiet` silences the per-epoch lines."""
    given = config_overrides(overrides, "cnnzoo.train")
    cfg = default_config(model, data, **given)
    return _train(
        cfg,
        run_dir=out,
        quiet=quiet,
        overwrite=overwrite,
        save=out is not None,
        auto_resume=auto_resume,
        given=set(given),
    )


def fit_module(
    model: nn.Module,
    data: str = "mnist",
    *,
    image_size: int | None = None,
    quiet: bool = True,
    **overrides,
) -> TrainResult:
    """Train any `nn.Module` on `data` with the engine's loop (in-memory loader, batched augmentation,
    optimiser, schedule, precision, evaluation) and nothing written to disk.

    `model` takes `(B, channels, image_size, image_size)` and gives `(B, classes)` logits; `image_size`
    defaults to the dataset's. The other options are `TrainConfig` fields, with its defaults (there is no
    recipe for an unregistered network) and the dataset's augmentation. Returns `cnnzoo.train`'s result,
    whose `model` is `model` trained, in eval mode (or its weight average, with `ema=`)."""
    if not isinstance(model, nn.Module):
        raise CnnzooError(f"cnnzoo.fit_module: model must be a torch.nn.Module, not {type(model).__name__}")
    options = config_overrides(overrides, "cnnzoo.fit_module")
    options.setdefault("augment", default_augment(data))
    cfg = TrainConfig(model=type(model).__name__, data=data, **options)
    device = resolve_device(cfg.device)
    splits = load_splits(cfg)
    info = splits.info
    loaders = run_loaders(splits, cfg, image_size or info.image_size, device)
    torch.manual_seed(cfg.seed)
    ctx = RunContext(Path("."), {}, quiet=quiet, save=False)
    return fit(model, loaders, cfg, ctx, device=device)


def config_overrides(options: dict, caller: str) -> dict:
    """`options` as `TrainConfig` keywords (None: the recipe's), each checked: a name that is not a field,
    or a value of the wrong type, is one `CnnzooError` naming it."""
    names = [f.name for f in fields(TrainConfig) if f.name not in ("model", "data")]
    checked = {}
    for name, value in options.items():
        if name not in names:
            raise CnnzooError(f"{caller}: {unknown_name('option', name, names, 'see TrainConfig').args[0]}")
        if value is not None:
            try:
                checked[name] = checked_value(name, value)
            except CnnzooError as e:
                raise CnnzooError(f"{caller}: {e}") from None
    return checked
