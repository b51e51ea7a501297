"""Seeing inside a network: feature maps, first-layer filters, Grad-CAM and gradient saliency.

    from cnnzoo.explain import feature_maps, gradcam, saliency, first_layer_filters
    p = cnnzoo.load("runs/lenet5-mnist-...")
    x = p.preprocess(["digit.png"])
    gradcam(p.model, x).maps          # (1, 28, 28) in 0..1: where the evidence for the class lies
    feature_maps(p.model, x)          # every conv/pool layer's output, in forward order
    dense_activations(p.model, x)     # every fully connected layer's activations (LeNet-5: 120, 84, 10)

Arrays come from `maps.py`, pictures from `render.py`; `cnnzoo explain` (`files.py`) and the HTTP
server's `/explain` route both use them. `sanity.py` holds the checks of Adebayo et al. 2018.
"""

from .files import METHODS, explain_images
from .maps import (
    DenseActivations,
    Heatmap,
    LayerMaps,
    default_layer,
    dense_activations,
    feature_layers,
    feature_maps,
    first_layer_filters,
    gradcam,
    saliency,
)
from .sanity import ink_overlap, randomized_copy, rank_correlation

__all__ = [
    "METHODS",
    "DenseActivations",
    "Heatmap",
    "LayerMaps",
    "default_layer",
    "dense_activations",
    "explain_images",
    "feature_layers",
    "feature_maps",
    "first_layer_filters",
    "gradcam",
    "ink_overlap",
    "randomized_copy",
    "rank_correlation",
    "saliency",
]
