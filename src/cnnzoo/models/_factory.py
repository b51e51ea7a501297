"""`create_model`: a registered model with fresh weights, or with bundled pretrained ones, then timm's keywords."""

from __future__ import annotations

from torch import nn

from ._builder import build_model, finish_model
from ._pretrained import create_pretrained

__all__ = ["create_model"]


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
        tag = None if pretrained is True else str(pretrained)
        model = create_pretrained(name, tag, num_classes=num_classes, in_chans=in_chans, **kwargs)
    else:
        model = build_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    return finish_model(model, name, num_classes, global_pool, features_only, out_indices)
