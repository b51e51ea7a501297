"""The training loop: `fit(model, loaders, cfg, ctx)` runs the epochs of a prepared run.

1. each epoch: batches are slices of a seeded permutation, augmented on the device; the running loss and
   accuracy stay on the device and are read every 20 steps only (each read is a host sync)
2. after each epoch: evaluate, log a JSON line and a summary.csv row, save `last` (and `best`) atomically;
   a mid-epoch `last` every `cfg.checkpoint_minutes`; TensorBoard events where enabled (`tblog.py`): the
   per-step points come from the figures read at those 20-step syncs, so they add none
3. Ctrl-C saves `last` (mid-epoch position included) and returns; `resume` continues there exactly
   (weights, optimizer, scheduler, EMA, random state and position)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..artifacts.checkpoint import load_training_state, read_meta
from ..artifacts.checkpoint import save_checkpoint as _save
from ..errors import CnnzooError
from ..models._weights import load_state_dict_checked
from ..runtime import ThreadTuner, autocast_dtype, format_duration, precision_name, thread_tuner
from .config import TrainConfig
from .distributed import DistEnv, LostPeer, all_reduce_sum, check_same_start, lost_peer, peer_failure
from .evaluate import evaluate_model
from .frozen import set_frozen_bn_eval
from .optim import ModelEma, build_optimizer, build_scheduler
from .runlog import RunLog, plot_curves
from .setup import RunContext
from .tblog import TensorBoardLog, run_events

__all__ = ["fit", "TrainResult"]

HEARTBEAT_SECONDS = 10.0  # where no progress bar is drawn (a log), a progress line this often


@dataclass
class TrainResult:
    run_dir: Path | None  # None: a run that saved nothing
    best_acc: float
    final_acc: float
    epochs_run: int
    seconds: float
    history: list[dict]
    interrupted: bool = False
    is_main: bool = True  # False on torchrun ranks other than 0, which print nothing
    already_finished: bool = False  # --resume found the run complete: nothing was trained
    model: nn.Module | None = None  # what was evaluated and saved (the EMA where there is one), in eval mode


@dataclass
class _Progress:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed within the current epoch (non-zero after an interrupt)
    step: int = 0  # optimizer steps in total
    best_acc: float = 0.0


@dataclass
class _Step:
    """What an optimizer step uses, built once by `fit`."""

    net: nn.Module  # `model` as it runs: wrapped for DistributedDataParallel and/or compiled
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: ModelEma | None
    scaler: torch.amp.GradScaler | None  # float16 only
    amp: torch.dtype | None  # the training autocast dtype; None: float32
    threads: ThreadTuner | None = None  # CPU: picks the thread count from the steps' times (runtime.py)
    suffix: nn.Module | None = None  # runs the batches of cached frozen-prefix outputs (`frozen.py`)

    @property
    def eval_model(self) -> nn.Module:
        """What is saved: the whole network (its EMA where there is one)."""
        return self.ema.module if self.ema else self.model

    @property
    def eval_net(self) -> nn.Module:
        """What the test loader's batches go through: the suffix where they are cached prefix outputs."""
        return self.suffix if self.suffix is not None else self.eval_model


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


def fit(
    model: nn.Module,
    loaders,
    cfg: TrainConfig,
    ctx: RunContext,
    *,
    device: torch.device,
    param_groups=None,
    resume: str | Path | None = None,
    suffix: nn.Module | None = None,
    test_images=None,
) -> TrainResult:
    """Run `cfg.epochs` epochs of `model` on `loaders = (train, test)`; checkpoints go to `ctx.run_dir`.

    `resume`: a checkpoint (or a run folder: its `last`) whose training state to continue from. Besides
    `last` after every epoch, a mid-epoch `last` is saved every `cfg.checkpoint_minutes`.

    `suffix`: where the loaders hold a frozen prefix's cached outputs instead of images (`frozen.py`), the
    module that runs them: `model`'s trainable layers, while `model`, whole, is what is saved and
    returned; `test_images` then is the test loader of images (TensorBoard's predictions figure)."""
    if suffix is not None and cfg.ema:
        raise CnnzooError("a cached frozen prefix cannot train with an EMA of the whole model: use --ema 0")
    train_loader, test_loader = loaders
    step, state = _prepare(model, cfg, ctx, device, param_groups, len(train_loader), resume, suffix)
    check_same_start(state.step, ctx.dist_env, device)
    log = RunLog(ctx.run_dir, enabled=ctx.writes)
    log.truncate_after(state.epoch)
    eval_amp = autocast_dtype(cfg.eval_precision, device)
    # how every reported figure was computed, so `evaluate` and `predict` reproduce it exactly
    ctx.meta = {
        **ctx.meta,
        "train_precision": precision_name(step.amp),  # what `--precision auto` resolved to on this machine
        "eval_precision": precision_name(eval_amp),
        "channels_last": cfg.channels_last,
    }
    start = time.perf_counter()
    history = log.records()
    # resumed: TensorBoard drops what the interrupted run logged past the checkpoint's step
    tb = run_events(ctx, cfg, purge_step=state.step + 1)
    try:
        try:
            interrupted = _run_epochs(
                step,
                state,
                loaders,
                cfg,
                ctx,
                log=log,
                tb=tb,
                eval_amp=eval_amp,
                history=history,
                start=start,
            )
        except BaseException as e:  # a peer died (gloo's error) or torchrun stopped this rank: one line
            lost = _lost_peer(e, ctx, state, len(train_loader))
            if lost is None:
                raise
            raise lost from None
        if interrupted:
            return _result(ctx, state, history, start, step, interrupted=True)
        if ctx.writes:
            plot_curves(
                history,
                ctx.run_dir,
                name=f"{cfg.model} on {cfg.data}",
                label_smoothing=cfg.label_smoothing,
                num_classes=len(ctx.meta.get("classes", ())),
            )
        result = _result(ctx, state, history, start, step)
        if tb is not None:
            pictures = test_images if suffix is not None else test_loader
            tb.finish_run(
                result,
                pictures,
                ctx,
                cfg,
                epochs=result.epochs_run,
                predictions=ctx.save and pictures is not None,
            )
        return result
    finally:
        if tb is not None:
            tb.close()  # flushes what is queued, whatever ended the run


