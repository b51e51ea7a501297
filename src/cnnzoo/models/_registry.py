"""The model registry: builder name -> builder and the facts `cnnzoo models` prints.

A builder is registered with `@register_model(family=..., input_size=..., min_size=..., paper=...)`;
its function name is the registry key. Builders are keyword-only and accept `num_classes` and
`in_chans`; `mean` and `std` are the normalisation the architecture is trained with by default (the
dataset it was designed for), which `create_model` puts in the model's `pretrained_cfg`.

`create_model` adds timm's keywords on top of the builder's: `num_classes=0` (no classifier: the
pre-logits features), `global_pool=""` (no pooling), `features_only=True` with `out_indices` (a
`FeatureListNet` returning per-stage maps) and `pretrained="mnist"` (bundled weights, see
`cnnzoo.inference.pretrained`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CnnzooError, unknown_name

__all__ = [
    "ModelInfo",
    "register_model",
    "list_models",
    "model_info",
    "model_table",
    "create_model",
    "count_params",
    "adapt_stats",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    input_size: int  # the side of the square input the paper used
    min_size: int  # the smallest side that still runs forward (every stride and pool fits)
    paper: str
    in_chans: int = 3  # default channels when the caller does not say
    num_classes: int = 1000  # default classes when the caller does not say
    builder: Callable[..., nn.Module] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN  # the normalisation of the data the architecture was made for
    std: tuple[float, ...] = IMAGENET_STD


_MODELS: dict[str, ModelInfo] = {}


def register_model(
    *,
    family: str,
    input_size: int,
    min_size: int,
    paper: str,
    in_chans: int = 3,
    num_classes: int = 1000,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
):
    """Decorator that adds a builder to the registry under its own function name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelInfo(
            name, family, input_size, min_size, paper, in_chans, num_classes, fn, tuple(mean), tuple(std)
        )
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Importing the package registers every family; done lazily so `_registry` has no cycle.
    from . import alexnet, googlenet, inception_v3, lenet, resnet, vgg  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern (e.g. ``"resnet*"``), sorted."""
    _ensure_loaded()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; an unknown name raises with the closest names suggested."""
    _ensure_loaded()
    if name not in _MODELS:
        raise unknown_name("model", name, _MODELS, "see `cnnzoo models`")
    return _MODELS[name]


def _check_positive(what: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise CnnzooError(f"{what} must be a positive integer, got {value!r}")


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    global_pool: str | None = None,
    features_only: bool = False,
    out_indices: int | list[int] | tuple[int, ...] | None = None,
    pretrained: str | bool | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model: ``create_model("resnet18", num_classes=10, in_chans=1)``.

    ``num_classes=0``: no classifier, the output is the pooled (pre-logits) feature vector;
    ``global_pool=""`` with it: the unpooled map. ``features_only=True``: a `FeatureListNet` whose
    forward returns the maps of the stages in `out_indices` (default all). ``pretrained="mnist"``:
    the bundled weights of ``name:mnist`` (`cnnzoo models --pretrained` lists them).
    """
    if pretrained:
        from ..inference.pretrained import create_pretrained

        tag = None if pretrained is True else str(pretrained)
        model = create_pretrained(name, tag, num_classes=num_classes, in_chans=in_chans, **kwargs)
        return _finish(model, name, None if num_classes is None else num_classes, global_pool,
                       features_only, out_indices)  # fmt: skip
    info = model_info(name)
    if num_classes != 0:
        _check_positive("num_classes", num_classes)
    _check_positive("in_chans", in_chans)
    chans = info.in_chans if in_chans is None else in_chans
    try:
        model = info.builder(
            num_classes=info.num_classes if not num_classes else num_classes, in_chans=chans, **kwargs
        )
    except (TypeError, ValueError) as e:  # an unknown keyword or a bad value: the user's mistake, one line
        raise CnnzooError(f"cannot build {name}: {e}") from None
    model.model_name = name
    model.pretrained_cfg = default_pretrained_cfg(model, info, chans)
    return _finish(model, name, num_classes, global_pool, features_only, out_indices)


def _finish(model, name, num_classes, global_pool, features_only, out_indices) -> nn.Module:
    """Apply timm's keywords: no classifier, no pooling, or a feature-map extractor."""
    from ._base import FeatureListNet

    try:
        if features_only:
            model.reset_classifier(0, global_pool="avg" if global_pool is None else global_pool)
            return FeatureListNet(model, out_indices)
        if out_indices is not None:
            raise ValueError("out_indices goes with features_only=True")
        if num_classes == 0 or global_pool is not None:
            model.reset_classifier(model.num_classes if num_classes is None else num_classes, global_pool)
    except ValueError as e:
        raise CnnzooError(f"cannot build {name}: {e}") from None
    return model


def adapt_stats(values, in_chans: int) -> tuple[float, ...]:
    """Per-channel mean or std for `in_chans` channels: averaged to one, else repeated cyclically."""
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    if in_chans == 1:
        return (sum(values) / len(values),)
    return tuple(values[j % len(values)] for j in range(in_chans))


def default_pretrained_cfg(model: nn.Module, info: ModelInfo, in_chans: int) -> dict:
    """timm's `pretrained_cfg` keys for a freshly built model: what its input looks like and where its
    first convolution and classifier are (transfer learning reads these instead of guessing)."""
    names = model.classifier_names()
    return {
        "architecture": info.name,
        "tag": None,  # the bundled weights' dataset, when loaded with pretrained=...
        "input_size": (in_chans, info.input_size, info.input_size),
        "min_input_size": (in_chans, info.min_size, info.min_size),
        "mean": adapt_stats(info.mean, in_chans),
        "std": adapt_stats(info.std, in_chans),
        "interpolation": "bilinear",
        "first_conv": model.first_conv,
        "classifier": names[0],
        "aux_classifiers": tuple(names[1:]),  # Inception's auxiliary heads, also sized by num_classes
        "num_classes": model.num_classes,
        "classes": None,
    }


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Parameters counted once each, even when a module shares them."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # `parameters()` already de-duplicates shared tensors
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def check_input_size(name: str, size: int) -> None:
    """Raise a clear error for a side below the model's minimum (or not positive)."""
    info = model_info(name)
    _check_positive("input size", size)
    if size < info.min_size:
        raise CnnzooError(f"input size {size} is too small for {name}: its minimum is {info.min_size}")


def param_count_on_meta(name: str, **kwargs) -> int:
    """Count parameters without allocating memory (the model is built on the meta device)."""
    with torch.device("meta"):
        return count_params(create_model(name, **kwargs))


def model_table(pattern: str = "*") -> list[dict]:
    """`cnnzoo models`: one row per model matching `pattern` (parameters counted without allocating)."""
    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        row = {"name": name, "family": info.family, "params": param_count_on_meta(name),
               "input_size": info.input_size, "min_size": info.min_size, "paper": info.paper}  # fmt: skip
        if info.family == "inception":  # the papers' and torchvision's counts differ on the aux heads
            row["params_without_aux"] = param_count_on_meta(name, aux_logits=False)
        rows.append(row)
    if not rows:
        raise CnnzooError(f"no model matches {pattern!r} (see `cnnzoo models`)")
    return rows
