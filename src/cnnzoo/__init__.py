"""cnnzoo: the classic convolutional networks (LeNet-5, AlexNet, VGG, Inception, ResNet), inspectable,
trainable and reusable by transfer learning.

Entry points (the command line's `cnnzoo COMMAND` does the same; `cnnzoo --help` lists the commands):

    create_model("resnet18", num_classes=10, in_chans=1)   a network (pretrained="mnist": bundled weights)
    list_models("vgg*"), model_info(name), count_params(m) the model zoo          (cnnzoo models)
    train("lenet5", data="mnist", epochs=4)                train from scratch      (cnnzoo train)
    finetune("lenet5:mnist", data="kmnist")                transfer learning       (cnnzoo finetune)
    load(source).predict(["digit.png"], top_k=3)          predict from a run, checkpoint, export folder
                                                           or bundled weights      (cnnzoo predict)

`train` and `finetune` return a `TrainResult` (`.model`, `.history`, `.final_acc`, `.run_dir`); with
`out="runs/x"` they write a run folder, as the commands do. Deeper layers: `cnnzoo.engine` (training),
`cnnzoo.transfer`, `cnnzoo.inference` (prediction, `inference.export`), `cnnzoo.explain`, `cnnzoo.summary`,
`cnnzoo.serve`, `cnnzoo.studies`.

Errors: every mistake a user can make (an unknown name, a wrong size, a corrupt or tampered file) raises
`cnnzoo.CnnzooError` (an `Exception`) with a one-line message naming the problem; the command line
prints it without a traceback and exits with status 2.

The names are imported on first use (PEP 562), so `import cnnzoo` and the command line start without
loading PyTorch until a command needs it; a Ctrl-C while it loads is then the CLI's to handle.
"""

import sys
import types

from ._version import __version__
from .errors import CnnzooError as CnnzooError  # re-exported; see the docstring

__all__ = [
    "__version__",
    "count_params",
    "create_model",
    "finetune",
    "fit_module",
    "list_models",
    "load",
    "model_info",
    "train",
]  # and CnnzooError, documented above (help() would add 70 lines of Exception's inherited methods)

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


class _Facade(types.ModuleType):
    """The package's module type: PEP 562's lazy lookup as methods of the module's class, so `help(cnnzoo)`
    shows the entry points rather than two module-level hooks."""

    def __getattr__(self, name: str):
        if name in _LAZY:
            import importlib

            value = getattr(importlib.import_module(_LAZY[name]), name)
            setattr(self, name, value)
            return value
        raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(__all__) | {"CnnzooError"})


sys.modules[__name__].__class__ = _Facade