def _lost_peer(error: BaseException, ctx: RunContext, state: _Progress, batches: int) -> LostPeer | None:
    """The one-line error for a rank that lost its peers at `state`; None for any other error."""
    what = peer_failure(error, ctx.dist_env)
    if what is None:
        return None
    where = f"at epoch {state.epoch + 1}, batch {state.batch} of {batches}"
    return lost_peer(what, ctx.dist_env, where, ctx.run_dir if ctx.save else None)


def _run_epochs(
    step: _Step,
    state: _Progress,
    loaders,
    cfg: TrainConfig,
    ctx: RunContext,
    *,
    log: RunLog,
    tb: TensorBoardLog | None,
    eval_amp,
    history: list[dict],
    start: float,
) -> bool:
    """Train, evaluate, log and save epoch after epoch until `cfg.epochs`; True when Ctrl-C stopped it
    (`last` saved with the position inside the epoch)."""
    train_loader, test_loader = loaders
    saver = None
    if ctx.writes and cfg.checkpoint_minutes > 0:  # so that a kill loses minutes, not an epoch
        saver = _Every(
            60 * cfg.checkpoint_minutes, lambda: _save_all(ctx, step, state, {"mid_epoch": True}, best=False)
        )
    try:
        while state.epoch < cfg.epochs:
            epoch_start = time.perf_counter()
            train_stats = _train_epoch(step, train_loader, cfg, ctx, state, saver, tb)
            state.epoch, state.batch = state.epoch + 1, 0
            record = _epoch_record(step, test_loader, cfg, state, train_stats, eval_amp)
            record["time"] = round(time.perf_counter() - start, 2)
            history.append(record)
            log.write(record)
            if tb is not None:
                tb.epoch(record)
            _end_epoch(step, cfg, ctx, state, record, saver, time.perf_counter() - epoch_start)
    except KeyboardInterrupt:
        if ctx.writes:
            _save_all(ctx, step, state, {"interrupted": True}, best=False)
            print(
                f"\ninterrupted at epoch {state.epoch + 1}, batch {state.batch}: saved {ctx.run_dir / 'last.safetensors'}; "
                f"continue with: {ctx.resume_command} {ctx.run_dir}"
            )
        return True
    return False


def _prepare(
    model: nn.Module,
    cfg: TrainConfig,
    ctx: RunContext,
    device,
    param_groups,
    steps_per_epoch: int,
    resume,
    suffix: nn.Module | None = None,
) -> tuple[_Step, _Progress]:
    """The model on `device`, its optimizer, schedule, EMA and scaler; restored from `resume` if given."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, param_groups if param_groups is not None else model.parameters())
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    ema = ModelEma(model, cfg.ema) if cfg.ema else None
    amp = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    step = _Step(model, model, optimizer, scheduler, ema, scaler, amp, thread_tuner(device, "train"), suffix)
    state = _Progress()
    if resume is not None:
        state = _restore(step, Path(resume), device)
    step.net = _wrap(model if suffix is None else suffix, cfg, ctx.dist_env, device)
    return step, state


def _epoch_record(
    step: _Step, test_loader, cfg: TrainConfig, state: _Progress, train_stats, eval_amp
) -> dict:
    """metrics.jsonl's line for the epoch just trained (evaluated every `cfg.eval_every` and at the end)."""
    record = {
        "epoch": state.epoch,
        **train_stats,
        "train_precision": precision_name(step.amp),
        "lr": step.optimizer.param_groups[-1]["lr"],
    }
    if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
        metrics = evaluate_model(step.eval_net, test_loader, amp=eval_amp, tta=cfg.tta)
        record.update(
            test_loss=metrics["loss"],
            test_acc=metrics["accuracy"],
            eval_precision=precision_name(eval_amp),
        )
        state.best_acc = max(state.best_acc, metrics["accuracy"])
    return record


