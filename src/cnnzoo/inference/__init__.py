"""Inference: load a trained network with the preprocessing it was trained with, and predict.

    predictor = cnnzoo.inference.load("runs/lenet5-mnist-...")   # a run folder, checkpoint or export folder
    predictor = cnnzoo.inference.load("lenet5:mnist")            # bundled weights (models/_pretrained.py)
    predictor.predict(["digit.png", pil_image, numpy_array])     # top-k classes and probabilities

Which sources exist and how each opens is `cnnzoo.artifacts.source`. `framing.py` frames a person's
picture as MNIST-like training data was made; `export/` writes ONNX, TorchScript and safetensors (one
file per format) with a model card and measured parity. `cnnzoo predict` and `cnnzoo export` are thin
layers over these; so is the HTTP server.
"""

from .predictor import Predictor, load

__all__ = ["Predictor", "load"]
