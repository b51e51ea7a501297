"""The model zoo: one file per family, one registry, one contract (`ZooModel`).

Importing the package imports every family (torchvision's way), which registers its builders; a new
family is one file here plus one line below.
"""

from . import alexnet, googlenet, inception_v3, lenet, resnet, vgg  # noqa: F401  (registers the families)
from ._base import ZooModel, parameter_groups
from ._builder import count_params
from ._factory import create_model
from ._registry import ModelInfo, list_models, model_info, register_model

__all__ = [
    "ZooModel",
    "ModelInfo",
    "count_params",
    "create_model",
    "list_models",
    "model_info",
    "parameter_groups",
    "register_model",
]
