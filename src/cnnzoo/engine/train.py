"""The training engine: `train(cfg)` builds model and data, `fit(...)` runs the epochs.

1. resolve device, precision and (under torchrun) the process group
2. load the dataset once into memory, resized once to the model's input size
3. each epoch: batches are slices of a seeded permutation, augmented on the device
4. after each epoch: evaluate, log a JSON line, save `last` (and `best`) atomically
5. Ctrl-C saves `last` (mid-epoch position included) and exits; `--resume` continues there
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data.base import DatasetInfo, Splits
from ..errors import CnnzooError
from ..models import count_params, create_model, model_info
from ..runtime import EVAL_BATCH, autocast_dtype, precision_name, resolve_device
from .checkpoint import load_state_dict_checked, load_training_state, read_meta
from .checkpoint import save_checkpoint as _save
from .config import TrainConfig
from .distributed import DistEnv, all_reduce_sum, cleanup_distributed, setup_distributed
from .evaluate import evaluate_model
from .frozen import set_frozen_bn_eval
from .optim import ModelEma, build_optimizer, build_scheduler
from .runlog import RunLog, plot_curves

__all__ = ["train", "fit", "resolve_device", "autocast_dtype", "make_loaders", "TrainResult", "RunContext"]


def make_loaders(
    splits: Splits,
    *,
    batch_size: int,
    image_size: int,
    channels: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    augment: str,
    device: torch.device,
    seed: int,
    channels_last: bool = False,
    dist_env: DistEnv | None = None,
):
    """Train loader (shuffled, augmented, sharded across ranks) and test loader (in order, whole set).

    `batch_size` is the global batch: under torchrun each of N ranks takes `batch_size / N` of every step's
    images, so N processes take the same steps on the same batches as one process would (and the recipe's
    learning rate stays right). A batch that N does not divide is rounded up to a multiple of N.
    """
    from ..data.augment import AugmentConfig
    from ..data.base import ArrayDataset
    from ..data.loader import InMemoryLoader
    from ..data.stream import StreamingLoader

    def loader_for(data, *args, **kwargs):  # in memory, or read from disk by worker processes
        return (InMemoryLoader if isinstance(data, ArrayDataset) else StreamingLoader)(data, *args, **kwargs)

    dist_env = dist_env or DistEnv()
    per_rank = -(-batch_size // dist_env.world_size)
    common = dict(image_size=image_size, channels=channels, mean=mean, std=std, device=device)
    train = loader_for(
        splits.train,
        per_rank,
        shuffle=True,
        seed=seed,
        augment=AugmentConfig.parse(augment),
        channels_last=channels_last,
        rank=dist_env.rank,
        world_size=dist_env.world_size,
        **common,
    )
    test = loader_for(splits.test, EVAL_BATCH, shuffle=False, channels_last=channels_last, **common)
    return train, test


@dataclass
class RunContext:
    """Where and how a run writes: its folder, its checkpoint metadata, whether this rank prints."""

    run_dir: Path
    meta: dict  # written into every checkpoint's JSON
    quiet: bool = False
    dist_env: DistEnv = field(default_factory=DistEnv)
    save: bool = True  # False: keep nothing on disk (studies that run hundreds of short fits)

    @property
    def writes(self) -> bool:
        return self.save and self.dist_env.is_main


@dataclass
class TrainResult:
    run_dir: Path
    best_acc: float
    final_acc: float
    epochs_run: int
    seconds: float
    history: list[dict]
    interrupted: bool = False
    is_main: bool = True  # False on torchrun ranks other than 0, which print nothing
    already_finished: bool = False  # --resume found the run complete: nothing was trained


def check_image_size(cfg: TrainConfig) -> None:
    """Refuse, before any work, an --image-size the model cannot take (below its minimum, above a maximum)."""
    from ..models._builder import check_input_size
    from ..summary.probe import probe_input

    if not cfg.image_size:
        return
    try:
        check_input_size(cfg.model, cfg.image_size)
    except CnnzooError as e:
        raise CnnzooError(f"--image-size {cfg.image_size}: {e}") from None
    problem = probe_input(cfg.model, cfg.image_size, **cfg.model_kwargs).problem
    if problem:
        native = model_info(cfg.model).input_size
        raise CnnzooError(
            f"--image-size {cfg.image_size}: {cfg.model} cannot take it ({problem}); its native input is {native}"
        )


def _native_if_bounded(cfg: TrainConfig, size: int) -> int | None:
    """The model's native input size when it cannot take `size` (a model with a maximum), else None."""
    from ..summary.probe import probe_input

    native = model_info(cfg.model).input_size
    if size == native or not probe_input(cfg.model, size, **cfg.model_kwargs).problem:
        return None
    return native


