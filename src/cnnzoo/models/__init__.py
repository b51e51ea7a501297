"""The model zoo: one file per family, one registry, one contract (`ZooModel`)."""

from ._base import ZooModel, parameter_groups
from ._registry import ModelInfo, count_params, create_model, list_models, model_info, register_model

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
