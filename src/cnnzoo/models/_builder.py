"""Building a registered model: the builder's network, its `pretrained_cfg`, and timm's keywords.

`build_model` is the plain path (fresh weights); `finish_model` applies `num_classes=0`, `global_pool` and
`features_only` afterwards, so the pretrained path (`_pretrained`) can share it. `cnnzoo.create_model`
(`_factory`) chooses between the two.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import CnnzooError
from ._base import FeatureListNet
from ._registry import ModelInfo, list_models, model_info

__all__ = [
    "build_model",
    "finish_model",
    "default_pretrained_cfg",
    "adapt_stats",
    "count_params",
    "check_input_size",
    "param_count_on_meta",
    "model_table",
]


def _check_positive(what: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise CnnzooError(f"{what} must be a positive integer, got {value!r}")


def build_model(
    name: str, *, num_classes: int | None = None, in_chans: int | None = None, **kwargs
) -> nn.Module:
    """The registered builder's model with fresh weights and its `pretrained_cfg` (no timm keywords: see
    `create_model`). `num_classes=0` builds the default head, which `finish_model` then removes."""
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
    return model


def finish_model(model, name, num_classes, global_pool, features_only, out_indices) -> nn.Module:
    """Apply timm's keywords: no classifier, no pooling, or a feature-map extractor."""
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
        return count_params(build_model(name, **kwargs))


def model_table(pattern: str = "*") -> list[dict]:
    """`cnnzoo models`: one row per model matching `pattern` (parameters counted without allocating)."""
    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        row = {"name": name, "family": info.family, "params": param_count_on_meta(name),
               "input_size": info.input_size, "min_size": info.min_size, "paper": info.paper}  # fmt: skip
        if info.family == "inception":  # the papers' and torchvision's counts differ on the aux heads
            row["params_without_aux"] = param_count_on_meta(name, aux_logits=False)
            with torch.device("meta"):
                row["aux_classifiers"] = len(build_model(name).classifier_names()) - 1
        rows.append(row)
    if not rows:
        raise CnnzooError(f"no model matches {pattern!r} (see `cnnzoo models`)")
    return rows
