"""Checkpoints: weights as safetensors, a JSON config beside them, optimizer state in a weights-only file.

A checkpoint named `best` in run folder `runs/x/` is three files, one unit:

    best.safetensors   the model's state dict (loading it can never run code)
    best.json          what is needed to rebuild the model and read its output: model name and
                       kwargs, classes, input size, normalisation, epoch, metrics
    best.state.pt      optimizer, scheduler, EMA and RNG state for `--resume` (tensors and plain
                       containers only, loaded with `torch.load(weights_only=True)`)

How the three stay one unit, whatever stops the process:
  1. Every save draws a `save_id` and writes it into all three files (the JSON, the safetensors header,
     the state dict), so a reader can tell a consistent set from files of different saves.
  2. All files are first written completely to temporaries beside them (`.best.json.k3x9...`, created
     with the user's umask, flushed to disk); only then are they renamed into place. A failed write
     (disk full, read-only folder) leaves the previous checkpoint untouched.
  3. Just before the renames, the current set, when consistent, is kept as `best.prev.*` (hard links: no
     copy). A crash between the renames leaves the previous set whole under `.prev`; `--resume`,
     `evaluate` and `predict` then fall back to it and say so.
A temporary left by a killed process is removed by the next run that writes the folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .._io import atomic_write, describe_os_error, note, read_json_object, write_files
from ..errors import CnnzooError
from ..models import create_model
from ..models._validate import check_config
from ..models._weights import describe_load_error, load_state_dict_checked, read_weights

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "read_meta",
    "checkpoint_problem",
    "check_meta",
    "usable_checkpoint",
    "load_training_state",
]

PREVIOUS = ".prev"  # `last` keeps its previous consistent set as `last.prev.*`
_SUFFIXES = (".safetensors", ".json", ".state.pt")
# what a checkpoint's JSON must hold for the model to be rebuilt and its input prepared
_META_KEYS = {"model": str, "classes": list, "in_chans": int, "image_size": int, "mean": list, "std": list}


# --- writing files ------------------------------------------------------------------------------


# --- saving -------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode) and its metadata."""

    model: nn.Module
    meta: dict
    path: Path

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]


def checkpoint_files(run_dir: Path, tag: str) -> tuple[Path, Path, Path]:
    """(weights, config, state) paths of checkpoint `tag` in `run_dir`."""
    return tuple(Path(run_dir) / f"{tag}{suffix}" for suffix in _SUFFIXES)  # type: ignore[return-value]


