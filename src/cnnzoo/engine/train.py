"""The training engine: `train(cfg)` builds model and data, `fit(...)` runs the epochs.

1. resolve device, precision and (under torchrun) the process group
2. load the dataset once into memory, resized once to the model's input size (`setup.py`)
3. each epoch: batches are slices of a seeded permutation, augmented on the device (`loop.py`)
4. after each epoch: evaluate, log a JSON line, save `last` (and `best`) atomically
5. Ctrl-C saves `last` (mid-epoch position included) and exits; `--resume` continues there (`resume.py`)
6. `--auto-resume` and torchrun restarts continue the --out folder when it holds this configuration's run;
   a rank whose peer died says so in one line and exits non-zero (`distributed.py`)
"""

from __future__ import annotations

import os
from collections.abc import Collection
from contextlib import ExitStack
from pathlib import Path

import torch

from .._io import note
from ..artifacts.checkpoint import read_meta
from ..errors import CnnzooError
from ..models import count_params, create_model
from ..runtime import resolve_device
from .config import SCALED_FIELDS, TrainConfig, describe_recipe, scale_to_data
from .distributed import (
    cleanup_distributed,
    environ_dist_env,
    lost_peer,
    peer_failure,
    restart_count,
    setup_distributed,
    stop_on_sigterm,
)
from .loop import TrainResult, fit
from .resume import ResumePlan, auto_resume_changes, plan_resume, resume_run_dir, write_config
from .runfolder import RunLock, count, new_run
from .runlog import RunLog
from .setup import (
    RunContext,
    check_image_size,
    check_memory,
    checkpoint_meta,
    default_run_dir,
    load_splits,
    make_loaders,
    resolve_image_size,
    run_loaders,
)

__all__ = [
    "train",
    "finished_result",
    "fit",
    "make_loaders",
    "TrainResult",
    "RunContext",
]  # the last four: from loop and setup


def train(
    cfg: TrainConfig | None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    changes: dict | None = None,
    save: bool = True,
    auto_resume: bool = False,
    given: Collection[str] | None = None,
) -> TrainResult:
    """Train `cfg.model` on `cfg.data` from scratch into `run_dir`, or continue the run `resume`.

    The run folder's rules (`runfolder.py`, `resume.py`): an existing run is refused unless `overwrite`;
    the folder is locked while this process writes it; `resume` keeps the recorded configuration, with
    `changes` (the options given with --resume) applied where a resumed run may change them and refused
    elsewhere. `save=False`: nothing is written anywhere (no run folder; the result's `run_dir` is None).
    `auto_resume` (and a torchrun restart, where `overwrite` only held for the first attempt): continue
    `run_dir` when it holds a run of `cfg`'s configuration, start it when it holds none.

    `given`: the fields of `cfg` the user chose (flags, keywords); the recipe's epochs, batch size, rate and
    augmentation not among them are scaled to the training images once they are loaded
    (`config.scale_to_data`), and config.json records the result. None (a recorded configuration, a
    resumed run): `cfg` is trained as it is.
    """
    if not save and (run_dir is not None or resume is not None):
        raise CnnzooError(
            "a run that saves nothing has no run folder: give no run_dir or resume with save=False"
        )
    # under torchrun only rank 0 writes the run folder
    writes = save and int(os.environ.get("RANK", "0")) == 0
    with ExitStack() as held:
        start_from = None
        why = _auto_resume_reason(auto_resume) if resume is None and save else None
        if why is not None:
            overwrite = False  # a restart must not erase what the first attempt trained
            if run_dir is None:
                raise CnnzooError(f"{why} continues the run folder --out names: give --out RUN")
            # the recipe's fields the rule scales (not given) are the recorded run's, whatever they became
            free = () if given is None else [f for f in SCALED_FIELDS if f not in given]
            changes = auto_resume_changes(Path(run_dir), cfg, why, free=free)
            resume = run_dir if changes is not None else None
        if resume is not None:
            run_dir, out = resume_run_dir(resume), run_dir
            if writes:
                held.enter_context(RunLock(run_dir))
            plan = plan_resume(run_dir, changes or {}, out=out, writes=writes)
            if plan.finished:
                return finished_result(plan.run_dir, plan.epochs_done)
            cfg, start_from = plan.cfg, plan.weights
            if why is not None and writes:  # said once, by the rank that writes
                note(f"{why}: continuing {run_dir} from its last checkpoint ({_position(plan)})")
        else:
            check_image_size(cfg)
            run_dir = Path(run_dir) if run_dir else default_run_dir(cfg.model, cfg.data)
            if writes:
                run_dir = held.enter_context(
                    new_run(run_dir, lambda d: write_config(d, cfg), overwrite=overwrite)
                )
        return _train(cfg, Path(run_dir), start_from, quiet, save, None if resume is not None else given)


