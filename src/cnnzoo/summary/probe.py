"""What a model's forward pass at a given input size would do, found without allocating it.

`probe_input` builds the model on PyTorch's meta device (shapes, no storage) and runs one forward pass
there, so a size the model cannot take (LeNet-5 pads to at most 32x32; VGG needs at least 32) and the size
of its activations are known before anything is allocated: `cnnzoo summary` and `cnnzoo train` use it to
refuse, in one line, an input that would fail or would not fit in memory, instead of trying.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves

from ..models import create_model, model_info
from ..runtime import available_memory, format_bytes  # part of the probe's answer, kept in its __all__

__all__ = ["InputProbe", "probe_input", "available_memory", "format_bytes"]


@dataclass(frozen=True)
class InputProbe:
    problem: str | None  # why the model cannot run on this input (its own words), or None
    param_bytes: int
    input_bytes: int
    largest_activation_bytes: int  # the biggest tensor one module returns, per forward of one image

    @property
    def estimated_bytes(self) -> int:
        """Memory of an inference forward pass: weights, the input and a few live activations (a
        module's input and output, a branch kept for a residual sum)."""
        return self.param_bytes + self.input_bytes + 3 * self.largest_activation_bytes


def _forward_on_meta(model, chans: int, side: int) -> tuple[str | None, int]:
    largest = 0

    def hook(module, args, output) -> None:
        nonlocal largest
        for t in tree_leaves(output):
            if isinstance(t, Tensor):
                largest = max(largest, t.numel() * t.element_size())

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.device("meta"), torch.no_grad():  # tensors the forward creates land on meta too
            model(torch.empty(1, chans, side, side))
    except (ValueError, RuntimeError, IndexError) as e:
        text = str(e).strip()
        return (text.splitlines()[0] if text else type(e).__name__), largest
    finally:
        handle.remove()
    return None, largest


def probe_input(
    name: str, side: int, *, in_chans: int | None = None, num_classes: int | None = None, **model_kwargs
) -> InputProbe:
    """Run model `name` on one `side` x `side` image on the meta device: nothing is allocated.

    A failure is reported only when the model runs at its own native size on the meta device too, so an
    operation without a meta implementation is never mistaken for a size the model cannot take.
    """
    info = model_info(name)
    chans = in_chans or info.in_chans
    with torch.device("meta"):
        model = create_model(name, in_chans=chans, num_classes=num_classes, **model_kwargs).eval()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    problem, largest = _forward_on_meta(model, chans, side)
    if problem is not None and side != info.input_size and _forward_on_meta(model, chans, info.input_size)[0]:
        problem = None  # the meta device cannot run this model at all: no conclusion
    return InputProbe(problem, params, chans * side * side * 4, largest)