def _end_epoch(
    step: _Step, cfg: TrainConfig, ctx: RunContext, state: _Progress, record: dict, saver, seconds: float
) -> None:
    """Save `last` (and `best`) and restart the mid-epoch clock where the run saves; print the epoch's line
    unless quiet (a run that saves nothing, `cnnzoo.train(out=None)`, prints it too): the epoch's own
    `seconds` (training and evaluation), the run's so far, and the time left at that pace."""
    if ctx.writes:
        is_best = record.get("test_acc") is not None and state.best_acc == record["test_acc"]
        _save_all(ctx, step, state, record, best=is_best)
        if saver is not None:
            saver.reset()
    if not ctx.quiet and ctx.dist_env.is_main:
        tested = (
            f"test loss {record['test_loss']:.4f} acc {record['test_acc']:.2f}%"
            if "test_acc" in record
            else ""
        )
        left = (cfg.epochs - state.epoch) * seconds
        tqdm.write(
            f"epoch {state.epoch}/{cfg.epochs}: train loss {record['train_loss']:.4f} "
            f"acc {record['train_acc']:.2f}%  {tested}  ({seconds:.1f} s this epoch, {record['time']:.1f} s "
            f"in all{f', ~{format_duration(left)} left' if left > 0 else ''})"
        )


def _result(
    ctx: RunContext,
    state: _Progress,
    history: list[dict],
    start: float,
    step: _Step,
    interrupted: bool = False,
) -> TrainResult:
    final = history[-1].get("test_acc", 0.0) if history else 0.0
    seconds = time.perf_counter() - start
    run_dir = ctx.run_dir if ctx.save else None
    return TrainResult(
        run_dir,
        state.best_acc,
        final,
        state.epoch,
        seconds,
        history,
        interrupted,
        ctx.dist_env.is_main,
        model=step.eval_model.eval(),
    )


def _wrap(model: nn.Module, cfg: TrainConfig, dist_env: DistEnv, device: torch.device) -> nn.Module:
    net = model
    if dist_env.enabled:
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
    step: _Step,
    loader,
    cfg: TrainConfig,
    ctx: RunContext,
    state: _Progress,
    checkpoint=None,
    tb: TensorBoardLog | None = None,
) -> dict:
    """One epoch from `state.batch` on; `checkpoint()` is offered a mid-epoch save at each host sync, and
    `tb` the running figures read there."""
    step.net.train()
    set_frozen_bn_eval(step.model)  # transfer learning: frozen BatchNorm stays in inference mode
    loader.set_epoch(state.epoch)
    device = next(step.model.parameters()).device
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
        disable=ctx.quiet or not ctx.dist_env.is_main or not sys.stderr.isatty(),  # logs: a line per epoch
        dynamic_ncols=True,
    )
    if tb is not None:
        tb.new_epoch()
    # outside a terminal (a log file, a scheduler's output) the bar is off: a line every 10 s instead
    quiet = ctx.quiet or not ctx.dist_env.is_main
    heartbeat = (
        _Heartbeat(HEARTBEAT_SECONDS, cfg.epochs - state.epoch - 1) if bar.disable and not quiet else None
    )
    if step.threads is not None:
        step.threads.begin()
    for i, (x, y) in enumerate(loader):
        if i < skip:  # resuming mid-epoch: the permutation is the same, skip what was already seen
            continue
        out, loss = _forward(step, x, y, cfg.label_smoothing, device)
        bad = ~torch.isfinite(loss.detach()) & (first_bad < 0)
        first_bad = torch.where(bad, state.step + 1, first_bad)  # recorded on the device, no sync
        lr = step.optimizer.param_groups[-1]["lr"]  # this step's rate (a float), before the schedule moves on
        _update(step, loss, cfg.grad_clip, state.step + 1)
        state.batch, state.step = i + 1, state.step + 1
        if step.threads is not None:
            step.threads.tick(len(y))
        logits = out[0] if isinstance(out, tuple) else out
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        beat = heartbeat is not None and heartbeat.due()
        if i % 20 == 0 or i + 1 == len(loader) or beat:  # the only host syncs of the loop
            _check_finite(first_bad, state, len(loader))
            running_loss, figures = _show(bar, loss_sum, correct, seen, start)
            if beat:
                heartbeat.write(f"epoch {state.epoch + 1}/{cfg.epochs}", i + 1, skip, len(loader), figures)
            if tb is not None:
                tb.steps(state.step, running_loss, seen, lr)
            if checkpoint is not None and i + 1 < len(loader):  # the epoch's end saves anyway
                checkpoint()
        bar.update(1)
    bar.close()
    return _epoch_stats(loss_sum, correct, seen, start)


