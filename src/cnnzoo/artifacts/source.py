"""What does this source string name, and what model does it open? One answer for every command.

A *source* is whatever a command is pointed at (`predict`, `evaluate`, `export`, `explain`, `serve`,
`finetune --from`, `advise --from`, `cnnzoo.load`):

    kind         example                       what it holds
    bundled      lenet5:mnist                  weights shipped in the package (SHA-256 checked)
    torchvision  torchvision:resnet18          torchvision's published ImageNet weights (downloaded)
    export       exported/lenet5               a `cnnzoo export` folder (config.json + model.safetensors)
    run          runs/lenet5-mnist-...         a run folder: its best checkpoint, else its last
    checkpoint   runs/x/best.safetensors       one checkpoint (its .json beside it), or that .json
    weights      resnet18.pth, w.safetensors   a bare state dict: the architecture is read off its keys

`parse_source` tells the kind (files and folders on disk win over `model:dataset` names);
`read_source` gives the weights and what is known about them (architecture, classes, preprocessing);
`open_source` the model as the source is (its own classes and channels, eval mode) with a
checkpoint-style config; `provenance` the training data, accuracy and recipe it records. Transfer
learning adapts a source to other classes and channels (`cnnzoo.transfer.load_source`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CnnzooError
from ..models import model_info
from ..models._builder import adapt_stats
from ..models._pretrained import is_pretrained_name, pretrained_checkpoint, pretrained_entry
from ..models._torchvision import TORCHVISION_MODELS, fetch_torchvision
from ..models._validate import check_config
from ..models._weights import (
    clean_state_dict,
    identify_architecture,
    load_adapted,
    map_timm_names,
    read_weights,
    read_weights_file,
    state_shape,
)
from .checkpoint import PREVIOUS, load_checkpoint, read_meta, resolve_checkpoint
from .exported import (
    WEIGHTS,
    export_files,
    is_export_folder,
    load_export,
    load_export_onnx,
    read_export_config,
)

__all__ = [
    "KINDS",
    "Opened",
    "SourceSpec",
    "SourceWeights",
    "open_source",
    "parse_source",
    "provenance",
    "read_source",
]

KINDS = ("bundled", "torchvision", "export", "run", "checkpoint", "weights")
EXPECTED = (
    "give a run folder, a .safetensors checkpoint, an export folder, a .pth/.pt/.safetensors weights file, "
    "torchvision:NAME or bundled weights such as lenet5:mnist"
)


@dataclass(frozen=True)
class SourceSpec:
    text: str  # as the user wrote it
    kind: str  # one of KINDS
    path: Path | None  # on disk: the folder or file (bundled: the verified weights); torchvision: None


def parse_source(spec: str | Path | SourceSpec) -> SourceSpec:
    """The kind of source `spec` names; a name that is nothing on disk nor a known form is one error."""
    if isinstance(spec, SourceSpec):
        return spec
    text = str(spec)
    if text.startswith("torchvision:"):
        return SourceSpec(text, "torchvision", None)
    if is_pretrained_name(text):  # checked before the disk only for names that are not files
        return SourceSpec(text, "bundled", pretrained_checkpoint(text))
    path = Path(text)
    if path.is_dir():
        return SourceSpec(text, "export" if is_export_folder(path) else "run", path)
    if path.suffix == ".json" or _is_cnnzoo_checkpoint(path):
        return SourceSpec(text, "checkpoint", path)
    if path.exists():
        return SourceSpec(text, "weights", path)
    raise CnnzooError(f"checkpoint not found: {text} ({EXPECTED})")


def _is_cnnzoo_checkpoint(path: Path) -> bool:
    """A `.safetensors` with a cnnzoo config beside it (or only its `.prev` set, after a crash)."""
    if path.suffix != ".safetensors":
        return False
    if not path.exists():
        return path.with_name(path.stem + PREVIOUS + ".safetensors").exists()
    return path.with_suffix(".json").exists() and "model" in read_meta(path)


# --- the weights and what is known about them ------------------------------------------------------


@dataclass
class SourceWeights:
    state: dict[str, Tensor]
    name: str  # the architecture
    kwargs: dict  # its builder options
    classes: list[str] | None  # class names, where the source has them
    preprocessing: dict  # image_size, mean, std (for the source's own channels), assumed
    kind: str
    label: str  # how messages name it


def read_source(spec: str | Path | SourceSpec, model_name: str | None = None) -> SourceWeights:
    """The state dict of any source, its architecture (`model_name` fixes it for a bare weights file)
    and preprocessing. Every problem raises `CnnzooError`."""
    s = parse_source(spec)
    if s.kind == "torchvision":
        return _torchvision_weights(s.text, model_name)
    if s.kind == "weights":
        state = clean_state_dict(read_weights_file(s.path), label=s.text)
        name, kwargs = identify_architecture(state, model_name, label=s.text)
        return SourceWeights(state, name, kwargs, None, _assumed_preprocessing(name), "weights", s.text)
    if s.kind == "export":
        if WEIGHTS not in export_files(s.path):
            raise CnnzooError(
                f"{s.text} holds only {', '.join(export_files(s.path))}: reading its weights needs {WEIGHTS} "
                "(export with --format safetensors)"
            )
        weights, meta = s.path / WEIGHTS, read_export_config(s.path)
        config = s.path / "config.json"
    else:
        weights = resolve_checkpoint(s.path)
        meta, config = read_meta(weights), weights.with_suffix(".json")
    source = _cnnzoo_weights(weights, meta, s.text, model_name, config)
    if s.kind in ("bundled", "export"):
        source.label = s.text
    return source


def _cnnzoo_weights(
    weights: Path, meta: dict, spec: str, model_name: str | None, config: Path
) -> SourceWeights:
    """A cnnzoo checkpoint's or export folder's weights, its config (read from `config`) checked against them."""
    name = meta.get("model") if isinstance(meta, dict) else None
    if model_name is not None and name is not None and model_name != name:
        raise CnnzooError(
            f"{spec} is a cnnzoo {name} checkpoint; --model {model_name} does not match it (leave --model out)"
        )
    state = map_timm_names(read_weights(weights))  # an export folder's VGG holds timm's names
    check_config(meta, str(config), state=state)  # every field against the weights, one line naming it
    prep = {"image_size": meta["image_size"], "mean": tuple(meta["mean"]), "std": tuple(meta["std"])}
    kwargs, classes = dict(meta.get("model_kwargs") or {}), list(meta["classes"])
    return SourceWeights(state, name, kwargs, classes, {**prep, "assumed": False}, "cnnzoo", str(weights))


def _torchvision_weights(spec: str, model_name: str | None) -> SourceWeights:
    name = spec.split(":", 1)[1]
    if name not in TORCHVISION_MODELS:
        raise CnnzooError(f"no torchvision weights for {name!r}; available: {', '.join(TORCHVISION_MODELS)}")
    if model_name is not None and model_name != name:
        raise CnnzooError(f"{spec} is a {name}; --model {model_name} does not match it (leave --model out)")
    state, classes = fetch_torchvision(name)
    state = clean_state_dict(state, label=spec)
    name, kwargs = identify_architecture(state, name, label=spec)
    # The registry's mean/std for googlenet and inception_v3 are 0.5: torchvision feeds its Inception
    # weights through `transform_input`, i.e. (x - 0.5) / 0.5, the same numbers as normalising with
    # mean = std = 0.5, which also works for other channel counts. ImageNet's for the others.
    prep = {**_assumed_preprocessing(name), "assumed": False}
    return SourceWeights(state, name, kwargs, classes, prep, "torchvision", spec)


def _assumed_preprocessing(name: str) -> dict:
    """For weights that carry none (a bare .pth / .safetensors): the model's registered input size and
    the mean/std of the data the architecture was made for (MNIST for LeNet, CIFAR-10 for the CIFAR
    ResNets, 0.5 for torchvision's Inception ports, ImageNet's for the rest), as its `pretrained_cfg`."""
    info = model_info(name)
    return {"image_size": info.input_size, "mean": info.mean, "std": info.std, "assumed": True}


# --- the model, as the source is ------------------------------------------------------------------


@dataclass
class Opened:
    """A source's model (eval mode) with a checkpoint-style config (model, model_kwargs, classes,
    in_chans, image_size, mean, std, and whatever the source records) and the label messages use."""

    model: nn.Module
    meta: dict
    label: str
    spec: SourceSpec

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def path(self) -> Path:  # what it was read from, as a `Checkpoint`'s path
        return Path(self.label)


def open_source(spec: str | Path | SourceSpec, device: str | torch.device = "cpu") -> Opened:
    """The model a source describes, with its own classes and channels, ready to predict or evaluate."""
    s = parse_source(spec)
    if s.kind in ("run", "checkpoint", "bundled"):
        ckpt = load_checkpoint(s.path, device)  # falls back to a `.prev` set after a crash, saying so
        return Opened(ckpt.model, ckpt.meta, s.text if s.kind == "bundled" else str(ckpt.path), s)
    if s.kind == "export":  # the PyTorch weights where the folder has them, else model.onnx (onnxruntime)
        model, meta = load_export(s.path) if WEIGHTS in export_files(s.path) else load_export_onnx(s.path)
        return Opened(model.to(device), meta, s.text, s)
    return _open_foreign(read_source(s), s, device)


def _open_foreign(w: SourceWeights, s: SourceSpec, device) -> Opened:
    """A bare weights file or torchvision's: built for the classes and channels its tensors have."""
    classes, chans = state_shape(w.name, w.kwargs, w.state)
    if classes is None:
        raise CnnzooError(
            f"{w.label} has no classifier, so it cannot predict classes: fine-tune it (cnnzoo finetune --from {w.label})"
        )
    chans = chans or model_info(w.name).in_chans
    model, _, _, _ = load_adapted(
        w.name, w.kwargs, w.state, num_classes=classes, in_chans=chans, label=w.label
    )
    prep = w.preprocessing
    meta = {
        "model": w.name,
        "model_kwargs": w.kwargs,
        "classes": list(w.classes)
        if w.classes and len(w.classes) == classes
        else [str(i) for i in range(classes)],
        "in_chans": chans,
        "image_size": prep["image_size"],
        "mean": list(adapt_stats(prep["mean"], chans)),
        "std": list(adapt_stats(prep["std"], chans)),
    }
    return Opened(model.to(device).eval(), meta, w.label, s)


