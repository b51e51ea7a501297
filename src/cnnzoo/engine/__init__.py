"""Training, evaluation, prediction and checkpoints."""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, default_config
from .evaluate import evaluate_model, predict_images
from .train import TrainResult, fit, train

__all__ = [
    "Checkpoint",
    "TrainConfig",
    "TrainResult",
    "default_config",
    "evaluate_model",
    "fit",
    "load_checkpoint",
    "predict_images",
    "save_checkpoint",
    "train",
]