def _resolve_image_size(cfg: TrainConfig, info: DatasetInfo, quiet: bool = False) -> int:
    """--image-size, else the dataset's own size (at least the model's minimum), else, when the model has
    a maximum below it (LeNet-5 pads to at most 32), the model's native input."""
    if cfg.image_size:
        return cfg.image_size
    size = max(info.image_size, model_info(cfg.model).min_size)
    native = _native_if_bounded(cfg, size)
    if native is None:
        return size
    if not quiet:
        print(
            f"{cfg.model} cannot take {info.name}'s {size}x{size} images: resizing them to its native {native}x{native}"
        )
    return native


def _check_memory(cfg: TrainConfig, splits: Splits, image_size: int, device: torch.device) -> None:
    """Refuse a dataset that, resized to `image_size`, would not fit in memory on the training device."""
    from ..data.base import ArrayDataset
    from ..runtime import available_memory, format_bytes

    pixels = splits.info.channels * image_size * image_size
    in_memory = sum(len(s) for s in (splits.train, splits.test) if isinstance(s, ArrayDataset))
    need = in_memory * pixels + cfg.batch_size * pixels * 4 * 2  # uint8 images, a float batch and its copy
    available = available_memory(device)
    if available is not None and need > available:
        raise CnnzooError(
            f"{len(splits.train) + len(splits.test):,} images of {splits.info.name} at {image_size}x{image_size} "
            f"need {format_bytes(need)} of memory on {device}, {format_bytes(available)} is available: choose a "
            "smaller --image-size"
        )


def default_run_dir(cfg: TrainConfig) -> Path:
    base = f"{cfg.model}-{cfg.data.replace(':', '_').replace('/', '_')}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = Path("runs") / base, 1
    while run_dir.exists():  # two runs started in the same second get their own folders
        n += 1
        run_dir = Path("runs") / f"{base}-{n}"
    return run_dir


def train(
    cfg: TrainConfig | None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    changes: dict | None = None,
) -> TrainResult:
    """Train `cfg.model` on `cfg.data` from scratch into `run_dir`, or continue the run `resume`.

    The run folder's rules (`runfolder.py`): an existing run is refused unless `overwrite`; the folder is
    locked while this process writes it; `resume` keeps the recorded configuration, with `changes` (the
    options given with --resume) applied where a resumed run may change them and refused elsewhere.
    """
    from contextlib import ExitStack

    from .runfolder import RunLock, new_run, plan_resume, resume_run_dir, write_config

    writes = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes the run folder
    with ExitStack() as held:
        start_from = None
        if resume is not None:
            run_dir, out = resume_run_dir(resume), run_dir
            if writes:
                held.enter_context(RunLock(run_dir))
            plan = plan_resume(run_dir, changes or {}, out=out, writes=writes)
            if plan.finished:
                return _finished_result(plan)
            cfg, start_from = plan.cfg, plan.weights
        else:
            check_image_size(cfg)
            run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
            if writes:
                run_dir = held.enter_context(
                    new_run(run_dir, lambda d: write_config(d, cfg), overwrite=overwrite)
                )
        return _train(cfg, Path(run_dir), start_from, quiet)


def _finished_result(plan) -> TrainResult:
    """A run --resume found complete: its recorded figures, nothing trained."""
    from .runlog import RunLog

    history = RunLog(plan.run_dir).records()
    tested = [r["test_acc"] for r in history if r.get("test_acc") is not None]
    final = history[-1].get("test_acc", 0.0) if history else 0.0
    best = max(tested, default=0.0)
    return TrainResult(
        plan.run_dir, best, final or 0.0, plan.epochs_done, 0.0, history, already_finished=True
    )


