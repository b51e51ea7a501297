"""The learning-rate range test of a fine-tuning plan: `cnnzoo lr-find --from SRC --data D --strategy S`.

The sweep (`cnnzoo.engine.lr_find`) runs on the network fine-tuning would train, prepared as `finetune`
prepares it: the source's weights with a new head, the groups the strategy trains (others frozen, their
BatchNorm in inference mode unless `train_bn`), the per-group rates of a range or a layer decay (the sweep
moves them together; its axis is the head's rate), the source's preprocessing and the plan's batch.
`head` and `gradual` sweep the head on the frozen network: the phase they start with (`gradual`'s second
phase runs at a tenth to a hundredth of that rate).
"""

from __future__ import annotations

from pathlib import Path

from ..data import load_dataset
from ..data.base import Splits
from ..engine.config import TrainConfig
from ..engine.lr_find import END_LR, START_LR, STEPS, LrFind, lr_find, plot_title
from ..engine.setup import dataset_options, target_splits
from ..runtime import resolve_device
from .finetune import FinetuneConfig, check_target_data, source_loaders, source_model
from .freeze import freeze, param_groups

__all__ = ["finetune_lr_find"]


def finetune_lr_find(
    ft: FinetuneConfig,
    cfg: TrainConfig,
    *,
    splits: Splits | None = None,
    png: str | Path | None = "lr_find.png",
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    steps: int = STEPS,
) -> LrFind:
    """The sweep for fine-tuning `ft.source` on `cfg.data` with `ft.strategy` (`cfg` as `finetune_plan`
    resolves it); the plot written to `png` (None: none). The source's weights are left as they were."""
    splits = splits or load_dataset(cfg.data, **dataset_options(cfg))
    splits = target_splits(splits, cfg, ft.samples_per_class)
    check_target_data(splits)
    src, model = source_model(ft, cfg, splits.info)
    device = resolve_device(cfg.device)
    _, (train_loader, _) = source_loaders(splits, src, cfg, device)
    if ft.strategy in ("head", "gradual"):
        freeze(model, "head", train_bn=ft.train_bn)
        groups = param_groups(model, cfg.lr)
    else:
        freeze(model, "full" if ft.strategy == "scratch" else ft.strategy, train_bn=ft.train_bn)
        groups = param_groups(model, ft.lr_range or cfg.lr, ft.layer_decay)
    result = lr_find(
        model,
        train_loader,
        cfg,
        device=device,
        param_groups=groups,
        start_lr=start_lr,
        end_lr=end_lr,
        steps=steps,
    )
    if png is not None:
        title = plot_title(src.model_name, splits.info.name, cfg) + f", {ft.strategy}"
        result.plot(png, title)
    return result