def _fit_recipe(
    cfg: TrainConfig, train_size: int, given: Collection[str] | None, run_dir: Path, writes: bool
) -> tuple[TrainConfig, str]:
    """The recipe scaled to `train_size` images where `given` leaves it free (recorded in config.json
    when it changed), and the line that says what it is and where its values came from."""
    if given is None:  # a recorded configuration: as it is
        return cfg, describe_recipe(cfg, train_size, {}, None)
    cfg, changed = scale_to_data(cfg, train_size, frozenset(given))
    if changed and writes:
        write_config(run_dir, cfg)
    return cfg, describe_recipe(cfg, train_size, changed, frozenset(given))


def _auto_resume_reason(auto_resume: bool) -> str | None:
    """Why a new run may continue its folder: torchrun restarted it, or --auto-resume; None: it may not."""
    if restart_count() > 0:
        return f"torchrun restart {restart_count()}"
    return "--auto-resume" if auto_resume else None


def _position(plan: ResumePlan) -> str:
    if plan.weights is None:
        return "none yet: starting over"
    batch = int(read_meta(plan.weights).get("batch") or 0)
    done = f"{plan.epochs_done} of {count(plan.cfg.epochs, 'epoch')} done"
    return f"{done}, {batch} batch{'' if batch == 1 else 'es'} into the next" if batch else done


def finished_result(run_dir: Path, epochs_done: int) -> TrainResult:
    """A run --resume found complete: its recorded figures, nothing trained."""
    history = RunLog(run_dir).records()
    tested = [r["test_acc"] for r in history if r.get("test_acc") is not None]
    final = history[-1].get("test_acc", 0.0) if history else 0.0
    best = max(tested, default=0.0)
    return TrainResult(run_dir, best, final or 0.0, epochs_done, 0.0, history, already_finished=True)


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    start_from: Path | None,
    quiet: bool,
    save: bool = True,
    given: Collection[str] | None = None,
) -> TrainResult:
    """Build the model and loaders of `cfg` on its device (joining torchrun's process group), then fit."""
    device = resolve_device(cfg.device)
    dist_env = environ_dist_env()
    if dist_env.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_env.local_rank)
    try:
        with stop_on_sigterm(dist_env):
            setup_distributed(device)
            return _build_and_fit(cfg, run_dir, start_from, quiet, save, device, dist_env, given)
    except BaseException as e:  # a peer lost before the first step (fit says where it was once training)
        what = peer_failure(e, dist_env)
        if what is None:
            raise
        raise lost_peer(what, dist_env, "while starting", run_dir if save else None) from None
    finally:
        cleanup_distributed()


def _build_and_fit(
    cfg: TrainConfig, run_dir: Path, start_from, quiet: bool, save: bool, device, dist_env, given
):
    """The data, the recipe fitted to it (`_fit_recipe`), the model and loaders of `cfg`; then `fit`."""
    splits = load_splits(cfg)
    info = splits.info
    cfg, recipe = _fit_recipe(cfg, len(splits.train), given, run_dir, save and dist_env.is_main)
    if not quiet and dist_env.is_main:
        print(recipe)
    image_size = resolve_image_size(cfg, info, quiet or not dist_env.is_main)
    check_memory(cfg, splits, image_size, device)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=info.num_classes, in_chans=info.channels, **cfg.model_kwargs)
    loaders = run_loaders(splits, cfg, image_size, device, dist_env)
    meta = checkpoint_meta(cfg.model, cfg.model_kwargs, info, image_size, info.channels, info.mean, info.std)
    ctx = RunContext(run_dir, meta, quiet, dist_env, save=save)
    if not quiet and dist_env.is_main:
        print(
            f"{cfg.model} ({count_params(model):,} params) on {cfg.data}: {len(splits.train):,} train / "
            f"{len(splits.test):,} test images, {image_size}x{image_size}, device {device}"
            + (f", run {ctx.run_dir}" if save else ", nothing saved")
        )
        if dist_env.enabled:
            per_rank = loaders[0].batch_size
            print(
                f"distributed: {dist_env.world_size} ranks x {per_rank} images = global batch "
                f"{per_rank * dist_env.world_size} (--batch-size {cfg.batch_size}); learning rate kept at "
                f"{cfg.lr:g}, as for one process with that batch"
            )
    return fit(model, loaders, cfg, ctx, device=device, resume=start_from)