def _train(cfg: TrainConfig, run_dir: Path, start_from: Path | None, quiet: bool) -> TrainResult:
    from ..data import load_dataset
    from ..data.folder import MAX_DEFAULT_SIZE

    device = resolve_device(cfg.device)
    dist_env = setup_distributed(device)
    if dist_env.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_env.local_rank)
    try:
        options = dataset_options(cfg)
        if cfg.data.startswith("folder:") and not cfg.image_size:
            # decode straight to a size the model takes: its native input when it has a maximum
            native = _native_if_bounded(cfg, MAX_DEFAULT_SIZE)
            if native is not None:
                options["image_size"] = native
        splits = load_dataset(cfg.data, **options)
        splits = apply_train_subset(splits, cfg)
        info = splits.info
        image_size = _resolve_image_size(cfg, info, quiet or not dist_env.is_main)
        _check_memory(cfg, splits, image_size, device)
        torch.manual_seed(cfg.seed)
        model = create_model(
            cfg.model, num_classes=info.num_classes, in_chans=info.channels, **cfg.model_kwargs
        )
        loaders = make_loaders(
            splits,
            batch_size=cfg.batch_size,
            image_size=image_size,
            channels=info.channels,
            mean=info.mean,
            std=info.std,
            augment=cfg.augment,
            device=device,
            seed=cfg.seed,
            channels_last=cfg.channels_last,
            dist_env=dist_env,
        )
        meta = checkpoint_meta(
            cfg.model, cfg.model_kwargs, info, image_size, info.channels, info.mean, info.std
        )
        ctx = RunContext(run_dir, meta, quiet, dist_env)
        if not quiet and ctx.writes:
            print(
                f"{cfg.model} ({count_params(model):,} params) on {cfg.data}: {len(splits.train):,} train / "
                f"{len(splits.test):,} test images, {image_size}x{image_size}, device {device}, run {ctx.run_dir}"
            )
            if dist_env.enabled:
                per_rank = loaders[0].batch_size
                print(
                    f"distributed: {dist_env.world_size} ranks x {per_rank} images = global batch "
                    f"{per_rank * dist_env.world_size} (--batch-size {cfg.batch_size}); learning rate kept at "
                    f"{cfg.lr:g}, as for one process with that batch"
                )
        return fit(model, loaders, cfg, ctx, device=device, resume=start_from)
    finally:
        cleanup_distributed()


def apply_train_subset(splits: Splits, cfg: TrainConfig) -> Splits:
    """Keep `cfg.train_subset` training images drawn at random (seeded); the test split stays whole."""
    if not cfg.train_subset:
        return splits
    gen = torch.Generator().manual_seed(cfg.seed)
    keep = torch.randperm(len(splits.train), generator=gen)[: cfg.train_subset]
    return Splits(splits.train.subset(keep), splits.test)


def dataset_options(cfg: TrainConfig) -> dict:
    """`load_dataset` keywords from a config: folders are decoded straight to `--image-size`."""
    options = {"data_dir": cfg.data_dir or None, "download": cfg.download}
    if cfg.data.startswith("folder:"):
        options["strict"] = cfg.strict
        if cfg.image_size:
            options["image_size"] = cfg.image_size
    return options


def checkpoint_meta(model_name, model_kwargs, info: DatasetInfo, image_size, in_chans, mean, std) -> dict:
    return {
        "format": "cnnzoo-checkpoint/1",
        "model": model_name,
        "model_kwargs": dict(model_kwargs),
        "classes": list(info.classes),
        "in_chans": in_chans,
        "image_size": image_size,
        "mean": list(mean),
        "std": list(std),
        "dataset": info.name,
    }


