"""cnnzoo: the classic convolutional networks, inspectable, trainable and reusable by transfer learning."""

from .errors import CnnzooError
from .models import count_params, create_model, list_models, model_info

__version__ = "0.1.0"

__all__ = ["CnnzooError", "__version__", "count_params", "create_model", "list_models", "model_info"]
