"""`cnnzoo explain`'s PNG files as titled figures: what is shown, for which class, on which scale.

The server's `/explain` replies stay the bare numpy/Pillow pictures of `render.py` (a millisecond each);
files a person opens later get matplotlib's title, colour bar and axes (through `artifacts.figure`).

Heat maps are drawn over the image with an opacity that grows with the heat, so a cold region shows
the image untouched and only where the evidence lies is coloured (a colour at every pixel, blue where
cold, read as the whole background highlighted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts.figure import DPI, SIZES, new_figure, pyplot, save_figure

__all__ = ["heat_figure", "grid_figure", "filters_figure", "image_figure"]

HEAT_CMAP = "jet"  # as Grad-CAM's paper: blue cold, red hot
MAX_ALPHA = 0.8  # the hottest pixel's opacity: the image still shows through


def _gray(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3:
        a = a.mean(0) if a.shape[0] in (1, 3) else a.mean(-1)
    return a


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _grid_with_bar(n: int, side_max: float):
    """(figure, n axes in a grid, the colour bar's axes): a narrow last column holds the bar, so the
    layout leaves it its own room."""
    cols = n if n <= 8 else int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    side = min(side_max, 9.0 / cols)
    fig = pyplot().figure(figsize=(max(4.5, side * cols + 1.6), side * rows + 1.0), dpi=DPI)
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1] * cols + [0.08 * max(1, cols / 4)])
    axes = [fig.add_subplot(grid[i // cols, i % cols]) for i in range(rows * cols)]
    for ax in axes:
        ax.axis("off")
    return fig, axes[:n], fig.add_subplot(grid[:, -1])


def heat_figure(image: np.ndarray, heat: np.ndarray, path: Path, *, title: str, bar_label: str) -> Path:
    """The image as the model reads it, beside the same image with `heat` (0..1) laid over it, a colour
    bar saying what the colours mean."""
    import matplotlib

    cmap = matplotlib.colormaps[HEAT_CMAP]
    gray = _gray(image)
    h, w = gray.shape
    fig, (left, right) = new_figure(7.6, 4.0, ncols=2)
    for ax in (left, right):
        ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        _bare(ax)
    heat = np.clip(np.asarray(heat, dtype=np.float64), 0, 1)
    rgba = cmap(heat)
    rgba[..., 3] = MAX_ALPHA * heat  # cold: clear; hot: coloured
    right.imshow(rgba, interpolation="nearest")
    left.set_title(f"input ({w}x{h} pixels, as the model reads it)", fontsize=SIZES["small"] + 1)
    right.set_title("heat over it (no colour: none)", fontsize=SIZES["small"] + 1)
    bar = fig.colorbar(
        matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=cmap),
        ax=right,
        fraction=0.05,
    )
    bar.set_label(bar_label, fontsize=SIZES["small"] + 1)
    bar.ax.tick_params(labelsize=SIZES["tick"])
    return save_figure(fig, path, title=title)


def grid_figure(maps: np.ndarray, path: Path, *, title: str, cmap: str = "inferno") -> Path:
    """(C, H, W) maps in a grid, each on its own scale (low to high within the map), with a colour bar."""
    import matplotlib

    c = len(maps)
    fig, axes, cax = _grid_with_bar(c, 1.6)
    for i, ax in enumerate(axes):
        m = maps[i].astype(np.float64)
        lo, hi = float(m.min()), float(m.max())
        ax.imshow((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m), cmap=cmap, vmin=0, vmax=1)
        if c <= 16:
            ax.set_title(f"{i}", fontsize=SIZES["small"])
    bar = fig.colorbar(
        matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=cmap), cax=cax, ticks=[0, 1]
    )
    bar.ax.set_yticklabels(["lowest", "highest"])
    bar.set_label("activation, within each map", fontsize=SIZES["small"] + 1)
    return save_figure(fig, path, title=title)


def filters_figure(weights: np.ndarray, path: Path, *, title: str) -> Path:
    """(O, I, k, k) kernels: RGB where I is 3, else gray on one scale centred on zero, with a colour bar."""
    import matplotlib

    w = np.asarray(weights, dtype=np.float32)
    w = w if w.shape[1] == 3 else w.mean(1, keepdims=True)
    peak = float(np.abs(w).max()) or 1.0
    n = len(w)
    fig, axes, cax = _grid_with_bar(n, 1.4)
    for i, ax in enumerate(axes):
        if w.shape[1] == 3:
            ax.imshow(np.clip(w[i].transpose(1, 2, 0) / (2 * peak) + 0.5, 0, 1), interpolation="nearest")
        else:
            ax.imshow(w[i, 0], cmap="gray", vmin=-peak, vmax=peak, interpolation="nearest")
        if n <= 16:
            ax.set_title(f"{i}", fontsize=SIZES["small"])
    bar = fig.colorbar(
        matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-peak, peak), cmap="gray"), cax=cax
    )
    bar.set_label("weight (gray = 0)" + (", RGB kernels: per channel" if w.shape[1] == 3 else ""), fontsize=9)
    return save_figure(fig, path, title=title)


def image_figure(image: np.ndarray, path: Path, *, title: str) -> Path:
    """The image as the model reads it, with its size."""
    a = np.asarray(image)
    rgb = a.ndim == 3 and a.shape[0] == 3
    shown = a.transpose(1, 2, 0) if rgb else _gray(a)
    fig, ax = new_figure(4.2, 4.4)
    ax.imshow(shown, cmap=None if rgb else "gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xlabel(f"{shown.shape[1]} pixels", fontsize=SIZES["label"])
    ax.set_ylabel(f"{shown.shape[0]} pixels", fontsize=SIZES["label"])
    _bare(ax)
    return save_figure(fig, path, title=title)