# --- what the source records about its training ----------------------------------------------------


def provenance(spec: str | Path | SourceSpec, meta: dict | None = None) -> dict:
    """Training data, test accuracy (%), recipe, the command that made it and the epoch, where the source
    records them (None where not); bundled weights also give their name (`bundled`) and SHA-256. With
    `meta` (the config the source was opened with) a source no longer on disk still answers from it."""
    try:
        s = parse_source(spec)
    except CnnzooError:
        if meta is None:
            raise
        s = SourceSpec(str(spec), "gone", None)
    info = {"dataset": None, "accuracy": None, "recipe": None, "command": None, "epoch": None}
    if s.kind == "bundled":
        entry = pretrained_entry(s.text)
        r = entry.record
        return {**info, "dataset": entry.dataset, "accuracy": entry.accuracy, "recipe": r.get("recipe"),
                "command": r.get("command"), "bundled": entry.name, "sha256": entry.sha256}  # fmt: skip
    if meta is None and s.kind in ("run", "checkpoint"):
        meta = read_meta(resolve_checkpoint(s.path))
    elif meta is None and s.kind == "export":
        meta = read_export_config(s.path)
    meta = meta or {}
    acc = meta.get("accuracy", (meta.get("metrics") or {}).get("test_acc"))
    info.update(dataset=meta.get("dataset"), epoch=meta.get("epoch"))
    info["accuracy"] = None if acc is None else float(acc)
    if s.kind in ("run", "checkpoint"):
        run = s.path if s.path.is_dir() else s.path.parent
        try:
            info["recipe"] = json.loads((run / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            pass
    return info