def _forward(step: _Step, x, y, label_smoothing: float, device: torch.device):
    """The network's output and loss on one batch, in the training precision."""
    with torch.autocast(device.type, dtype=step.amp, enabled=step.amp is not None):
        out = step.net(x)
        loss = _loss(out, y, label_smoothing)
    return out, loss


def _update(step: _Step, loss: torch.Tensor, grad_clip: float, step_number: int) -> None:
    """Backward and one optimizer step (float16: through the scaler), then the schedule and the EMA."""
    optimizer, scaler = step.optimizer, step.scaler
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(step.model.parameters(), grad_clip)
    scaler.step(optimizer) if scaler is not None else optimizer.step()
    if scaler is not None:
        scaler.update()
    step.scheduler.step()
    if step.ema is not None:
        step.ema.update(step.model, step=step_number)


class _Heartbeat:
    """A progress line every `seconds` where no bar is drawn: the epoch's share done, the running figures
    and the time left at this epoch's pace (for the epochs after it too)."""

    def __init__(self, seconds: float, epochs_after: int):
        self.seconds, self.epochs_after = seconds, epochs_after
        self.start = self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.seconds

    def write(self, desc: str, batch: int, skipped: int, batches: int, figures: dict) -> None:
        """`batch` of `batches` done, the first `skipped` of them before this process (a resumed epoch)."""
        self.last = time.monotonic()
        per_batch = (self.last - self.start) / max(1, batch - skipped)
        left = per_batch * ((batches - batch) + self.epochs_after * batches)
        shown = "  ".join(f"{k} {v}" for k, v in figures.items())
        print(
            f"{desc}: {100 * batch / batches:.0f}% ({batch}/{batches} batches)  {shown}  "
            f"~{format_duration(left)} left",
            flush=True,
        )


def _show(bar, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, start: float) -> tuple[float, dict]:
    """The progress bar's running figures (reading the sums is a host sync): the loss sum read, and the
    figures as shown."""
    rate = seen / max(1e-9, time.perf_counter() - start)
    total = loss_sum.item()
    figures = {
        "loss": f"{total / seen:.4f}",
        "acc": f"{100 * correct.item() / seen:.2f}%",
        "img/s": f"{rate:,.0f}",
    }
    bar.set_postfix(figures, refresh=False)
    return total, figures


def _epoch_stats(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, start: float) -> dict:
    """The epoch's train figures over every rank's images, not only rank 0's shard (one all-reduce per
    epoch; a no-op in one process)."""
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


def _save_all(ctx: RunContext, step: _Step, state: _Progress, record: dict, best: bool) -> None:
    """`last` with the whole training state (to resume exactly), and `best` (weights only) when asked."""
    training_state = {
        "model": {k: v.detach().cpu().clone() for k, v in step.model.state_dict().items()},
        "optimizer": step.optimizer.state_dict(),
        "scheduler": step.scheduler.state_dict(),
        "ema": step.ema.module.state_dict() if step.ema else {},
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
    _save(ctx.run_dir, "last", step.eval_model, meta, training_state)
    if best:
        _save(ctx.run_dir, "best", step.eval_model, meta)


def _restore(step: _Step, checkpoint: Path, device) -> _Progress:
    """Load `checkpoint`'s (or a run folder's `last`) training state into `step`; its progress."""
    weights = checkpoint / "last.safetensors" if checkpoint.is_dir() else checkpoint
    saved = load_training_state(weights)
    meta = read_meta(weights)
    model = step.model
    if meta.get("model") != getattr(model, "model_name", meta.get("model")):
        raise CnnzooError(f"cannot resume: {weights} holds {meta.get('model')}, not {model.model_name}")
    try:
        load_state_dict_checked(
            model, {k: v.to(device) for k, v in saved["model"].items()}, source=str(weights)
        )
        step.optimizer.load_state_dict(saved["optimizer"])
        step.scheduler.load_state_dict(saved["scheduler"])
        if step.ema is not None and saved["ema"]:
            step.ema.module.load_state_dict(saved["ema"])
        torch.set_rng_state(saved["rng"]["torch"])
        if saved["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        return _Progress(**saved["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:  # a state of another shape
        raise CnnzooError(
            f"cannot resume from {weights}: its training state does not fit this run ({e!r})"
        ) from None
