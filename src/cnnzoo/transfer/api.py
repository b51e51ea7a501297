"""Fine-tuning as one Python call: `cnnzoo.finetune(source, data=..., strategy=...)`.

    result = cnnzoo.finetune("lenet5:mnist", data="fashion-mnist", strategy="last:1", epochs=2, quiet=True)
    result.model, result.history, result.final_acc, result.best_acc, result.run_dir   # as cnnzoo.train's

`source` is what `cnnzoo finetune --from` takes (a bundled model, a run folder or checkpoint, a weights
file, torchvision:NAME). The keywords are `FinetuneConfig`'s (`model`, `lr_range`, `layer_decay`,
`head_epochs`, `train_bn`, `cache_flip`, `samples_per_class`, `prefix_cache`) and every `TrainConfig` field; `lr` may be a
(stem, head) pair, as `--lr LO:HI`. Those not given are the recipe the transfer study measured for the
strategy and the number of training images, as `cnnzoo finetune` resolves them.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from ..engine.api import config_overrides
from ..engine.config import checked_value
from ..engine.loop import TrainResult
from ..errors import CnnzooError
from .finetune import FinetuneConfig
from .finetune import finetune as _finetune
from .recipe import finetune_plan

__all__ = ["finetune"]


def finetune(
    source: str,
    *,
    data: str,
    strategy: str = "head",
    out: str | Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    auto_resume: bool = False,
    **options,
) -> TrainResult:
    """Fine-tune `source` on `data` with `strategy` (head, last:N, full, gradual or scratch).

    `out=None` writes nothing to disk; a folder makes it a run as `cnnzoo finetune --out` makes one (with
    `auto_resume`, a run of the same configuration there is continued, as `--auto-resume` does)."""
    ft_names = {f.name for f in fields(FinetuneConfig)} - {"source", "strategy"}
    ft_options = {k: options.pop(k) for k in list(options) if k in ft_names}
    lr = options.get("lr")
    if isinstance(lr, tuple | list):  # a (stem, head) range, as --lr LO:HI: the head's rate is `lr`
        if len(lr) != 2:
            raise CnnzooError(f"cnnzoo.finetune: lr is a rate or a (stem, head) pair, got {lr!r}")
        ft_options["lr_range"] = (checked_value("lr", lr[0]), checked_value("lr", lr[1]))
        options["lr"] = ft_options["lr_range"][1]
    overrides = config_overrides(options, "cnnzoo.finetune")
    ft = FinetuneConfig(source=source, strategy=strategy, **ft_options)
    ft, cfg, splits = finetune_plan(ft, data, **overrides)
    result = _finetune(
        ft,
        cfg,
        run_dir=out,
        quiet=quiet,
        save=out is not None,
        overwrite=overwrite,
        splits=splits,
        auto_resume=auto_resume,
    )
    return result if out is not None else replace(result, run_dir=None)
