"""Inference: load a trained network with the preprocessing it was trained with, and predict.

    predictor = cnnzoo.inference.load("runs/lenet5-mnist-...")   # a run folder or a checkpoint
    predictor = cnnzoo.inference.load("lenet5:mnist")            # bundled weights (pretrained.py)
    predictor.predict(["digit.png", pil_image, numpy_array])     # top-k classes and probabilities

`framing.py` frames a person's picture as MNIST-like training data was made; `export.py` writes ONNX,
TorchScript and safetensors with a model card and measured parity; `pretrained.py` reads the bundled
weights' manifest. `cnnzoo predict` and `cnnzoo export` are thin layers over these; so is the HTTP server.
"""

from .predictor import Predictor, load

__all__ = ["Predictor", "load"]
