"""Checkpoints: weights as safetensors, a JSON config beside them, optimizer state in a weights-only file.

A checkpoint named `best` in run folder `runs/x/` is three files:

    best.safetensors   the model's state dict (loading it can never run code)
    best.json          what is needed to rebuild the model and read its output: model name and
                       kwargs, classes, input size, normalisation, epoch, metrics
    best.state.pt      optimizer, scheduler, EMA and RNG state for `--resume` (tensors and plain
                       containers only, loaded with `torch.load(weights_only=True)`)

Every write goes to a temporary file first and is renamed into place, so an interrupted save
never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CnnzooError
from ..models import create_model

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "resolve_checkpoint", "atomic_write"]


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then rename the temporary file onto `path` (same folder, same disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode) and its metadata."""

    model: nn.Module
    meta: dict
    path: Path

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]


def save_checkpoint(
    run_dir: Path, tag: str, model: nn.Module, meta: dict, training_state: dict | None = None
) -> Path:
    """Write `<run_dir>/<tag>.safetensors`, `.json` and (optionally) `.state.pt`; return the weights path."""
    run_dir = Path(run_dir)
    weights = run_dir / f"{tag}.safetensors"
    # safetensors refuses shared storage; `contiguous().clone()` gives each tensor its own.
    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()}
    if training_state is not None:  # state first: a weights file always has its state beside it
        atomic_write(run_dir / f"{tag}.state.pt", lambda tmp: torch.save(training_state, tmp))
    atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"format": "cnnzoo"}))
    _write_json(run_dir / f"{tag}.json", meta)
    return weights


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder (its best, else last), a `.safetensors` file or its `.json`; return the weights path."""
    p = Path(path)
    if p.is_dir():
        for tag in ("best", "last"):
            if (p / f"{tag}.safetensors").exists():
                return p / f"{tag}.safetensors"
        raise CnnzooError(f"no checkpoint in {p} (expected best.safetensors or last.safetensors)")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.exists():
        raise CnnzooError(f"checkpoint not found: {path}")
    if p.suffix != ".safetensors":
        raise CnnzooError(f"{path}: not a cnnzoo checkpoint (expected a run folder or a .safetensors file)")
    return p


def read_meta(weights: Path) -> dict:
    meta_path = Path(weights).with_suffix(".json")
    try:
        return json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CnnzooError(f"{weights}: its config {meta_path.name} is missing beside it") from None
    except json.JSONDecodeError as e:
        raise CnnzooError(f"{meta_path}: corrupt checkpoint config ({e})") from None


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CnnzooError(f"{weights}: unreadable safetensors file ({e})") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model a checkpoint describes and load its weights strictly."""
    weights = resolve_checkpoint(path)
    meta = read_meta(weights)
    try:
        model = create_model(
            meta["model"],
            num_classes=len(meta["classes"]),
            in_chans=meta["in_chans"],
            **meta.get("model_kwargs", {}),
        )
    except KeyError as e:
        raise CnnzooError(f"{weights}: checkpoint config lacks {e}") from None
    load_state_dict_checked(model, read_weights(weights), source=str(weights))
    return Checkpoint(model.to(device).eval(), meta, weights)


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a message that lists what is missing, unexpected or the wrong shape."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                shown = ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CnnzooError(
            f"{source} does not fit {getattr(model, 'model_name', type(model).__name__)}: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def load_training_state(weights: Path) -> dict:
    path = Path(weights).parent / f"{Path(weights).stem}.state.pt"
    if not path.exists():
        raise CnnzooError(f"cannot resume: {path} is missing")
    return torch.load(path, map_location="cpu", weights_only=True)
