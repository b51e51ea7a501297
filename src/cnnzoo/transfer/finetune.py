"""Fine-tuning a pretrained network: keep its early layers, re-train the later ones.

Strategies (how far back to fine-tune):

    head      only the new classifier learns; the frozen backbone's features are computed once
              and cached, so each epoch costs a logistic regression (`features.py`)
    last:N    the last N groups before the head learn, with the head (N=1: the last stage)
              (the frozen groups before them run once: their outputs are cached, `engine/frozen.py`)
    full      everything learns, optionally with layer-wise rate decay or a rate range
    gradual   head first on cached features, then everything at lower, discriminative rates
    scratch   the same architecture from random weights: the baseline transfer has to beat

Interrupted and requeued runs follow `cnnzoo train`'s contract: Ctrl-C saves `last` and names the command
that continues it, `resume_finetune` (`cnnzoo finetune --resume RUN`) continues the recorded run, and
`finetune(..., auto_resume=True)` continues RUN when it holds a run of the same configuration. last:N, full,
scratch and gradual's second phase continue from `last`'s training state, mid-epoch included; `head` and
gradual's head phase train on cached features in seconds and save only at their end, so they start over.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .._io import atomic_write, note
from ..artifacts.checkpoint import read_meta, restore_previous, save_checkpoint, usable_checkpoint
from ..data import load_dataset
from ..data.base import Splits
from ..engine.config import TrainConfig
from ..engine.evaluate import evaluate_model
from ..engine.frozen import CachedLoader, PrefixCache, split_frozen
from ..engine.loop import TrainResult, fit
from ..engine.resume import RESUMABLE, differences, resume_run_dir
from ..engine.runfolder import (
    RunLock,
    check_writable,
    clean_temporaries,
    describe_run,
    holds_trained_run,
    new_run,
    read_json,
)
from ..engine.runlog import RunLog
from ..engine.setup import (
    RunContext,
    checkpoint_meta,
    dataset_options,
    default_run_dir,
    make_loaders,
    target_splits,
)
from ..engine.tblog import TensorBoardLog, run_events
from ..engine.train import finished_result
from ..errors import CnnzooError
from ..models import create_model, model_info
from ..runtime import autocast_dtype, resolve_device
from .features import extract_features, train_linear_head
from .freeze import freeze, param_groups, parse_strategy_groups, unfreeze
from .recipe import gradual_head_epochs
from .sources import load_source

__all__ = [
    "FinetuneConfig",
    "finetune",
    "resume_finetune",
    "check_target_data",
    "source_loaders",
    "source_model",
    "target_splits",
    "STRATEGIES",
]

STRATEGIES = ("head", "last:N", "full", "gradual", "scratch")
# The default epochs, rates and batch size of each strategy: `recipe.py` (`finetune_plan`).


@dataclass(frozen=True)
class FinetuneConfig:
    source: str  # a cnnzoo run/checkpoint, a weights file, or torchvision:NAME
    strategy: str = "head"
    model: str | None = None  # architecture of a bare weights file (guessed from its keys if None)
    lr_range: tuple[float, float] | None = None  # (stem, head) rates, spread geometrically
    layer_decay: float | None = None  # head at lr, each group before it x layer_decay
    head_epochs: int | None = None  # gradual: epochs of the head-only phase (None: a third of the epochs)
    train_bn: bool = False  # let frozen BatchNorm layers adapt their statistics
    cache_flip: bool = False  # head: also cache features of mirrored images
    samples_per_class: int = 0  # keep at most this many training images per class; 0 = all
    prefix_cache: bool = True  # last:N: run the frozen groups once and cache their outputs (exact; faster)

    def __post_init__(self):
        if self.samples_per_class < 0:
            raise CnnzooError(f"samples per class must be positive (0 = all), got {self.samples_per_class}")
        if self.head_epochs is not None and self.head_epochs < 1:
            raise CnnzooError(f"head epochs must be positive, got {self.head_epochs}")
        if not (self.strategy in ("head", "full", "gradual", "scratch") or self.strategy.startswith("last:")):
            raise CnnzooError(
                f"unknown strategy {self.strategy!r}: use head, last:N, full, gradual or scratch"
            )


def check_target_data(splits: Splits) -> None:
    info, n = splits.info, len(splits.train)
    if info.num_classes < 2:
        raise CnnzooError(f"{info.name} has {info.num_classes} class: fine-tuning needs at least 2")
    if n < info.num_classes:
        raise CnnzooError(
            f"{info.name} has {n} training images for {info.num_classes} classes: fewer samples than classes"
        )
    present = int(splits.train.labels.unique().numel())
    if present < 2:
        raise CnnzooError(f"the training images of {info.name} cover only {present} class")


def finetune(
    ft: FinetuneConfig,
    cfg: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    quiet: bool = False,
    save: bool = True,
    splits: Splits | None = None,
    overwrite: bool = False,
    tensorboard_dir: str | Path | None = None,
    auto_resume: bool = False,
) -> TrainResult:
    """Fine-tune `ft.source` on `cfg.data` with `ft.strategy`; `cfg` holds epochs, rates, batch size...
    `tensorboard_dir`: its TensorBoard events there, also when nothing else is saved (a study's cells).

    The run folder follows `cnnzoo train`'s rules (`engine/runfolder.py`): an existing run is refused
    unless `overwrite`, and the folder is locked while this process writes it. A `run_dir` given is
    checked before any work; the default one is made once the source and data are known. `auto_resume`:
    continue `run_dir` when it holds a run of this configuration (`resume_finetune`), start it otherwise."""
    if auto_resume and save:
        if run_dir is None:
            raise CnnzooError("--auto-resume continues the run folder --out names: give --out RUN")
        if holds_trained_run(Path(run_dir)):
            _check_same_run(Path(run_dir), ft, cfg)
            return resume_finetune(
                run_dir, changes=cfg.to_dict(), quiet=quiet, splits=splits, why="--auto-resume"
            )

    with ExitStack() as held:

        def open_run(folder: Path) -> Path:
            config = _config_json(ft, cfg)
            write = lambda d: atomic_write(d / "config.json", lambda tmp: Path(tmp).write_text(config))  # noqa: E731
            return held.enter_context(new_run(folder, write, overwrite=overwrite))

        events = Path(tensorboard_dir) if tensorboard_dir is not None else None
        if save and run_dir is not None:
            return _finetune(ft, cfg, open_run(Path(run_dir)), quiet, save, splits, None, events)
        return _finetune(ft, cfg, run_dir, quiet, save, splits, open_run if save else None, events)


def resume_finetune(
    run_dir: str | Path,
    *,
    changes: dict | None = None,
    quiet: bool = False,
    splits: Splits | None = None,
    why: str | None = None,
) -> TrainResult:
    """Continue the fine-tuning run in `run_dir` as recorded (`cnnzoo finetune --resume RUN`): from `last`'s
    training state where the strategy saves one, else started over (see the module docstring). `changes`:
    training options given with it (None: not given); those `cnnzoo train --resume` may change (--epochs,
    --device, ...) are applied, any other difference is refused. A finished run is returned as it is."""
    run_dir = resume_run_dir(run_dir)
    with RunLock(run_dir):
        ft, recorded = _recorded_run(run_dir)
        changed, refused = differences(recorded, changes or {})
        if refused:
            raise CnnzooError(
                f"cannot resume {run_dir} with {', '.join(refused)}: a resumed run keeps its recorded "
                f"configuration (only {', '.join('--' + n.replace('_', '-') for n in RESUMABLE)} may change)"
            )
        cfg = replace(recorded, **{k: v for k, (_, v) in changed.items()})
        check_writable(run_dir)
        clean_temporaries(run_dir)
        start_from, done = _resume_point(run_dir, ft, cfg)
        if done is not None:
            return finished_result(run_dir, done)
        if changed:
            atomic_write(run_dir / "config.json", lambda tmp: Path(tmp).write_text(_config_json(ft, cfg)))
        where = f"from its last checkpoint ({_where(start_from)})" if start_from else "from the start"
        if start_from is None and (run_dir / "last.safetensors").exists():
            where += f" (the {ft.strategy} strategy saves no training state before its end)"
        if start_from is None:  # the epochs an interrupted head phase logged are logged again
            RunLog(run_dir).truncate_after(0)
        note(f"{why or '--resume'}: continuing the fine-tuning run {run_dir} {where}")
        return _finetune(ft, cfg, run_dir, quiet, True, splits, None, start_from=start_from)


def _recorded_run(run_dir: Path) -> tuple[FinetuneConfig, TrainConfig]:
    """The fine-tuning and training configurations `run_dir/config.json` records."""
    raw = read_json(run_dir / "config.json")
    if raw is None:
        raise CnnzooError(f"cannot resume {run_dir}: its config.json cannot be read or is not valid JSON")
    if not isinstance(raw, dict) or not isinstance(raw.get("finetune"), dict):
        raise CnnzooError(
            f"{run_dir} is not a fine-tuning run ({describe_run(run_dir)}): continue it with "
            f"`cnnzoo train --resume {run_dir}`"
        )
    try:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw["finetune"].items()}
        ft = FinetuneConfig(**values)
    except TypeError as e:
        raise CnnzooError(f"{run_dir / 'config.json'}: not a fine-tuning configuration ({e})") from None
    return ft, TrainConfig.from_dict(raw.get("train"))


def _check_same_run(run_dir: Path, ft: FinetuneConfig, cfg: TrainConfig) -> None:
    """--auto-resume continues only a run of the same configuration (resumable options aside)."""
    try:
        recorded_ft, recorded = _recorded_run(run_dir)
    except CnnzooError:
        recorded_ft, recorded = None, None
    refused = ["not a fine-tuning run"] if recorded_ft is None else differences(recorded, cfg.to_dict())[1]
    if recorded_ft is not None and recorded_ft != ft:
        ours, theirs = asdict(ft), asdict(recorded_ft)
        refused += [f"{k} {ours[k]} (recorded: {theirs[k]})" for k in ours if ours[k] != theirs[k]]
    if refused:
        raise CnnzooError(
            f"--auto-resume: {run_dir} already holds another run ({describe_run(run_dir)}; {', '.join(refused)}): "
            "only a run of the same configuration is continued; replace it with --overwrite, or choose another --out"
        )


def _resume_point(run_dir: Path, ft: FinetuneConfig, cfg: TrainConfig) -> tuple[Path | None, int | None]:
    """(the checkpoint whose training state to continue from, or None: start over; the epochs done when the
    run is finished, else None). A broken `last` falls back to its previous consistent copy, saying so."""
    last = run_dir / "last.safetensors"
    try:
        weights, why = usable_checkpoint(last, state=True)
    except CnnzooError:  # none, or saved without a training state (the head strategy, gradual's first phase)
        try:
            epoch = int(read_meta(last).get("epoch", 0))
        except CnnzooError:
            return None, None
        return None, epoch if ft.strategy == "head" and epoch >= cfg.epochs else None
    if why:
        restore_previous(run_dir, "last")
        note(f"resuming {run_dir}: {why}")
        weights = last
    meta = read_meta(weights)
    epoch = int(meta.get("epoch", 0))
    return weights, epoch if epoch >= cfg.epochs and not meta.get("batch") else None


def _where(weights: Path) -> str:
    meta = read_meta(weights)
    epoch, batch = int(meta.get("epoch", 0)), int(meta.get("batch") or 0)
    into = f", {batch} batch{'' if batch == 1 else 'es'} into the next" if batch else ""
    return f"{epoch} epoch{'' if epoch == 1 else 's'} done{into}"


def _finetune(ft, cfg, run_dir, quiet, save, splits, open_run, events=None, start_from=None) -> TrainResult:
    splits = splits or load_dataset(cfg.data, **dataset_options(cfg))
    splits = target_splits(splits, cfg, ft.samples_per_class)
    check_target_data(splits)
    info = splits.info
    if ft.cache_flip and not info.flip:
        warnings.warn(
            f"--cache-flip on {info.name}, whose images are not mirror-symmetric (characters, digits): "
            "mirrored copies usually lower accuracy here",
            stacklevel=2,
        )
    src, model = source_model(ft, cfg, info)
    prep = src.meta
    device = resolve_device(cfg.device)
    image_size, loaders = source_loaders(splits, src, cfg, device)
    meta = checkpoint_meta(
        src.model_name, src.model_kwargs, info, image_size, info.channels, prep["mean"], prep["std"]
    )
    meta.update(finetuned_from=str(ft.source), strategy=ft.strategy)
    run_dir = Path(run_dir) if run_dir else default_run_dir(src.model_name, info.name, prefix="finetune-")
    if open_run is not None:
        run_dir = open_run(run_dir)
    # TensorBoard's hyper-parameters: the training config's, and these
    ctx = RunContext(run_dir, meta, quiet=quiet, save=save, hparams=_ft_hparams(ft), tensorboard_dir=events)
    ctx.resume_command = "cnnzoo finetune --resume"
    if not quiet:
        for line in src.describe():
            print(line)
    model.to(device)
    try:
        return _train_strategy(ft, cfg, model, loaders, ctx, device, start_from)
    except KeyboardInterrupt:  # before fit's first save (fit itself saves and says how to continue)
        if not ctx.writes:
            raise
        print(
            f"\ninterrupted before a checkpoint of this run's training state: continue with: cnnzoo finetune "
            f"--resume {ctx.run_dir}"
        )
        return TrainResult(ctx.run_dir, 0.0, 0.0, 0, 0.0, [], interrupted=True)


def _train_strategy(ft, cfg, model, loaders, ctx: RunContext, device, start_from) -> TrainResult:
    """Train `model` with `ft.strategy`; `start_from`: a checkpoint whose training state `fit` continues."""
    if ft.strategy == "head":
        return _head_only(model, loaders, cfg, ctx, ft.cache_flip)
    if ft.strategy == "gradual":
        if start_from is None:  # else resumed in the second phase: `last` holds the trained head
            head_epochs = ft.head_epochs or gradual_head_epochs(cfg.epochs)
            _head_only(model, loaders, replace(cfg, epochs=head_epochs), ctx, ft.cache_flip)
        unfreeze(model)
        groups = param_groups(model, _gradual_rates(ft, cfg), ft.layer_decay)
        return fit(model, loaders, cfg, ctx, device=device, param_groups=groups, resume=start_from)
    spec = "full" if ft.strategy == "scratch" else ft.strategy
    freeze(model, spec, train_bn=ft.train_bn)
    groups = param_groups(model, ft.lr_range or cfg.lr, ft.layer_decay)
    return _fit_frozen(model, loaders, cfg, ctx, device, groups, ft.prefix_cache, resume=start_from)


def _fit_frozen(
    model, loaders, cfg: TrainConfig, ctx: RunContext, device, groups, use_cache: bool, resume=None
):
    """`fit`, with the frozen groups' outputs computed once and cached where that trains exactly as running
    them every epoch would (`engine/frozen.py`): an epoch then costs the trainable groups only. Where it
    would not (augmentation on, ...), the frozen part runs every epoch, and a note says why."""
    why = _no_prefix_cache(loaders[0], cfg, ctx) if use_cache else ""
    split = None
    if use_cache and not why:
        split, why = split_frozen(model)
    if split is None:
        if why and not ctx.quiet:
            print(f"no cache of the frozen part's outputs: {why}; it runs every epoch")
        return fit(model, loaders, cfg, ctx, device=device, param_groups=groups, resume=resume)
    start = time.perf_counter()
    train = PrefixCache(split.prefix, loaders[0], amp=autocast_dtype(cfg.precision, device))
    test = PrefixCache(split.prefix, loaders[1], amp=autocast_dtype(cfg.eval_precision, device))
    try:
        if not ctx.quiet:
            where = "on disk" if train.on_disk or test.on_disk else "in memory"
            print(
                f"frozen part run once: its output ({split.boundary}, {tuple(train.shape)} per image) cached for "
                f"{len(train.labels):,} training and {len(test.labels):,} test images, "
                f"{(train.nbytes + test.nbytes) / 2**20:,.0f} MiB {where}, in {time.perf_counter() - start:.1f} s"
            )
        cached = (CachedLoader(train, loaders[0]), CachedLoader(test, loaders[1]))
        return fit(
            model,
            cached,
            cfg,
            ctx,
            device=device,
            param_groups=groups,
            suffix=split.suffix,
            test_images=loaders[1],
            resume=resume,
        )
    finally:
        train.close()
        test.close()


def source_model(ft: FinetuneConfig, cfg: TrainConfig, info):
    """(source, model): the source's network with a head for `info`'s classes (for `scratch`, the same
    architecture with random weights, seeded by `cfg.seed`). A bad strategy (last:N beyond the groups) or
    rate fails here, before any training."""
    torch.manual_seed(cfg.seed)
    src = load_source(ft.source, num_classes=info.num_classes, in_chans=info.channels, model_name=ft.model)
    model = src.model
    if ft.strategy == "scratch":  # same architecture and preprocessing, random weights
        model = create_model(
            src.model_name, num_classes=info.num_classes, in_chans=info.channels, **src.model_kwargs
        )
    strategy_groups(model, ft.strategy)
    param_groups(
        model, _gradual_rates(ft, cfg) if ft.strategy == "gradual" else ft.lr_range or cfg.lr, ft.layer_decay
    )
    return src, model


def _no_prefix_cache(train_loader, cfg: TrainConfig, ctx: RunContext) -> str:
    """Why the frozen part's outputs cannot stand in for it in this run ("" where they can)."""
    if getattr(train_loader, "augment", None) is not None:
        return (
            f"augmentation is on (--augment {train_loader.augment.spec()}), so every epoch's images differ "
            "(--augment none caches them)"
        )
    if not hasattr(train_loader, "images"):
        return "the images stream from disk"
    if ctx.dist_env.enabled:
        return "training is distributed"
    if cfg.ema:
        return "an EMA of the whole network is kept (--ema 0 caches)"
    if cfg.tta:
        return "test-time augmentation mirrors the images"
    return ""


def _gradual_rates(ft: FinetuneConfig, cfg: TrainConfig) -> float | tuple[float, float]:
    """Rates of gradual's second phase, lower than the head phase's: the head is trained, keep what was
    learned. The given range; else with a layer decay the head at lr/10; else lr/100 (stem) to lr/10 (head)."""
    if ft.lr_range:
        return ft.lr_range
    return cfg.lr / 10 if ft.layer_decay is not None else (cfg.lr / 100, cfg.lr / 10)


def source_loaders(
    splits: Splits, src, cfg: TrainConfig, device: torch.device, *, batch_size: int | None = None
):
    """(image size, (train, test) loaders) preprocessed as the SOURCE weights expect: their input size
    (at least the model's minimum), mean and std, not the target dataset's own statistics."""
    image_size = max(src.meta["image_size"], model_info(src.model_name).min_size)
    loaders = make_loaders(
        splits,
        batch_size=batch_size or cfg.batch_size,
        image_size=image_size,
        channels=splits.info.channels,
        mean=src.meta["mean"],
        std=src.meta["std"],
        augment=cfg.augment,
        device=device,
        seed=cfg.seed,
        channels_last=cfg.channels_last,
    )
    return image_size, loaders


def _config_json(ft: FinetuneConfig, cfg: TrainConfig) -> str:
    return json.dumps({"finetune": asdict(ft), "train": cfg.to_dict()}, indent=2)


def _ft_hparams(ft: FinetuneConfig) -> dict:
    return {f"finetune.{k}": v for k, v in asdict(ft).items()}


def _head_only(model, loaders, cfg: TrainConfig, ctx: RunContext, cache_flip: bool) -> TrainResult:
    """Freeze everything but the classifier, cache the backbone's features once, fit the classifier;
    logged as `fit` logs (metrics.jsonl, summary.csv, TensorBoard's per-epoch figures: no per-step ones)."""
    log = RunLog(ctx.run_dir, enabled=ctx.writes)  # before the cache: the first epoch's seconds include it
    tb = run_events(ctx, cfg, purge_step=1)
    try:
        result = _fit_head(model, loaders, cfg, ctx, cache_flip, log, tb)
        if tb is not None:
            tb.finish_run(result, loaders[1], ctx, cfg, epochs=cfg.epochs)
        return result
    finally:
        if tb is not None:
            tb.close()


def _fit_head(
    model,
    loaders,
    cfg: TrainConfig,
    ctx: RunContext,
    cache_flip: bool,
    log: RunLog,
    tb: TensorBoardLog | None,
) -> TrainResult:
    train_loader, test_loader = loaders
    trainable = freeze(model, "head")
    head = model.get_classifier()
    if not any(p.requires_grad for p in head.parameters()):
        raise CnnzooError(
            f"{model.model_name}'s classifier has no trainable parameters: use last:1 or full instead of head"
        )
    start = time.perf_counter()
    train_loader.set_epoch(0)
    amp = autocast_dtype(cfg.precision, next(model.parameters()).device)
    train_feats = extract_features(model, train_loader, flip=cache_flip, amp=amp)
    # the head's per-epoch test figures only where some epoch before the last is evaluated (--eval-every)
    test_feats = extract_features(model, test_loader, amp=amp) if cfg.eval_every < cfg.epochs else None

    def log_epoch(record: dict) -> None:
        log.write(record)
        if tb is not None:
            tb.epoch(record)

    result = train_linear_head(
        head, train_feats, test_feats, cfg, log=lambda r: r["epoch"] < cfg.epochs and log_epoch(r)
    )
    metrics = evaluate_model(model, test_loader)  # the whole model, images in: what a user will run
    final = {"test_loss": metrics["loss"], "test_acc": metrics["accuracy"]}
    record = {**result.history[-1], **final, "trainable_groups": trainable}
    log_epoch(record)  # the last epoch, with the whole model's figures
    if ctx.writes:
        meta = {**ctx.meta, "epoch": cfg.epochs, "metrics": record}
        save_checkpoint(ctx.run_dir, "last", model, meta)
        save_checkpoint(ctx.run_dir, "best", model, meta)
    if not ctx.quiet:
        print(
            f"head on cached features: {len(train_feats[1]):,} vectors of {train_feats[0].shape[1]}, "
            f"{cfg.epochs} epochs, test accuracy {metrics['accuracy']:.2f}%"
        )
    history = [{**r, "test_acc": r.get("test_acc")} for r in result.history[:-1]] + [record]
    return TrainResult(
        ctx.run_dir if ctx.save else None,
        metrics["accuracy"],  # the saved head is the last epoch's: report what the checkpoint scores
        metrics["accuracy"],
        cfg.epochs,
        time.perf_counter() - start,
        history,
        model=model.eval(),
    )


def strategy_groups(model, strategy: str) -> set[str]:
    """The groups a strategy trains (for reports): "scratch"/"gradual" train everything in the end."""
    return parse_strategy_groups(model, "full" if strategy in ("scratch", "gradual") else strategy)