def fit(
    model: nn.Module,
    loaders,
    cfg: TrainConfig,
    ctx: RunContext,
    *,
    device: torch.device,
    param_groups=None,
    resume: str | Path | None = None,
) -> TrainResult:
    """Run `cfg.epochs` epochs of `model` on `loaders = (train, test)`; checkpoints go to `ctx.run_dir`.

    `resume`: a checkpoint (or a run folder: its `last`) whose training state to continue from. Besides
    `last` after every epoch, a mid-epoch `last` is saved every `cfg.checkpoint_minutes`."""
    train_loader, test_loader = loaders
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, param_groups if param_groups is not None else model.parameters())
    scheduler = build_scheduler(cfg, optimizer, len(train_loader))
    ema = ModelEma(model, cfg.ema) if cfg.ema else None
    state = _Progress()
    if resume is not None:
        state = _restore(model, optimizer, scheduler, ema, Path(resume), device)
    log = RunLog(ctx.run_dir, enabled=ctx.writes)
    log.truncate_after(state.epoch)
    net = _wrap(model, cfg, ctx.dist_env, device)
    amp = autocast_dtype(cfg.precision, device)
    eval_amp = autocast_dtype(cfg.eval_precision, device)
    # how every reported figure was computed, so `evaluate` and `predict` reproduce it exactly
    ctx.meta = {
        **ctx.meta,
        "train_precision": precision_name(amp),  # what `--precision auto` resolved to on this machine
        "eval_precision": precision_name(eval_amp),
        "channels_last": cfg.channels_last,
    }
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    start = time.perf_counter()
    history = log.records()
    saver = None
    if ctx.writes and cfg.checkpoint_minutes > 0:  # so that a kill loses minutes, not an epoch
        saver = _Every(
            60 * cfg.checkpoint_minutes,
            lambda: _save_all(ctx, model, ema, optimizer, scheduler, state, {"mid_epoch": True}, best=False),
        )
    try:
        while state.epoch < cfg.epochs:
            train_stats = _train_epoch(
                net, model, train_loader, optimizer, scheduler, ema, scaler, amp, cfg, ctx, state, saver
            )
            eval_model = ema.module if ema else model
            state.epoch, state.batch = state.epoch + 1, 0
            record = {
                "epoch": state.epoch,
                **train_stats,
                "train_precision": precision_name(amp),
                "lr": optimizer.param_groups[-1]["lr"],
            }
            if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
                metrics = evaluate_model(eval_model, test_loader, amp=eval_amp, tta=cfg.tta)
                record.update(
                    test_loss=metrics["loss"],
                    test_acc=metrics["accuracy"],
                    eval_precision=precision_name(eval_amp),
                )
                state.best_acc = max(state.best_acc, metrics["accuracy"])
            record["time"] = round(time.perf_counter() - start, 2)
            history.append(record)
            log.write(record)
            if ctx.writes:
                is_best = record.get("test_acc") is not None and state.best_acc == record["test_acc"]
                _save_all(ctx, model, ema, optimizer, scheduler, state, record, best=is_best)
                if saver is not None:
                    saver.reset()
                if not ctx.quiet:
                    tested = (
                        f"test loss {record['test_loss']:.4f} acc {record['test_acc']:.2f}%"
                        if "test_acc" in record
                        else ""
                    )
                    tqdm.write(
                        f"epoch {state.epoch}/{cfg.epochs}: train loss {train_stats['train_loss']:.4f} "
                        f"acc {train_stats['train_acc']:.2f}%  {tested}  ({record['time']:.1f} s)"
                    )
    except KeyboardInterrupt:
        if ctx.writes:
            _save_all(ctx, model, ema, optimizer, scheduler, state, {"interrupted": True}, best=False)
            print(
                f"\ninterrupted at epoch {state.epoch + 1}, batch {state.batch}: saved {ctx.run_dir / 'last.safetensors'}; "
                f"continue with: cnnzoo train --resume {ctx.run_dir}"
            )
        return _result(ctx, state, history, start, interrupted=True)
    if ctx.writes:
        plot_curves(history, ctx.run_dir)
    return _result(ctx, state, history, start)


def _result(
    ctx: RunContext, state, history: list[dict], start: float, interrupted: bool = False
) -> TrainResult:
    final = history[-1].get("test_acc", 0.0) if history else 0.0
    seconds = time.perf_counter() - start
    return TrainResult(
        ctx.run_dir, state.best_acc, final, state.epoch, seconds, history, interrupted, ctx.dist_env.is_main
    )


class _Every:
    """Call `action` when at least `seconds` passed since the last call (or `reset`)."""

    def __init__(self, seconds: float, action):
        self.seconds, self.action = seconds, action
        self.reset()

    def reset(self) -> None:
        self.last = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.seconds:
            self.action()
            self.reset()


@dataclass
class _Progress:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed within the current epoch (non-zero after an interrupt)
    step: int = 0  # optimizer steps in total
    best_acc: float = 0.0


def _wrap(model: nn.Module, cfg: TrainConfig, dist_env: DistEnv, device: torch.device) -> nn.Module:
    net = model
    if dist_env.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net