def save_checkpoint(
    run_dir: Path, tag: str, model: nn.Module, meta: dict, training_state: dict | None = None
) -> Path:
    """Write `<run_dir>/<tag>.safetensors`, `.json` and (optionally) `.state.pt` as one unit (see the
    module docstring); the previous consistent set is kept as `<tag>.prev.*`. Returns the weights path."""
    run_dir = Path(run_dir)
    weights, meta_path, state_path = checkpoint_files(run_dir, tag)
    save_id = uuid.uuid4().hex
    # safetensors refuses shared storage; `contiguous().clone()` gives each tensor its own.
    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()}
    meta = {**meta, "save_id": save_id, "has_state": training_state is not None}
    header = {"format": "cnnzoo", "save_id": save_id}
    files = [(weights, lambda tmp: save_file(state, tmp, metadata=header))]
    if training_state is not None:
        files.append((state_path, lambda tmp: torch.save({**training_state, "save_id": save_id}, tmp)))
    files.append((meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")))
    write_files(files, before_replace=lambda: _keep_previous(run_dir, tag))
    if training_state is None and state_path.exists():
        state_path.unlink()  # a state file of an earlier save would not belong to this one
    return weights


def _keep_previous(run_dir: Path, tag: str) -> None:
    """Keep the current `tag` set as `tag.prev` (hard links), but only when it is consistent: after an
    interrupted save the consistent one is already `tag.prev`, and stays."""
    current = checkpoint_files(run_dir, tag)
    if not current[0].exists() or checkpoint_problem(current[0], state=current[2].exists()) is not None:
        return
    previous = checkpoint_files(run_dir, tag + PREVIOUS)
    for src, dst in zip(current, previous, strict=True):
        if src.exists():
            _link_or_copy(src, dst)
        elif dst.exists():
            dst.unlink()


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make `dst` the same content as `src`, atomically: a hard link where the filesystem has them."""

    def write(tmp: str) -> None:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    atomic_write(dst, write)


def restore_previous(run_dir: Path, tag: str) -> None:
    """Make `tag` the consistent `tag.prev` set again (after an interrupted save)."""
    for src, dst in zip(
        checkpoint_files(run_dir, tag + PREVIOUS), checkpoint_files(run_dir, tag), strict=True
    ):
        if src.exists():
            _link_or_copy(src, dst)
        elif dst.exists():
            dst.unlink()


def stale_temporaries(run_dir: Path) -> list[Path]:
    """Temporaries of `write_files` a killed process left in `run_dir` (`.last.json.1f2e3d4c`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    pattern = re.compile(r"^\.(.+\.(safetensors|json|pt|png|jsonl))\.[a-z0-9_]{8}$")
    return sorted(p for p in run_dir.iterdir() if pattern.match(p.name) and p.is_file())


# --- reading ------------------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder (its best, else last), a `.safetensors` file or its `.json`; return the weights path."""
    p = Path(path)
    if p.is_dir():
        for tag in ("best", "last"):
            for candidate in (tag, tag + PREVIOUS):
                if (p / f"{candidate}.safetensors").exists():
                    return p / f"{tag}.safetensors"
        raise CnnzooError(f"no checkpoint in {p} (expected best.safetensors or last.safetensors)")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.exists() and not _previous_of(p).exists():
        raise CnnzooError(f"checkpoint not found: {path}")
    if p.suffix != ".safetensors":
        raise CnnzooError(f"{path}: not a cnnzoo checkpoint (expected a run folder or a .safetensors file)")
    return p


def _previous_of(weights: Path) -> Path:
    return weights.with_name(weights.name.removesuffix(".safetensors") + PREVIOUS + ".safetensors")


def read_meta(weights: Path) -> dict:
    meta_path = Path(weights).with_suffix(".json")
    if not meta_path.exists():
        raise CnnzooError(f"{weights}: its config {meta_path.name} is missing beside it")
    return read_json_object(meta_path, "checkpoint config")


def check_meta(meta: dict, meta_path: Path) -> None:
    """Refuse a checkpoint config that lacks what rebuilding the model and preparing its input needs."""
    for key, kind in _META_KEYS.items():
        if key not in meta:
            raise CnnzooError(f"{meta_path}: checkpoint config lacks {key!r}")
        value = meta[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CnnzooError(
                f"{meta_path}: checkpoint config field {key!r} should be {kind.__name__}, got {value!r}"
            )


def _weights_save_id(weights: Path) -> str | None:
    try:
        with safe_open(str(weights), "pt") as f:
            return (f.metadata() or {}).get("save_id")
    except (SafetensorError, OSError, ValueError) as e:
        raise CnnzooError(f"{weights} is unreadable ({describe_os_error(e)})") from None


def checkpoint_problem(weights: Path, *, state: bool = False) -> str | None:
    """Why the checkpoint at `weights` is not a usable unit (a file missing or unreadable, files of
    different saves, a config lacking a key), or None. `state`: the `.state.pt` must belong too."""
    weights = Path(weights)
    meta_path = weights.with_suffix(".json")
    state_path = weights.parent / f"{weights.name.removesuffix('.safetensors')}.state.pt"
    if not weights.exists():
        return f"{weights} is missing"
    try:
        meta = read_meta(weights)
        check_meta(meta, meta_path)
        weights_id = _weights_save_id(weights)
        saved = load_training_state(state_path, mmap=True) if state else None
    except CnnzooError as e:
        return str(e)
    save_id = meta.get("save_id")
    if save_id is None:  # written before save ids existed: nothing to compare
        return None
    if weights_id != save_id:
        return f"{weights} and {meta_path.name} come from different saves (a save was interrupted)"
    if saved is not None and saved.get("save_id") != save_id:
        return f"{state_path} and {meta_path.name} come from different saves (a save was interrupted)"
    return None


def usable_checkpoint(weights: Path, *, state: bool = False) -> tuple[Path, str | None]:
    """`weights`, or its `.prev` set when `weights` is not a usable unit; with a note saying why."""
    weights = Path(weights)
    problem = checkpoint_problem(weights, state=state)
    if problem is None:
        return weights, None
    previous = _previous_of(weights)
    if previous.exists() and checkpoint_problem(previous, state=state) is None:
        meta = read_meta(previous)
        where = f"epoch {meta.get('epoch', '?')}" + (f", batch {meta['batch']}" if meta.get("batch") else "")
        return previous, f"{problem}; using the previous consistent checkpoint {previous.name} ({where})"
    raise CnnzooError(problem)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model a checkpoint describes and load its weights strictly (falling back to the
    previous consistent checkpoint, with a note, when a save was interrupted)."""
    weights, why = usable_checkpoint(resolve_checkpoint(path))
    if why:
        note(why)
    meta = read_meta(weights)
    state = read_weights(weights)
    check_config(meta, str(weights.with_suffix(".json")), state=state)  # each field against the weights
    model = create_model(
        meta["model"],
        num_classes=len(meta["classes"]),
        in_chans=meta["in_chans"],
        **meta.get("model_kwargs", {}),
    )
    load_state_dict_checked(model, state, source=str(weights))
    return Checkpoint(model.to(device).eval(), meta, weights)


def load_training_state(path: Path, *, mmap: bool = False) -> dict:
    """The `.state.pt` of a checkpoint (`path` may be its weights file), read with weights_only=True."""
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.parent / f"{path.name.removesuffix('.safetensors')}.state.pt"
    if not path.exists():
        raise CnnzooError(f"cannot resume: {path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError...: described, never a traceback
        raise CnnzooError(f"{path} is unusable: {describe_load_error(path, e)}") from None
    if not isinstance(state, dict) or "progress" not in state:
        raise CnnzooError(f"{path} is unusable: not a cnnzoo training state")
    return state
