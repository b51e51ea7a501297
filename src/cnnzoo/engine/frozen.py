"""Frozen BatchNorm stays in inference mode while the rest of the network trains (the Keras lesson).

`model.train()` turns every BatchNorm back to batch statistics; a BatchNorm whose parameters are all frozen
belongs to a part that must not change, yet its running statistics would drift to the new data and undo
what was learned. The engine calls `set_frozen_bn_eval` after each `model.train()`; in a network with
nothing frozen it changes nothing.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["set_frozen_bn_eval"]


def set_frozen_bn_eval(model: nn.Module) -> list[str]:
    """Put every BatchNorm whose parameters are all frozen into eval mode; return their names.

    BatchNorm without parameters (affine=False) is left as it is: with nothing to tell whether it belongs
    to a frozen part, it follows `model.train()`/`eval()`.
    """
    names = []
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
                names.append(name)
    return names