def _loss(output, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy; Inception's auxiliary heads (a named tuple in training) add 0.3 of theirs, as the papers do."""
    if isinstance(output, tuple):
        main, *aux = output
        loss = F.cross_entropy(main, target, label_smoothing=label_smoothing)
        return loss + sum(
            0.3 * F.cross_entropy(a, target, label_smoothing=label_smoothing) for a in aux if a is not None
        )
    return F.cross_entropy(output, target, label_smoothing=label_smoothing)


def _train_epoch(
    net, model, loader, optimizer, scheduler, ema, scaler, amp, cfg, ctx, state, checkpoint=None
) -> dict:
    """One epoch from `state.batch` on; `checkpoint()` is offered a mid-epoch save at each host sync."""
    net.train()
    set_frozen_bn_eval(model)  # transfer learning: frozen BatchNorm stays in inference mode
    loader.set_epoch(state.epoch)
    device = next(model.parameters()).device
    # Running sums stay on the device and are read only when the progress bar refreshes: reading a GPU
    # value is a CPU-GPU sync point, and one per step would stall the pipeline.
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step whose loss was not finite
    start, skip = time.perf_counter(), state.batch
    bar = tqdm(
        total=len(loader),
        initial=skip,
        desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
        leave=False,
        disable=ctx.quiet or not ctx.writes or not sys.stderr.isatty(),  # logs get one line per epoch
        dynamic_ncols=True,
    )
    for i, (x, y) in enumerate(loader):
        if i < skip:  # resuming mid-epoch: the permutation is the same, skip what was already seen
            continue
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = net(x)
            loss = _loss(out, y, cfg.label_smoothing)
        bad = ~torch.isfinite(loss.detach()) & (first_bad < 0)
        first_bad = torch.where(bad, state.step + 1, first_bad)  # recorded on the device, no sync
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer) if scaler is not None else optimizer.step()
        if scaler is not None:
            scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(model, step=state.step + 1)
        state.batch, state.step = i + 1, state.step + 1
        logits = out[0] if isinstance(out, tuple) else out
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if i % 20 == 0 or i + 1 == len(loader):  # the only host syncs of the loop
            _check_finite(first_bad, state, len(loader))
            rate = seen / max(1e-9, time.perf_counter() - start)
            bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.4f}",
                acc=f"{100 * correct.item() / seen:.2f}%",
                img_s=f"{rate:,.0f}",
                refresh=False,
            )
            if checkpoint is not None and i + 1 < len(loader):  # the epoch's end saves anyway
                checkpoint()
        bar.update(1)
    bar.close()
    # every rank's images, not only rank 0's shard (one all-reduce per epoch; a no-op in one process)
    loss_sum, correct, seen = all_reduce_sum(
        torch.stack([loss_sum, correct, loss_sum.new_tensor(seen)])
    ).tolist()
    seen = max(seen, 1)
    return {
        "train_loss": loss_sum / seen,
        "train_acc": 100 * correct / seen,
        "train_images": int(seen),
        "images_per_s": round(seen / max(1e-9, time.perf_counter() - start), 1),
        "train_time": round(time.perf_counter() - start, 3),
    }


def _check_finite(first_bad: torch.Tensor, state: _Progress, batches_per_epoch: int) -> None:
    step = int(first_bad.item())
    if step >= 0:
        epoch, batch = divmod(step - 1, batches_per_epoch)
        raise CnnzooError(
            f"loss became NaN or infinite at step {step} (epoch {epoch + 1}, batch {batch + 1}): "
            "lower the learning rate (--lr) or enable --grad-clip"
        )


def _save_all(
    ctx: RunContext, model, ema, optimizer, scheduler, state: _Progress, record: dict, best: bool
) -> None:
    weights_model = ema.module if ema else model
    training_state = {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.module.state_dict() if ema else {},
        "progress": {
            "epoch": state.epoch,
            "batch": state.batch,
            "step": state.step,
            "best_acc": state.best_acc,
        },
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    meta = {**ctx.meta, "epoch": state.epoch, "batch": state.batch, "metrics": record}
    _save(ctx.run_dir, "last", weights_model, meta, training_state)
    if best:
        _save(ctx.run_dir, "best", weights_model, meta)


def _restore(model, optimizer, scheduler, ema, checkpoint: Path, device) -> _Progress:
    weights = checkpoint / "last.safetensors" if checkpoint.is_dir() else checkpoint
    saved = load_training_state(weights)
    meta = read_meta(weights)
    if meta.get("model") != getattr(model, "model_name", meta.get("model")):
        raise CnnzooError(f"cannot resume: {weights} holds {meta.get('model')}, not {model.model_name}")
    try:
        load_state_dict_checked(
            model, {k: v.to(device) for k, v in saved["model"].items()}, source=str(weights)
        )
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if ema is not None and saved["ema"]:
            ema.module.load_state_dict(saved["ema"])
        torch.set_rng_state(saved["rng"]["torch"])
        if saved["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        return _Progress(**saved["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:  # a state of another shape
        raise CnnzooError(
            f"cannot resume from {weights}: its training state does not fit this run ({e!r})"
        ) from None
