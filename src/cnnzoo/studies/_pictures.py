"""Pictures of what a trained network computes, for the lenet and architectures reports.

The arrays come from `cnnzoo.explain` (first-layer filters, every conv/pool layer's feature maps,
Grad-CAM at the last conv stage, gradient saliency), the same code `cnnzoo explain` and the server use;
this module only lays them out as titled matplotlib figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor, nn

from ..data.loader import InMemoryLoader
from ..explain import feature_maps, first_layer_filters, gradcam, saliency
from ._common import pyplot, save_figure

__all__ = ["plot_filters", "plot_feature_maps", "plot_heatmaps", "plot_digit_grid", "batch_of"]


def plot_filters(model: nn.Module, path: Path, title: str) -> Path:
    """The first convolution's kernels, on one gray scale centred on zero (mid-gray is 0)."""
    w = first_layer_filters(model)  # (O, I, k, k)
    w = w if w.shape[1] == 3 else w.mean(1, keepdims=True)
    peak = float(np.abs(w).max()) or 1.0
    n = len(w)
    cols = min(n, 8)
    rows = -(-n // cols)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.3 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            k = w[i]
            if k.shape[0] == 3:
                ax.imshow(np.clip(k.transpose(1, 2, 0) / (2 * peak) + 0.5, 0, 1))
            else:
                ax.imshow(k[0], cmap="gray", vmin=-peak, vmax=peak)
            ax.set_title(f"filter {i}", fontsize=7)
    k = w.shape[-1]
    fig.suptitle(f"{title}\n{n} kernels of {k}x{k} pixels, gray = 0, white = +{peak:.2f}", fontsize=9)
    save_figure(fig, path)
    return path


def plot_feature_maps(
    model: nn.Module, x: Tensor, image: np.ndarray, path: Path, title: str, max_layers: int = 8
) -> Path:
    """One image, then the conv/pool layers' maps for it, one row per layer (up to 16 channels); a deep
    network shows `max_layers` layers spread evenly from the first to the last."""
    layers = [layer for layer in feature_maps(model, x[:1]) if layer.maps.shape[-1] > 1]  # not a global pool
    if len(layers) > max_layers:
        keep = np.linspace(0, len(layers) - 1, max_layers).round().astype(int)
        layers = [layers[i] for i in sorted(set(keep.tolist()))]
    cols = 1 + min(16, max(len(layer.maps[0]) for layer in layers))
    plt = pyplot()
    fig, axes = plt.subplots(len(layers), cols, figsize=(0.9 * cols, 1.0 * len(layers) + 0.8), squeeze=False)
    for r, layer in enumerate(layers):
        maps = layer.maps[0]
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c == 0:
                ax.imshow(image, cmap="gray")
                ax.set_title(f"{layer.name}\n({layer.kind})", fontsize=6)
            elif c - 1 < min(16, len(maps)):
                ax.imshow(maps[c - 1], cmap="inferno")
                if r == 0 or c == 1:
                    ax.set_title(f"{maps.shape[1]}x{maps.shape[2]}" if c == 1 else "", fontsize=6)
    fig.suptitle(
        f"{title}\nrows: layers (input image first); columns: channels (each on its own scale)", fontsize=9
    )
    save_figure(fig, path)
    return path


def plot_heatmaps(
    model: nn.Module, x: Tensor, images: np.ndarray, labels: list[str], path: Path, title: str
) -> Path:
    """For each image: the image, Grad-CAM at the last conv stage over it, gradient saliency over it."""
    cam = gradcam(model, x)
    sal = saliency(model, x)
    n = len(x)
    plt = pyplot()
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.6), squeeze=False)
    for i in range(n):
        for r, (heat, name) in enumerate(
            ((None, "image"), (cam.maps[i], "Grad-CAM"), (sal.maps[i], "saliency"))
        ):
            ax = axes[r][i]
            ax.axis("off")
            ax.imshow(images[i], cmap="gray")
            if heat is not None:
                ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                ax.text(
                    -0.15, 0.5, name, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=8
                )
        axes[0][i].set_title(f"{labels[i]}\npred {cam.target[i]}", fontsize=7)
    fig.suptitle(
        f"{title}\nGrad-CAM at {cam.layer} (red: evidence for the predicted class), saliency |d score/d pixel|",
        fontsize=9,
    )
    save_figure(fig, path)
    return path


def plot_digit_grid(
    images: list[np.ndarray], captions: list[str], path: Path, title: str, cols: int = 8
) -> Path:
    plt = pyplot()
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.45 * rows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], cmap="gray_r")
            ax.set_title(captions[i], fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
    return path


def batch_of(data, image_size: int) -> Tensor:
    """The whole (small) `ArrayDataset` as one float batch, prepared exactly as the engine's loaders do."""
    info = data.info
    loader = InMemoryLoader(
        data,
        len(data),
        shuffle=False,
        image_size=image_size,
        channels=info.channels,
        mean=info.mean,
        std=info.std,
    )
    return next(iter(loader))[0]
