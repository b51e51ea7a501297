"""cnnzoo: the classic convolutional networks, inspectable, trainable and reusable by transfer learning.

The names below are imported on first use (PEP 562), so `import cnnzoo` and the command line start without
loading PyTorch until a command needs it; a Ctrl-C while it loads is then the CLI's to handle.
"""

from ._version import __version__
from .errors import CnnzooError

__all__ = [
    "CnnzooError",
    "__version__",
    "count_params",
    "create_model",
    "finetune",
    "fit_module",
    "list_models",
    "load",
    "model_info",
    "train",
]

_LAZY = {
    "count_params": "cnnzoo.models",
    "create_model": "cnnzoo.models",
    "list_models": "cnnzoo.models",
    "model_info": "cnnzoo.models",
    "load": "cnnzoo.inference",
    # the one-call trainers (`cnnzoo.train(...)` returns the trained model): functions, not the modules
    # `cnnzoo.engine.train` and `cnnzoo.transfer.finetune`, which keep their own names in their packages
    "train": "cnnzoo.engine.api",
    "finetune": "cnnzoo.transfer.api",
    "fit_module": "cnnzoo.engine.api",  # cnnzoo.train's loop for a network that is not in the zoo
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
