"""torch.hub entry points: every cnnzoo model, built by `cnnzoo.create_model` from this checkout.

    import torch
    model = torch.hub.load("path/to/cnnzoo", "resnet18", source="local", num_classes=10)
    model = torch.hub.load("path/to/cnnzoo", "lenet5", source="local", pretrained="mnist")

An entry takes `cnnzoo.create_model`'s keywords (num_classes, in_chans, pretrained, global_pool,
features_only, out_indices and the builder's own) and gives what it gives. It works from a clone
without installing cnnzoo: this checkout's `src/` goes first on `sys.path` (unless a cnnzoo is already
imported in the process, which is then the one used). Everything public and callable here is a model,
as torch.hub lists entry points: one per registered model, generated from the registry.
"""

import os as _os
import sys as _sys

dependencies = ["torch", "numpy", "safetensors", "tqdm"]  # what building a model imports

_SRC = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src")
if _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)  # kept after torch.hub's load: cnnzoo imports some modules on first use

from cnnzoo.models import create_model as _create_model  # noqa: E402
from cnnzoo.models import list_models as _list_models  # noqa: E402
from cnnzoo.models import model_info as _model_info  # noqa: E402


def _entry(name: str):
    def entry(**kwargs):
        return _create_model(name, **kwargs)

    info = _model_info(name)
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"{(info.builder.__doc__ or name).strip()}\n\n"
        f"{info.paper}. Input {info.in_chans}x{info.input_size}x{info.input_size} by default, "
        f"{info.num_classes} classes. Keywords: those of cnnzoo.create_model({name!r}, ...)."
    )
    return entry


for _name in _list_models():
    globals()[_name] = _entry(_name)
