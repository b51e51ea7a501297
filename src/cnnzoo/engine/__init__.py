"""Training, evaluation and checkpoints (prediction on images is `cnnzoo.inference`)."""

from ..artifacts.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, default_config
from .evaluate import evaluate_checkpoint, evaluate_model
from .train import TrainResult, fit, train

__all__ = [
    "Checkpoint",
    "TrainConfig",
    "TrainResult",
    "default_config",
    "evaluate_checkpoint",
    "evaluate_model",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
