"""The model registry: builder name -> builder and the facts `cnnzoo models` prints.

A builder is registered with `@register_model(family=..., input_size=..., min_size=..., paper=...)`;
its function name is the registry key. Builders are keyword-only and accept `num_classes` and
`in_chans`; `mean` and `std` are the normalisation the architecture is trained with by default (the
dataset it was designed for), which `create_model` puts in the model's `pretrained_cfg`.

This module only records and looks up; building is `_builder` (and `_factory` for pretrained weights).
`cnnzoo.models` imports every family, so importing any part of the package fills the registry.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import unknown_name

__all__ = ["ModelInfo", "register_model", "list_models", "model_info", "IMAGENET_MEAN", "IMAGENET_STD"]

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


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern (e.g. ``"resnet*"``), sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; an unknown name raises with the closest names suggested."""
    if name not in _MODELS:
        raise unknown_name("model", name, _MODELS, "see `cnnzoo models`")
    return _MODELS[name]
