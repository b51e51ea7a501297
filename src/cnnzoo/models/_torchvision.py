"""torchvision's published ImageNet weights for the architectures cnnzoo shares with it (same names, same
shapes), fetched through torchvision only when the user names `torchvision:NAME`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import CnnzooError
from ._weights import unwrap_state_dict

__all__ = ["TORCHVISION_MODELS", "fetch_torchvision"]

# torchvision names that have official ImageNet weights and a cnnzoo twin with the same layout.
TORCHVISION_MODELS = (
    "alexnet",
    "googlenet",
    "inception_v3",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
)


def fetch_torchvision(name: str) -> tuple[dict[str, Tensor], list[str] | None]:
    """Download (or read from torch's cache) torchvision's DEFAULT weights; weights-only unpickling."""
    try:
        import torchvision.models as tvm
    except ImportError:
        raise CnnzooError(
            f"torchvision:{name} needs torchvision, which is not installed: pip install 'cnnzoo[torchvision]'"
        ) from None
    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError) as e:
        raise CnnzooError(f"torchvision has no weights for {name!r} ({e})") from None
    try:
        state = torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as e:  # no network, HTTP errors, hash mismatch, a corrupt cache file...
        raise CnnzooError(
            f"could not fetch torchvision's {name} weights ({type(e).__name__}: {e}); check the network, "
            f"or download {weights.url} and pass the file"
        ) from None
    categories = weights.meta.get("categories")
    return unwrap_state_dict(state, Path(weights.url)), list(categories) if categories else None
