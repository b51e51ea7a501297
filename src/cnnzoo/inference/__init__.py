"""Inference: load a trained network with the preprocessing it was trained with, and predict.

    predictor = cnnzoo.inference.load("runs/lenet5-mnist-...")   # a run folder or a checkpoint
    predictor.predict(["digit.png", pil_image, numpy_array])     # top-k classes and probabilities

`cnnzoo predict` is a thin layer over this; so are export and the HTTP server.
"""

from .predictor import Predictor, load

__all__ = ["Predictor", "load"]
