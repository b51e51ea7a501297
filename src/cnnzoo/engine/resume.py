"""`--resume`: continue a run folder as recorded (rule 3 of `runfolder.py`); `--auto-resume` and torchrun restarts.

A resumed run keeps the recorded configuration. `--epochs` may grow (continuing or extending a finished
run); `--device`, `--data-dir`, `--download`, `--checkpoint-minutes` and `--tensorboard` may change; anything
else that differs (another model, dataset, rate or --out) is refused, naming it. A run that stopped before its first
checkpoint is started over from its configuration; a checkpoint broken by an interrupted save falls back to
the previous consistent one (`checkpoint.py`). Each of these is said on stderr.

`--auto-resume` (a scheduler that requeues the same command) and a torchrun restart (`TORCHELASTIC_RESTART_COUNT`
> 0) name a configuration and a folder: `auto_resume_changes` continues the folder when it holds a trained run of that
configuration (the same resumable differences allowed), starts it when it holds none, and refuses another
configuration as a new run would.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .._io import atomic_write, note
from ..artifacts.checkpoint import PREVIOUS, read_meta, restore_previous, usable_checkpoint
from ..errors import CnnzooError
from .config import TrainConfig, load_config
from .runfolder import check_writable, clean_temporaries, count, describe_run, holds_trained_run, read_json

__all__ = [
    "resume_run_dir",
    "plan_resume",
    "ResumePlan",
    "write_config",
    "auto_resume_changes",
    "differences",
    "RESUMABLE",
]

# what a resumed run may change: where and how it runs, and how long; never what it computes
RESUMABLE = ("epochs", "device", "data_dir", "download", "checkpoint_minutes", "tensorboard")


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    atomic_write(
        run_dir / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    )


def resume_run_dir(resume: str | Path) -> Path:
    """The run folder `--resume` names (a folder, or a checkpoint file inside it)."""
    run_dir = Path(resume)
    if run_dir.suffix in (".safetensors", ".json") and run_dir.parent.is_dir():
        run_dir = run_dir.parent
    if not (run_dir / "config.json").exists():
        raise CnnzooError(f"cannot resume {resume}: no run there (expected {run_dir / 'config.json'})")
    return run_dir


@dataclass
class ResumePlan:
    cfg: TrainConfig
    run_dir: Path
    weights: Path | None  # the checkpoint to continue from; None: start over from the configuration
    epochs_done: int = 0
    finished: bool = False  # nothing left to train (and no --epochs to extend it)
    changed: dict = field(default_factory=dict)  # field -> (recorded, new)


def _flag(name: str, value) -> str:
    if name == "model":
        return f"model {value}"
    return f"--{name.replace('_', '-')} {value}"


def plan_resume(
    run_dir: Path, changes: dict, *, out: str | Path | None = None, writes: bool = True
) -> ResumePlan:
    """What `--resume` will do, checked before any work (see the module docstring).

    `changes`: the training options given with --resume (None values are "not given"). `writes`: this process
    may repair and update the folder (rank 0, holding the lock); other ranks only read the same decision.
    """
    run_dir = Path(run_dir)
    cfg = _recorded_config(run_dir, out)
    changed = _allowed_changes(run_dir, cfg, changes)
    if writes:
        check_writable(run_dir)
        clean_temporaries(run_dir)
    new_cfg = replace(cfg, **{k: v for k, (_, v) in changed.items()})
    plan = ResumePlan(new_cfg, run_dir, None, changed=changed)
    _find_checkpoint(plan, writes)
    if writes and not plan.finished:
        _say_changes(plan, cfg)
    if writes and changed and not plan.finished:
        write_config(run_dir, new_cfg)
    return plan


def _recorded_config(run_dir: Path, out: str | Path | None) -> TrainConfig:
    """The run's config.json; refused for a fine-tuning run, or when --out names another folder."""
    raw = read_json(run_dir / "config.json")
    if isinstance(raw, dict) and "finetune" in raw:
        raise CnnzooError(
            f"{run_dir} is a fine-tuning run: continue it with `cnnzoo finetune --resume {run_dir}`"
        )
    cfg = load_config(run_dir / "config.json")
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise CnnzooError(
            f"--resume continues {run_dir} in place; --out {out} names another folder (copy the run folder "
            "there first to continue a copy)"
        )
    return cfg


def differences(cfg: TrainConfig, changes: dict) -> tuple[dict, list[str]]:
    """({field: (recorded, new)} for the RESUMABLE options that differ, ["--lr 0.3 (recorded: 0.1)", ...] for
    the others) between the recorded `cfg` and `changes` (None values: not given)."""
    changed, refused = {}, []
    names = {f.name for f in fields(TrainConfig)}
    for name, value in changes.items():
        if value is None or name not in names or value == getattr(cfg, name):
            continue
        if name in RESUMABLE:
            changed[name] = (getattr(cfg, name), value)
        else:
            refused.append(f"{_flag(name, value)} (recorded: {getattr(cfg, name)})")
    return changed, refused


