"""The fine-tuning recipe: what `cnnzoo finetune` trains with, and what `cnnzoo study transfer` measured.

One place for it, so that the command a user types and the cell of the report are the same run: the CLI,
the advisor's trial and the study all resolve their settings with `finetune_plan`.

- rates per strategy: 0.05 where the weights that learn are new (scratch, a head on frozen features,
  gradual's head phase), 0.01 where pretrained layers learn (last:N, full): big steps would overwrite
  what the source learned
- batch 64, weight decay 5e-4, SGD with Nesterov momentum and a one-cycle schedule (`TrainConfig`'s
  defaults), no augmentation
- epochs: at least `MIN_STEPS` optimizer steps, within `MIN_EPOCHS`..`MAX_EPOCHS` epochs. With 5 images
  per class a fixed epoch count takes a handful of steps (10 epochs of 2 batches: 20 steps, far from
  converged); the study gives every run 300, which little data reaches by repeating it, up to 40 epochs
- gradual: the head-only phase takes a third of the epochs
- the test split is evaluated every quarter of the epochs (and after the last): with 5 images per class,
  40 passes over a test split of thousands would cost far more than the training

Every setting a user gives (`--epochs`, `--lr`, `--batch-size`, ...) overrides the recipe's.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..data import load_dataset
from ..data.base import Splits
from ..engine.config import TrainConfig
from ..engine.setup import dataset_options, target_splits

__all__ = [
    "RATES",
    "BATCH_SIZE",
    "WEIGHT_DECAY",
    "MIN_STEPS",
    "MIN_EPOCHS",
    "MAX_EPOCHS",
    "strategy_rate",
    "recipe_epochs",
    "gradual_head_epochs",
    "recipe_config",
    "finetune_plan",
    "describe_recipe",
]

RATES = {"scratch": 0.05, "head": 0.05, "gradual": 0.05, "last": 0.01, "full": 0.01}
BATCH_SIZE = 64  # small batches: little data still gets several steps per epoch
WEIGHT_DECAY = 5e-4
MIN_STEPS = 300  # optimizer steps every run takes at least (reached by repeating little data)...
MIN_EPOCHS = 3
MAX_EPOCHS = 40  # ...within this many epochs: 5 images per class stop at 40 passes


def strategy_rate(strategy: str) -> float:
    """The recipe's peak learning rate for a strategy (head, last:N, full, gradual, scratch)."""
    return RATES["last" if strategy.startswith("last:") else strategy]


def recipe_epochs(
    n_train: int, batch_size: int = BATCH_SIZE, *, min_steps: int = MIN_STEPS, max_epochs: int = MAX_EPOCHS
) -> int:
    """Epochs that give at least `min_steps` steps of `batch_size` over `n_train` images (3..max_epochs)."""
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    return max(MIN_EPOCHS, min(max_epochs, math.ceil(min_steps / steps_per_epoch)))


def gradual_head_epochs(epochs: int) -> int:
    """gradual's head-only phase: a third of the epochs, at least one."""
    return max(1, epochs // 3)


def recipe_config(
    strategy: str,
    n_train: int,
    *,
    data: str,
    model: str | None = None,
    min_steps: int = MIN_STEPS,
    max_epochs: int = MAX_EPOCHS,
    **overrides,
) -> TrainConfig:
    """The `TrainConfig` of a fine-tuning run on `n_train` images: the recipe, then `overrides` not None.

    The epochs follow the batch size actually used (a user's `--batch-size` keeps the step count)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    batch = given.get("batch_size", BATCH_SIZE)
    epochs = given.get("epochs") or recipe_epochs(n_train, batch, min_steps=min_steps, max_epochs=max_epochs)
    recipe = dict(
        epochs=epochs,
        eval_every=max(1, epochs // 4),
        batch_size=BATCH_SIZE,
        lr=strategy_rate(strategy),
        weight_decay=WEIGHT_DECAY,
        augment="none",
    )
    return TrainConfig(model=model or "(from the source)", data=data, **{**recipe, **given})


def finetune_plan(
    ft,
    data: str,
    *,
    splits: Splits | None = None,
    min_steps: int = MIN_STEPS,
    max_epochs: int = MAX_EPOCHS,
    **overrides,
):
    """(ft, cfg, splits): the settings of `finetune(ft, cfg, splits=splits)` for a `FinetuneConfig` `ft`.

    Loads `data` unless `splits` are given, counts the training images the run will see (after
    `train_subset` and `ft.samples_per_class`, by the same helper `finetune` uses), and resolves the
    recipe for `ft.strategy` on that many; `ft.head_epochs` None becomes a third of the epochs.
    `overrides`: `TrainConfig` fields (None = the recipe's). `min_steps`/`max_epochs`: only the study's
    quick preset shrinks them."""
    draft = recipe_config(ft.strategy, 0, data=data, model=ft.model, **overrides)
    splits = splits if splits is not None else load_dataset(data, **dataset_options(draft))
    n_train = len(target_splits(splits, draft, ft.samples_per_class).train)
    cfg = recipe_config(
        ft.strategy,
        n_train,
        data=data,
        model=ft.model,
        min_steps=min_steps,
        max_epochs=max_epochs,
        **overrides,
    )
    if ft.head_epochs is None:
        ft = replace(ft, head_epochs=gradual_head_epochs(cfg.epochs))
    return ft, cfg, splits


def describe_recipe() -> dict:
    """The recipe's numbers (for reports and results.json)."""
    return {
        "rates": dict(RATES),
        "batch_size": BATCH_SIZE,
        "weight_decay": WEIGHT_DECAY,
        "min_steps": MIN_STEPS,
        "epochs": [MIN_EPOCHS, MAX_EPOCHS],
        "gradual_head_epochs": "epochs // 3",
        "optimizer": "sgd (nesterov), one-cycle",
        "augment": "none",
    }