def _allowed_changes(run_dir: Path, cfg: TrainConfig, changes: dict) -> dict:
    """{field: (recorded, new)} for the options given that differ; refused unless all are RESUMABLE."""
    changed, refused = differences(cfg, changes)
    if refused:
        raise CnnzooError(
            f"cannot resume {run_dir} with {', '.join(refused)}: a resumed run keeps its recorded configuration "
            f"(only {', '.join(_flag(n, 'N').split()[0] for n in RESUMABLE)} may change); to train with other "
            f"settings start a new run: cnnzoo train --config {run_dir / 'config.json'} --out NEW_FOLDER ..."
        )
    return changed


def auto_resume_changes(run_dir: Path, cfg: TrainConfig, why: str, free: Collection[str] = ()) -> dict | None:
    """The options to resume `run_dir` with (all of `cfg`'s but the `free` ones, which the run derived
    itself: the recipe's fields scaled to the data) when it holds a trained run of `cfg`'s configuration;
    None when it holds none (a new run starts there). `why` ("--auto-resume", "torchrun restart 1") names
    the reason in the refusal of a fine-tuning run or of another configuration."""
    run_dir = Path(run_dir)
    if not holds_trained_run(run_dir):
        return None
    wanted = {k: v for k, v in cfg.to_dict().items() if k not in free}
    raw = read_json(run_dir / "config.json")
    refused = ["its config.json cannot be read"]
    if isinstance(raw, dict) and "finetune" in raw:
        refused = ["a fine-tuning run: `cnnzoo finetune --auto-resume` continues it"]
    elif isinstance(raw, dict):
        _, refused = differences(load_config(run_dir / "config.json"), wanted)
    if refused:
        raise CnnzooError(
            f"{why}: {run_dir} already holds another run ({describe_run(run_dir)}; {', '.join(refused)}): "
            "only a run of the same configuration is continued; replace it with --overwrite, or choose "
            "another --out"
        )
    return wanted


def _find_checkpoint(plan: ResumePlan, writes: bool) -> None:
    """Fill `plan` from the run's `last` checkpoint (repaired from its previous copy when broken, as is a
    broken `best`): the weights to continue from, the epochs done, whether the run is finished."""
    run_dir = plan.run_dir
    last = run_dir / "last.safetensors"
    if not last.exists() and not (run_dir / f"last{PREVIOUS}.safetensors").exists():
        if writes:
            note(
                f"{run_dir} has no checkpoint yet (it stopped before its first save): starting it over from its recorded configuration"
            )
        return
    try:
        weights, why = usable_checkpoint(last, state=True)
    except CnnzooError as e:
        raise CnnzooError(f"cannot resume {run_dir}: {e}") from None
    if why and writes:
        restore_previous(run_dir, "last")
        note(f"resuming {run_dir}: {why}")
        weights = last
    _repair_best(run_dir, writes)
    meta = read_meta(weights)
    plan.weights, plan.epochs_done = weights, int(meta.get("epoch", 0))
    in_epoch = bool(meta.get("batch"))
    if "epochs" in plan.changed and plan.cfg.epochs < plan.epochs_done + in_epoch:
        raise CnnzooError(
            f"--epochs {plan.cfg.epochs}: {run_dir} has already trained {count(plan.epochs_done, 'epoch')}"
            f"{' and part of the next' if in_epoch else ''}; give more to extend it"
        )
    plan.finished = plan.epochs_done >= plan.cfg.epochs


def _say_changes(plan: ResumePlan, recorded: TrainConfig) -> None:
    for name, (old, new) in plan.changed.items():
        if name == "epochs":
            verb = "extending the finished run" if plan.epochs_done >= old else "continuing"
            note(
                f"{verb} {plan.run_dir} to {new} epochs (recorded: {old}; {plan.epochs_done} done); the "
                f"learning-rate schedule now spans {new} epochs"
            )
        else:
            note(f"resuming {plan.run_dir} with {_flag(name, new)} (recorded: {old})")


def _repair_best(run_dir: Path, writes: bool) -> None:
    best = run_dir / "best.safetensors"
    if not writes or not (best.exists() or (run_dir / f"best{PREVIOUS}.safetensors").exists()):
        return
    try:
        _, why = usable_checkpoint(best)
    except CnnzooError as e:
        note(f"{e}: the next better epoch will write a new best")
        return
    if why:
        restore_previous(run_dir, "best")
        note(f"best checkpoint of {run_dir}: {why}")
